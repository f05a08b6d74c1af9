"""The detector interface: one BGR image in, :class:`Detections` in that image's pixels out.

Each backend only says how to turn an image into the model's tensor and the model's outputs into boxes;
loading (with the integrity check), threading and timing live here once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from trustcam.vision.catalog import ModelSpec, verify
from trustcam.vision.detections import Detections, nms


class Detector(ABC):
    """An ONNX Runtime object detector for square inputs of ``input_size`` pixels."""

    nms_iou: float = 0.45

    def __init__(self, spec: ModelSpec, path: Path, threads: int = 1, score_threshold: float = 0.3) -> None:
        verify(spec, path)
        self.spec = spec
        self.name = spec.name
        self.sha256 = spec.sha256
        self.input_size = spec.input_size
        self.score_threshold = score_threshold
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.calls = 0

    def detect(self, image: np.ndarray, score_threshold: float | None = None) -> Detections:
        """Detect objects in a BGR uint8 image of any size (letterboxed to the model input)."""
        threshold = self.score_threshold if score_threshold is None else score_threshold
        tensor, scale = self.preprocess(image)
        outputs = self.session.run(None, {self.input_name: tensor})
        self.calls += 1
        return self._finish(self.postprocess(outputs, scale, threshold), image)

    @property
    def batchable(self) -> bool:
        """True when the model's batch dimension is dynamic, so several inputs can go through one ``run`` call.
        The bundled models are exported with batch 1, so for them :meth:`detect_batch` loops."""
        batch = self.session.get_inputs()[0].shape[0]
        return not isinstance(batch, int)

    def detect_batch(self, images: Sequence[np.ndarray],
                     score_thresholds: Sequence[float | None] | None = None) -> list[Detections]:
        """Detect in several images: one NCHW model call when the batch dimension is dynamic, else one call each
        (same results either way; batching only amortises the per-call overhead)."""
        thresholds = list(score_thresholds) if score_thresholds is not None else [None] * len(images)
        if len(images) <= 1 or not self.batchable:
            return [self.detect(image, t) for image, t in zip(images, thresholds, strict=True)]
        prepared = [self.preprocess(image) for image in images]
        outputs = self.session.run(None, {self.input_name: np.concatenate([t for t, _ in prepared])})
        self.calls += len(images)
        results = []
        for i, (image, (_, scale), t) in enumerate(zip(images, prepared, thresholds, strict=True)):
            threshold = self.score_threshold if t is None else t
            results.append(self._finish(self.postprocess([o[i : i + 1] for o in outputs], scale, threshold), image))
        return results

    def _finish(self, dets: Detections, image: np.ndarray) -> Detections:
        """Clip to the image and suppress overlaps (the common tail of every backend)."""
        if len(dets):
            h, w = image.shape[:2]
            np.clip(dets.boxes[:, 0::2], 0, w, out=dets.boxes[:, 0::2])
            np.clip(dets.boxes[:, 1::2], 0, h, out=dets.boxes[:, 1::2])
        return nms(dets, self.nms_iou)

    def run_raw(self, tensor: np.ndarray) -> list[np.ndarray]:
        """The bare ``InferenceSession.run`` (benchmarks compare :meth:`detect` against it)."""
        return self.session.run(None, {self.input_name: tensor})

    @abstractmethod
    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Return the (1, 3, S, S) float32 tensor and the scale from image pixels to model pixels."""

    @abstractmethod
    def postprocess(self, outputs: list[np.ndarray], scale: float, threshold: float) -> Detections:
        """Decode raw outputs to boxes in image pixels (before NMS)."""
