"""The INT8 build script's model: a NanoDet quantised on a few real coco128 images, signed into a model folder of
its own and loaded through the project's loader (signature + sha256 checks), must still find the person the
FP32 model finds, at about the same place; and the same inputs must rebuild the same bytes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from trustcam.vision import catalog
from trustcam.vision.detections import iou_matrix
from trustcam.vision.detectors import Detector, load_detector
from trustcam.vision.quantize import QuantizeOptions, calibration_images, head_nodes, quantize_model

REPO = Path(__file__).resolve().parents[2]
MODEL = "nanodet-m-320"
EASY_PERSON = "000000000428.jpg"  # one large person; both FP32 models score it > 0.8 (test_detectors.py)
PERSON = 0


@pytest.fixture(scope="module")
def int8(installed_models: None, coco_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8") / f"{MODEL}-int8.onnx"
    spec = catalog.get_spec(MODEL)
    quantize_model(spec, spec.path(), out, coco_root / "images", QuantizeOptions(images=6, seed=1))
    return out


def best_person(detector: Detector, image: np.ndarray) -> np.ndarray:
    dets = detector.detect(image)
    persons = np.flatnonzero(dets.class_ids == PERSON)
    assert len(persons), f"{detector.name}: no person found"
    return dets.boxes[persons[np.argmax(dets.scores[persons])]]


def test_int8_nanodet_loads_through_the_catalog_and_finds_the_person_where_fp32_does(
        int8: Path, nanodet: Detector, coco_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = onnx.load(str(int8))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops, "not a QDQ-quantised model"
    assert sum(i.data_type == onnx.TensorProto.INT8 for i in model.graph.initializer) > 20, "weights not in INT8"
    assert int8.stat().st_size < catalog.get_spec(MODEL).size / 2  # INT8 weights: well under half of FP32

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # a signing key of its own
    models = tmp_path / "models"
    spec = catalog.spec_for_file(int8, "nanodet", f"{MODEL}-int8")
    catalog.register_local(spec, int8, models)
    detector = load_detector(f"{MODEL}-int8", model_dir=models)

    image = cv2_read(coco_root / "images" / EASY_PERSON)
    fp32_box, int8_box = best_person(nanodet, image), best_person(detector, image)
    iou = float(iou_matrix(fp32_box[None], int8_box[None])[0, 0])
    assert iou > 0.5, f"INT8 person box {int8_box} is far from FP32's {fp32_box} (IoU {iou:.2f})"


def test_the_output_head_stays_float_and_the_build_is_reproducible(int8: Path, coco_root: Path,
                                                                   tmp_path: Path) -> None:
    model = onnx.load(str(int8))
    producers = {o: n for n in model.graph.node for o in n.output}
    for output in model.graph.output:  # the head is left float: no DequantizeLinear right before an output
        assert producers[output.name].op_type != "DequantizeLinear", output.name
    assert head_nodes(model), "no head found"

    again = tmp_path / "again.onnx"
    spec = catalog.get_spec(MODEL)
    quantize_model(spec, spec.path(), again, coco_root / "images", QuantizeOptions(images=6, seed=1))
    assert again.read_bytes() == int8.read_bytes(), "same model, images and seed gave different bytes"


def test_calibration_choice_is_seeded_and_sorted(coco_root: Path) -> None:
    first = calibration_images(coco_root / "images", 8, seed=3)
    assert first == calibration_images(coco_root / "images", 8, seed=3) == sorted(first)
    assert first != calibration_images(coco_root / "images", 8, seed=4)
    assert len(calibration_images(coco_root / "images", 10_000)) == len(list((coco_root / "images").rglob("*.jpg")))


def test_the_script_refuses_a_missing_calibration_folder(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "quantize_models.py"), "--models", MODEL,
                           "--calibration", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "calibration folder not found" in done.stderr and "--calibration" in done.stderr
    assert not (tmp_path / "out").exists()


def cv2_read(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return image
