"""White-box attacks on the real detectors, measured through the real pipeline (ONNX + FrameDetector).

Slow (gradients through the converted models on CPU) but CI runs them: the whole file takes about a minute
on 2 cores. Only the torch tests are skipped when the optional ``adversarial`` extra is absent.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from trustcam.assess import adversarial as adv
from trustcam.vision.detectors import Detector
from trustcam.vision.frame_detector import FrameDetector

pytestmark = pytest.mark.slow
needs_torch = pytest.mark.skipif(
    not adv.torch_available(), reason="torch/onnx2torch not installed: pip install 'trustcam[adversarial]'"
)
PERSON = 0


def read_people(root: Path, min_area: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """coco128 images whose every labelled person covers ≥ ``min_area`` of the image (clear people),
    with their person boxes in xyxy pixels; images without people are skipped."""
    found = []
    for image_path in sorted((root / "images").glob("*.jpg")):
        label_path = root / "labels" / f"{image_path.stem}.txt"
        if not label_path.is_file():
            continue
        rows = np.array([line.split() for line in label_path.read_text().splitlines() if line.strip()], np.float64)
        people = rows[rows[:, 0] == PERSON] if len(rows) else rows
        if not len(people) or (people[:, 3] * people[:, 4]).min() < min_area:
            continue
        image = cv2.imread(str(image_path))
        h, w = image.shape[:2]
        cx, cy, bw, bh = people[:, 1] * w, people[:, 2] * h, people[:, 3] * w, people[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).astype(np.float32)
        found.append((image, boxes))
    return found


@pytest.fixture(scope="module")
def people(data_dir: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    found = read_people(data_dir / "coco128-train", min_area=0.02)
    assert len(found) >= 12, f"expected ≥ 12 coco128 images with clear people, found {len(found)}"
    return found


@pytest.fixture(scope="module")
def diff_yolox(yolox: Detector) -> adv.DifferentiableDetector:
    return adv.DifferentiableDetector(yolox)


@pytest.fixture(scope="module")
def diff_nanodet(nanodet: Detector) -> adv.DifferentiableDetector:
    return adv.DifferentiableDetector(nanodet)


def test_import_does_not_load_torch() -> None:
    code = "import sys, trustcam, trustcam.assess.adversarial; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch, yolox: Detector) -> None:
    monkeypatch.setattr(adv, "torch_available", lambda: False)
    with pytest.raises(adv.AttackUnavailable, match=r"pip install 'trustcam\[adversarial\]'"):
        adv.DifferentiableDetector(yolox)


@needs_torch
@pytest.mark.parametrize("name", ["yolox", "nanodet"])
@pytest.mark.parametrize("size", [None, (1600, 1200)], ids=["native-bilinear", "large-area"])
def test_differentiable_copy_matches_onnx(request: pytest.FixtureRequest, people: list, name: str,
                                          size: tuple[int, int] | None) -> None:
    import torch

    detector: Detector = request.getfixturevalue(name)
    model: adv.DifferentiableDetector = request.getfixturevalue(f"diff_{name}")
    image = people[0][0] if size is None else cv2.resize(people[0][0], size)  # ≥ 2× shrink: INTER_AREA path
    tensor, _ = detector.preprocess(image)
    chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
    with torch.no_grad():
        own_input = model.model_input(chw).numpy()
        for class_id in (PERSON, 2):
            expected = adv.onnx_class_scores(detector, image, class_id)
            same_input = model.scores_from_input(torch.from_numpy(tensor), class_id).numpy()
            np.testing.assert_allclose(same_input, expected, atol=1e-3)
            # own letterbox: the backend rounds the resized pixels to uint8, this one does not
            own = model.class_scores(chw, class_id).numpy()
            np.testing.assert_allclose(own, expected, atol=0.03)
            if class_id == PERSON:
                assert expected.max() > 0.5  # a real, detected person
    step = 1.0 if name == "yolox" else 1.0 / 57  # ≤ 1 pixel level, before or after NanoDet's std
    assert np.abs(own_input - tensor).max() <= step


@needs_torch
def test_gradients_reach_the_pixels(diff_yolox: adv.DifferentiableDetector, people: list) -> None:
    import torch

    image = torch.from_numpy(np.ascontiguousarray(people[0][0].transpose(2, 0, 1))).float().requires_grad_(True)
    diff_yolox.class_scores(image).max().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


@needs_torch
def test_pgd_hides_people_from_the_pipeline(yolox: Detector, nanodet: Detector,
                                            diff_yolox: adv.DifferentiableDetector, people: list) -> None:
    samples = people[:8]
    images, gts = [s[0] for s in samples], [s[1] for s in samples]
    config = adv.AttackConfig(eps=8, steps=5, seed=0)
    attacked = [adv.pgd(diff_yolox, image, config) for image in images]
    noisy = [adv.uniform_noise(image, 8, seed=i) for i, image in enumerate(images)]

    for image, attacked_image in zip(images, attacked, strict=True):
        assert attacked_image.shape == image.shape and attacked_image.dtype == np.uint8
        assert np.abs(attacked_image.astype(int) - image.astype(int)).max() <= 8

    pipeline = FrameDetector(yolox, "auto")
    clean = adv.detection_recall(pipeline, images, gts, threshold=0.3)
    after = adv.detection_recall(pipeline, attacked, gts, threshold=0.3)
    control = adv.detection_recall(pipeline, noisy, gts, threshold=0.3)
    transfer = adv.detection_recall(FrameDetector(nanodet, "auto"), attacked, gts, threshold=0.3)
    print(f"yolox person recall: clean {clean:.2f}, PGD eps 8 {after:.2f}, random noise eps 8 {control:.2f}; "
          f"transfer to nanodet {transfer:.2f}")
    assert clean >= 0.7
    assert after <= 0.3 * clean
    assert control >= clean - 0.15  # the same budget as noise barely matters: the attack is not just noise
    assert 0.0 <= transfer <= 1.0


@needs_torch
def test_pgd_is_reproducible_per_seed(diff_yolox: adv.DifferentiableDetector, people: list) -> None:
    image = people[1][0]
    first = adv.pgd(diff_yolox, image, adv.AttackConfig(eps=4, steps=2, seed=3))
    again = adv.pgd(diff_yolox, image, adv.AttackConfig(eps=4, steps=2, seed=3))
    other = adv.pgd(diff_yolox, image, adv.AttackConfig(eps=4, steps=2, seed=4))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.abs(first.astype(int) - image.astype(int)).max() <= 4


def test_attack_config_defaults() -> None:
    assert adv.AttackConfig().alpha == pytest.approx(2.0)  # 2.5 × 8 / 10
    assert adv.AttackConfig(eps=4, steps=5, step_size=1.0).alpha == 1.0
    with pytest.raises(ValueError):
        adv.AttackConfig(eps=-1)


def test_apply_patch_geometry() -> None:
    image = np.zeros((200, 300, 3), np.uint8)
    patch = np.full((16, 16, 3), 255, np.uint8)
    box = np.array([[100, 20, 160, 180]], np.float32)  # 60 × 160: side = 0.25 × 160 = 40, centre (130, 84)
    out = adv.apply_patch(image, box, patch, scale=0.25)
    ys, xs = np.nonzero(out[:, :, 0])
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (110, 149, 64, 103)
    assert not image.any()  # a copy: the input is untouched
    np.testing.assert_array_equal(adv.random_patch(8, 1), adv.random_patch(8, 1))
    assert not np.array_equal(adv.random_patch(8, 1), adv.random_patch(8, 2))


@needs_torch
def test_patch_beats_random_patch_on_training_images(yolox: Detector, diff_yolox: adv.DifferentiableDetector,
                                                    people: list) -> None:
    samples = people[:4]
    images, boxes = [s[0] for s in samples], [s[1] for s in samples]
    patch = adv.train_patch(diff_yolox, images, boxes, size=32, steps=40, scale=0.3, seed=0, batch=2)
    assert patch.shape == (32, 32, 3) and patch.dtype == np.uint8

    def mean_max_score(p: np.ndarray) -> float:
        return float(np.mean([adv.onnx_class_scores(yolox, adv.apply_patch(i, b, p, 0.3)).max()
                              for i, b in zip(images, boxes, strict=True)]))

    optimised, control = mean_max_score(patch), mean_max_score(adv.random_patch(32, 0))
    print(f"mean max person score on the training images: optimised patch {optimised:.3f}, random {control:.3f}")
    assert optimised < control - 0.1


@needs_torch
def test_patch_is_reproducible_per_seed(diff_yolox: adv.DifferentiableDetector, people: list) -> None:
    images, boxes = [people[0][0]], [people[0][1]]
    first = adv.train_patch(diff_yolox, images, boxes, size=16, steps=3, seed=5)
    again = adv.train_patch(diff_yolox, images, boxes, size=16, steps=3, seed=5)
    other = adv.train_patch(diff_yolox, images, boxes, size=16, steps=3, seed=6)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
