"""The whole pipeline on real footage: the people who walk in become events with zones, rules and evidence."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from trustcam.bus import Bus
from trustcam.config import Settings, load_settings
from trustcam.config.schema import CameraConfig
from trustcam.events.model import EventEnded, EventStarted, RuleTriggered, SceneChanged
from trustcam.ingest.frame import Frame
from trustcam.ingest.source import VideoSource
from trustcam.pipeline import CameraPipeline
from trustcam.service import analyze_file
from trustcam.vision.catalog import CATALOG

REPO = Path(__file__).resolve().parents[2]
PEOPLE_WALKING_IN = 6  # counted by eye on one-by-one-person-detection.mp4


@pytest.fixture(scope="module")
def demo_run(person_video: Path, yolox, tmp_path_factory: pytest.TempPathFactory) -> dict:
    settings = load_settings(REPO / "examples" / "demo.yaml")
    camera = settings.cameras["office"]
    bus = Bus()
    seen: dict[str, list] = {"started": [], "ended": [], "alerts": [], "scene": []}
    bus.subscribe(EventStarted, lambda m: seen["started"].append(m.event))
    bus.subscribe(EventEnded, lambda m: seen["ended"].append(m.event))
    bus.subscribe(RuleTriggered, lambda m: seen["alerts"].append(m.hit))
    bus.subscribe(SceneChanged, lambda m: seen["scene"].append(m))
    snapshots = tmp_path_factory.mktemp("snapshots")
    result = analyze_file(str(person_video), camera, settings, bus, yolox, snapshots, "office")
    return {"result": result, **seen}


def test_every_person_walking_in_is_one_event(demo_run: dict) -> None:
    events = demo_run["ended"]
    assert demo_run["result"].error is None
    assert all(e.label == "person" for e in events)
    # one event per person: the tracker keeps each person's ID while they walk in, stand and leave
    assert len(events) == PEOPLE_WALKING_IN, [(e.start, e.end) for e in events]
    starts = sorted(e.start for e in events)
    assert all(b - a > 3 for a, b in itertools.pairwise(starts)), starts
    assert len({e.track_id for e in events}) == len(events)
    assert len(demo_run["started"]) == len(events)


def test_events_carry_zones_rules_and_provenance(demo_run: dict) -> None:
    spec = CATALOG["yolox-nano"]
    for event in demo_run["ended"]:
        assert event.zones == ["table"]
        fired = {hit.rule for hit in event.rules}
        assert {"at-table", "loitering-at-table"} <= fired
        assert event.threat.value == "medium"
        assert event.best_score >= 0.8
        assert event.end - event.start > 8
        assert (event.model_name, event.model_sha256) == (spec.name, spec.sha256)
    assert len(demo_run["alerts"]) == sum(len(e.rules) for e in demo_run["ended"])


def test_snapshots_are_jpegs_with_the_box_drawn(demo_run: dict) -> None:
    for event in demo_run["ended"]:
        image = cv2.imread(event.snapshot)
        assert image is not None and image.shape == (432, 768, 3)
        x1, _, x2, y2 = (round(v) for v in event.best_box)
        edge = image[min(y2, 431) - 1 : min(y2, 431) + 1, x1 + 5 : x2 - 5].reshape(-1, 3).mean(axis=0)
        assert edge[2] > 150 and edge[0] < 110, edge  # red box line (BGR)


def test_motion_gates_the_detector(demo_run: dict) -> None:
    stats = demo_run["result"].pipeline.stats
    assert stats.frames == demo_run["result"].report.kept
    assert 0 < stats.frames_detected <= stats.frames
    assert stats.detector_calls >= stats.frames_detected


def first_frames(video: Path, count: int) -> list[np.ndarray]:
    frames = []
    for frame in VideoSource(str(video), fps=5).frames():
        frames.append(frame.bgr.copy())
        if len(frames) == count:
            break
    return frames


def test_relight_is_reported_not_detected_as_motion(person_video: Path, yolox) -> None:
    frames = first_frames(person_video, 12)
    bus = Bus()
    changes: list[SceneChanged] = []
    bus.subscribe(SceneChanged, changes.append)
    pipeline = CameraPipeline("office", CameraConfig(source="x"), Settings(), yolox, bus, None)
    for i, image in enumerate(frames[:6]):
        pipeline.process(Frame.from_image(image, i, i * 0.2))
    dark = [(img.astype(np.float32) * 0.35).astype(np.uint8) for img in frames[6:]]  # lights dimmed / IR switch
    results = [pipeline.process(Frame.from_image(img, 6 + i, (6 + i) * 0.2)) for i, img in enumerate(dark)]
    assert len(changes) == 1 and changes[0].camera == "office" and changes[0].changed_fraction > 0.5
    assert all(not r.motion_boxes for r in results)  # recalibrated: the dark scene is the new background


def test_still_objects_are_kept_without_redetection(person_video: Path, yolox) -> None:
    # A person standing still in a frozen picture: detected once, then carried until the re-check.
    frame = next(f.bgr.copy() for f in VideoSource(str(person_video), fps=5).frames() if f.time >= 12)
    camera = CameraConfig(source="x", detect={"stationary_recheck_s": 4.0, "full_frame_every_s": 0})
    pipeline = CameraPipeline("office", camera, Settings(), yolox, Bus(), None)
    ids, calls = [], []
    for i in range(30):  # 6 s at 5 fps
        before = yolox.calls
        result = pipeline.process(Frame.from_image(frame, i, i * 0.2))
        calls.append(yolox.calls - before)
        ids.append(tuple(sorted(o.track_id for o in result.objects)))
    assert len(set(ids[3:])) == 1 and len(ids[-1]) == 1  # one stable ID throughout
    assert calls[0] >= 1
    assert sum(calls[5:19]) == 0  # no detector runs while it stands still and no re-check is due
    assert sum(calls[19:]) >= 1  # re-checked after stationary_recheck_s


def test_object_mask_drops_objects_standing_in_it(person_video: Path, yolox) -> None:
    # the whole floor where people stand is masked: nobody becomes an event
    camera = CameraConfig(source="x", objects={"track": ["person"],
                                               "mask": [[[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]]})
    events: list = []
    bus = Bus()
    bus.subscribe(EventEnded, lambda m: events.append(m.event))
    source = VideoSource(str(person_video), fps=5)
    pipeline = CameraPipeline("office", camera, Settings(), yolox, bus, None)
    for frame in source.frames():
        pipeline.process(frame)
        if frame.time > 25:
            break
    pipeline.close()
    assert events == []


def test_second_detector_and_scaled_analysis(person_video: Path, nanodet, tmp_path: Path) -> None:
    settings = Settings(detector={"model": "nanodet-m-320"})
    camera = CameraConfig(source="x", detect={"width": 640, "height": 360}, objects={"track": ["person"]})
    events: list = []
    bus = Bus()
    bus.subscribe(EventEnded, lambda m: events.append(m.event))
    result = analyze_file(str(person_video), camera, settings, bus, nanodet, tmp_path, "office")
    assert result.error is None
    assert 4 <= len(events) <= 8, [(e.start, e.end) for e in events]
    assert all(e.model_name == "nanodet-m-320" for e in events)
    assert cv2.imread(events[0].snapshot).shape == (360, 640, 3)


def test_motion_that_stays_put_and_holds_nothing_is_rechecked_sparingly(person_video: Path, yolox) -> None:
    # An empty room with a patch of changing noise (a screen, a swaying plant): motion every frame, no object.
    empty = first_frames(person_video, 1)[0]
    camera = CameraConfig(source="x", detect={"empty_motion_recheck_s": 1.0, "full_frame_every_s": 0})
    pipeline = CameraPipeline("office", camera, Settings(), yolox, Bus(), None)
    detected = []
    for i in range(50):  # 10 s at 5 fps
        image = empty.copy()
        image[30:90, 30:110] = 255 * (i % 2) if i % 4 < 2 else 128  # a flickering screen
        result = pipeline.process(Frame.from_image(image, i, i * 0.2))
        detected.append(bool(result.regions))
    assert sum(detected[1:]) <= 12, detected  # about once a second, not 49 times
    assert any(detected[5:])  # still re-checked


def test_quiet_place_check_can_be_disabled(person_video: Path, yolox) -> None:
    empty = first_frames(person_video, 1)[0]
    camera = CameraConfig(source="x", detect={"empty_motion_recheck_s": 0, "full_frame_every_s": 0})
    pipeline = CameraPipeline("office", camera, Settings(), yolox, Bus(), None)
    detected = 0
    for i in range(20):
        image = empty.copy()
        image[30:90, 30:110] = 255 * (i % 2) if i % 4 < 2 else 128  # a flickering screen
        detected += bool(pipeline.process(Frame.from_image(image, i, i * 0.2)).regions)
    assert detected >= 17


def test_snapshots_go_encrypted_into_the_vault_when_recording(person_video: Path, yolox, tmp_path: Path) -> None:
    from trustcam.config.schema import VaultConfig
    from trustcam.storage.database import open_database
    from trustcam.storage.vault import Vault

    config = VaultConfig(root=tmp_path / "rec", key_file=tmp_path / "keys" / "kek",
                         signing_key_file=tmp_path / "keys" / "sign")
    vault = Vault(config, open_database(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    events: list = []
    bus = Bus()
    bus.subscribe(EventEnded, lambda m: events.append(m.event))
    pipeline = CameraPipeline("office", CameraConfig(source="x", objects={"track": ["person"]}), Settings(), yolox,
                              bus, tmp_path / "plain", lambda camera, _id, jpeg: vault.store_blob(camera, jpeg))
    for frame in VideoSource(str(person_video), fps=5).frames():
        pipeline.process(frame)
        if frame.time > 12:
            break
    pipeline.close()
    assert len(events) == 1 and events[0].snapshot.endswith(".blob")
    stored = (tmp_path / "rec" / events[0].snapshot).read_bytes()
    assert b"JFIF" not in stored  # encrypted at rest
    jpeg = vault.read_blob(events[0].snapshot)
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (432, 768, 3)
    assert not (tmp_path / "plain").exists()  # no plain copy


def test_periodic_whole_frame_passes_of_cameras_are_staggered(person_video: Path, yolox) -> None:
    """Cameras started together used to make their tiled whole-frame passes (~25 model calls at 1080p) in the same
    second of every period, overflowing the shared detector and the cameras' frame queues. Each camera's first
    periodic pass now comes 0.5-1 period after the start (fixed per name), then one per period as before."""
    still = first_frames(person_video, 1)[0]
    camera = CameraConfig(source="x", detect={"full_frame_every_s": 30})
    second_passes = []
    for name in ("cam01", "cam02", "cam03", "cam04"):
        pipeline = CameraPipeline(name, camera, Settings(), yolox, Bus(), None)
        passes = [i * 0.2 for i in range(500) if pipeline.process(Frame.from_image(still, i, i * 0.2)).regions]
        assert passes[0] == 0.0 and 15 <= passes[1] <= 30, passes
        assert np.allclose(np.diff(passes[1:]), 30, atol=0.21), passes  # then every period
        stats = pipeline.stats  # a still scene: every call is a full pass's (768x432: no tiles, one call each)
        assert stats.detector_calls == stats.full_pass_calls == len(passes) and stats.whole_frame_calls == 0
        second_passes.append(passes[1])
    assert max(second_passes) - min(second_passes) >= 3, second_passes
