"""Per-camera drift detection: has what the camera sees, or what the detector finds in it, quietly changed?

Tamper detection catches abrupt sabotage; drift is the slow or silent kind (an IR illuminator that died, a lens
that fogs, a detector that stopped finding people after a re-aim). A baseline of image statistics (brightness,
contrast, sharpness), detection scores per label and detections per frame per label is frozen from known-good
footage, per hour of day where there is enough of it (a night view is not drift from a day view). The recent
window is compared with it: a two-sample KS test for continuous values, PSI for the binned detection counts.
A KS alert also needs a minimum effect size (KS D and a relative shift of the median), because consecutive
frames are strongly correlated and scene content varies, so with hundreds of frames any small difference is
"significant": the second half of an unchanged clip differs from its first by D 0.4-0.5 but medians within 12%.
Each signal alerts once and again only after it recovered.
"""

from __future__ import annotations

import json
import math
import time as _time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from scipy.stats import ks_2samp

from trustcam.ingest.frame import Frame

IMAGE_SIGNALS: tuple[str, ...] = ("brightness", "contrast", "sharpness")
_RATE_BINS = 5  # detections per frame: 0, 1, 2, 3, 4+
_PSI_EPS = 1e-4  # floor for empty bins so PSI stays finite
_MAX_BASELINE = 20_000  # samples kept per signal (evenly thinned beyond)
_EPOCH_2001 = 978_307_200.0  # times above this are wall clock (live); below, seconds into a file
_GRAY_HEIGHT = 120

_ADVICE: dict[str, str] = {
    "brightness": "check the lighting, the IR illuminator and the day/night switch of the camera",
    "contrast": "check for fog, condensation, glare or a failed IR illuminator",
    "sharpness": "check the lens for dirt, condensation or lost focus",
    "score": "the detector is less (or more) sure of what it sees: check the view and consider re-tuning",
    "rate": "the detector finds a different number of objects than usual: check the view, aim and detector",
}


class _Detected(Protocol):
    label: str
    score: float


@dataclass(frozen=True)
class DriftAlert:
    """A signal whose recent distribution differs from the baseline; published on the bus by the integrator."""

    camera: str
    signal: str  # "brightness", "contrast", "sharpness", "score:<label>", "rate:<label>"
    time: float
    statistic: str  # "ks" or "psi"
    value: float
    p_value: float | None
    baseline: dict[str, float]  # mean, p10, p90, n
    current: dict[str, float]
    message: str


@dataclass
class _Sample:
    time: float
    hour: int
    image: tuple[float, float, float]
    scores: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


# A baseline for one hour (or all day): signal name -> values. Rates are per-frame counts, "rate:<label>".
_Baseline = dict[str, list[float]]


