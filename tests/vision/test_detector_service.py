"""One detector service per node, with real models and real processes: cameras share one model process, get the
same detections as a direct call, and every camera fails over (crash: SIGKILL, hang: SIGSTOP) and comes back."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from trustcam.bus import Bus
from trustcam.config.schema import CameraConfig, Settings
from trustcam.events.model import CameraCoverage
from trustcam.service import Service
from trustcam.vision.detections import Detections
from trustcam.vision.detectors import Detector
from trustcam.vision.detectors.failover import CoverageChange, DetectorFailure, FailoverDetector
from trustcam.vision.detectors.onnx_models import dynamic_batch_copy, load_file
from trustcam.vision.detectors.service import DetectorService, SharedDetectors
from trustcam.vision.frame_detector import FrameDetector

DEADLINE_S = 1.0
CAMERAS = 3


@pytest.fixture(scope="module")
def images(coco_root: Path) -> list[np.ndarray]:
    paths = sorted((coco_root / "images").glob("*.jpg"))[:8]
    loaded = [cv2.imread(str(p)) for p in paths]
    assert len(loaded) == 8 and all(i is not None for i in loaded)
    return loaded  # type: ignore[return-value]


@pytest.fixture
def shared(installed_models: None) -> Iterator[SharedDetectors]:
    detectors = SharedDetectors("yolox-nano", ["nanodet-m-320"], deadline_s=DEADLINE_S, workers=2)
    yield detectors
    detectors.close()


def close_to(a: Detections, b: Detections, tol: float = 1e-3) -> bool:
    return (len(a) == len(b) and np.allclose(a.boxes, b.boxes, atol=tol) and np.allclose(a.scores, b.scores, atol=tol)
            and np.array_equal(a.class_ids, b.class_ids))


def wait_for(predicate: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def detector_children() -> list[mp.process.BaseProcess]:
    return [p for p in mp.active_children() if p.name.startswith("detector-")]


def in_threads(work: Callable[[int], object], n: int = CAMERAS) -> list[object]:
    """Run ``work(camera)`` in ``n`` camera threads released together; return each one's result or exception."""
    results: list[object] = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_cameras_of_a_service_share_one_detector_process(person_video: Path, installed_models: None,
                                                         tmp_path: Path) -> None:
    """`trustcam run`'s Service with three live cameras: one detector child process, all three analysing."""
    before = {p.pid for p in detector_children()}
    camera = CameraConfig(source=str(person_video), detect={"fps": 5}, canary={"enabled": False})
    service = Service(Settings(data_dir=tmp_path, cameras={f"cam{i}": camera for i in range(CAMERAS)}))
    service.start()
    try:
        assert wait_for(lambda: all(w.pipeline.stats.detector_calls > 0 for w in service.workers), 60), \
            "every camera called the detector"
        primaries = [w.pipeline.detector.detector.detectors[0] for w in service.workers]
        assert len({id(p) for p in primaries}) == CAMERAS, "each camera has its own client"
        assert len({p.pid for p in primaries}) == 1 and primaries[0].pid is not None
        new = [p for p in detector_children() if p.pid not in before]
        assert [p.pid for p in new] == [primaries[0].pid], "one detector process for the node, not one per camera"
        backups = {id(w.pipeline.detector.detector.detectors[1].detector) for w in service.workers}
        assert len(backups) == 1, "the backup model is loaded once, not per camera"
        assert service.detectors is not None and service.detectors.service.stats.requests > 0
        metrics = service.metrics.render().decode()
        assert 'trustcam_detector_service_requests_total{model="yolox-nano"}' in metrics
        assert 'trustcam_detector_service_late_total{model="yolox-nano"}' in metrics
    finally:
        service.stop()
    assert not [p for p in detector_children() if p.pid not in before], "the service stops its detector process"


def test_batched_calls_from_camera_threads_match_direct_detection(shared: SharedDetectors, yolox: Detector,
                                                                  images: list[np.ndarray]) -> None:
    cameras = [shared.for_camera() for _ in range(CAMERAS)]
    results = in_threads(lambda i: [cameras[i].detect(img) for img in images[i:] + images[:i]])
    stats = shared.service.stats
    for i, got in enumerate(results):
        assert isinstance(got, list), got
        for dets, img in zip(got, images[i:] + images[:i], strict=True):
            assert close_to(dets, yolox.detect(img))
    assert stats.requests == CAMERAS * len(images)
    assert stats.batches < stats.requests and stats.largest > 1, f"calls were gathered into batches: {stats}"
    assert {c.detectors[0].pid for c in cameras} == {shared.service.pid}
    assert [c.calls for c in cameras] == [len(images)] * CAMERAS, "each camera counts its own calls"
    # the whole-frame path (tiles) a camera and its canary use gives the same as with the model in-process
    assert close_to(FrameDetector(cameras[0]).detect_full(images[0]), FrameDetector(yolox).detect_full(images[0]))


