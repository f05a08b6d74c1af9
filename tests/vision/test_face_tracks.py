"""Faces of tracked people with the real models, a real encrypted gallery (SQLite + key files) and real photos:
sampled every K frames, embedded only when the face gets meaningfully better, matched, strangers left unstored,
and only where faces are on (person, inside faces.zones)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trustcam.config.schema import CameraConfig, VaultConfig
from trustcam.ingest.frame import Frame
from trustcam.storage.database import open_database
from trustcam.storage.faces import UNKNOWN, FaceStore, Template, threshold_for
from trustcam.storage.keys import Keyring
from trustcam.storage.schema import FaceTemplateRow
from trustcam.vision import catalog
from trustcam.vision.face_tracks import FaceModels, FaceTracks
from trustcam.vision.faces import YUNET, FaceRecognizer, load_image, single_face
from trustcam.vision.tracker import TrackedObject

SIZE = (1280, 720)
ENROLMENT = {"Barack Obama": ["train/obama/obama.jpg", "train/obama/obama2.jpg"],
             "Kit Harington": ["train/kit_harington/john1.jpeg", "train/kit_harington/john2.jpeg"]}


@pytest.fixture(scope="module")
def knn(data_dir: Path) -> Path:
    return data_dir / "faces" / "knn_examples"


@pytest.fixture(scope="module")
def recognizer() -> FaceRecognizer:
    catalog.install(catalog.ASSETS[YUNET], allow_download=False)
    return FaceRecognizer()


@pytest.fixture
def models(recognizer: FaceRecognizer, knn: Path, tmp_path: Path) -> FaceModels:
    """Obama and Kit Harington enrolled from their training photos (not the ones shown to the camera)."""
    vault = VaultConfig(root=tmp_path / "rec", key_file=tmp_path / "keys" / "kek",
                        signing_key_file=tmp_path / "keys" / "sign")
    store = FaceStore(open_database(f"sqlite:///{tmp_path / 'data' / 'trustcam.db'}"), Keyring(vault),
                      tmp_path / "data")
    for name, files in ENROLMENT.items():
        templates = []
        for file in files:
            image = load_image(knn / file)
            face = single_face(recognizer, image, file)
            templates.append(Template(recognizer.embed(image, face), hashlib.sha256(file.encode()).hexdigest(),
                                      face.quality.score))
        store.enroll(name, templates, consent="test footage", by="tests")
    return FaceModels(recognizer, store)


def placed(image: np.ndarray, height: int = 600) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The photo scaled to ``height`` and centred on a grey 720p frame; its rectangle stands in for the person box."""
    scale = height / image.shape[0]
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)[:, :SIZE[0] - 40]
    canvas = np.full((SIZE[1], SIZE[0], 3), 128, np.uint8)
    h, w = small.shape[:2]
    x0, y0 = (SIZE[0] - w) // 2, (SIZE[1] - h) // 2
    canvas[y0:y0 + h, x0:x0 + w] = small
    return canvas, (float(x0), float(y0), float(x0 + w), float(y0 + h))


def camera(**faces: object) -> CameraConfig:
    return CameraConfig(source="x", faces={"enabled": True, **faces},
                        zones={"porch": {"coordinates": [[0, 0], [0.45, 0], [0.45, 1], [0, 1]]}})


def tracks(models: FaceModels, cam: CameraConfig | None = None, **options: int) -> FaceTracks:
    threshold = threshold_for(Path("/nonexistent"), 1e-3)  # the built-in calibration
    return FaceTracks(cam or camera(), models, threshold, **options)


def person(box: tuple[float, float, float, float], track_id: int = 1, label: str = "person") -> TrackedObject:
    return TrackedObject(track_id, label, box, 0.9)


