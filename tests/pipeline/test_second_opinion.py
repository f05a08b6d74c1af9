"""The run-time second opinion on real footage with real models: a person the primary model cannot see (an evasion
attack on it) still becomes an event, seen by the second model, and raises ``evasion_suspected``; with both models
working nothing is raised; switched off, the pipeline is exactly what it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trustcam.alerts.model import Alert, Severity
from trustcam.bus import Bus
from trustcam.config import Settings
from trustcam.config.schema import CameraConfig
from trustcam.events.model import Event, EventEnded
from trustcam.ingest.source import VideoSource
from trustcam.pipeline import EVASION_SUSPECTED, CameraPipeline
from trustcam.storage.database import open_database
from trustcam.storage.event_store import EventStore
from trustcam.vision.detections import Detections
from trustcam.vision.detectors.base import Detector
from trustcam.vision.labels import COCO_LABELS
from trustcam.vision.motion import polygon_mask
from trustcam.vision.second_opinion import split

PERSON = COCO_LABELS.index("person")
# one-by-one-person-detection.mp4: the first person walks in at about 7 s and leaves at about 19 s
FIRST_PERSON_UNTIL_S = 20.0


class Blinded:
    """Stand-in for a successful adversarial (evasion) attack on the primary model: the real yolox-nano runs, but
    every person it finds is dropped, as PGD at eps=8 does to its person recall (`trustcam assess`)."""

    def __init__(self, inner: Detector) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def detect(self, image: np.ndarray, score_threshold: float | None = None) -> Detections:
        dets = self.inner.detect(image, score_threshold)
        return dets.select(np.flatnonzero(dets.class_ids != PERSON))


def camera(threshold: float = 0.6) -> CameraConfig:
    return CameraConfig(source="x", detect={"fps": 5}, objects={
        "track": ["person"], "filters": {"person": {"min_score": 0.3, "threshold": threshold}}})


def settings(enabled: bool, sample_share: float = 0.1) -> Settings:
    return Settings(detector={"second_opinion": {"enabled": enabled, "sample_share": sample_share, "persist_frames": 3,
                                                 "disagreement_frames": 5}})


def run(video: Path, primary: object, secondary: Detector | None, enabled: bool,
        until_s: float, cam: CameraConfig | None = None) -> tuple[list[Event], list[Alert], CameraPipeline]:
    bus = Bus()
    events: list[Event] = []
    alerts: list[Alert] = []
    bus.subscribe(EventEnded, lambda m: events.append(m.event))
    bus.subscribe(Alert, alerts.append)
    pipeline = CameraPipeline("office", cam or camera(), settings(enabled), primary, bus, None,  # type: ignore[arg-type]
                              secondary=secondary)
    for frame in VideoSource(str(video), fps=5).frames():
        pipeline.process(frame)
        if frame.time > until_s:
            break
    pipeline.close()
    return events, alerts, pipeline


def test_person_hidden_from_the_primary_is_caught_by_the_second_opinion(person_video: Path, yolox, nanodet,
                                                                         tmp_path: Path) -> None:
    blinded = Blinded(yolox)
    # the attack works: without a second opinion the person who walks in is never an event
    events, alerts, _ = run(person_video, blinded, None, False, FIRST_PERSON_UNTIL_S)
    assert events == [] and alerts == []

    events, alerts, pipeline = run(person_video, blinded, nanodet, True, FIRST_PERSON_UNTIL_S)
    assert len(events) == 1, [(e.start, e.end, e.seen_by) for e in events]
    event = events[0]
    assert event.label == "person" and event.seen_by == "secondary"
    assert 5 <= event.start <= 9 and event.end - event.start > 8
    evasion = [a for a in alerts if a.kind == EVASION_SUSPECTED]
    assert len(evasion) == 1  # once per track, not once per frame
    alert = evasion[0]
    assert alert.severity == Severity.high and alert.camera == "office"
    assert alert.data["label"] == "person" and alert.data["event_id"] == event.id
    assert alert.data["primary"] == {"model": "yolox-nano", "score": 0.0}
    assert alert.data["secondary"]["model"] == "nanodet-m-320" and alert.data["secondary"]["score"] >= 0.3
    assert event.start <= alert.data["frame_time"] <= event.end and alert.source_time == alert.data["frame_time"]
    assert pipeline.stats.evasion_alerts == 1 and pipeline.stats.second_opinion_calls > 0
    # the status figures (grid, metrics): one disagreement, the person, seen on many frames by the second model alone
    assert pipeline.stats.disagreements == 1 and pipeline.stats.secondary_only_detections > 20

    # seen_by is stored with the event (migration 0009)
    store = EventStore(open_database(f"sqlite:///{tmp_path / 'events.db'}"))
    store.save(event)
    assert [row.seen_by for row in store.recent()] == ["secondary"]


def test_suspected_evasion_is_an_event_even_below_the_primary_tuned_threshold(person_video: Path, yolox,
                                                                             nanodet) -> None:
    """Event thresholds are tuned on the primary's scores; the second model scores the same person lower (in the
    video patch attack two of six attacked people were alerted on but never became events). A track that raised
    evasion_suspected is an event whatever its median score."""
    strict = camera(threshold=0.99)  # no median score reaches it
    events, alerts, _ = run(person_video, Blinded(yolox), nanodet, True, FIRST_PERSON_UNTIL_S, strict)
    evasion = [a for a in alerts if a.kind == EVASION_SUSPECTED]
    assert len(evasion) == 1 and len(events) == 1, [(e.start, e.end, e.seen_by) for e in events]
    assert events[0].seen_by == "secondary" and evasion[0].data["event_id"] == events[0].id


def test_no_evasion_alarm_when_both_models_see_the_people(person_video: Path, yolox, nanodet) -> None:
    events, alerts, pipeline = run(person_video, yolox, nanodet, True, 45.0)
    assert len(events) == 2, [(e.start, e.end) for e in events]
    assert [a for a in alerts if a.kind == EVASION_SUSPECTED] == []  # false alarms: 0
    assert {e.seen_by for e in events} <= {"both", "primary"}
    assert pipeline.stats.second_opinion_checks > 0
    # a sample, not every frame: the second model looks at a fraction of what the primary looks at
    assert pipeline.stats.second_opinion_checks < pipeline.stats.frames / 3


def test_switched_off_the_pipeline_is_unchanged(person_video: Path, yolox, nanodet) -> None:
    before = nanodet.calls
    off, off_alerts, off_pipeline = run(person_video, yolox, nanodet, False, FIRST_PERSON_UNTIL_S)
    plain, plain_alerts, plain_pipeline = run(person_video, yolox, None, False, FIRST_PERSON_UNTIL_S)
    assert nanodet.calls == before  # the second model never ran
    assert off_pipeline.second_opinion is None
    assert len(off) == len(plain) == 1
    for a, b in zip(off, plain, strict=True):
        assert (a.start, a.end, a.best_score, a.best_box, a.seen_by) == (b.start, b.end, b.best_score, b.best_box,
                                                                          None)
    assert off_alerts == plain_alerts == []
    assert off_pipeline.stats.detector_calls == plain_pipeline.stats.detector_calls
    assert off_pipeline.stats.second_opinion_checks == 0


def test_enabled_without_a_second_model_is_refused(yolox) -> None:
    with pytest.raises(ValueError, match="build_second_opinion"):
        CameraPipeline("office", camera(), settings(True), yolox, Bus(), None)


ENTRANCE = [[0.0, 0.75], [1.0, 0.75], [1.0, 1.0], [0.0, 1.0]]  # the bottom quarter: people walk in from there
WINDOW = [[0.0, 0.0], [0.08, 0.0], [0.08, 0.3], [0.0, 0.3]]  # the window at the top left: nothing moves there


def guarded(zone: list[list[float]] | None) -> CameraConfig:
    """The test camera with ``zone`` marked high_security."""
    config = camera().model_dump()
    if zone is not None:
        config["zones"] = {"door": {"coordinates": zone, "high_security": True}}
    return CameraConfig(**config)


def frame_by_frame(video: Path, primary: object, secondary: Detector, zone: list[list[float]] | None,
                   sample_share: float = 0.1) -> tuple[list[tuple[float, int, bool, bool]], CameraPipeline]:
    """Per analysed frame: (time, second-model calls, motion touching ``zone``, an object seen by it alone)."""
    pipeline = CameraPipeline("office", guarded(zone), settings(True, sample_share), primary, Bus(), None,  # type: ignore[arg-type]
                              secondary=secondary)
    rows = []
    for frame in VideoSource(str(video), fps=5).frames():
        calls = pipeline.stats.second_opinion_calls
        result = pipeline.process(frame)
        inside = np.zeros((frame.height, frame.width), bool)
        if zone is not None:
            inside = polygon_mask([tuple(map(tuple, zone))], frame.width, frame.height) == 0  # type: ignore[arg-type]
        in_zone = any(inside[y1:y2, x1:x2].any() for x1, y1, x2, y2 in result.motion_boxes)
        rows.append((frame.time, pipeline.stats.second_opinion_calls - calls, in_zone,
                     any(o.seen_by == "secondary" for o in result.objects)))
        if frame.time > FIRST_PERSON_UNTIL_S:
            break
    pipeline.close()
    return rows, pipeline


def test_a_high_security_zone_catches_the_hidden_person_sooner(person_video: Path, yolox, nanodet) -> None:
    """The second model looks at motion in a high_security zone on every analysed frame: the person the attacked
    primary cannot see is tracked sooner than by the sample and the persisting-motion check alone, and the extra
    calls are all on frames with motion in the zone."""
    blinded = Blinded(yolox)
    plain, plain_pipeline = frame_by_frame(person_video, blinded, nanodet, None)
    door, door_pipeline = frame_by_frame(person_video, blinded, nanodet, ENTRANCE)
    first_plain = next(t for t, _, _, secondary in plain if secondary)
    first_door = next(t for t, _, _, secondary in door if secondary)
    assert first_door < first_plain, (first_door, first_plain)  # 6.8 s against 7.0 s
    extra = [(t, a, b) for (t, a, _, _), (_, b, in_zone, _) in zip(plain, door, strict=True) if b != a]
    assert extra, "the zone made the second model look where it would not have"
    on_quiet_frames = [(t, a, b) for (t, a, _, _), (_, b, in_zone, _) in zip(plain, door, strict=True)
                       if b != a and not in_zone]
    assert on_quiet_frames == []  # more calls only on frames with motion in the zone
    assert all(calls > 0 for _, calls, in_zone, _ in door if in_zone)  # and on every one of them
    assert door_pipeline.stats.second_opinion_zone_checks == sum(in_zone for _, _, in_zone, _ in door) > 0
    assert plain_pipeline.stats.second_opinion_zone_checks == 0


def test_a_find_of_the_persisting_motion_check_becomes_a_track(person_video: Path, yolox, nanodet) -> None:
    """Without samples, only the check of persisting motion (every persist_frames) finds the hidden person; the
    tracker needs detections on consecutive frames, so the second model looks at its own find again on the next
    frame. Before, the person walking in at 6 s was tracked at 18 s."""
    rows, _ = frame_by_frame(person_video, Blinded(yolox), nanodet, None, sample_share=0.0)
    assert next(t for t, _, _, secondary in rows if secondary) <= 7.4


def test_a_high_security_zone_where_nothing_moves_costs_nothing(person_video: Path, yolox, nanodet) -> None:
    plain, _ = frame_by_frame(person_video, yolox, nanodet, None)
    window, window_pipeline = frame_by_frame(person_video, yolox, nanodet, WINDOW)
    assert not any(in_zone for _, _, in_zone, _ in window)
    assert [calls for _, calls, _, _ in window] == [calls for _, calls, _, _ in plain]
    assert window_pipeline.stats.second_opinion_zone_checks == 0


def test_a_high_security_zone_without_the_second_opinion_is_refused() -> None:
    from pydantic import ValidationError

    zone = {"door": {"coordinates": ENTRANCE, "high_security": True}}
    with pytest.raises(ValidationError, match=r"cameras\.office\.zones\.door\.high_security needs the second model.*"
                       r"set detector\.second_opinion\.enabled: true"):
        Settings(cameras={"office": {"source": "x", "zones": zone}})
    accepted = Settings(cameras={"office": {"source": "x", "zones": zone}},
                        detector={"second_opinion": {"enabled": True}})
    assert accepted.cameras["office"].zones["door"].high_security is True
    assert Settings(cameras={"office": {"source": "x", "zones": {"door": {"coordinates": ENTRANCE}}}})


def test_split_keeps_what_only_the_second_model_sees() -> None:
    primary = Detections(np.array([[0, 0, 100, 200]], np.float32), np.array([0.9], np.float32), np.array([PERSON]))
    secondary = Detections(np.array([[5, 5, 105, 205], [300, 0, 400, 200], [0, 0, 100, 200]], np.float32),
                           np.array([0.8, 0.7, 0.6], np.float32), np.array([PERSON, PERSON, 2]))
    review = split(secondary, primary)
    assert review.confirmed.tolist() == [True]
    # the far person and the other-label box are the second model's alone
    assert review.secondary_only.boxes.tolist() == [[300, 0, 400, 200], [0, 0, 100, 200]]


def test_the_second_opinion_must_be_another_model() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="is the primary model"):
        Settings(detector={"model": "nanodet-m-320", "second_opinion": {"enabled": True}})
    assert Settings(detector={"model": "nanodet-m-320"}).detector.second_opinion.enabled is False


def test_a_camera_turns_the_second_opinion_on_or_off_for_itself(yolox, nanodet) -> None:
    """`cameras.<name>.second_opinion` changes the global section for one camera: on at the entrance only (the model
    is loaded once), or off where the CPU budget does not allow it; a high_security zone needs it on that camera."""
    from pydantic import ValidationError

    from trustcam.service import build_second_opinion

    zone = {"door": {"coordinates": ENTRANCE, "high_security": True}}
    entrance_only = Settings(cameras={
        "entrance": {"source": "x", "zones": zone, "second_opinion": {"enabled": True, "sample_share": 0.2}},
        "yard": {"source": "y"}})
    assert entrance_only.second_opinion_for(entrance_only.cameras["entrance"]).sample_share == 0.2
    assert not entrance_only.second_opinion_for(entrance_only.cameras["yard"]).enabled
    loaded = build_second_opinion(entrance_only)
    assert loaded is not None and loaded.name == "nanodet-m-320"
    entrance = CameraPipeline("entrance", entrance_only.cameras["entrance"], entrance_only, yolox, Bus(), None,
                              secondary=nanodet)
    yard = CameraPipeline("yard", entrance_only.cameras["yard"], entrance_only, yolox, Bus(), None)
    assert entrance.second_opinion is not None and entrance.second_opinion.config.sample_share == 0.2
    assert yard.second_opinion is None

    everywhere_but_yard = Settings(detector={"second_opinion": {"enabled": True}},
                                   cameras={"yard": {"source": "y", "second_opinion": {"enabled": False}}})
    assert CameraPipeline("yard", everywhere_but_yard.cameras["yard"], everywhere_but_yard, yolox, Bus(),
                          None).second_opinion is None  # no second detector needed there
    assert build_second_opinion(Settings()) is None

    with pytest.raises(ValidationError, match=r"cameras\.yard\.zones\.door\.high_security needs the second model"):
        Settings(detector={"second_opinion": {"enabled": True}},
                 cameras={"yard": {"source": "y", "zones": zone, "second_opinion": {"enabled": False}}})
    with pytest.raises(ValidationError, match="is the primary model"):
        Settings(detector={"model": "nanodet-m-320"},
                 cameras={"entrance": {"source": "x", "second_opinion": {"enabled": True}}})
