"""The detector interface: one BGR image in, :class:`Detections` in that image's pixels out.

Each backend only says how to turn an image into the model's tensor and the model's outputs into boxes;
loading (with the integrity check), threading and timing live here once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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
        dets = self.postprocess(outputs, scale, threshold)
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