def hour_of(t: float) -> int:
    """Hour of day: local clock for live (epoch) times, else hours into the file (so long files still split)."""
    if t > _EPOCH_2001:
        return _time.localtime(t).tm_hour
    return int(t // 3600) % 24


def image_stats(frame: Frame) -> tuple[float, float, float]:
    """Brightness (mean), contrast (std) and sharpness (variance of the Laplacian) of a small grey image."""
    gray = frame.gray(_GRAY_HEIGHT)
    mean, std = cv2.meanStdDev(gray)
    lap = cv2.Laplacian(gray, cv2.CV_64F)
    return float(mean[0, 0]), float(std[0, 0]), float(lap.var())


def summary(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Compact evidence for an alert (the raw samples are too many to show)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"mean": math.nan, "p10": math.nan, "p90": math.nan, "n": 0.0}
    p10, p90 = np.percentile(a, [10, 90])
    return {"mean": float(a.mean()), "p10": float(p10), "p90": float(p90), "n": float(a.size)}


def psi(baseline_counts: Sequence[float], current_counts: Sequence[float]) -> float:
    """Population stability index of detections-per-frame, binned 0..3 and 4+ (>0.25 is a large shift)."""
    edges = np.arange(_RATE_BINS + 1) - 0.5
    edges[-1] = np.inf
    b = np.histogram(np.asarray(baseline_counts, float), edges)[0].astype(float)
    c = np.histogram(np.asarray(current_counts, float), edges)[0].astype(float)
    b = np.maximum(b / max(b.sum(), 1.0), _PSI_EPS)
    c = np.maximum(c / max(c.sum(), 1.0), _PSI_EPS)
    return float(np.sum((c - b) * np.log(c / b)))


def _thin(values: list[float]) -> list[float]:
    if len(values) <= _MAX_BASELINE:
        return values
    idx = np.linspace(0, len(values) - 1, _MAX_BASELINE).round().astype(int)
    return [values[i] for i in idx]


@dataclass(frozen=True)
class DriftCleared:
    """A drifted signal is back within its baseline (the episode that :class:`DriftAlert` opened has ended)."""

    camera: str
    signal: str
    time: float


class DriftMonitor:
    """Per-camera drift monitor: :meth:`observe` every analysed frame, :meth:`check` now and then."""

    def __init__(
        self,
        camera: str,
        *,
        window_s: float = 600.0,
        min_samples: int = 200,
        ks_alpha: float = 0.001,
        psi_threshold: float = 0.25,
        min_ks_stat: float = 0.3,
        min_shift: float = 0.2,
    ) -> None:
        self.camera = camera
        self.window_s = window_s
        self.min_samples = min_samples
        self.ks_alpha = ks_alpha
        self.psi_threshold = psi_threshold
        self.min_ks_stat = min_ks_stat  # effect size: correlated frames make tiny p-values cheap
        self.min_shift = min_shift  # and the median must move by this fraction of the baseline median
        self._collected: list[_Sample] = []  # since start or the last freeze: the next baseline
        self._recent: deque[_Sample] = deque()
        self.baseline: dict[str, _Baseline] = {}  # "all" and "0".."23"
        self._active: set[str] = set()

    # -- collecting ------------------------------------------------------------------------------------------

    def observe(self, frame: Frame, objects: Sequence[_Detected]) -> None:
        """Record one analysed frame's image statistics and detections."""
        sample = _Sample(frame.time, hour_of(frame.time), image_stats(frame))
        for obj in objects:
            sample.scores.setdefault(obj.label, []).append(float(obj.score))
            sample.counts[obj.label] = sample.counts.get(obj.label, 0) + 1
        self._collected.append(sample)
        if len(self._collected) > 4 * _MAX_BASELINE:
            del self._collected[: len(self._collected) - 4 * _MAX_BASELINE]
        self._recent.append(sample)
        while self._recent and self._recent[0].time < frame.time - self.window_s:
            self._recent.popleft()

    @staticmethod
    def _signals(samples: Sequence[_Sample], labels: set[str]) -> _Baseline:
        out: _Baseline = {name: [s.image[i] for s in samples] for i, name in enumerate(IMAGE_SIGNALS)}
        for label in sorted(labels):
            out[f"score:{label}"] = [v for s in samples for v in s.scores.get(label, ())]
            out[f"rate:{label}"] = [float(s.counts.get(label, 0)) for s in samples]
        return out

    def freeze_baseline(self) -> None:
        """Make the samples collected so far the baseline (known-good footage); collecting and the window restart."""
        samples = self._collected
        if not samples:
            return
        labels = {label for s in samples for label in s.counts}
        baseline = {"all": self._signals(samples, labels)}
        for hour in sorted({s.hour for s in samples}):
            in_hour = [s for s in samples if s.hour == hour]
            if len(in_hour) >= self.min_samples:
                baseline[str(hour)] = self._signals(in_hour, labels)
        self.baseline = {k: {name: _thin(v) for name, v in b.items()} for k, b in baseline.items()}
        self._collected = []
        self._recent.clear()  # the window must not compare the baseline with itself
        self._active.clear()

    # -- testing ---------------------------------------------------------------------------------------------

    def check(self, now: float) -> list[DriftAlert | DriftCleared]:
        """Compare the recent window with the baseline: an alert when a signal starts drifting, a clear when a
        drifting one is back to normal (nothing while a state lasts)."""
        recent = [s for s in self._recent if s.time >= now - self.window_s]
        if not self.baseline or len(recent) < self.min_samples:
            return []
        base = self.baseline.get(str(hour_of(now)), self.baseline["all"])
        labels = {k.split(":", 1)[1] for k in base if k.startswith("rate:")}
        labels |= {label for s in recent for label in s.counts}
        current = self._signals(recent, labels)
        alerts: list[DriftAlert | DriftCleared] = []
        for signal, values in current.items():
            ref = base.get(signal)
            if ref is None:  # a label never seen in the baseline: all-zero counts, no scores
                if not signal.startswith("rate:"):
                    continue
                ref = [0.0] * len(base["brightness"])
            result = self._test(signal, ref, values)
            if result is None:
                if signal in self._active:
                    self._active.discard(signal)
                    alerts.append(DriftCleared(self.camera, signal, now))
                continue
            stat, value, p = result
            if signal in self._active:
                continue
            self._active.add(signal)
            alerts.append(self._alert(signal, now, stat, value, p, ref, values))
        return alerts

    def _test(self, signal: str, ref: list[float], cur: list[float]) -> tuple[str, float, float | None] | None:
        """The drift test for one signal, or None when it shows no drift (or there is too little data)."""
        if signal.startswith("rate:"):
            value = psi(ref, cur)
            return ("psi", value, None) if value > self.psi_threshold else None
        need = self.min_samples if signal in IMAGE_SIGNALS else max(20, self.min_samples // 4)
        if len(ref) < need or len(cur) < need:
            return None
        res = ks_2samp(ref, cur)
        d, p = float(res.statistic), float(res.pvalue)
        ref_median = float(np.median(ref))
        shift = abs(float(np.median(cur)) - ref_median) / max(abs(ref_median), 1e-9)
        return ("ks", d, p) if p < self.ks_alpha and d >= self.min_ks_stat and shift >= self.min_shift else None

    def _alert(
        self, signal: str, now: float, stat: str, value: float, p: float | None, ref: list[float], cur: list[float]
    ) -> DriftAlert:
        b, c = summary(ref), summary(cur)
        kind = signal.split(":", 1)[0]
        what = f"{signal.split(':', 1)[1]} detections per frame" if kind == "rate" else signal
        if kind == "score":
            what = f"{signal.split(':', 1)[1]} detection scores"
        direction = "fell" if c["mean"] < b["mean"] else "rose"
        test = f"KS D={value:.2f}, p={p:.1e}" if stat == "ks" else f"PSI={value:.2f} (threshold {self.psi_threshold})"
        message = (
            f"camera {self.camera}: {what} drifted from the baseline ({test}): mean {direction} from "
            f"{b['mean']:.3g} (p10 {b['p10']:.3g}, p90 {b['p90']:.3g}, n={b['n']:.0f}) to {c['mean']:.3g} "
            f"(p10 {c['p10']:.3g}, p90 {c['p90']:.3g}, n={c['n']:.0f}); {_ADVICE[kind]}"
        )
        return DriftAlert(self.camera, signal, now, stat, value, p, b, c, message)

    # -- persistence -----------------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Persist the baseline (not the recent window) so a restart does not have to re-learn good footage."""
        doc = {
            "camera": self.camera,
            "settings": {
                "window_s": self.window_s,
                "min_samples": self.min_samples,
                "ks_alpha": self.ks_alpha,
                "psi_threshold": self.psi_threshold,
                "min_ks_stat": self.min_ks_stat,
                "min_shift": self.min_shift,
            },
            "baseline": self.baseline,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)

    @classmethod
    def load(cls, camera: str, path: Path) -> DriftMonitor:
        """A monitor for ``camera`` with the baseline and settings saved at ``path``."""
        doc = json.loads(path.read_text())
        monitor = cls(camera, **doc.get("settings", {}))
        monitor.baseline = {
            k: {name: [float(v) for v in vals] for name, vals in b.items()} for k, b in doc["baseline"].items()
        }
        return monitor
