"""One detector pool per Ray node, with a real local Ray (one node) and real models: two camera-like actors (each
its own Ray worker process) find the same pool, their concurrent calls leave in shared model batches, the answers
are those of the model run directly, and the pool outlives the actor that created it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from trustcam.cluster.detector_pool import NAMESPACE, POOL_PREFIX, PoolDetectors, node_pool, pool_name, stop_pools
from trustcam.config.schema import Settings
from trustcam.vision.detections import Detections
from trustcam.vision.detectors import Detector
from trustcam.vision.detectors.failover import DetectorFailure, FailoverDetector

ray = pytest.importorskip("ray")

FRAMES = 12
GATHER_S = 0.05  # generous, so that the two callers' calls meet in one batch on a loaded 2-core box


@pytest.fixture(scope="module")
def local_ray(installed_models: None) -> Iterator[None]:
    here = str(Path(__file__).parent)  # the workers import this module for the Camera actor class
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, namespace=NAMESPACE, logging_level="WARNING",
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        yield
    finally:
        stop_pools()
        ray.shutdown()


@pytest.fixture(scope="module")
def frames(person_video: Path) -> list[np.ndarray]:
    """Every 10th frame of the person clip (somebody walks through it), as the pipeline would send them."""
    capture = cv2.VideoCapture(str(person_video))
    got: list[np.ndarray] = []
    index = 0
    while len(got) < FRAMES:
        ok, frame = capture.read()
        assert ok, "the person clip ended early"
        if index % 10 == 0:
            got.append(frame)
        index += 1
    capture.release()
    return got


def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", detector={"failover": ["nanodet-m-320"]})  # type: ignore[arg-type]


class Camera:
    """A stand-in for a camera actor: gets the node's pool the way a camera actor does and calls it."""

    def __init__(self, settings: Settings) -> None:
        self.pool = node_pool(settings, gather_s=GATHER_S)
        self.detectors = PoolDetectors(settings, handle=self.pool)
        self.client = self.detectors.client()
        self.failover: FailoverDetector | None = None

    def pool_id(self) -> str:
        return str(self.pool._actor_id.hex())

    def node_id(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def run(self, frames: list[np.ndarray]) -> list[Detections]:
        return [self.client.detect(frame) for frame in frames]

    def failover_run(self, frames: list[np.ndarray]) -> list[str]:
        """The camera's FailoverDetector on the pool: which model answered each frame."""
        if self.failover is None:
            self.failover = self.detectors.for_camera()
        detector = self.failover
        names = []
        for frame in frames:
            detector.detect(frame)
            names.append(detector.name)
        return names


def close_to(a: Detections, b: Detections, tol: float = 1e-3) -> bool:
    return (len(a) == len(b) and np.allclose(a.boxes, b.boxes, atol=tol) and np.allclose(a.scores, b.scores, atol=tol)
            and np.array_equal(a.class_ids, b.class_ids))


@pytest.mark.timeout(240)
def test_two_camera_processes_share_one_pool_and_its_batches(local_ray: None, frames: list[np.ndarray],
                                                            yolox: Detector, tmp_path: Path) -> None:
    """Both actors get the node's one pool; each of their detections equals the model's own; at least one model
    call carried both callers' frames; killing the actor that created the pool leaves the pool serving."""
    cfg = settings(tmp_path)
    remote = ray.remote(num_cpus=0)(Camera)
    creator = remote.remote(cfg)
    first = ray.get(creator.pool_id.remote())  # the pool exists now, created (and owned, were it not detached) by it
    cameras = [creator, remote.remote(cfg)]
    node = ray.get(creator.node_id.remote())
    assert ray.get([c.pool_id.remote() for c in cameras]) == [first, first]
    pools = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(POOL_PREFIX)]
    assert [a["name"] for a in pools] == [pool_name(node)], pools  # one per node, named after it

    results = ray.get([c.run.remote(frames) for c in cameras], timeout=120)
    expected = [yolox.detect(frame) for frame in frames]
    assert sum(len(d) for d in expected) > 0, "the clip shows a person: the comparison must compare boxes"
    for answers in results:
        assert all(close_to(got, want) for got, want in zip(answers, expected, strict=True))

    pool = ray.get_actor(pool_name(node), namespace=NAMESPACE)
    stats = ray.get(pool.stats.remote())
    assert stats["requests"] == 2 * FRAMES and stats["callers"] == 2, stats
    assert stats["max_batch"] >= 2 and stats["mixed_calls"] >= 1, stats  # one model call, both cameras' frames
    assert stats["calls"] < stats["requests"], stats

    ray.kill(creator, no_restart=True)  # the pool's creator: its owner, were the pool not detached
    time.sleep(2.0)
    again = ray.get(cameras[1].run.remote(frames[:2]), timeout=60)
    assert all(close_to(got, want) for got, want in zip(again, expected[:2], strict=True))
    assert ray.get(pool.stats.remote())["requests"] == 2 * FRAMES + 2


@pytest.mark.timeout(240)
def test_a_crashed_pool_model_fails_over_and_comes_back(local_ray: None, frames: list[np.ndarray],
                                                        tmp_path: Path) -> None:
    """SIGKILL the pool's model process: the camera's next call fails over to its in-process backup (no frame
    lost), and the failover's restart loop brings the pool's model back as the active detector."""
    cfg = settings(tmp_path)
    camera = ray.remote(num_cpus=0)(Camera).remote(cfg)
    pool = ray.get_actor(pool_name(ray.get(camera.node_id.remote())), namespace=NAMESPACE)
    model_pid = ray.get(pool.info.remote())["pid"]
    os.kill(model_pid, signal.SIGKILL)
    names = ray.get(camera.failover_run.remote(frames[:2]), timeout=60)
    assert names[0] == "nanodet-m-320", names  # the backup answered the frame the pool could not
    deadline = time.monotonic() + 60
    while True:
        names = ray.get(camera.failover_run.remote(frames[:1]), timeout=60)
        info = ray.get(pool.info.remote())
        if names == ["yolox-nano"] and info["pid"] != model_pid and info["failure"] is None:
            break
        assert time.monotonic() < deadline, f"the pool's model was not restarted: {info}"
        time.sleep(0.5)
    assert ray.get(pool.stats.remote())["restarts"] >= 1


def test_a_pool_of_another_model_is_refused(local_ray: None, tmp_path: Path) -> None:
    """A node's pool already running another model is not silently used: the error names both and the fix."""
    cfg = settings(tmp_path)
    other = Settings(data_dir=tmp_path / "data", detector={"model": "nanodet-m-320",  # type: ignore[arg-type]
                                                           "failover": ["yolox-nano"]})
    handle = node_pool(cfg, name="mismatch-test-pool")
    try:
        with pytest.raises(DetectorFailure, match="runs yolox-nano, not nanodet-m-320"):
            PoolDetectors(other, handle=handle).client()
    finally:
        ray.get(handle.close.remote())
        ray.kill(handle, no_restart=True)
