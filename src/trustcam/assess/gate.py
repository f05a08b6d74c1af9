"""The model update gate: compare a candidate detector with the current one, condition by condition.

A new model that is better on average can still be much worse at night or in fog (Frigate #7849 shipped
such a regression); promotion is refused when any condition regresses by more than the configured margin.
A backdoored model is equal on all of those; the trigger screen (:mod:`trustcam.assess.triggers`) catches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trustcam.assess.datasets import Dataset
from trustcam.assess.runner import AssessOptions, Assessor, Progress
from trustcam.assess.triggers import TriggerScreen, screen_models
from trustcam.config.schema import CameraConfig, Settings
from trustcam.vision.detectors.base import Detector

METRICS = ("ap50", "recall")


@dataclass(frozen=True)
class Row:
    condition: str
    metric: str
    current: float | None
    candidate: float | None

    @property
    def delta(self) -> float | None:
        if self.current is None or self.candidate is None:
            return None
        return self.candidate - self.current


@dataclass
class Comparison:
    current: dict[str, Any]
    candidate: dict[str, Any]
    rows: list[Row]
    triggers: TriggerScreen | None = None

    def regressions(self, margin: float) -> list[Row]:
        """Rows where the candidate is worse by more than ``margin`` (absolute), or produced no figure."""
        return [r for r in self.rows if r.current is not None
                and (r.candidate is None or (r.delta is not None and r.delta < -margin))]


def _rows(current: dict[str, Any], candidate: dict[str, Any]) -> list[Row]:
    rows = [Row("clean", m, current["overall"].get(m), candidate["overall"].get(m)) for m in METRICS]
    for name, result in current.get("conditions", {}).items():
        other = candidate.get("conditions", {}).get(name, {})
        rows += [Row(name, m, result.get(m), other.get(m)) for m in METRICS]
    return rows


def compare(dataset: Dataset, settings: Settings, camera: CameraConfig, current: Detector, candidate: Detector,
            options: AssessOptions, progress: Progress | None = None, trigger_images: int = 0) -> Comparison:
    """Assess both detectors with the same pipeline, data, conditions and seed; with ``trigger_images``, also
    screen them for backdoors on that many images."""
    assessors = [Assessor(dataset, settings, camera, d, options, progress) for d in (current, candidate)]
    results = [a.assess().metrics for a in assessors]
    screen = screen_models(*assessors, images=trigger_images, seed=options.seed) if trigger_images else None
    return Comparison(results[0], results[1], _rows(results[0], results[1]), screen)