def test_known_person_is_named_once_and_resampled_every_k_frames(models: FaceModels, knn: Path) -> None:
    image, box = placed(load_image(knn / "test" / "obama1.jpg"))
    faces = tracks(models, sample_every=3)
    answers = [faces.update(Frame.from_image(image, i, i / 5), [person(box)]) for i in range(7)]
    assert faces.stats.detections == 3  # frames 0, 3 and 6
    assert faces.stats.embeddings == 1  # the same face again is no improvement: not embedded again
    named = answers[0][1]
    assert named.sub_label == "Barack Obama" and named.distance is not None and named.distance < faces.threshold
    assert named.margin is not None and named.margin > 0.1  # far from Kit Harington
    assert all(not a for a in answers[1:])


def test_a_better_face_replaces_the_answer_and_a_worse_one_is_not_embedded(models: FaceModels, knn: Path) -> None:
    sharp = load_image(knn / "test" / "johnsnow_test1.jpg")
    poor_image = cv2.GaussianBlur(sharp, (0, 0), 4)
    poor, box = placed(poor_image, height=330)
    good, good_box = placed(sharp)
    faces = tracks(models, sample_every=1)
    first = faces.update(Frame.from_image(poor, 0, 0.0), [person(box)])[1]
    better = faces.update(Frame.from_image(good, 1, 0.2), [person(good_box)])[1]
    assert better.quality >= first.quality + 0.1
    assert better.sub_label == "Kit Harington" and better.distance is not None
    assert faces.update(Frame.from_image(poor, 2, 0.4), [person(box)]) == {}
    assert faces.stats.embeddings == 2


def test_a_stranger_is_unknown_and_leaves_no_template(models: FaceModels, knn: Path, tmp_path: Path) -> None:
    image, box = placed(load_image(knn / "test" / "alex_lacamoire1.jpg"))
    keys = sorted((tmp_path / "data" / "faces" / "keys").iterdir())
    faces = tracks(models)
    answer = faces.update(Frame.from_image(image, 0, 0.0), [person(box, track_id=7)])[7]
    assert (answer.sub_label, answer.distance, answer.margin) == (UNKNOWN, None, None)
    with Session(models.store.engine) as session:
        assert session.scalar(select(func.count()).select_from(FaceTemplateRow)) == 4  # the enrolled ones only
    assert sorted((tmp_path / "data" / "faces" / "keys").iterdir()) == keys
    assert faces.stats.unknown == 1 and faces.stats.identified == 0


def test_faces_are_looked_for_only_on_people_inside_the_face_zones(models: FaceModels, knn: Path) -> None:
    image, box = placed(load_image(knn / "test" / "obama1.jpg"))
    faces = tracks(models, camera(zones=["porch"]), sample_every=1)
    assert faces.update(Frame.from_image(image, 0, 0.0), [person(box)]) == {}  # foot at x = 0.5: not in porch
    assert faces.update(Frame.from_image(image, 1, 0.2), [person(box, 2, label="car")]) == {}
    assert faces.stats.detections == 0
    left = np.full_like(image, 128)
    width = box[2] - box[0]
    left[:, :int(width)] = image[:, int(box[0]):int(box[2])]
    inside = faces.update(Frame.from_image(left, 2, 0.4), [person((0.0, box[1], width, box[3]))])
    assert inside[1].sub_label == "Barack Obama"  # foot at x = 450 < 0.45 * 1280: in porch


def test_faces_too_small_to_name_anyone_are_not_embedded(models: FaceModels, knn: Path) -> None:
    image, box = placed(load_image(knn / "test" / "obama1.jpg"), height=40)  # face about 26 px
    faces = tracks(models, sample_every=1)
    assert faces.update(Frame.from_image(image, 0, 0.0), [person(box)]) == {}
    assert faces.stats.faces_found == 1 and faces.stats.embeddings == 0  # found, too small to name


def test_a_camera_with_faces_off_gets_no_face_tracks(models: FaceModels) -> None:
    with pytest.raises(ValueError, match=r"faces\.enabled false"):
        FaceTracks(CameraConfig(source="x"), models, 0.5)
