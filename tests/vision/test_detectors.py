"""Accuracy of the two bundled detectors on coco128, run exactly as ``trustcam detect`` runs them.

Real models, real images, real labels: person recall and precision at IoU 0.5 with greedy matching by score.
The floors sit a few points below what the models really give (measured figures below), so a pre- or
post-processing regression (RGB swap, missing or extra normalisation, wrong box scaling) fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from coco128 import PERSON, Sample, Score, orphan_labels, score_class

from trustcam.config import Settings
from trustcam.vision.catalog import get_spec
from trustcam.vision.detections import Detections, iou_matrix
from trustcam.vision.detectors import Detector, NanodetDetector, YoloxDetector
from trustcam.vision.frame_detector import FrameDetector

DEFAULT_THRESHOLD = Settings().detector.score_threshold
DEFAULT_TILING = Settings().detector.tiling
MODELS = ("yolox-nano", "nanodet-m-320")
FIXTURE = {"yolox-nano": "yolox", "nanodet-m-320": "nanodet"}

# Measured on coco128-train (128 images, 254 labelled persons in them), onnxruntime 1.32 CPU, threshold 0.3:
#   yolox-nano     recall 0.567 (144/254)  precision 0.783 (144/184)
#   nanodet-m-320  recall 0.579 (147/254)  precision 0.623 (147/236)
# Wrong pre-processing measured for comparison: nanodet with RGB input 0.488 / 0.556, YOLOX with RGB input
# 0.480 / 0.813, YOLOX with /255 or ImageNet-normalised input 0.0, nanodet without mean/std 0.114 / 0.011.
FLOORS = {"yolox-nano": (0.53, 0.74), "nanodet-m-320": (0.54, 0.58)}  # (recall, precision)

KNOWN_PERSON = "000000000036.jpg"  # one person under an umbrella; label box about (168, 163, 478, 628)
EASY_PERSON = "000000000428.jpg"  # one large person, both models score it > 0.8
NEGATIVES = ("000000000250.jpg", "000000000508.jpg")  # no label file: nothing labelled in them


@contextmanager
def score_threshold(detector: Detector, value: float) -> Iterator[Detector]:
    """Run a shared (session) detector at ``value`` and put its own threshold back afterwards."""
    old = detector.score_threshold
    detector.score_threshold = value
    try:
        yield detector
    finally:
        detector.score_threshold = old


def run_all(detector: Detector, samples: list[Sample], threshold: float = DEFAULT_THRESHOLD) -> list[Detections]:
    with score_threshold(detector, threshold):
        frame_detector = FrameDetector(detector, DEFAULT_TILING)
        return [frame_detector.detect_full(sample.read()) for sample in samples]


def total(samples: list[Sample], runs: list[Detections], min_score: float = 0.0) -> Score:
    score = Score()
    for sample, dets in zip(samples, runs, strict=True):
        score.add(score_class(dets, sample, PERSON, 0.5, min_score))
    return score


def by_name(samples: list[Sample], name: str) -> Sample:
    return next(s for s in samples if s.image_path.name == name)


def persons(dets: Detections) -> Detections:
    return dets.select(np.flatnonzero(dets.class_ids == PERSON))


@pytest.fixture(params=MODELS)
def model(request: pytest.FixtureRequest) -> tuple[str, Detector]:
    return request.param, request.getfixturevalue(FIXTURE[request.param])


@pytest.fixture(scope="module")
def coco_runs(yolox: Detector, nanodet: Detector, coco_samples: list[Sample]) -> dict[str, list[Detections]]:
    """Every coco128 image through ``FrameDetector.detect_full`` at the default threshold, per model."""
    return {"yolox-nano": run_all(yolox, coco_samples), "nanodet-m-320": run_all(nanodet, coco_samples)}


def test_coco128_labels_read_as_documented(coco_root: Path, coco_samples: list[Sample]) -> None:
    assert len(coco_samples) == 128
    orphans = orphan_labels(coco_root)
    assert [p.name for p in orphans] == ["000000000656.txt", "000000000659.txt"]
    orphan_persons = sum(
        int(line.split()[0]) == PERSON for p in orphans for line in p.read_text().splitlines() if line.strip()
    )
    in_images = sum(len(s.boxes_of(PERSON)) for s in coco_samples)
    assert in_images + orphan_persons == 261, "the label files hold 261 persons, 7 of them in image-less files"
    assert in_images == 254
    assert sorted(s.image_path.name for s in coco_samples if s.label_path is None) == list(NEGATIVES)
    for s in coco_samples:
        if len(s.boxes):
            assert (s.boxes[:, :2] >= -1).all() and (s.boxes[:, 2] <= s.width + 1).all(), s.image_path
            assert (s.boxes[:, 3] <= s.height + 1).all(), s.image_path


def test_threshold_default_is_what_the_fixtures_use(yolox: Detector, nanodet: Detector) -> None:
    assert Settings().detector.model == "yolox-nano"
    assert yolox.score_threshold == nanodet.score_threshold == DEFAULT_THRESHOLD


@pytest.mark.parametrize("name", MODELS)
def test_person_recall_and_precision_at_default_threshold(
    name: str, coco_samples: list[Sample], coco_runs: dict[str, list[Detections]]
) -> None:
    score = total(coco_samples, coco_runs[name])
    min_recall, min_precision = FLOORS[name]
    figures = f"{name} @ {DEFAULT_THRESHOLD} (tiling {DEFAULT_TILING}), person IoU 0.5: {score}"
    print(f"\n{figures}")
    assert score.gt == 254
    assert score.recall >= min_recall, f"{figures}; floor recall {min_recall}"
    assert score.precision >= min_precision, f"{figures}; floor precision {min_precision}"


def test_threshold_sweep(
    yolox: Detector, nanodet: Detector, coco_samples: list[Sample], coco_runs: dict[str, list[Detections]]
) -> None:
    """Report the trade-off at other thresholds; a higher threshold only filters the lower one's output."""
    low = 0.25
    for name, detector in (("yolox-nano", yolox), ("nanodet-m-320", nanodet)):
        runs = run_all(detector, coco_samples, low)
        lines, recalls = [], []
        for t in (low, DEFAULT_THRESHOLD, 0.4, 0.5):
            score = total(coco_samples, runs, min_score=t)
            f1 = 2 * score.recall * score.precision / max(score.recall + score.precision, 1e-9)
            lines.append(f"  {name} @ {t}: {score}, F1 {f1:.3f}")
            recalls.append(score.recall)
        print("\n" + "\n".join(lines))
        assert recalls == sorted(recalls, reverse=True)
        at_default = total(coco_samples, coco_runs[name])
        filtered = total(coco_samples, runs, min_score=DEFAULT_THRESHOLD)
        assert (filtered.tp, filtered.fp) == (at_default.tp, at_default.fp)


