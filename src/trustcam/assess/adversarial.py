"""White-box adversarial attacks on the catalog detectors, to measure how easily someone can fool them.

The ONNX models are converted to PyTorch (onnx2torch) only to get gradients; the attacks are crafted on
that copy, with the backend's own letterbox and normalisation, and their effect is always measured on the
real pipeline (ONNX Runtime + :class:`~trustcam.vision.frame_detector.FrameDetector`). Two attacks:

* :func:`pgd`: an L∞-bounded perturbation of the whole image (Madry et al. 2018) that suppresses a class;
  it bounds what an attacker who controls the pixels (a compromised camera or stream) can hide.
* :func:`train_patch`: a printable patch worn on the torso (in the spirit of Thys et al. 2019, "Fooling
  automated surveillance cameras"), optimised over random scale/brightness/position jitter so that it is a
  physical-world threat rather than a pixel-exact trick.

torch is imported lazily, inside these functions: ``import trustcam`` works without the optional extra
``trustcam[adversarial]``, and only the attacks raise :class:`AttackUnavailable`.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np

from trustcam.vision.catalog import verify
from trustcam.vision.detections import iou_matrix
from trustcam.vision.detectors.base import Detector

if TYPE_CHECKING:
    import torch

    from trustcam.vision.frame_detector import FrameDetector

_INSTALL_HINT = "pip install 'trustcam[adversarial]' (or run `make setup`, which installs it)"
# The backends' letterbox fill (raw pixel value) and normalisation, per architecture (see onnx_models.py).
_FILL = {"yolox": 114.0, "nanodet": 0.0}
_NANODET_MEAN = (103.53, 116.28, 123.675)
_NANODET_STD = (57.375, 57.12, 58.395)
_NUM_CLASSES = 80
# Patch placement: centre of the patch on the torso, as a fraction of the box height from its top.
_TORSO_Y = 0.4


class AttackUnavailable(RuntimeError):
    """The optional attack dependencies (torch, onnx2torch) are not installed."""


def torch_available() -> bool:
    """Whether the ``adversarial`` extra is installed (checked without importing torch)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "onnx2torch", "onnx"))


def _torch() -> Any:
    """Import torch on first use, or explain how to install it."""
    if not torch_available():
        raise AttackUnavailable(f"white-box attacks need torch and onnx2torch: {_INSTALL_HINT}")
    import torch

    return torch


@contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seed torch and require deterministic kernels for the duration of one attack (restored afterwards)."""
    torch = _torch()
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def _model_file(detector: Detector) -> Path:
    """The ONNX file the detector's session loaded, re-checked against the catalog pin."""
    loaded = getattr(detector.session, "_model_path", None)
    path = Path(loaded) if isinstance(loaded, str) and Path(loaded).is_file() else detector.spec.path()
    verify(detector.spec, path)  # attack exactly the model the pipeline runs
    return path


def _area_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) weights of OpenCV's INTER_AREA shrink: each output pixel averages the source interval it
    covers, fractional pixels weighted by overlap."""
    ratio = src / dst
    weights = np.zeros((dst, src), np.float64)
    for i in range(dst):
        start, end = i * ratio, (i + 1) * ratio
        for j in range(math.floor(start), min(math.ceil(end), src)):
            weights[i, j] = max(0.0, min(end, j + 1) - max(start, j))
    return (weights / ratio).astype(np.float32)


def raw_class_scores(outputs: Sequence[Any], architecture: str, class_id: int = 0) -> Any:
    """Per-anchor scores of ``class_id`` from a model's raw outputs (NumPy arrays or torch tensors), exactly as
    the backend's postprocess scores them: YOLOX objectness × class probability, NanoDet the sigmoid score."""
    if architecture == "yolox":
        out = outputs[0].reshape(-1, 5 + _NUM_CLASSES)
        return out[:, 4] * out[:, 5 + class_id]
    if architecture == "nanodet":
        # outputs by position: cls_8, cls_16, cls_32, then the three DFL regressions
        return [o.reshape(-1, _NUM_CLASSES)[:, class_id] for o in outputs[:3]]
    raise ValueError(f"unknown architecture {architecture!r}")


