"""Static INT8 quantisation of the bundled detectors, calibrated on real images through each backend's own
pre-processing.

Why calibrate through the backend: the activation ranges ONNX Runtime records are only right if the calibration
tensors are exactly what the detector feeds at run time (YOLOX takes raw 0..255 BGR letterboxed with 114,
NanoDet mean/std-normalised BGR padded with 0); any other pre-processing gives ranges that clip real inputs.

Why the output head stays in float by default: the last convolutions produce box offsets and logits that the
post-processing exponentiates, and they are a few small convolutions, so INT8 saves little there. Measured on
coco128 (person recall at 0.3): quantising them too changed little (NanoDet 0.563 -> 0.555, YOLOX 0.457 ->
0.461), so ``keep_head_float`` is a cheap safety margin rather than a necessity.

The result is not promoted by this module: ``trustcam models promote`` decides, condition by condition.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnx.version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from trustcam.vision.catalog import ModelError, ModelSpec, sha256_of
from trustcam.vision.detectors.base import Detector
from trustcam.vision.detectors.onnx_models import load_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def calibration_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` images of ``folder`` (searched recursively), chosen by ``seed`` from the sorted list and returned
    sorted: the same folder, count and seed always give the same images in the same order (reproducible builds)."""
    if not folder.is_dir():
        raise ModelError(f"{folder}: calibration folder not found; give --calibration a folder of images "
                         "(e.g. ../shared/data/coco128-train)")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise ModelError(f"{folder}: no .jpg/.png images to calibrate with; point --calibration at an image folder")
    if count >= len(found):
        return found
    return sorted(random.Random(seed).sample(found, count))


class BackendCalibration(CalibrationDataReader):
    """Feeds ONNX Runtime's calibrator the tensors ``detector.preprocess`` makes from each image."""

    def __init__(self, detector: Detector, images: Sequence[Path]) -> None:
        self._detector = detector
        self._images = list(images)
        self._iter: Iterator[dict[str, np.ndarray]] | None = None

    def _tensors(self) -> Iterator[dict[str, np.ndarray]]:
        for path in self._images:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise ModelError(f"{path}: unreadable image in the calibration set; remove it or fix it")
            yield {self._detector.input_name: self._detector.preprocess(image)[0]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = self._tensors()
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = None


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes from the last convolution(s) to the outputs: walk back from each graph output through
    non-Conv nodes and stop at (and include) the first Conv on each path."""
    producer = {out: node for node in model.graph.node for out in node.output}
    head: dict[str, onnx.NodeProto] = {}
    pending = [o.name for o in model.graph.output]
    while pending:
        node = producer.get(pending.pop())
        if node is None or node.name in head:
            continue
        head[node.name] = node
        if node.op_type != "Conv":
            pending.extend(node.input)
    return sorted(head)


def _at_least_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """Per-channel DequantizeLinear (its ``axis``) needs opset 13; both bundled models are older (11, 12)."""
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), version)
    return model if current >= version else onnx.version_converter.convert_version(model, version)


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node a stable name: exclusion lists refer to nodes by name."""
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"


@dataclass(frozen=True)
class QuantizeOptions:
    images: int = 64
    seed: int = 0
    per_channel: bool = True
    keep_head_float: bool = True
    method: str = "minmax"  # minmax, entropy or percentile
    exclude: tuple[str, ...] = ()  # further node names to keep in float


_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    sha256: str
    size: int
    calibration: list[Path]
    kept_float: list[str]


def quantize_model(spec: ModelSpec, source: Path, target: Path, calibration: Path,
                   options: QuantizeOptions = QuantizeOptions()) -> QuantizeResult:
    """Write the static INT8 (QDQ, signed weights, unsigned activations) version of ``source`` to ``target``."""
    if options.method not in _METHODS:
        raise ModelError(f"calibration method '{options.method}' is unknown; use one of {', '.join(_METHODS)}")
    images = calibration_images(calibration, options.images, options.seed)
    detector = load_file(spec, source)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="trustcam-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference + constant folding first, as ORT recommends: fewer nodes left unquantised for lack of
        # a known shape (NanoDet's Shape/Gather/Reshape chains fold away)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
        model = _at_least_opset(onnx.load(str(prepared)), 13)
        _name_nodes(model)
        onnx.save(model, str(prepared))
        excluded = [*(head_nodes(model) if options.keep_head_float else []), *options.exclude]
        quantize_static(
            str(prepared), str(target), BackendCalibration(detector, images),
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            per_channel=options.per_channel, nodes_to_exclude=excluded,
            calibrate_method=_METHODS[options.method],
            extra_options={"CalibTensorRangeSymmetric": False},
        )
    return QuantizeResult(target, sha256_of(target), target.stat().st_size, images, excluded)