def test_true_negatives_have_no_person(coco_samples: list[Sample], coco_runs: dict[str, list[Detections]]) -> None:
    for name, runs in coco_runs.items():
        for sample, dets in zip(coco_samples, runs, strict=True):
            if sample.image_path.name in NEGATIVES:
                assert not (dets.class_ids == PERSON).any(), f"{name}: person on {sample.image_path.name}: {dets}"


def test_known_answer_person(model: tuple[str, Detector], coco_samples: list[Sample]) -> None:
    name, detector = model
    sample = by_name(coco_samples, KNOWN_PERSON)
    gt = sample.boxes_of(PERSON)
    assert len(gt) == 1
    dets = persons(FrameDetector(detector, DEFAULT_TILING).detect_full(sample.read()))
    assert len(dets), f"{name}: no person on {KNOWN_PERSON}"
    ious = iou_matrix(dets.boxes, gt)[:, 0]
    best = int(ious.argmax())
    print(f"\n{name} {KNOWN_PERSON}: person {dets.scores[best]:.2f} IoU {ious[best]:.3f} box {dets.boxes[best]}")
    assert ious[best] > 0.7, f"{name}: best person box {dets.boxes[best]} vs label {gt[0]}: IoU {ious[best]:.3f}"
    assert dets.scores[best] > 0.5


