"""Camera tamper detection on a small grey image: covered, defocused, moved, blinded, frozen, looped.

Every statistic is compared with a reference learned from the first ``learn_s`` of footage and afterwards updated
only while nothing is suspected, so that an attacker cannot slowly teach the detector a tampered view. Measures
are normalised by contrast (or are correlations), so a global brightness change (lights off, IR switch) alone
changes nothing. A condition alerts once after persisting ``confirm_s`` and again only after it has cleared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from trustcam.ingest.frame import Frame

TamperKind = Literal["covered", "defocused", "moved", "blinded", "frozen", "looped"]
_RING = 4096  # remembered frame descriptors: 60 s at up to ~68 fps
KINDS: tuple[TamperKind, ...] = ("covered", "blinded", "defocused", "moved", "frozen", "looped")

_MESSAGES: dict[str, str] = {
    "covered": "lens covered or sprayed on camera {camera}: check the camera and uncover or clean the lens",
    "defocused": "camera {camera} is out of focus: check the lens for smears or condensation and refocus it",
    "moved": "camera {camera} no longer sees its reference view: check whether it was re-aimed or knocked, "
    "then re-aim it (or accept the new view)",
    "blinded": "camera {camera} is blinded by glare or a bright light: check for a torch, IR illuminator or "
    "low sun pointed at the lens",
    "frozen": "camera {camera} sends the same picture over and over: check the camera and the stream "
    "(a frozen encoder or an injected still image)",
    "looped": "camera {camera} replays earlier footage in a loop: check the stream for a replay attack "
    "and the camera's network path",
}


@dataclass(frozen=True)
class TamperAlert:
    """A confirmed tamper condition; published on the bus by the integrator."""

    camera: str
    kind: TamperKind
    time: float  # frame time when confirmed
    started: float  # frame time when the condition began
    evidence: dict[str, float]  # measured statistics with their reference values and thresholds
    message: str


@dataclass(frozen=True)
class TamperCleared:
    """A previously alerted condition is gone (so operators know the camera recovered)."""

    camera: str
    kind: str
    time: float


@dataclass
class _Condition:
    started: float | None = None
    last_seen: float = 0.0
    alerted: bool = False
    evidence: dict[str, float] = field(default_factory=dict)


class TamperDetector:
    """Per-camera tamper detector; call :meth:`update` on every analysed frame (a few fps is enough)."""

    def __init__(
        self,
        camera: str,
        *,
        confirm_s: float = 3.0,
        clear_s: float = 3.0,
        learn_s: float = 4.0,
        reference_tau_s: float = 120.0,
        height: int = 120,
        grid: tuple[int, int] = (4, 6),
        cover_ratio: float = 0.15,
        cover_fraction: float = 0.7,
        defocus_ratio: float = 0.4,
        blind_fraction: float = 0.25,
        moved_ncc: float = 0.4,
        frozen_mad: float = 0.0,
        loop_history_s: float = 60.0,
        loop_min_lag_s: float = 1.0,
        loop_ratio: float = 0.3,
        loop_motion: float = 0.4,
        gap_s: float = 0.6,
    ) -> None:
        self.camera = camera
        self.confirm_s = confirm_s
        self.clear_s = clear_s
        self.learn_s = learn_s
        self.reference_tau_s = reference_tau_s
        self.height = height
        self.grid = grid
        self.cover_ratio = cover_ratio
        self.cover_fraction = cover_fraction
        self.defocus_ratio = defocus_ratio
        self.blind_fraction = blind_fraction
        self.moved_ncc = moved_ncc
        # 0 = bit-identical. Near-identical is not enough: a quiet scene coded with skip blocks, darkened by night,
        # gives consecutive differences of ~0.01 grey levels, which a small threshold turns into false alarms.
        self.frozen_mad = frozen_mad
        self.loop_history_s = loop_history_s
        self.loop_min_lag_s = loop_min_lag_s
        self.loop_ratio = loop_ratio
        self.loop_motion = loop_motion
        self.gap_s = gap_s
        self.rebase()

    def rebase(self) -> None:
        """Forget the reference and learn again (after a legitimate re-aim or lens change)."""
        self._learn_start: float | None = None
        self._ref_image: np.ndarray | None = None  # float32, strongly blurred small grey (the view's layout)
        self._ref_block_std: np.ndarray | None = None
        self._ref_sharp = 0.0
        self._ref_sat = 0.0
        self._ref_frames = 0
        self._last_time: float | None = None
        self._prev_gray: np.ndarray | None = None
        self._prev_desc: np.ndarray | None = None
        self._hist_desc = np.zeros((_RING, 32 * 18), np.float32)
        self._hist_time = np.full(_RING, -np.inf)
        self._count = 0  # frames remembered so far (ring position = count % _RING)
        self._loop_runs: dict[int, tuple[float, int]] = {}  # lag (frames) -> (start time, matched frames)
        self._conditions: dict[str, _Condition] = {k: _Condition() for k in KINDS}

    @property
    def learned(self) -> bool:
        """True once the reference is learned (before that nothing can be detected)."""
        start, last = self._learn_start, self._last_time
        return start is not None and last is not None and last - start >= self.learn_s

    def _blocks(self, image: np.ndarray) -> np.ndarray:
        """The image as (blocks, pixels): vectorised per-block statistics keep a frame well under a millisecond."""
        rows, cols = self.grid
        bh, bw = image.shape[0] // rows, image.shape[1] // cols
        cut = image[: rows * bh, : cols * bw]
        return cut.reshape(rows, bh, cols, bw).transpose(0, 2, 1, 3).reshape(rows * cols, bh * bw)

    def update(self, frame: Frame) -> list[TamperAlert | TamperCleared]:
        """Measure one frame, update the conditions and return alerts confirmed / cleared on it."""
        now = frame.time
        gray = frame.gray(self.height)
        if self._prev_gray is not None and self._prev_gray.shape != gray.shape:
            self.rebase()  # the stream changed resolution or aspect: a new view to learn, not a tamper
        smooth = cv2.GaussianBlur(gray, (5, 5), 0).astype(np.float32)
        view = cv2.GaussianBlur(smooth, (0, 0), 3.0)  # coarse layout only: defocus must not look like a move
        blocks = self._blocks(smooth)
        block_mean = blocks.mean(axis=1)
        block_std = blocks.std(axis=1)
        std = float(gray.std())
        sharp = float(np.abs(cv2.Laplacian(gray, cv2.CV_32F)).mean()) / (std + 1.0)
        sat = float(np.count_nonzero(gray >= 245)) / gray.size
        frozen_mad = float(cv2.absdiff(gray, self._prev_gray).mean()) if self._prev_gray is not None else 255.0
        self._prev_gray = gray
        desc = cv2.resize(gray, (32, 18), interpolation=cv2.INTER_AREA).astype(np.float32)
        motion = float(np.abs(desc - self._prev_desc).mean()) if self._prev_desc is not None else 0.0
        self._prev_desc = desc
        self._last_time = now

        if self._learn_start is None or self._ref_image is None:
            self._learn_start = now
            self._ref_image = view.copy()
            self._ref_block_std = block_std.copy()
            self._ref_sharp, self._ref_sat, self._ref_frames = sharp, sat, 1
            self._remember(now, desc)
            return []
        if now - self._learn_start < self.learn_s:
            self._ref_frames += 1
            a = 1.0 / self._ref_frames
            self._blend(a, view, block_std, sharp, sat)
            self._remember(now, desc)
            return []

        assert self._ref_block_std is not None
        ref_std = self._ref_block_std
        textured = ref_std > 4.0
        n_textured = max(1, int(np.count_nonzero(textured)))
        flat = (block_std < np.maximum(1.5, self.cover_ratio * ref_std)) & (block_mean < 240) & textured
        flat_fraction = float(np.count_nonzero(flat)) / n_textured
        ncc = self._ncc(view, self._ref_image, textured)

        suspected: dict[str, dict[str, float] | None] = dict.fromkeys(KINDS)
        blinded = sat - self._ref_sat >= self.blind_fraction
        if blinded:
            suspected["blinded"] = {"saturated_fraction": sat, "reference": self._ref_sat,
                                    "threshold": self._ref_sat + self.blind_fraction}
        covered = not blinded and flat_fraction >= self.cover_fraction
        if covered:
            suspected["covered"] = {"flat_block_fraction": flat_fraction, "threshold": self.cover_fraction,
                                    "std": std, "reference_block_std": float(np.median(ref_std))}
        moved = not (blinded or covered) and ncc < self.moved_ncc
        if moved:
            suspected["moved"] = {"median_block_correlation": ncc, "threshold": self.moved_ncc}
        # a re-aimed (zoomed, rotated) view changes sharpness too: report the move, not a defocus
        if not (blinded or covered or moved) and sharp < self.defocus_ratio * self._ref_sharp:
            suspected["defocused"] = {"sharpness": sharp, "reference": self._ref_sharp,
                                      "threshold": self.defocus_ratio * self._ref_sharp}
        if not (blinded or covered) and frozen_mad <= self.frozen_mad:
            suspected["frozen"] = {"mean_abs_diff": frozen_mad, "threshold": self.frozen_mad}
        loop = self._loop(now, desc, motion)
        starts: dict[str, float] = {}
        if loop is not None:  # the loop began at its first matched frame, not when enough matches piled up
            suspected["looped"], starts["looped"] = loop
        self._remember(now, desc)

        quiet = all(v is None for v in suspected.values()) and not any(
            c.started is not None for c in self._conditions.values()
        )
        if quiet:
            dt = now - float(self._hist_time[(self._count - 2) % _RING]) if self._count > 1 else 0.0
            a = min(1.0, max(0.0, dt) / self.reference_tau_s)
            self._blend(a, view, block_std, sharp, sat)
        return self._confirm(now, suspected, starts)

    def _blend(self, a: float, view: np.ndarray, block_std: np.ndarray, sharp: float, sat: float) -> None:
        assert self._ref_image is not None and self._ref_block_std is not None
        if self._ref_image.shape != view.shape:
            self._ref_image, self._ref_block_std = view.copy(), block_std.copy()
            return
        cv2.accumulateWeighted(view, self._ref_image, a)
        self._ref_block_std += a * (block_std - self._ref_block_std)
        self._ref_sharp += a * (sharp - self._ref_sharp)
        self._ref_sat += a * (sat - self._ref_sat)

    def _ncc(self, image: np.ndarray, reference: np.ndarray, textured: np.ndarray) -> float:
        """Median zero-mean normalised correlation over textured blocks: gain/offset invariant (relighting) and
        robust to people, who only change a few blocks."""
        if image.shape != reference.shape:
            return 0.0
        if not textured.any():
            return 1.0
        b = self._blocks(image)[textured]
        r = self._blocks(reference)[textured]
        b = b - b.mean(axis=1, keepdims=True)
        r = r - r.mean(axis=1, keepdims=True)
        denom = np.sqrt((b * b).sum(axis=1) * (r * r).sum(axis=1))
        values = np.where(denom > 1e-6, (b * r).sum(axis=1) / np.maximum(denom, 1e-6), 0.0)
        return float(np.median(values))

    def _remember(self, now: float, desc: np.ndarray) -> None:
        slot = self._count % _RING
        self._hist_desc[slot] = desc.reshape(-1)
        self._hist_time[slot] = now
        self._count += 1

    def _loop(self, now: float, desc: np.ndarray, motion: float) -> tuple[dict[str, float], float] | None:
        """A loop = a run of moving frames each far closer to the frame ``lag`` frames back than the scene's own
        frame-to-frame change (static frames match anything, so they neither extend nor break a run)."""
        if motion < self.loop_motion:
            runs = self._loop_runs
        else:
            age = now - self._hist_time
            old = np.flatnonzero((age >= self.loop_min_lag_s) & (age <= self.loop_history_s))
            runs = {}
            if old.size:
                dist = np.abs(self._hist_desc[old] - desc.reshape(-1)).mean(axis=1)
                for slot in old[dist < self.loop_ratio * motion]:
                    lag = (self._count - 1 - int(slot)) % _RING + 1
                    prev = self._loop_runs.get(lag) or self._loop_runs.get(lag - 1) or self._loop_runs.get(lag + 1)
                    runs[lag] = (prev[0], prev[1] + 1) if prev else (now, 1)
        self._loop_runs = runs
        best = max(runs.items(), key=lambda kv: kv[1][1], default=None)
        if best is None or best[1][1] < 3:
            return None
        lag, (start, count) = best
        evidence = {"lag_frames": float(lag), "matched_frames": float(count), "ratio_threshold": self.loop_ratio}
        return evidence, start

    def _confirm(
        self, now: float, suspected: dict[str, dict[str, float] | None], starts: dict[str, float]
    ) -> list[TamperAlert | TamperCleared]:
        out: list[TamperAlert | TamperCleared] = []
        for kind in KINDS:
            cond = self._conditions[kind]
            evidence = suspected[kind]
            if evidence is not None:
                if cond.started is None:
                    cond.started = min(now, starts.get(kind, now))
                cond.last_seen = now
                cond.evidence = evidence
                if not cond.alerted and now - cond.started >= self.confirm_s:
                    cond.alerted = True
                    out.append(TamperAlert(self.camera, kind, now, cond.started, dict(evidence),
                                           _MESSAGES[kind].format(camera=self.camera)))
            elif cond.started is not None:
                if cond.alerted and now - cond.last_seen >= self.clear_s:
                    out.append(TamperCleared(self.camera, kind, now))
                    self._conditions[kind] = _Condition()
                elif not cond.alerted and now - cond.last_seen > self.gap_s:
                    self._conditions[kind] = _Condition()
        return out
