"""Face detection, alignment, quality and embedding on real photos; pinned weights; threshold calibration."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from trustcam.vision import catalog
from trustcam.vision.faces import (
    RESNET,
    SHAPE_PREDICTOR,
    YUNET,
    FaceError,
    FaceRecognizer,
    best_face,
    calibrate,
    dlib_model_dir,
    embed_set,
    identity_set,
    load_image,
    single_face,
)


@pytest.fixture(scope="module")
def recognizer() -> FaceRecognizer:
    catalog.install(catalog.ASSETS[YUNET], allow_download=False)  # as `make models` does, from ../shared/models
    return FaceRecognizer()


@pytest.fixture(scope="module")
def knn(data_dir: Path) -> Path:
    return data_dir / "faces" / "knn_examples"


def embedding(recognizer: FaceRecognizer, path: Path) -> np.ndarray:
    image = load_image(path)
    return recognizer.embed(image, single_face(recognizer, image, str(path)))


def test_finds_each_face_with_landmarks_inside_its_box(recognizer: FaceRecognizer, knn: Path) -> None:
    image = load_image(knn / "test" / "kit_with_rose.jpg")
    faces = recognizer.faces_in(image)
    assert len(faces) == 2
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert face.score > 0.8 and face.quality.size > 60
        assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)
        right_eye, left_eye = face.landmarks[0], face.landmarks[1]
        assert right_eye[0] < left_eye[0]  # the person's right eye is on the image's left
    with pytest.raises(FaceError, match="2 faces found"):
        single_face(recognizer, image, "kit_with_rose.jpg")
    with pytest.raises(FaceError, match="no face found"):
        single_face(recognizer, np.full((480, 640, 3), 127, np.uint8), "grey.png")


def test_same_person_is_near_and_others_far(recognizer: FaceRecognizer, knn: Path) -> None:
    obama = embedding(recognizer, knn / "train" / "obama" / "obama.jpg")
    assert obama.dtype == np.float32 and obama.shape == (128,)
    same = np.linalg.norm(obama - embedding(recognizer, knn / "test" / "obama1.jpg"))
    biden = np.linalg.norm(obama - embedding(recognizer, knn / "train" / "biden" / "biden.jpg"))
    kit = np.linalg.norm(obama - embedding(recognizer, knn / "train" / "kit_harington" / "john1.jpeg"))
    assert same < 0.45 < 0.6 < min(biden, kit)


def test_best_face_of_a_track_is_the_large_sharp_one(recognizer: FaceRecognizer, knn: Path) -> None:
    image = load_image(knn / "train" / "obama" / "obama.jpg")
    sharp = single_face(recognizer, image, "obama.jpg")
    small = cv2.resize(cv2.GaussianBlur(image, (0, 0), 3), None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    poor = recognizer.faces_in(small)[0]
    assert poor.quality.size < sharp.quality.size and poor.quality.sharpness < sharp.quality.sharpness
    assert best_face([poor, sharp]) is sharp
    assert best_face([]) is None


def test_an_altered_face_detector_is_refused(recognizer: FaceRecognizer, tmp_path: Path) -> None:
    spec = catalog.ASSETS[YUNET]
    target = spec.path(tmp_path)
    target.parent.mkdir(parents=True)
    data = bytearray(spec.path().read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(catalog.ModelError, match="refused"):
        FaceRecognizer(model_dir=tmp_path)


def test_an_altered_embedding_model_is_refused(recognizer: FaceRecognizer, tmp_path: Path) -> None:
    shutil.copyfile(dlib_model_dir() / SHAPE_PREDICTOR.filename, tmp_path / SHAPE_PREDICTOR.filename)
    with (tmp_path / RESNET.filename).open("wb") as out:  # same size, other bytes: a swapped model
        out.truncate(RESNET.size)
    with pytest.raises(FaceError, match=f"{RESNET.filename} has sha256 .* refused"):
        FaceRecognizer(dlib_dir=tmp_path)


def test_calibration_threshold_reaches_the_target_fmr_exactly() -> None:
    # four people, two images each, on a line: genuine pairs 0.5 apart; neighbours' impostor pairs at 3.5 (x3),
    # 4.0 (x6) and 4.5 (x3), the other impostor pairs 7.5 apart or more
    points = np.array([[0.0], [0.5], [4.0], [4.5], [8.0], [8.5], [12.0], [12.5]], np.float32)
    people = ["a", "a", "b", "b", "c", "c", "d", "d"]
    vectors = np.pad(points, ((0, 0), (0, 127)))
    exact = calibrate(vectors, people, target_fmr=3 / 24)
    assert (exact.genuine_pairs, exact.impostor_pairs) == (4, 24)
    assert exact.threshold == 3.75 and exact.fmr == 3 / 24 and exact.fnmr == 0.0
    tied = calibrate(vectors, people, target_fmr=0.25)  # 6 allowed, but the 4th to 9th pairs tie at 4.0
    assert tied.threshold == 3.75 and tied.fmr == 3 / 24
    strict = calibrate(vectors, people, target_fmr=0.01)  # no false match allowed: below the nearest impostor
    assert strict.fmr == 0.0 and 0.5 <= strict.threshold < 3.5
    assert not exact.supported and strict.needed_impostor_pairs == 3000


def test_calibrate_on_real_identities(recognizer: FaceRecognizer, data_dir: Path) -> None:
    images = identity_set(data_dir / "faces-id", identities=4)
    assert len(images) == 24 and {i.group for i in images} <= {"female", "male"}
    embedded = embed_set(recognizer, images)
    assert not embedded.missed and embedded.faces_per_second > 1
    result = calibrate(embedded.embeddings, embedded.identities, target_fmr=1e-2)
    assert result.genuine_pairs == 4 * 15 and result.impostor_pairs == 276 - 60
    assert result.fmr <= 1e-2 and 0.3 < result.threshold < 0.7 and result.fnmr < 0.5
    assert not result.supported  # 216 pairs cannot support FMR 1e-2 (30 errors need 3000)