def onnx_class_scores(detector: Detector, image: np.ndarray, class_id: int = 0) -> np.ndarray:
    """Per-anchor ``class_id`` scores of the real ONNX model (backend letterbox), for evaluation."""
    tensor, _ = detector.preprocess(image)
    scores = raw_class_scores(detector.run_raw(tensor), detector.spec.architecture, class_id)
    return np.concatenate(scores) if isinstance(scores, list) else np.asarray(scores)


class DifferentiableDetector:
    """A catalog detector as a differentiable PyTorch function (onnx2torch), with the SAME letterbox and
    normalisation as the ONNX backend, so gradients point where the real model is sensitive."""

    def __init__(self, detector: Detector) -> None:
        torch = _torch()
        import onnx2torch

        self.detector = detector
        self.architecture = detector.spec.architecture
        if self.architecture not in _FILL:
            raise ValueError(f"no differentiable pre-processing for architecture {self.architecture!r}")
        self.input_size = detector.input_size
        self.model = onnx2torch.convert(str(_model_file(detector))).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)  # gradients are wanted w.r.t. the image only (and it is cheaper)
        self._fill = _FILL[self.architecture]
        self._mean = torch.tensor(_NANODET_MEAN).view(3, 1, 1)
        self._std = torch.tensor(_NANODET_STD).view(3, 1, 1)
        self._area_cache: dict[tuple[int, int], torch.Tensor] = {}

    def letterbox_scale(self, height: int, width: int) -> float:
        """Image pixels → model pixels, as the backend's letterbox computes it."""
        return min(self.input_size / height, self.input_size / width)

    def anchor_centres(self) -> np.ndarray:
        """(N, 2) anchor-cell centres in model pixels, in the order of :meth:`scores_from_input`."""
        offset = 0.5 if self.architecture == "nanodet" else 0.0
        centres = []
        for stride in (8, 16, 32):
            n = self.input_size // stride
            ys, xs = np.mgrid[0:n, 0:n]
            centres.append((np.stack([xs.ravel(), ys.ravel()], axis=1) + offset) * stride)
        return np.concatenate(centres).astype(np.float32)

    def _resize(self, image: torch.Tensor, nh: int, nw: int, scale: float) -> torch.Tensor:
        """cv2.resize as the backend calls it: INTER_AREA below half size, else bilinear (half-pixel centres)."""
        torch = _torch()
        h, w = image.shape[-2:]
        if (nh, nw) == (h, w):
            return image
        if scale >= 0.5:
            return torch.nn.functional.interpolate(
                image[None], size=(nh, nw), mode="bilinear", align_corners=False
            )[0]
        rows = self._area(h, nh)
        cols = self._area(w, nw)
        return torch.einsum("ih,chw,jw->cij", rows, image, cols)

    def _area(self, src: int, dst: int) -> torch.Tensor:
        key = (src, dst)
        if key not in self._area_cache:
            self._area_cache[key] = _torch().from_numpy(_area_matrix(src, dst))
        return self._area_cache[key]

    def model_input(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) float BGR 0..255 → the (1, 3, S, S) model tensor, differentiably (backend letterbox:
        top-left, constant fill, then NanoDet's mean/std). Unlike the backend, resized pixels are not
        rounded to uint8: the gradient must flow."""
        torch = _torch()
        size = self.input_size
        h, w = image.shape[-2:]
        scale = min(size / h, size / w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = self._resize(image, nh, nw, scale)
        canvas = torch.nn.functional.pad(resized, (0, size - nw, 0, size - nh), value=self._fill)
        if self.architecture == "nanodet":
            canvas = (canvas - self._mean) / self._std
        return canvas[None]

    def scores_from_input(self, tensor: torch.Tensor, class_id: int = 0) -> torch.Tensor:
        """Per-anchor ``class_id`` scores (N,) for an already pre-processed (1, 3, S, S) tensor."""
        torch = _torch()
        with warnings.catch_warnings():
            # onnx2torch's Slice indexes with a list, which torch deprecates; harmless for these graphs
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
            outputs = self.model(tensor)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        scores = raw_class_scores(outputs, self.architecture, class_id)
        return torch.cat(scores) if isinstance(scores, list) else scores

    def class_scores(self, image: torch.Tensor, class_id: int = 0) -> torch.Tensor:
        """Per-anchor scores (N,) of ``class_id`` for a (3, H, W) float BGR 0..255 image at its original size."""
        return self.scores_from_input(self.model_input(image), class_id)


@dataclass(frozen=True)
class AttackConfig:
    """An L∞ PGD attack that hides one class. ``eps`` and ``step_size`` are in pixel levels (0..255)."""

    eps: float = 8.0
    steps: int = 10
    step_size: float | None = None  # default 2.5 * eps / steps (Madry et al.): can cross the ball and back
    seed: int = 0
    class_id: int = 0  # person
    # The loss sums, over every anchor, how far its score is above `floor`: all anchors that could become a
    # detection (the pipeline keeps ≥ 0.3, then NMS) are pushed down together, not just the strongest one.
    floor: float = 0.05

    def __post_init__(self) -> None:
        if self.eps < 0 or self.steps < 0:
            raise ValueError(f"eps and steps must be ≥ 0, got eps={self.eps}, steps={self.steps}")

    @property
    def alpha(self) -> float:
        return 2.5 * self.eps / max(self.steps, 1) if self.step_size is None else self.step_size


def suppression_loss(scores: torch.Tensor, floor: float) -> torch.Tensor:
    """Sum of the scores' excess over ``floor``: zero only when no anchor is anywhere near a detection.

    Chosen over the max score (pushes one anchor at a time; a neighbour then takes over), a top-k mean and
    the plain sum (spends the budget on thousands of hopeless anchors): on 12 coco128 person images at
    eps 4, 10 steps, yolox recall fell to 0.00 with it vs 0.18 (max), 0.00 (top-50 mean) and 0.03 (sum),
    and it is the cheapest, as the attack stops once the loss is 0."""
    return (scores - floor).clamp(min=0).sum()


def _to_chw(image: np.ndarray) -> torch.Tensor:
    torch = _torch()
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a BGR uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()


def pgd(model: DifferentiableDetector, image: np.ndarray, config: AttackConfig) -> np.ndarray:
    """Projected gradient descent from a seeded random start in the eps-ball; returns the BGR uint8 image
    (same size) with the lowest :func:`suppression_loss` seen, and ‖adv − image‖∞ ≤ floor(eps).

    It attacks the whole-frame letterbox; frames more than 2× the model side are also tiled by the
    pipeline ("auto"), which this gradient does not see (coco128's 640-pixel images are not tiled).
    """
    torch = _torch()
    clean = _to_chw(image)
    eps, alpha = float(config.eps), float(config.alpha)
    # integer bounds, so that rounding to uint8 can never leave the ball
    low = (clean - math.floor(eps)).clamp(0, 255)
    high = (clean + math.floor(eps)).clamp(0, 255)
    with _deterministic(config.seed):
        generator = torch.Generator().manual_seed(config.seed)
        start = (torch.rand(clean.shape, generator=generator) * 2 - 1) * eps
        adv = torch.minimum(torch.maximum(clean + start, low), high)
        best, best_loss = adv.detach().clone(), math.inf
        for step in range(config.steps + 1):
            adv.requires_grad_(True)
            loss = suppression_loss(model.class_scores(adv, config.class_id), config.floor)
            if loss.item() < best_loss:
                best, best_loss = adv.detach().clone(), loss.item()
            if step == config.steps or best_loss == 0.0:
                break
            (grad,) = torch.autograd.grad(loss, adv)
            with torch.no_grad():
                adv = torch.minimum(torch.maximum(adv - alpha * grad.sign(), low), high)
    out = torch.minimum(torch.maximum(best.round(), low), high)
    return np.ascontiguousarray(out.to(torch.uint8).numpy().transpose(1, 2, 0))


def uniform_noise(image: np.ndarray, eps: float, seed: int) -> np.ndarray:
    """Control for :func:`pgd`: uniform random noise in the same L∞ ball (what a bad sensor could do)."""
    rng = np.random.default_rng(seed)
    e = math.floor(eps)
    noise = rng.integers(-e, e + 1, size=image.shape)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------
# Patch


def patch_placement(box: Sequence[float], scale: float) -> tuple[float, float, float]:
    """Patch centre (x, y) and side for a person box: side = ``scale`` × box height (no wider than the box),
    centred horizontally, on the torso vertically."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    side = min(scale * h, w)
    return (x1 + x2) / 2, y1 + _TORSO_Y * h, side


def _clip_square(cx: float, cy: float, side: float, width: int, height: int) -> tuple[int, int, int] | None:
    """Integer top-left and side of the patch, kept inside the image (None if it would be < 2 px)."""
    s = round(min(side, width, height))
    if s < 2:
        return None
    x0 = round(min(max(cx - s / 2, 0), width - s))
    y0 = round(min(max(cy - s / 2, 0), height - s))
    return x0, y0, s


def apply_patch(image: np.ndarray, person_boxes: np.ndarray, patch: np.ndarray, scale: float = 0.25) -> np.ndarray:
    """Paste ``patch`` on every person box with :func:`train_patch`'s geometry (no jitter); returns a copy."""
    out = image.copy()
    height, width = image.shape[:2]
    for box in np.asarray(person_boxes, np.float64).reshape(-1, 4):
        placed = _clip_square(*patch_placement(box, scale), width, height)
        if placed is None:
            continue
        x0, y0, s = placed
        interp = cv2.INTER_AREA if s < patch.shape[0] else cv2.INTER_LINEAR
        out[y0 : y0 + s, x0 : x0 + s] = cv2.resize(patch, (s, s), interpolation=interp)
    return out


def random_patch(size: int, seed: int) -> np.ndarray:
    """Control for :func:`train_patch`: uniform noise of the same size (shows what mere occlusion does)."""
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def total_variation(patch: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbours: low for smooth patches, which survive printing."""
    dx = (patch[:, :, 1:] - patch[:, :, :-1]).abs().mean()
    dy = (patch[:, 1:, :] - patch[:, :-1, :]).abs().mean()
    return dx + dy


def _paste(image: torch.Tensor, patch: torch.Tensor, box: Sequence[float], scale: float,
           rng: np.random.Generator) -> torch.Tensor:
    """Differentiably paste a jittered copy of ``patch`` (3, P, P, values 0..1) on one box of ``image``."""
    torch = _torch()
    height, width = image.shape[-2:]
    cx, cy, side = patch_placement(box, scale)
    x1, y1, x2, y2 = box
    side *= rng.uniform(0.8, 1.2)
    cx += rng.uniform(-0.05, 0.05) * (x2 - x1)
    cy += rng.uniform(-0.05, 0.05) * (y2 - y1)
    placed = _clip_square(cx, cy, side, width, height)
    if placed is None:
        return image
    x0, y0, s = placed
    # lighting and camera: contrast, brightness, sensor noise (Thys et al. use the same three)
    jittered = patch * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1)
    noise = torch.from_numpy(rng.uniform(-0.05, 0.05, size=tuple(patch.shape)).astype(np.float32))
    jittered = (jittered + noise).clamp(0, 1) * 255
    resized = torch.nn.functional.interpolate(
        jittered[None], size=(s, s), mode="bilinear", align_corners=False, antialias=s < patch.shape[-1]
    )[0]
    out = image.clone()
    out[:, y0 : y0 + s, x0 : x0 + s] = resized
    return out


def _box_masks(model: DifferentiableDetector, image_shape: tuple[int, ...], boxes: np.ndarray) -> np.ndarray:
    """(B, N) bool: which anchors have their cell centre inside each box (boxes with none are dropped)."""
    centres = model.anchor_centres() / model.letterbox_scale(*image_shape[:2])
    x, y = centres[None, :, 0], centres[None, :, 1]
    inside = (x >= boxes[:, :1]) & (x <= boxes[:, 2:3]) & (y >= boxes[:, 1:2]) & (y <= boxes[:, 3:4])
    return inside[inside.any(axis=1)]


def train_patch(model: DifferentiableDetector, images: Sequence[np.ndarray], person_boxes: Sequence[np.ndarray], *,
                size: int = 64, steps: int = 200, scale: float = 0.25, seed: int = 0, lr: float = 0.03,
                batch: int = 2, tv_weight: float = 2.5, class_id: int = 0,
                objective: Literal["box-max", "image-max"] = "box-max") -> np.ndarray:
    """Optimise a (size, size, 3) BGR uint8 patch that, worn on the torso of every person box, minimises the
    ``class_id`` score, plus ``tv_weight`` × total variation for printability.

    ``objective`` "image-max" is Thys et al.'s: the highest score anywhere in the image, which only ever
    pushes on the most confident person. "box-max" (default) averages, over the person boxes, the highest
    score of the anchors centred in each box, so every wearer is hidden; it roughly doubles the recall drop
    on multi-person coco128 images for the same step budget.

    Each step draws a mini-batch of ``batch`` images and new scale/position/brightness/noise jitter
    (expectation over transformation), so the patch cannot rely on an exact pixel alignment. Adam with
    ``lr`` on patch values in 0..1, starting from :func:`random_patch` (the control) of the same seed.
    """
    torch = _torch()
    if len(images) != len(person_boxes):
        raise ValueError(f"{len(images)} images but {len(person_boxes)} box arrays")
    if objective not in ("box-max", "image-max"):
        raise ValueError(f"objective must be 'box-max' or 'image-max', got {objective!r}")
    boxes = [np.asarray(b, np.float64).reshape(-1, 4) for b in person_boxes]
    usable = [i for i, b in enumerate(boxes) if len(b)]
    if not usable:
        raise ValueError("train_patch needs at least one image with a person box")
    tensors = {i: _to_chw(images[i]) for i in usable}
    masks = {
        i: torch.from_numpy(_box_masks(model, images[i].shape, boxes[i])) for i in usable if objective == "box-max"
    }
    rng = np.random.default_rng(seed)
    with _deterministic(seed):
        init = random_patch(size, seed).transpose(2, 0, 1).astype(np.float32) / 255
        patch = torch.from_numpy(init).requires_grad_(True)
        optimiser = torch.optim.Adam([patch], lr=lr)
        order: list[int] = []
        for _ in range(steps):
            chosen = []
            for _ in range(min(batch, len(usable))):
                if not order:  # epochs in a seeded random order
                    order = [usable[j] for j in rng.permutation(len(usable))]
                chosen.append(order.pop())
            optimiser.zero_grad()
            loss = tv_weight * total_variation(patch)
            for i in chosen:
                image = tensors[i]
                for box in boxes[i]:
                    image = _paste(image, patch, box, scale, rng)
                scores = model.class_scores(image, class_id)
                mask = masks.get(i)
                if mask is not None and len(mask):
                    term = torch.where(mask, scores[None], 0.0).amax(dim=1).mean()
                else:
                    term = scores.max()
                loss = loss + term / len(chosen)
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                patch.clamp_(0, 1)
    return np.ascontiguousarray((patch.detach() * 255).round().to(torch.uint8).numpy().transpose(1, 2, 0))


# ---------------------------------------------------------------------------------------------------------
# Evaluation through the real pipeline


def detection_recall(frame_detector: FrameDetector, images: Sequence[np.ndarray], gt_boxes: Sequence[np.ndarray],
                     *, class_id: int = 0, threshold: float = 0.3, iou: float = 0.5) -> float:
    """Recall of ``class_id`` through ``frame_detector.detect_full`` (the pipeline's own strategy): detections
    ≥ ``threshold`` matched greedily, best score first, to ground truth at IoU ≥ ``iou``."""
    tp = total = 0
    for image, gt in zip(images, gt_boxes, strict=True):
        gt = np.asarray(gt, np.float32).reshape(-1, 4)
        total += len(gt)
        dets = frame_detector.detect_full(image)
        keep = (dets.class_ids == class_id) & (dets.scores >= threshold)
        boxes, scores = dets.boxes[keep], dets.scores[keep]
        if not len(boxes) or not len(gt):
            continue
        ious = iou_matrix(boxes[np.argsort(-scores, kind="stable")].astype(np.float32), gt)
        used = np.zeros(len(gt), bool)
        for row in ious:
            candidates = np.where(used, -1.0, row)
            if candidates.max() >= iou:
                used[int(candidates.argmax())] = True
                tp += 1
    return tp / total if total else 0.0
