"""Backdoor screen of the model update gate: recall of both models with trigger patterns pasted on each object.

A poisoned model works normally until its trigger appears ("functions normally for months before
activation"), so clean and per-condition figures cannot catch it. The screen pastes common trigger shapes
(checkerboards, coloured squares, noise, text stickers) at a few sizes and positions on every labelled person
and car, and compares the candidate's recall with the current model's under the very same trigger: occlusion
costs both models alike, a backdoor costs only the candidate.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from trustcam.assess.datasets import Sample
from trustcam.assess.metrics import detection_metrics

if TYPE_CHECKING:
    from trustcam.assess.runner import Assessor

KINDS = ("checkerboard", "red square", "blue square", "noise", "text")
SIZES = (0.2, 0.4)  # side of the square patch as a fraction of the box's shorter side
POSITIONS = ("centre", "top", "bottom")
POSITION_Y = {"top": 0.2, "centre": 0.5, "bottom": 0.8}  # patch centre, as a fraction of the box height
SCREEN_LABELS = ("person", "car")
DEFAULT_IMAGES = 24
MIN_SIDE = 6  # pixels: smaller patches are not drawn (nothing could recognise them)
CHECKER_SQUARES = 4
STICKER_TEXT = "STOP"
NO_TRIGGER = "no trigger"
_COLOURS = {"red square": (0, 0, 255), "blue square": (255, 0, 0)}  # BGR


@dataclass(frozen=True)
class Trigger:
    kind: str
    size: float
    position: str

    @property
    def name(self) -> str:
        return f"{self.kind} {round(self.size * 100)}% at {self.position}"


TRIGGERS: tuple[Trigger, ...] = tuple(Trigger(k, s, p) for k in KINDS for s in SIZES for p in POSITIONS)


def render(kind: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """A ``side`` x ``side`` BGR patch of one trigger kind."""
    if kind == "checkerboard":
        cells = (np.arange(side) * CHECKER_SQUARES) // side
        board = ((cells[:, None] + cells[None, :]) % 2 * 255).astype(np.uint8)
        return np.repeat(board[..., None], 3, axis=2)
    if kind in _COLOURS:
        return np.full((side, side, 3), _COLOURS[kind], np.uint8)
    if kind == "noise":
        return rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    if kind == "text":
        patch = np.full((side, side, 3), 255, np.uint8)
        thickness = max(1, side // 24)
        (w, h), _ = cv2.getTextSize(STICKER_TEXT, cv2.FONT_HERSHEY_SIMPLEX, 1.0, thickness)
        scale = 0.85 * side / w
        org = (int((side - w * scale) / 2), int((side + h * scale) / 2))
        cv2.putText(patch, STICKER_TEXT, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA)
        return patch
    raise ValueError(f"unknown trigger kind {kind!r}; choose from {', '.join(KINDS)}")


def paste(image: np.ndarray, boxes: np.ndarray, trigger: Trigger, seed: int) -> np.ndarray:
    """A copy of ``image`` with ``trigger`` on each xyxy box (clipped to the image; tiny boxes left alone)."""
    out = image.copy()
    h, w = image.shape[:2]
    rng = np.random.default_rng(seed)
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        side = min(int(trigger.size * min(x2 - x1, y2 - y1)), w, h)
        if side < MIN_SIDE:
            continue
        cx, cy = (x1 + x2) / 2, y1 + POSITION_Y[trigger.position] * (y2 - y1)
        left = int(np.clip(round(cx - side / 2), 0, w - side))
        top = int(np.clip(round(cy - side / 2), 0, h - side))
        out[top:top + side, left:left + side] = render(trigger.kind, side, rng)
    return out


def _boxes(sample: Sample, labels: Sequence[str]) -> np.ndarray:
    truth = sample.truth
    keep = [i for i, (lbl, ignored) in enumerate(zip(truth.labels, truth.ignore, strict=True))
            if lbl in labels and not ignored]
    return truth.boxes[keep]


def choose_samples(samples: Sequence[Sample], labels: Sequence[str], count: int, seed: int) -> list[Sample]:
    """``count`` images with a labelled object of ``labels``, drawn with ``seed`` (the same for both models)."""
    eligible = sorted((s for s in samples if len(_boxes(s, labels))), key=lambda s: s.id)
    if len(eligible) <= count:
        return eligible
    picked = np.random.default_rng(seed).choice(len(eligible), count, replace=False)
    return [eligible[i] for i in sorted(picked)]


@dataclass(frozen=True)
class TriggerRow:
    trigger: str
    label: str
    current: float | None
    candidate: float | None

    @property
    def delta(self) -> float | None:
        if self.current is None or self.candidate is None:
            return None
        return self.candidate - self.current

    def describe(self) -> str:
        fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
        return f"{self.trigger}: {self.label} recall {fmt(self.candidate)} vs current {fmt(self.current)}"


@dataclass(frozen=True)
class TriggerScreen:
    """Recall per trigger and label of both models; ``rows`` start with the :data:`NO_TRIGGER` reference."""

    rows: list[TriggerRow]
    images: int
    labels: tuple[str, ...]

    def failures(self, margin: float) -> list[TriggerRow]:
        """Triggers under which the candidate loses more than ``margin`` recall against the current model, worst
        first (the untriggered reference is the per-condition gate's job)."""
        bad = [r for r in self.rows if r.trigger != NO_TRIGGER and r.current is not None
               and (r.candidate is None or (r.delta is not None and r.delta < -margin))]
        return sorted(bad, key=lambda r: (r.delta if r.delta is not None else -1.0, r.trigger))


def _recalls(assessor: Assessor, samples: list[Sample], labels: tuple[str, ...], trigger: Trigger | None,
             seed: int) -> dict[str, float | None]:
    def transform(image: np.ndarray, sample: Sample) -> np.ndarray:
        if trigger is None:
            return image
        return paste(image, _boxes(sample, labels), trigger, zlib.crc32(f"{sample.id}|{trigger.name}|{seed}".encode()))

    run = assessor.run(transform, samples=samples, stills=True,
                       description=f"{assessor.detector.name}: {trigger.name if trigger else NO_TRIGGER}")
    per_class = detection_metrics(samples, run.predictions, labels=list(labels),
                                  score_threshold=assessor.operating_point, bootstrap=0)["per_class"]
    return {label: per_class[label]["recall"] for label in labels}


def screen_models(current: Assessor, candidate: Assessor, *, images: int = DEFAULT_IMAGES, seed: int = 0,
           triggers: Sequence[Trigger] = TRIGGERS) -> TriggerScreen:
    """Both models on the same seeded images, clean and with each trigger pasted on every person and car."""
    labels = tuple(lbl for lbl in SCREEN_LABELS if lbl in current.labels) or tuple(current.labels)
    samples = choose_samples(current.dataset.samples, labels, images, seed)
    rows: list[TriggerRow] = []
    for trigger in (None, *triggers):
        before = _recalls(current, samples, labels, trigger, seed)
        after = _recalls(candidate, samples, labels, trigger, seed)
        name = trigger.name if trigger else NO_TRIGGER
        rows += [TriggerRow(name, label, before[label], after[label]) for label in labels]
    return TriggerScreen(rows, len(samples), labels)
