"""The two bundled, architecturally different detectors (see ../shared/models/*/PROVENANCE.md).

Two independent models are the basis of failover and of cross-checking a fooled model later on.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from trustcam.vision.catalog import ModelSpec, get_spec, require_signature
from trustcam.vision.detections import Detections
from trustcam.vision.detectors.base import Detector


def letterbox(image: np.ndarray, size: int, fill: int) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio and paste at the top-left of a ``size`` square canvas."""
    h, w = image.shape[:2]
    scale = min(size / h, size / w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else image
    if (nw, nh) == (size, size):
        return np.ascontiguousarray(resized), scale
    canvas = np.full((size, size, 3), fill, np.uint8)
    canvas[:nh, :nw] = resized
    return canvas, scale


def chw_float(image: np.ndarray) -> np.ndarray:
    """HWC uint8 → contiguous CHW float32 (splitting planes first is faster than a strided transpose)."""
    return np.stack(cv2.split(image)).astype(np.float32)


def _grid(size: int, strides: tuple[int, ...], offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres (N, 2) and strides (N,) for feature maps in stride order, row-major."""
    centres, stride_col = [], []
    for s in strides:
        n = size // s
        ys, xs = np.mgrid[0:n, 0:n]
        centres.append(np.stack([xs.ravel(), ys.ravel()], axis=1) + offset)
        stride_col.append(np.full(n * n, s))
    return np.concatenate(centres).astype(np.float32), np.concatenate(stride_col).astype(np.float32)


class YoloxDetector(Detector):
    """YOLOX-nano: raw BGR 0..255 input letterboxed with grey 114; outputs (1, N, 85)."""

    nms_iou = 0.45

    def __init__(self, spec: ModelSpec, path: Path, threads: int = 1, score_threshold: float = 0.3) -> None:
        super().__init__(spec, path, threads, score_threshold)
        self._cells, self._strides = _grid(self.input_size, (8, 16, 32), 0.0)

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        canvas, scale = letterbox(image, self.input_size, 114)
        return chw_float(canvas)[None], scale

    def postprocess(self, outputs: list[np.ndarray], scale: float, threshold: float) -> Detections:
        out = outputs[0][0]
        cls_scores = out[:, 5:] * out[:, 4:5]
        class_ids = cls_scores.argmax(1)
        scores = cls_scores[np.arange(len(out)), class_ids]
        keep = scores >= threshold
        if not keep.any():
            return Detections.empty()
        o, cells, strides = out[keep], self._cells[keep], self._strides[keep, None]
        centre = (o[:, :2] + cells) * strides
        half = np.exp(o[:, 2:4]) * strides / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1) / scale
        return Detections(boxes.astype(np.float32), scores[keep].astype(np.float32), class_ids[keep])


class NanodetDetector(Detector):
    """NanoDet-m 320 (GFL head): mean/std-normalised BGR; cls and DFL regression outputs per stride."""

    nms_iou = 0.6
    _mean = np.array([103.53, 116.28, 123.675], np.float32)
    _inv_std = 1.0 / np.array([57.375, 57.12, 58.395], np.float32)

    def __init__(self, spec: ModelSpec, path: Path, threads: int = 1, score_threshold: float = 0.3) -> None:
        super().__init__(spec, path, threads, score_threshold)
        self._cells, self._strides = _grid(self.input_size, (8, 16, 32), 0.5)
        self._bins = np.arange(8, dtype=np.float32)

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        canvas, scale = letterbox(image, self.input_size, 0)
        # the reference pads raw pixels with 0 (so padding is -mean/std after normalising), as here
        x = chw_float(canvas)
        x -= self._mean[:, None, None]
        x *= self._inv_std[:, None, None]
        return x[None], scale

    def postprocess(self, outputs: list[np.ndarray], scale: float, threshold: float) -> Detections:
        # Outputs by position (their names are wrong): cls_8, cls_16, cls_32, reg_8, reg_16, reg_32.
        cls = np.concatenate([o.reshape(-1, 80) for o in outputs[:3]])
        reg = np.concatenate([o.reshape(-1, 32) for o in outputs[3:6]])
        class_ids = cls.argmax(1)
        scores = cls[np.arange(len(cls)), class_ids]
        keep = scores >= threshold
        if not keep.any():
            return Detections.empty()
        logits = reg[keep].reshape(-1, 4, 8)
        logits = np.exp(logits - logits.max(axis=2, keepdims=True))
        dist = (logits / logits.sum(axis=2, keepdims=True)) @ self._bins  # (K, 4): l, t, r, b in stride units
        strides = self._strides[keep, None]
        centre = self._cells[keep] * strides
        d = dist * strides
        boxes = np.concatenate([centre - d[:, :2], centre + d[:, 2:]], axis=1)
        np.clip(boxes, 0, self.input_size, out=boxes)
        return Detections((boxes / scale).astype(np.float32), scores[keep].astype(np.float32), class_ids[keep])


_BACKENDS: dict[str, type[Detector]] = {"yolox": YoloxDetector, "nanodet": NanodetDetector}


def load_detector(
    name: str, *, model_dir: Path | None = None, threads: int = 1, score_threshold: float = 0.3
) -> Detector:
    """Load catalog model ``name`` after checking its entry's signature and its sha256 (raises ModelError if the
    entry is unsigned or altered, or the file absent or altered)."""
    spec = get_spec(name, model_dir)
    require_signature(spec, model_dir)
    return _BACKENDS[spec.architecture](spec, spec.path(model_dir), threads, score_threshold)


def load_file(spec: ModelSpec, path: Path, *, threads: int = 1, score_threshold: float = 0.3) -> Detector:
    """Load a model file pinned by ``spec`` (a candidate not yet in the catalog)."""
    return _BACKENDS[spec.architecture](spec, path, threads, score_threshold)


def dynamic_batch_copy(spec: ModelSpec, source: Path, target: Path) -> ModelSpec:
    """Write a copy of a YOLOX model with a dynamic batch dimension and return its spec (new sha256).

    The bundled exports fix batch at 1 (input (1, 3, S, S) and three Reshapes to (1, 85, -1)), so
    :meth:`Detector.detect_batch` loops over them; this copy (same weights, batch-agnostic Reshapes) lets
    bench/detector_batch.py and the tests measure and check one NCHW call. Not a catalog model: it is
    unsigned and never runs on a camera. Needs the ``onnx`` package (``pip install '.[adversarial]'``).
    """
    import dataclasses

    import onnx
    from onnx import numpy_helper

    from trustcam.vision.catalog import sha256_of, verify

    if spec.architecture != "yolox":
        raise ValueError(f"{spec.name}: only YOLOX exports can be given a dynamic batch here, not {spec.architecture}")
    verify(spec, source)
    model = onnx.load(str(source))
    values = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        shape = values.get(node.input[1]) if node.op_type == "Reshape" else None
        if shape is not None:
            dims = numpy_helper.to_array(shape).copy()
            if dims[0] == 1:
                dims[0] = 0  # 0 = copy the input's dimension: the batch
                shape.CopyFrom(numpy_helper.from_array(dims, shape.name))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]  # the export's intermediate shapes say batch 1; ONNX Runtime infers them again
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return dataclasses.replace(spec, sha256=sha256_of(target), size=target.stat().st_size)
