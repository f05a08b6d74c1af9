"""Face recognition in the whole pipeline, on a real clip, with the real models and a real encrypted gallery:
two enrolled people shown to the camera are named on their events (stored in SQLite), a stranger is "unknown
face" and leaves no template; alerts carry names only with publish_identity; with faces off nothing face-related
is even built."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trustcam.alerts.dispatcher import AlertDispatcher
from trustcam.alerts.model import Alert
from trustcam.bus import Bus
from trustcam.config import Settings
from trustcam.events.model import Event, EventEnded, RuleTriggered
from trustcam.security.tables import AuditRow
from trustcam.service import Service, analyze_file, build_face_models
from trustcam.storage.database import open_database
from trustcam.storage.event_store import EventStore
from trustcam.storage.faces import UNKNOWN, Template
from trustcam.storage.schema import EventRow, FaceTemplateRow
from trustcam.vision import catalog, faces
from trustcam.vision.detectors.base import Detector
from trustcam.vision.face_tracks import FaceModels
from trustcam.vision.faces import YUNET, load_image, single_face

FPS = 10
SHOW_S, GAP_S = 2.0, 2.0  # each photo for 2 s, then an empty scene long enough for its track to end
SHOWN = ["test/obama1.jpg", "test/johnsnow_test1.jpg", "test/alex_lacamoire1.jpg"]  # not the enrolment photos
EXPECTED = ["Barack Obama", "Kit Harington", UNKNOWN]
ENROLMENT = {"Barack Obama": ["train/obama/obama.jpg", "train/obama/obama2.jpg"],
             "Kit Harington": ["train/kit_harington/john1.jpeg", "train/kit_harington/john2.jpeg"]}


def on_background(image: np.ndarray, size: tuple[int, int] = (1280, 720)) -> np.ndarray:
    """The photo scaled into 900x600 and centred on a neutral grey frame."""
    canvas = np.full((size[1], size[0], 3), 128, np.uint8)
    scale = min(600 / image.shape[0], 900 / image.shape[1])
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    h, w = small.shape[:2]
    x0, y0 = (size[0] - w) // 2, (size[1] - h) // 2
    canvas[y0:y0 + h, x0:x0 + w] = small
    return canvas


def write_clip(path: Path, photos: list[Path]) -> Path:
    """An H.264 clip: empty scene, then each photo for SHOW_S followed by GAP_S of empty scene."""
    blank = np.full((720, 1280, 3), 128, np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}

        def show(image: np.ndarray, seconds: float) -> None:
            for _ in range(round(seconds * FPS)):
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                    container.mux(packet)

        show(blank, GAP_S)
        for photo in photos:
            show(on_background(load_image(photo)), SHOW_S)
            show(blank, GAP_S)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def knn(data_dir: Path) -> Path:
    return data_dir / "faces" / "knn_examples"


@pytest.fixture(scope="module")
def clip(knn: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "door.mp4", [knn / p for p in SHOWN])


def site(root: Path, *, enabled: bool = True, publish: bool = False, source: str = "x") -> Settings:
    """A data directory of its own (database, face keys, KEK), one camera looking at the door."""
    return Settings(
        data_dir=root / "data", tracker={"lost_after_s": 1.0},
        vault={"root": root / "rec", "key_file": root / "keys" / "kek", "signing_key_file": root / "keys" / "sign"},
        cameras={"door": {
            "source": source, "detect": {"fps": 5, "stationary_recheck_s": 0.5}, "objects": {"track": ["person"]},
            "faces": {"enabled": enabled, "publish_identity": publish},
            "zones": {"doorway": {"coordinates": [[0, 0], [1, 0], [1, 1], [0, 1]]}},
            "rules": [{"name": "at-door", "type": "enter_zone", "zone": "doorway", "threat": "low"}]}})


def enrol(models: FaceModels, knn: Path) -> None:
    for name, files in ENROLMENT.items():
        templates = []
        for file in files:
            image = load_image(knn / file)
            face = single_face(models.recognizer, image, file)
            templates.append(Template(models.recognizer.embed(image, face),
                                      hashlib.sha256((knn / file).read_bytes()).hexdigest(), face.quality.score))
        models.store.enroll(name, templates, consent="test footage", by="tests")


@pytest.fixture(scope="module")
def run(clip: Path, knn: Path, yolox: Detector, tmp_path_factory: pytest.TempPathFactory) -> dict:
    catalog.install(catalog.ASSETS[YUNET], allow_download=False)
    settings = site(tmp_path_factory.mktemp("site"))
    engine = open_database(settings.resolved_database_url)
    models = build_face_models(settings, engine)
    assert models is not None
    enrol(models, knn)
    bus = Bus()
    EventStore(engine).attach(bus)
    ended: list[Event] = []
    rules: list[RuleTriggered] = []
    bus.subscribe(EventEnded, lambda m: ended.append(m.event))
    bus.subscribe(RuleTriggered, rules.append)
    result = analyze_file(str(clip), settings.cameras["door"], settings, bus, yolox, None, "door", faces=models)
    return {"settings": settings, "engine": engine, "events": ended, "rules": rules, "result": result}


def test_enrolled_people_are_named_and_the_stranger_is_not(run: dict) -> None:
    events: list[Event] = sorted(run["events"], key=lambda e: e.start)
    assert [e.sub_label for e in events] == EXPECTED
    threshold = run["result"].pipeline.faces.threshold
    for event in events[:2]:
        assert event.face_distance is not None and event.face_distance < threshold
        assert event.face_margin is not None and event.face_margin > 0.1  # not a close call between the two
    assert (events[2].face_distance, events[2].face_margin) == (None, None)
    with Session(run["engine"]) as session:
        stored = {row.id: (row.sub_label, row.face_distance) for row in session.scalars(select(EventRow))}
        templates = session.scalar(select(func.count()).select_from(FaceTemplateRow))
    assert stored == {e.id: (e.sub_label, e.face_distance) for e in events}
    assert templates == 4  # the four enrolment photos; the stranger left none
    stats = run["result"].pipeline.faces.stats
    assert stats.embeddings <= 2 * len(events)  # the best face of each track, not every frame
    assert stats.detections < run["result"].pipeline.stats.frames


def test_alerts_carry_the_identity_only_when_the_camera_publishes_it(run: dict, tmp_path: Path) -> None:
    assert run["rules"], "the enter_zone rule should have fired for each person"
    payloads: dict[bool, list[Alert]] = {}
    for publish in (False, True):
        settings = site(tmp_path / str(publish), publish=publish)
        bus = Bus()
        AlertDispatcher(settings, open_database(settings.resolved_database_url), bus, sinks=[])
        payloads[publish] = []
        bus.subscribe(Alert, payloads[publish].append)
        for message in run["rules"]:
            bus.publish(message)
    names = {m.event.sub_label for m in run["rules"]}
    assert names >= {"Barack Obama", "Kit Harington"}
    for alert in payloads[False]:
        assert not {"sub_label", "face_distance", "face_margin"} & alert.data.keys()
        assert not any(name in alert.message for name in ENROLMENT)
    published = {a.data["sub_label"] for a in payloads[True]}
    assert published == names and all("face_distance" in a.data for a in payloads[True])


def test_faces_off_builds_nothing_and_events_carry_no_identity(clip: Path, yolox: Detector, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []
    real_init = faces.FaceRecognizer.__init__

    def counting_init(self: faces.FaceRecognizer, *args: object, **kwargs: object) -> None:
        built.append(self)
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(faces.FaceRecognizer, "__init__", counting_init)
    settings = site(tmp_path, enabled=False)
    bus = Bus()
    ended: list[Event] = []
    bus.subscribe(EventEnded, lambda m: ended.append(m.event))
    result = analyze_file(str(clip), settings.cameras["door"], settings, bus, yolox, None, "door")
    assert len(ended) == 3 and all(e.sub_label is None and e.face_distance is None for e in ended)
    assert result.pipeline.faces is None and built == []
    assert build_face_models(settings) is None and built == []
    assert not (settings.data_dir / "faces").exists() and not (tmp_path / "keys" / "kek").exists()


def expiring(models: FaceModels, name: str, seconds: float) -> None:
    models.store.enroll(name, [Template(np.zeros(128, np.float32), "0" * 64, 0.5)], consent="visitor pass",
                        by="tests", expires_at=time.time() + seconds)


def test_the_service_shreds_expired_enrolments_at_start_and_hourly(knn: Path, clip: Path, tmp_path: Path) -> None:
    settings = site(tmp_path, source=str(clip))
    before = build_face_models(settings)
    assert before is not None
    enrol(before, knn)
    expiring(before, "Day Visitor", 0.3)
    time.sleep(0.4)
    service = Service(settings)
    try:
        assert service.face_models is not None and all(w.pipeline.faces is not None for w in service.workers)
        service.start()
        assert [i.name for i in service.face_models.store.identities()] == sorted(ENROLMENT)
        expiring(service.face_models, "Night Visitor", 0.3)
        time.sleep(0.4)
        service.check_health()  # less than an hour since the last shredding: nothing yet
        assert len(service.face_models.store.identities()) == 3
        service._faces_shredded_at = time.time() - 3601
        service.check_health()
        assert [i.name for i in service.face_models.store.identities()] == sorted(ENROLMENT)
        with Session(service.engine) as session:
            audited = session.execute(select(AuditRow.action, AuditRow.target)
                                      .where(AuditRow.action == "faces.expire")).all()
        assert sorted(audited) == [("faces.expire", "Day Visitor"), ("faces.expire", "Night Visitor")]
    finally:
        service.stop()