def test_both_models_agree_on_an_easy_image(yolox: Detector, nanodet: Detector, coco_samples: list[Sample]) -> None:
    sample = by_name(coco_samples, EASY_PERSON)
    image = sample.read()
    a = persons(FrameDetector(yolox, DEFAULT_TILING).detect_full(image))
    b = persons(FrameDetector(nanodet, DEFAULT_TILING).detect_full(image))
    assert len(a) == len(b) == 1, (a, b)
    agree = float(iou_matrix(a.boxes, b.boxes)[0, 0])
    gt = sample.boxes_of(PERSON)
    print(f"\n{EASY_PERSON}: yolox {a.boxes[0]} nanodet {b.boxes[0]} IoU {agree:.3f}")
    assert agree > 0.8
    assert iou_matrix(a.boxes, gt).max() > 0.8 and iou_matrix(b.boxes, gt).max() > 0.8


class _RgbNanodet(NanodetDetector):
    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        return super().preprocess(np.ascontiguousarray(image[..., ::-1]))


class _RgbYolox(YoloxDetector):
    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        return super().preprocess(np.ascontiguousarray(image[..., ::-1]))


class _NormalisedYolox(YoloxDetector):
    """The usual torchvision recipe (RGB, /255, ImageNet mean/std) that this export does not expect."""

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        tensor, scale = super().preprocess(np.ascontiguousarray(image[..., ::-1]))
        mean = np.array([0.485, 0.456, 0.406], np.float32)[None, :, None, None]
        std = np.array([0.229, 0.224, 0.225], np.float32)[None, :, None, None]
        return ((tensor / 255 - mean) / std).astype(np.float32), scale


@pytest.mark.parametrize(
    ("name", "broken", "max_recall"),
    [("nanodet-m-320", _RgbNanodet, None), ("yolox-nano", _RgbYolox, None), ("yolox-nano", _NormalisedYolox, 0.1)],
    ids=["nanodet-rgb", "yolox-rgb", "yolox-normalised"],
)
def test_wrong_preprocessing_fails_the_floors(
    name: str,
    broken: type[Detector],
    max_recall: float | None,
    installed_models: None,
    coco_samples: list[Sample],
    coco_runs: dict[str, list[Detections]],
) -> None:
    """The accuracy test can fail: the same model fed wrongly prepared input drops below its floors."""
    spec = get_spec(name)
    detector = broken(spec, spec.path(), score_threshold=DEFAULT_THRESHOLD)
    bad = total(coco_samples, run_all(detector, coco_samples))
    good = total(coco_samples, coco_runs[name])
    min_recall, min_precision = FLOORS[name]
    print(f"\n{name} with {broken.__name__}: {bad} (correct input: {good})")
    assert bad.recall <= good.recall - 0.05, f"{bad} vs {good}"
    assert bad.recall < min_recall or bad.precision < min_precision, f"{bad} would pass the floors"
    if max_recall is not None:
        assert bad.recall < max_recall, str(bad)


def _best_match(dets: Detections, box: np.ndarray) -> float:
    return float(iou_matrix(persons(dets).boxes, box[None]).max(initial=0.0))


