"""A live camera's worker never ends on an unexpected analysis error: the pipeline restarts after a backoff (1 s
doubling to 60 s, reset after a healthy period) and a ``health`` alert names the error, then clears."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import wait_until
from trustcam.bus import Bus
from trustcam.config.schema import Settings
from trustcam.ingest.frame import Frame
from trustcam.monitor.health import HealthAlert, HealthCleared
from trustcam.pipeline import CameraPipeline, FrameResult
from trustcam.service import PIPELINE_FAILED, CameraWorker

ERROR = "model output has shape (0, 85); source rtsp://admin:hunter2@10.0.0.5/stream"


@pytest.fixture
def worker(person_video: Path, installed_models: None, tmp_path: Path) -> CameraWorker:
    """A real worker on the person clip (played like a live camera), the primary model in-process."""
    settings = Settings.model_validate({
        "data_dir": str(tmp_path / "data"), "detector": {"failover": []},
        "cameras": {"cam": {"source": str(person_video), "detect": {"fps": 5},
                            "objects": {"track": ["person"]}}}})
    return CameraWorker("cam", settings.cameras["cam"], settings, Bus(), tmp_path / "snapshots")


def test_failed_pipeline_restarts_and_raises_a_health_alert(worker: CameraWorker,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    raised, cleared = [], []
    worker.bus.subscribe(HealthAlert, raised.append)
    worker.bus.subscribe(HealthCleared, cleared.append)
    real_process = CameraPipeline.process
    calls = []

    def fails_once(pipeline: CameraPipeline, frame: Frame) -> FrameResult:
        calls.append(pipeline)
        if len(calls) == 15:  # after three seconds of real analysis, with the person's event open
            raise ValueError(ERROR)
        return real_process(pipeline, frame)

    monkeypatch.setattr(CameraPipeline, "process", fails_once)
    worker.restart_first_s, worker.healthy_after_s = 0.3, 2.0
    first = worker.pipeline
    worker.start()
    try:
        wait_until(lambda: raised, 60, "the health alert")
        wait_until(lambda: worker.restarts == 1 and len(calls) > 30, 30, "the restarted pipeline to analyse frames")
        wait_until(lambda: cleared, 30, "the alert to clear after a healthy period")
        assert worker.is_alive()
    finally:
        worker.stop()
        worker.join(30)
    assert not worker.is_alive()
    [alert] = raised
    assert (alert.camera, alert.kind) == ("cam", PIPELINE_FAILED) == (cleared[0].camera, cleared[0].kind)
    assert "ValueError: model output has shape (0, 85)" in alert.message and "restarting it in 0.3 s" in alert.message
    assert "hunter2" not in alert.message and "rtsp://10.0.0.5/…" in alert.message  # alerts leave the machine
    assert worker.pipeline is not first and calls[-1] is worker.pipeline  # a fresh pipeline, analysing
    assert first.stats.frames == 14 and worker.pipeline.stats.frames > 10


def test_backoff_doubles_to_a_minute_and_resets_after_a_healthy_run(worker: CameraWorker) -> None:
    raised = []
    worker.bus.subscribe(HealthAlert, raised.append)
    delays = [worker._failed(ValueError(ERROR), ran_s=0.1) for _ in range(9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert len(raised) == 1  # the same error again and again: one alert, not a storm
    assert worker._failed(ValueError(ERROR), ran_s=worker.healthy_after_s) == 1.0  # it had run healthy: reset
    assert worker._failed(KeyError("zones"), ran_s=0.1) == 2.0
    assert [a.message.split("(")[1].split(")")[0] for a in raised[1:]] == ["KeyError: 'zones'"]  # a new error


def test_live_queue_counts_the_frames_it_drops() -> None:
    """trustcam_frames_dropped is the real loss: frames the live queue threw away while analysis was busy, not frames
    sent minus frames analysed (up to 3 are in flight at any moment)."""
    import threading
    import time as clock

    import numpy as np

    from trustcam.ingest.frame import Frame
    from trustcam.service import _threaded

    def produce():  # 40 frames as fast as possible
        for i in range(40):
            yield Frame(np.zeros((4, 4, 3), np.uint8), i, i / 10)

    dropped: list[int] = []
    consumed = 0
    for _ in _threaded(produce(), 2, True, threading.Event(), [], lambda: dropped.append(1)):
        consumed += 1
        clock.sleep(0.02)  # analysis slower than the stream
    assert dropped and consumed + len(dropped) == 40
