"""Drift detection on real footage: baseline from the first 70 s of a clip, then the rest unchanged or altered."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from trustcam.ingest.frame import Frame
from trustcam.ingest.source import VideoSource
from trustcam.monitor.drift import DriftAlert, DriftCleared, DriftMonitor, hour_of, psi
from trustcam.vision.detectors import Detector
from trustcam.vision.frame_detector import FrameDetector
from trustcam.vision.tracker import TrackedObject

BASELINE_S = 70.0
Clip = list[tuple[np.ndarray, float, list[TrackedObject]]]


@pytest.fixture(scope="module")
def clip(person_video: Path, yolox: Detector) -> Clip:
    """Frames at 5 fps with their real yolox-nano person detections, decoded and detected once."""
    fd = FrameDetector(yolox, "auto")
    out: Clip = []
    for frame in VideoSource(str(person_video), fps=5).frames():
        d = fd.detect_full(frame.bgr)
        objs = [
            TrackedObject(i, "person", (float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(s))
            for i, (b, s, c) in enumerate(zip(d.boxes, d.scores, d.class_ids, strict=True))
            if c == 0
        ]
        out.append((frame.bgr.copy(), frame.time, objs))
    return out


def _run(
    clip: Clip, change: Callable[[np.ndarray], np.ndarray] = lambda x: x, *, persons: bool = True
) -> tuple[DriftMonitor, list[DriftAlert]]:
    monitor = DriftMonitor("gate", window_s=1000.0)
    for img, t, objs in clip:
        if t < BASELINE_S:
            monitor.observe(Frame.from_image(img, 0, t), objs)
    monitor.freeze_baseline()
    for img, t, objs in clip:
        if t >= BASELINE_S:
            monitor.observe(Frame.from_image(change(img), 0, t), objs if persons else [])
    return monitor, monitor.check(clip[-1][1])


def _by_signal(alerts: list[DriftAlert]) -> dict[str, DriftAlert]:
    return {a.signal: a for a in alerts}


def test_unchanged_footage_raises_no_image_drift(clip: Clip) -> None:
    monitor, alerts = _run(clip)
    signals = _by_signal(alerts)
    assert not {"brightness", "contrast", "sharpness"} & signals.keys()
    assert "rate:person" not in signals  # same people walking by: PSI ~0.002
    # person scores: KS D~0.46 but the median moves ~2%, under the shift guard
    assert "score:person" not in signals
    assert monitor.check(clip[-1][1]) == []


def test_dark_night_without_ir_flags_brightness_and_contrast(clip: Clip) -> None:
    rng = np.random.default_rng(0)

    def night(img: np.ndarray) -> np.ndarray:
        return np.clip(img * 0.35 + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)

    monitor, alerts = _run(clip, night)
    signals = _by_signal(alerts)
    for name in ("brightness", "contrast"):
        alert = signals[name]
        assert alert.statistic == "ks"
        assert alert.p_value is not None and alert.p_value < monitor.ks_alpha
        assert alert.value > 0.9
        assert alert.current["mean"] < 0.5 * alert.baseline["mean"]
        assert "KS D=" in alert.message and "fell" in alert.message and "check" in alert.message
    # alerted once: the next check while still dark is silent
    assert monitor.check(clip[-1][1]) == []
    # daylight again: once the recent window holds only normal frames, the episode ends with a clear
    later = 10 * clip[-1][1]
    for img, t, objs in clip:
        monitor.observe(Frame.from_image(img, 0, later + t), objs)
    cleared = monitor.check(later + clip[-1][1])
    assert all(isinstance(m, DriftCleared) for m in cleared)
    assert {"brightness", "contrast"} <= {m.signal for m in cleared}


def test_blur_flags_sharpness(clip: Clip) -> None:
    monitor, alerts = _run(clip, lambda img: cv2.GaussianBlur(img, (0, 0), 4))
    signals = _by_signal(alerts)
    alert = signals["sharpness"]
    assert alert.p_value is not None and alert.p_value < monitor.ks_alpha
    assert alert.current["mean"] < 0.2 * alert.baseline["mean"]
    assert "brightness" not in signals
    assert "lens" in alert.message


def test_persons_gone_flags_rate_by_psi(clip: Clip) -> None:
    monitor, alerts = _run(clip, persons=False)
    signals = _by_signal(alerts)
    alert = signals["rate:person"]
    assert alert.statistic == "psi" and alert.p_value is None
    assert alert.value > monitor.psi_threshold
    assert alert.current["mean"] == 0.0 and alert.baseline["mean"] > 0.3
    assert not {"brightness", "contrast", "sharpness"} & signals.keys()


def test_save_load_keeps_baseline(clip: Clip, tmp_path: Path) -> None:
    monitor, _ = _run(clip)
    path = tmp_path / "drift" / "gate.json"
    monitor.save(path)
    loaded = DriftMonitor.load("gate", path)
    assert loaded.baseline == monitor.baseline
    assert loaded.min_samples == monitor.min_samples and loaded.psi_threshold == monitor.psi_threshold
    # the restored monitor detects drift without re-learning
    for img, t, _objs in clip:
        if t >= BASELINE_S:
            loaded.observe(Frame.from_image(cv2.GaussianBlur(img, (0, 0), 4), 0, t), [])
    signals = _by_signal(loaded.check(clip[-1][1]))
    assert {"sharpness", "rate:person"} <= signals.keys()


def test_helpers() -> None:
    assert hour_of(3 * 3600 + 5) == 3 and hour_of(25 * 3600) == 1
    assert psi([0, 1, 2, 1] * 50, [0, 1, 2, 1] * 50) == pytest.approx(0.0)
    assert psi([1] * 100, [0] * 100) > 1.0