def test_boxes_are_in_the_input_images_pixels(model: tuple[str, Detector], coco_samples: list[Sample]) -> None:
    """Padding, cropping or scaling the input moves/scales the boxes the same way (letterbox undone)."""
    name, detector = model
    image = by_name(coco_samples, EASY_PERSON).read()  # 640x360, one person at about (227, 33, 583, 356)
    ref = persons(detector.detect(image))
    assert len(ref) == 1
    box = ref.boxes[0]
    h, w = image.shape[:2]

    left, top = 200, 120
    padded = cv2.copyMakeBorder(image, top, 80, left, 100, cv2.BORDER_CONSTANT, value=(90, 90, 90))
    shifted = box + np.array([left, top, left, top], np.float32)
    iou_pad = _best_match(detector.detect(padded), shifted)
    # 940x560 needs tiling for YOLOX (416 / 940 < 0.5): the tiled path must give frame coordinates too
    iou_pad_full = _best_match(FrameDetector(detector, "auto").detect_full(padded), shifted)

    cx, cy = 150, 20
    iou_crop = _best_match(detector.detect(image[cy:, cx:]), box - np.array([cx, cy, cx, cy], np.float32))

    doubled = cv2.resize(image, (w * 2, h * 2), interpolation=cv2.INTER_LINEAR)
    iou_double = _best_match(detector.detect(doubled), box * 2)

    for dets, (iw, ih) in ((detector.detect(padded), padded.shape[1::-1]), (detector.detect(doubled), (2 * w, 2 * h))):
        assert (dets.boxes >= 0).all() and (dets.boxes[:, 0::2] <= iw).all() and (dets.boxes[:, 1::2] <= ih).all()
    figures = f"{name}: IoU padded {iou_pad:.3f} (full {iou_pad_full:.3f}), crop {iou_crop:.3f}, 2x {iou_double:.3f}"
    print(f"\n{figures}")
    assert min(iou_pad, iou_pad_full, iou_crop, iou_double) > 0.85, figures


# ---- the CLI gives the same answer -------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trustcam.cli", *args], capture_output=True, text=True, timeout=120, cwd=cwd,
        env=os.environ.copy(),
    )


def test_cli_detect_json_matches_the_library(yolox: Detector, coco_samples: list[Sample], tmp_path: Path) -> None:
    chosen = [by_name(coco_samples, n) for n in (KNOWN_PERSON, EASY_PERSON, NEGATIVES[0])]
    result = _cli("detect", *(str(s.image_path) for s in chosen), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [rec["image"] for rec in lines] == [str(s.image_path) for s in chosen]
    frame_detector = FrameDetector(yolox, DEFAULT_TILING)
    for sample, rec in zip(chosen, lines, strict=True):
        with score_threshold(yolox, DEFAULT_THRESHOLD):
            expected = frame_detector.detect_full(sample.read()).to_json()
        assert [d["label"] for d in rec["detections"]] == [d["label"] for d in expected], rec
        for got, want in zip(rec["detections"], expected, strict=True):
            assert set(got) == {"label", "score", "box"}
            assert abs(got["score"] - want["score"]) < 2e-3
            assert np.allclose(got["box"], want["box"], atol=0.25), (got, want)
    by_image = {rec["image"]: rec["detections"] for rec in lines}
    assert any(d["label"] == "person" for d in by_image[str(chosen[0].image_path)])
    assert by_image[str(chosen[2].image_path)] == []


def test_cli_detect_missing_image_is_a_clean_error(coco_samples: list[Sample], tmp_path: Path) -> None:
    good = by_name(coco_samples, EASY_PERSON).image_path
    missing = tmp_path / "no-such-image.jpg"
    unreadable = tmp_path / "not-an-image.jpg"
    unreadable.write_text("this is not a JPEG")
    result = _cli("detect", str(good), str(missing), str(unreadable), "--json", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert any(str(missing) in line and "not found" in line for line in errors), result.stderr
    assert any(str(unreadable) in line and "not a readable image" in line for line in errors), result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [r["image"] for r in records] == [str(good)], "the good image is still reported"


def test_cli_detect_error_with_brackets_in_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "cam[/x].jpg"
    result = _cli("detect", str(missing), cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert any(line.startswith("error:") and str(missing) in line for line in result.stderr.splitlines())
