"""Tamper detection benchmark on the shared clips: detection delay per fault kind and false alarms per hour.

Run ``python bench/tamper.py`` (prints figures, asserts nothing). Faults are made from the real footage with
OpenCV from ``t0`` on; the delay is the first matching alert's frame time minus ``t0``. False alarms are any
alert on the unmodified clips. The car clip contains scene cuts (an edited video), which are real view changes:
its alerts are listed so they can be judged. The last line is ``false_alarms_per_hour=X`` over both clips.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from trustcam.ingest.frame import Frame
from trustcam.ingest.source import VideoSource
from trustcam.monitor.tamper import TamperAlert, TamperDetector

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
FPS = 5.0

Fault = Callable[[list[np.ndarray], int, int], np.ndarray]  # (frames, index, t0 index) -> faulted image


def load(path: Path, fps: float = FPS) -> tuple[list[np.ndarray], list[float]]:
    images, times = [], []
    for frame in VideoSource(str(path), fps=fps).frames():
        images.append(frame.bgr.copy())
        times.append(frame.time)
    return images, times


def _cover(frames: list[np.ndarray], i: int, k: int) -> np.ndarray:
    img = frames[i]
    out = np.random.default_rng(i).normal(12, 3, img.shape).clip(0, 255).astype(np.uint8)
    w = img.shape[1]
    cut = int(w * 0.95)  # 95% covered: a hand or tape leaves a sliver of the view at the edge
    out[:, cut:] = img[:, cut:]
    return out


def _black(frames: list[np.ndarray], i: int, k: int) -> np.ndarray:
    return np.zeros_like(frames[i])


def _blur(frames: list[np.ndarray], i: int, k: int) -> np.ndarray:
    return cv2.GaussianBlur(frames[i], (0, 0), 8)


def _shift(frames: list[np.ndarray], i: int, k: int) -> np.ndarray:
    img = frames[i]
    h, w = img.shape[:2]
    crop = img[int(h * 0.18) :, int(w * 0.18) :]  # re-aimed down-right by 18% and zoomed back to full size
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)


def _rotate(frames: list[np.ndarray], i: int, k: int) -> np.ndarray:
    img = frames[i]
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 12, 1.2)
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def _glare(frames: list[np.ndarray], i: int, k: int) -> np.ndarray:
    img = frames[i].astype(np.float32)
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.hypot(xx - w * 0.5, yy - h * 0.45) / (h * 0.5)
    light = np.clip(1.6 - d, 0, 1)[..., None] * 400  # torch in the lens: saturated core, bright halo
    return np.clip(img + light, 0, 255).astype(np.uint8)


def _overexpose(frames: list[np.ndarray], i: int, k: int) -> np.ndarray:
    return cv2.convertScaleAbs(frames[i], alpha=3.0, beta=60)


def _freeze(frames: list[np.ndarray], i: int, k: int) -> np.ndarray:
    return frames[k]


def _loop(frames: list[np.ndarray], i: int, k: int) -> np.ndarray:
    n = int(5 * FPS)  # the last 5 s before t0, replayed over and over
    return frames[k - n + (i - k) % n]


def relight(frames: list[np.ndarray], i: int, k: int) -> np.ndarray:
    return cv2.convertScaleAbs(frames[i], alpha=0.4)


FAULTS: dict[str, tuple[str, Fault]] = {
    "cover": ("covered", _cover),
    "black": ("covered", _black),
    "blur": ("defocused", _blur),
    "shift": ("moved", _shift),
    "rotate": ("moved", _rotate),
    "glare": ("blinded", _glare),
    "overexpose": ("blinded", _overexpose),
    "freeze": ("frozen", _freeze),
    "loop": ("looped", _loop),
    "relight": ("", relight),
}


def run(images: list[np.ndarray], times: list[float], fault: Fault | None = None, t0: float = 0.0,
        end: float | None = None, **kwargs: float) -> tuple[list[TamperAlert], float]:
    """Feed the (faulted from ``t0``) frames to a detector; returns its alerts and mean ms per frame."""
    detector = TamperDetector("cam", **kwargs)
    k = next((j for j, t in enumerate(times) if t >= t0), len(times))
    alerts: list[TamperAlert] = []
    spent = 0.0
    n = 0
    for i, t in enumerate(times):
        if end is not None and t > end:
            break
        image = fault(images, i, k) if fault is not None and i >= k else images[i]
        frame = Frame.from_image(image, i, t)
        start = time.perf_counter()
        alerts += [m for m in detector.update(frame) if isinstance(m, TamperAlert)]
        spent += time.perf_counter() - start
        n += 1
    return alerts, 1000 * spent / max(1, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--t0", type=float, default=20.0)
    parser.add_argument("--window", type=float, default=15.0, help="seconds of fault fed after t0")
    args = parser.parse_args()
    person = load(VIDEOS / "one-by-one-person-detection.mp4")
    car = load(VIDEOS / "car-detection.mp4")
    clips = {"person": person, "car": car}
    total_alerts, total_s = 0, 0.0
    for name, (images, times) in clips.items():
        alerts, ms = run(images, times)
        seconds = times[-1] - times[0]
        rate = len(alerts) * 3600 / seconds
        total_alerts += len(alerts)
        total_s += seconds
        print(f"normal {name}: {seconds:.1f} s analysed ({len(times)} frames, {ms:.2f} ms/frame), "
              f"{len(alerts)} alerts = {rate:.0f}/h")
        for a in alerts:
            print(f"    {a.kind} at {a.time:.1f} s (started {a.started:.1f}) {a.evidence}")
    for name, (images, times) in clips.items():
        t0 = min(args.t0, times[-1] - args.window)
        if name == "car":
            t0 = 8.0  # before the first cut (12.8 s), after 5 s of history for the loop
        for fault_name, (kind, fault) in FAULTS.items():
            end = None if fault is relight else t0 + args.window  # relight: the whole rest of the clip
            alerts, _ = run(images, times, fault, t0, end=end)
            hit = next((a for a in alerts if a.kind == kind), None)
            delay = f"{hit.time - t0:.1f} s" if hit else "not detected"
            others = [f"{a.kind}@{a.time - t0:+.1f}" for a in alerts if a is not hit]
            print(f"{name:6s} {fault_name:10s} -> {kind or 'nothing':9s} delay {delay:12s} other: {others}")
    print(f"normal footage in all: {total_s:.1f} s, {total_alerts} false alarms")
    print(f"false_alarms_per_hour={total_alerts * 3600 / total_s:.1f}")


if __name__ == "__main__":
    main()
