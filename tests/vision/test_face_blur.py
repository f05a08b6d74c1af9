"""Face blurring on real photos: every face YuNet finds is made unrecognisable (no detail left, YuNet no longer finds
it), the rest of the picture is untouched, who must see faces blurred, and the fail-closed path (no detector: the
whole frame is blurred)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from trustcam.config.schema import CameraConfig
from trustcam.vision import catalog, face_blur
from trustcam.vision.faces import YUNET, FaceRecognizer, load_image
from trustcam.vision.privacy import ORIGINAL, Redaction, apply_redaction, redact_jpeg, redaction

MASK = ((0.0, 0.0), (0.2, 0.0), (0.2, 0.2), (0.0, 0.2))


@dataclass(frozen=True)
class Someone:
    unmasked: bool = False
    biometrics: bool = False


@pytest.fixture(scope="module")
def recognizer() -> FaceRecognizer:
    catalog.install(catalog.ASSETS[YUNET], allow_download=False)  # as `make models` does, from ../shared/models
    face_blur.reset()
    return FaceRecognizer()


@pytest.fixture(scope="module")
def couple(data_dir: Path) -> np.ndarray:
    return load_image(data_dir / "faces" / "knn_examples" / "test" / "kit_with_rose.jpg")


def sharpness(image: np.ndarray, box: tuple[float, ...]) -> float:
    x1, y1, x2, y2 = (round(v) for v in box)
    return float(cv2.Laplacian(cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def test_every_face_is_blurred_beyond_recognition(recognizer: FaceRecognizer, couple: np.ndarray) -> None:
    faces = recognizer.faces_in(couple)
    assert len(faces) == 2
    blurred = face_blur.blur_faces(couple)
    assert blurred.shape == couple.shape and not np.array_equal(blurred, couple)
    for face in faces:
        assert sharpness(blurred, face.box) < 0.02 * sharpness(couple, face.box)
    assert recognizer.faces_in(blurred) == []  # not even a detector finds a face there any more
    ok, jpeg = cv2.imencode(".jpg", blurred, [cv2.IMWRITE_JPEG_QUALITY, 90])  # as it is served
    assert ok and recognizer.faces_in(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)) == []
    untouched = np.ones(couple.shape[:2], bool)  # outside the enlarged boxes the picture is left alone
    for x1, y1, x2, y2 in face_blur.face_boxes(couple) or []:
        untouched[y1:y2, x1:x2] = False
    assert np.array_equal(blurred[untouched], couple[untouched])


def test_the_box_is_enlarged_and_clipped_to_the_image() -> None:
    assert face_blur.enlarge((100, 100, 200, 150), 640, 480) == (80, 90, 220, 160)
    assert face_blur.enlarge((0, 0, 50, 50), 55, 55) == (0, 0, 55, 55)


def test_without_a_detector_the_whole_frame_is_blurred(monkeypatch: pytest.MonkeyPatch, couple: np.ndarray) -> None:
    def broken() -> FaceRecognizer:
        raise OSError("yunet-n: model file missing")

    face_blur.reset()
    monkeypatch.setattr(face_blur, "factory", broken)
    try:
        assert face_blur.detector() is None
        shown = face_blur.blur_faces(couple)
        h, w = couple.shape[:2]
        assert sharpness(shown, (0, 0, w, h)) < 0.02 * sharpness(couple, (0, 0, w, h))
    finally:
        monkeypatch.undo()
        face_blur.reset()


def test_video_frames_keep_faces_blurred_where_they_just_were(recognizer: FaceRecognizer,
                                                               couple: np.ndarray) -> None:
    trail = face_blur.FaceTrail(hold=3)
    seen = trail.boxes(couple)
    assert seen is not None and len(seen) == 2
    grey = np.full_like(couple, 127)  # a frame where the detector finds nothing: the last faces are still blurred
    assert trail.boxes(grey) == seen
    for _ in range(3):
        trail.boxes(grey)
    assert trail.boxes(grey) == []  # held for 3 frames only


def test_who_sees_faces_blurred_whatever_the_role() -> None:
    faces = CameraConfig.model_validate({"source": "rtsp://cam/1", "faces": {"enabled": True}})
    both = CameraConfig.model_validate({"source": "rtsp://cam/1", "faces": {"enabled": True},
                                        "privacy_masks": [[list(p) for p in MASK]]})
    plain = CameraConfig.model_validate({"source": "rtsp://cam/1"})
    assert redaction(Someone(), faces) == Redaction(faces=True)
    assert redaction(Someone(biometrics=True), faces) == ORIGINAL and not ORIGINAL
    assert redaction(Someone(), plain) == ORIGINAL and redaction(Someone(), None) == ORIGINAL
    assert redaction(Someone(unmasked=True), both) == Redaction(faces=True)  # unmasked does not unblur
    assert redaction(Someone(biometrics=True), both).key == "masked"
    assert redaction(Someone(), both).key == "masked+blurred" and redaction(Someone(), both).reason == \
        "privacy masks, faces"
    assert Redaction(faces=True).lost(ORIGINAL) is None
    assert ORIGINAL.lost(Redaction(faces=True)) == "biometrics permission revoked"


def test_masks_and_blur_apply_together(recognizer: FaceRecognizer, couple: np.ndarray) -> None:
    view = Redaction((MASK,), faces=True)
    shown = apply_redaction(couple, view)
    h, w = shown.shape[:2]
    assert shown[: round(0.19 * h), : round(0.19 * w)].max() == 0  # the mask, black
    assert recognizer.faces_in(shown) == []
    ok, png = cv2.imencode(".png", couple)
    assert ok
    served = cv2.imdecode(np.frombuffer(redact_jpeg(png.tobytes(), Redaction(faces=True)), np.uint8), 1)
    assert recognizer.faces_in(served) == []