def test_one_cameras_tiles_go_as_batches(shared: SharedDetectors, yolox: Detector, images: list[np.ndarray]) -> None:
    """A 1080p frame's full pass (whole frame + 24 tiles) from one camera: the tiles are queued together and answered
    in batches of up to max_batch spread over the workers, not one call after another; the detections are those of
    the model in-process."""
    frame = cv2.resize(images[0], (1920, 1080))
    camera = shared.for_camera()
    try:
        before = shared.service.stats.batches
        start = time.perf_counter()
        got = FrameDetector(camera).detect_full(frame)
        took = time.perf_counter() - start
        stats = shared.service.stats
        assert close_to(got, FrameDetector(yolox).detect_full(frame))
        assert camera.calls == 25 and stats.largest == shared.service.max_batch
        assert stats.batches - before <= 5, f"25 calls in {stats.batches - before} batches: {stats}"
        print(f"\none camera's 1080p full pass on the service: {took * 1000:.0f} ms in {stats.batches - before} "
              "batches")
    finally:
        camera.close()


def test_a_bad_image_fails_its_own_caller_only(shared: SharedDetectors, yolox: Detector,
                                               images: list[np.ndarray]) -> None:
    good, bad = shared.service.client(DEADLINE_S), shared.service.client(DEADLINE_S)
    results = in_threads(lambda i: good.detect(images[0]) if i == 0 else bad.detect(np.zeros((0, 5, 3), np.uint8)), 2)
    assert close_to(results[0], yolox.detect(images[0]))  # type: ignore[arg-type]
    assert isinstance(results[1], DetectorFailure) and "detect failed in the child" in results[1].reason
    assert shared.service.alive() and shared.service.stats.restarts == 0


def test_a_busy_service_is_waited_for_not_taken_for_hung(installed_models: None, yolox: Detector,
                                                        images: list[np.ndarray]) -> None:
    """Many cameras at once on one worker, one image per model call: the last requests wait in the queue longer than
    the call deadline while the child answers the others. They are answered (counted late), nothing fails over and
    the child is not restarted; with an overload limit below that wait the last ones fail as overloaded instead."""
    service = DetectorService("yolox-nano", max_batch=1, workers=1)
    cameras = 32
    try:
        clients = [service.client(deadline_s=0.3) for _ in range(cameras)]
        start = time.monotonic()
        results = in_threads(lambda i: (clients[i].detect(images[i % len(images)]), time.monotonic() - start), cameras)
        waits = sorted(r[1] for r in results if isinstance(r, tuple))
        figures = f"{service.stats}, waits {waits[0]:.2f}-{waits[-1]:.2f}s"
        assert all(isinstance(r, tuple) for r in results), f"{[r for r in results if not isinstance(r, tuple)]}"
        for i, (dets, _) in enumerate(results):  # type: ignore[misc]
            assert close_to(dets, yolox.detect(images[i % len(images)]))
        assert waits[-1] > 0.3 and service.stats.late >= 1, f"the queue outlasted the deadline: {figures}"
        assert service.stats.restarts == 0 and service.stats.overloaded == 0 and service.alive(), figures
        print(f"\nbusy service: {figures}")

        for client in clients:
            client.overload_after_s = 0.3
        results = in_threads(lambda i: clients[i].detect(images[i % len(images)]), cameras)
        failed = [r for r in results if isinstance(r, DetectorFailure)]
        assert failed and all("overloaded" in f.reason for f in failed), results
        assert len(failed) == service.stats.overloaded < cameras, service.stats
        assert service.alive() and service.stats.restarts == 0
    finally:
        service.close()


