"""Detector failover with real child processes and real models: crash (SIGKILL), hang (SIGSTOP), restore, blind."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from trustcam.vision.detections import Detections
from trustcam.vision.detectors import Detector
from trustcam.vision.detectors.failover import (
    AIBlind,
    CoverageChange,
    DetectorFailure,
    FailoverDetector,
    ProcessDetector,
)
from trustcam.vision.frame_detector import FrameDetector

DEADLINE_S = 1.0


@pytest.fixture(scope="module")
def image(coco_root: Path) -> np.ndarray:
    img = cv2.imread(str(coco_root / "images" / "000000000036.jpg"))
    assert img is not None
    return img


@pytest.fixture
def primary(installed_models: None) -> Iterator[ProcessDetector]:
    det = ProcessDetector("yolox-nano", deadline_s=DEADLINE_S)
    yield det
    det.close()


def same(a: Detections, b: Detections) -> bool:
    return (
        np.array_equal(a.boxes, b.boxes)
        and np.array_equal(a.scores, b.scores)
        and np.array_equal(a.class_ids, b.class_ids)
    )


def wait_for(predicate: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_child_process_detector_matches_in_process(
    primary: ProcessDetector, yolox: Detector, image: np.ndarray
) -> None:
    dets = primary.detect(image)
    assert len(dets) > 0 and same(dets, yolox.detect(image))
    assert (primary.name, primary.sha256, primary.input_size) == (yolox.name, yolox.sha256, yolox.input_size)
    failover = FailoverDetector(primary, [])
    assert same(FrameDetector(failover).detect_full(image), FrameDetector(yolox).detect_full(image))


def test_crash_switches_to_backup_then_restores(
    primary: ProcessDetector, nanodet: Detector, yolox: Detector, image: np.ndarray
) -> None:
    changes: list[CoverageChange] = []
    failover = FailoverDetector(primary, [nanodet], on_change=changes.append)
    try:
        assert same(failover.detect(image), yolox.detect(image))
        os.kill(primary.pid, signal.SIGKILL)  # type: ignore[arg-type]
        start = time.monotonic()
        dets = failover.detect(image)
        switch_s = time.monotonic() - start
        print(f"crash switch time: {switch_s * 1000:.1f} ms")
        assert switch_s < 1.0
        assert same(dets, nanodet.detect(image))
        first = changes[0]
        assert (first.state, first.active, first.failed) == ("degraded", "nanodet-m-320", "yolox-nano")
        assert "crashed" in first.reason and "SIGKILL" in first.reason
        assert wait_for(lambda: failover.state == "ok"), changes
        assert changes[-1].state == "restored" and changes[-1].active == "yolox-nano"
        assert failover.name == "yolox-nano" and failover.sha256 == yolox.sha256
        assert same(failover.detect(image), yolox.detect(image))
    finally:
        failover.close()


def test_hang_switches_within_deadline_then_restores(
    primary: ProcessDetector, nanodet: Detector, yolox: Detector, image: np.ndarray
) -> None:
    changes: list[CoverageChange] = []
    failover = FailoverDetector(primary, [nanodet], on_change=changes.append)
    try:
        failover.detect(image)
        os.kill(primary.pid, signal.SIGSTOP)  # type: ignore[arg-type]
        start = time.monotonic()
        dets = failover.detect(image)
        switch_s = time.monotonic() - start
        print(f"hang switch time: {switch_s * 1000:.1f} ms (deadline {DEADLINE_S}s)")
        assert DEADLINE_S <= switch_s < DEADLINE_S + 0.3
        assert same(dets, nanodet.detect(image))
        assert changes[0].state == "degraded" and "hung" in changes[0].reason
        assert wait_for(lambda: failover.state == "ok"), changes
        assert changes[-1].state == "restored"
        assert same(failover.detect(image), yolox.detect(image))
    finally:
        failover.close()


def test_all_detectors_dead_is_ai_blind(primary: ProcessDetector, image: np.ndarray) -> None:
    backup = ProcessDetector("nanodet-m-320", deadline_s=DEADLINE_S)
    changes: list[CoverageChange] = []
    failover = FailoverDetector(primary, [backup], on_change=changes.append)
    try:
        failover.detect(image)
        os.kill(primary.pid, signal.SIGKILL)  # type: ignore[arg-type]
        os.kill(backup.pid, signal.SIGKILL)  # type: ignore[arg-type]
        start = time.monotonic()
        with pytest.raises(AIBlind):
            failover.detect(image)
        assert time.monotonic() - start < 1.0
        assert [c.state for c in changes[:2]] == ["degraded", "blind"]
        assert changes[1].active is None and changes[1].failed == "nanodet-m-320"
        assert issubclass(AIBlind, DetectorFailure)
        # Both come back in the background; the primary is preferred.
        assert wait_for(lambda: failover.state == "ok"), changes
        assert failover.detect(image) is not None and failover.name == "yolox-nano"
    finally:
        failover.close()