def _fail_over_and_back(shared: SharedDetectors, images: list[np.ndarray], yolox: Detector, nanodet: Detector,
                        sig: signal.Signals, within_s: tuple[float, float], reason: str) -> list[CoverageChange]:
    changes: list[CoverageChange] = []
    cameras = [shared.for_camera(on_change=changes.append, restart_backoff_s=0.2) for _ in range(CAMERAS)]
    try:
        for camera in cameras:
            assert close_to(camera.detect(images[0]), yolox.detect(images[0]))
        old_pid = shared.service.pid
        os.kill(old_pid, sig)  # type: ignore[arg-type]
        start = time.monotonic()
        results = in_threads(lambda i: (cameras[i].detect(images[i]), time.monotonic() - start))
        for i, result in enumerate(results):
            assert isinstance(result, tuple), result
            dets, took = result
            print(f"camera {i}: switched to the backup in {took * 1000:.0f} ms")
            assert within_s[0] <= took < within_s[1]
            assert close_to(dets, nanodet.detect(images[i])), "the same frame was retried on the backup"
        degraded = [c for c in changes if c.state == "degraded"]
        assert len(degraded) == CAMERAS and all(c.active == "nanodet-m-320" and reason in c.reason for c in degraded)
        # one restart of the shared child brings every camera back to the primary
        assert wait_for(lambda: all(c.state == "ok" for c in cameras)), changes
        assert shared.service.pid != old_pid and shared.service.stats.restarts == 1
        assert len([c for c in changes if c.state == "restored"]) == CAMERAS
        for i, camera in enumerate(cameras):
            assert camera.name == "yolox-nano" and close_to(camera.detect(images[i]), yolox.detect(images[i]))
        return changes
    finally:
        for camera in cameras:
            camera.close()


def test_killed_service_fails_every_camera_over_then_restores(shared: SharedDetectors, images: list[np.ndarray],
                                                              yolox: Detector, nanodet: Detector) -> None:
    changes = _fail_over_and_back(shared, images, yolox, nanodet, signal.SIGKILL, (0.0, 1.0), "crashed")
    assert "SIGKILL" in changes[0].reason


def test_hung_service_fails_every_camera_over_within_the_deadline(shared: SharedDetectors, images: list[np.ndarray],
                                                                  yolox: Detector, nanodet: Detector) -> None:
    _fail_over_and_back(shared, images, yolox, nanodet, signal.SIGSTOP, (DEADLINE_S, DEADLINE_S + 0.5), "hung")


def test_coverage_changes_reach_each_cameras_bus(shared: SharedDetectors, images: list[np.ndarray]) -> None:
    """The per-camera on_change (Service publishes CameraCoverage with it) names each camera once."""
    bus = Bus()
    seen: list[CameraCoverage] = []
    bus.subscribe(CameraCoverage, seen.append)
    cameras: list[FailoverDetector] = [
        shared.for_camera(on_change=lambda c, n=f"cam{i}": bus.publish(CameraCoverage(n, c)), restart_backoff_s=0.2)
        for i in range(CAMERAS)]
    try:
        cameras[0].detect(images[0])
        os.kill(shared.service.pid, signal.SIGKILL)  # type: ignore[arg-type]
        in_threads(lambda i: cameras[i].detect(images[0]))
        assert sorted(m.camera for m in seen if m.change.state == "degraded") == ["cam0", "cam1", "cam2"]
    finally:
        for camera in cameras:
            camera.close()


def test_dynamic_batch_model_runs_one_nchw_call(installed_models: None, yolox: Detector, images: list[np.ndarray],
                                                tmp_path: Path) -> None:
    """Where a model's batch is dynamic, detect_batch stacks the inputs into one call with the same results."""
    pytest.importorskip("onnx")
    spec = dynamic_batch_copy(yolox.spec, yolox.spec.path(), tmp_path / "yolox-batch.onnx")
    batched = load_file(spec, tmp_path / "yolox-batch.onnx")
    assert batched.batchable and not yolox.batchable
    calls = batched.calls
    runs: list[int] = []
    real_run = batched.session.run
    batched.session.run = lambda *a, **k: runs.append(1) or real_run(*a, **k)  # type: ignore[method-assign]
    got = batched.detect_batch(images, [0.3] * len(images))
    assert len(runs) == 1 and batched.calls - calls == len(images)
    for dets, img in zip(got, images, strict=True):
        assert close_to(dets, yolox.detect(img))


def test_service_without_a_loadable_model_says_why(installed_models: None) -> None:
    with pytest.raises(DetectorFailure, match="could not load the model"):
        DetectorService("no-such-model", start_timeout_s=60)
