"""``trustcam assess --defence second-opinion``: the second opinion measured the way the attacks are measured.

Two figures, because they answer different questions:

* **Detection level** (every attacked image set of ``--attacks``): person recall of the primary alone and of the
  union "primary + what only the second model saw" (:func:`trustcam.vision.second_opinion.split`), both through the
  same filters as the primary. This assumes the second model looks at the whole frame; at run time it looks at a
  sampled share of frames, persisting unexplained motion and its own tracks, so it is an upper bound on what the
  run-time defence can recover per frame (the event-level video attack measures the real pipeline).
* **False alarms on clean footage**: clean clips through the real :class:`~trustcam.pipeline.CameraPipeline` with
  the second opinion on; every ``evasion_suspected`` alert there is a false alarm (goal: 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trustcam.alerts.model import Alert
from trustcam.bus import Bus
from trustcam.config.schema import CameraConfig, ObjectsConfig, Settings
from trustcam.errors import UserError
from trustcam.events.model import Event, EventEnded
from trustcam.ingest.frame import Frame
from trustcam.pipeline import EVASION_SUSPECTED, CameraPipeline
from trustcam.vision.detections import Detections
from trustcam.vision.detectors.base import Detector
from trustcam.vision.labels import COCO_LABELS
from trustcam.vision.second_opinion import split

if TYPE_CHECKING:
    from trustcam.assess.datasets import Sample
    from trustcam.assess.runner import Assessor, _Run

SECOND_OPINION = "second-opinion"
DEFENCES = (SECOND_OPINION,)
PGD_GOAL = 0.8  # recall under PGD at the largest budget, with the defence, as a share of clean recall
PATCH_GOAL = 0.9  # the same under the optimised patch
ASSUMPTION = ("detection level: the second model looks at every frame whole; at run time it looks at a sampled "
              "share of analysed frames (detector.second_opinion.sample_share), at motion that persists with no "
              "primary detection and at its own tracks, so this is the most the defence can recover per frame; "
              "the event-level video attack measures the real pipeline")
# name, frames with the seconds they cover, expected number of frames (progress bar)
_Clip = tuple[str, Callable[[], Iterator[tuple[Frame | None, float]]], int]
NO_CLIPS = ("no clean footage: pass --clean-clips VIDEO (repeatable), or assess a MOT dataset (its sequences "
            "are used); false alarms of the defence were not measured")


class DefenceError(UserError):
    """A defence cannot be assessed as asked; the message says why and what to change."""


class SecondOpinionDefence:
    """Collects, image set by image set, the primary's detections and the union with the second model's."""

    def __init__(self, assessor: Assessor) -> None:
        self.assessor = assessor
        self.model = assessor.settings.detector.second_opinion.model
        if self.model == assessor.detector.name:
            raise DefenceError(f"--defence second-opinion: the second model {self.model!r} is the primary model; "
                               "set detector.second_opinion.model to another catalog model (e.g. nanodet-m-320 "
                               "beside yolox-nano), or assess another --model")
        self._detector: Detector | None = None
        self.sets: dict[str, dict[str, Any]] = {}

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            from trustcam.vision.detectors.onnx_models import load_detector

            cfg = self.assessor.settings.detector
            self._detector = load_detector(self.model, threads=cfg.threads, score_threshold=cfg.score_threshold)
        return self._detector

    # -- detection level ------------------------------------------------------------------------

    def predictions(self, images: Callable[[np.ndarray, Sample], np.ndarray] | None, subset: Sequence[Sample],
                    description: str, primary: dict[str, Detections] | None = None
                    ) -> tuple[dict[str, Detections], dict[str, Detections]]:
        """The primary's still-image detections and the defended ones (primary ∪ second-model-only) per sample."""
        a = self.assessor
        if primary is None:
            primary = a.run(images, samples=subset, description=f"{description}: primary", stills=True).predictions
        secondary = a.run(images, detector=self.detector, samples=subset, description=f"{description}: {self.model}",
                          stills=True).predictions
        objects = a.camera.objects
        return primary, {sid: defended(primary[sid], secondary[sid], objects) for sid in primary}

    def measure(self, key: str, description: str, images: dict[str, np.ndarray], subset: Sequence[Sample],
                clean: str | None = None) -> None:
        """Person recall without and with the defence on one attacked (or clean) image set; ``clean`` names the
        set whose undefended recall is this set's reference."""
        a = self.assessor
        without, with_ = self.predictions(lambda _img, s: images[s.id], subset, description)
        self.sets[key] = {
            "description": description, "images": len(subset), "clean": clean or key,
            "without": _side(a._detection(_run(without), subset, ["person"])),
            "with": _side(a._detection(_run(with_), subset, ["person"])),
        }

    def precision_cost(self, clean: _Run) -> dict[str, Any]:
        """What the union costs on clean images: precision and false positives per image, all labels. Still-image
        datasets reuse the clean pass's predictions; video frames are run as stills here."""
        a = self.assessor
        reuse = clean.predictions if a.dataset.format != "mot" else None
        without, with_ = self.predictions(None, a.samples, "clean images", reuse)
        out: dict[str, Any] = {"images": len(a.samples), "labels": a.labels}
        for name, preds in (("without", without), ("with", with_)):
            o = a._detection(_run(preds))["overall"]
            out[name] = {"precision": _num(o.get("precision")), "precision_ci": _interval(o, "precision"),
                         "recall": _num(o.get("recall")), "recall_ci": _interval(o, "recall"),
                         "fp_per_image": _num(o.get("fp_per_image")), "fp": o.get("fp"), "tp": o.get("tp")}
        return out

    # -- false alarms on clean footage ----------------------------------------------------------

    def false_alarms(self) -> dict[str, Any]:
        """Clean clips through the camera pipeline with the second opinion on: alerts and secondary-only events."""
        a = self.assessor
        source, clips = self._clean_footage()
        if source is None:
            return {"source": None, "note": NO_CLIPS, "clips": [], "hours": 0.0, "evasion_alerts": None,
                    "evasion_alerts_per_hour": None, "secondary_only_events": None,
                    "secondary_only_events_per_hour": None}
        settings = enabled(a.settings)
        results = [self._clip(name, frames(), expected, settings) for name, frames, expected in clips]
        hours = sum(r["seconds"] for r in results) / 3600
        alerts = sum(r["evasion_alerts"] for r in results)
        secondary = sum(r["secondary_only_events"] for r in results)
        return {"source": source, "clips": results, "hours": round(hours, 5), "evasion_alerts": alerts,
                "evasion_alerts_per_hour": _per_hour(alerts, hours), "secondary_only_events": secondary,
                "secondary_only_events_per_hour": _per_hour(secondary, hours),
                "events": sum(r["events"] for r in results)}

    def _clean_footage(self) -> tuple[str | None, list[_Clip]]:
        """``--clean-clips`` videos, else a MOT dataset's own sequences, else nothing."""
        a = self.assessor
        limit = a.options.clean_clip_seconds
        if a.options.clean_clips:
            return "--clean-clips", [
                (Path(p).name, lambda p=p: _video_frames(p, a.camera, limit),
                 _expected_frames(p, a.camera.detect.fps, limit)) for p in a.options.clean_clips]
        if a.dataset.format == "mot":
            clips: list[_Clip] = []
            for name, frames in a.dataset.sequences.items():
                fps = a.dataset.fps.get(name, 25.0)
                count = sum(1 for _ in _sequence_frames(frames, fps, a.camera, limit, load=False))
                clips.append((name, lambda f=frames, r=fps: _sequence_frames(f, r, a.camera, limit), count))
            return "dataset sequences", clips
        return None, []

    def _clip(self, name: str, frames: Iterator[tuple[Frame | None, float]], expected: int,
              settings: Settings) -> dict[str, Any]:
        a = self.assessor
        bus = Bus()
        events: list[Event] = []
        alerts: list[Alert] = []
        bus.subscribe(EventEnded, lambda m: events.append(m.event))
        bus.subscribe(Alert, alerts.append)
        pipeline = CameraPipeline(name, a.camera.switched_by_detector(), settings, a.detector, bus, None,
                                  secondary=self.detector)
        seconds = 0.0
        advance = a.progress(f"clean clip {name}", expected)
        for frame, covered in frames:
            assert frame is not None
            pipeline.process(frame)
            seconds = covered
            advance()
        pipeline.close()
        stats = pipeline.stats
        evasion = [al for al in alerts if al.kind == EVASION_SUSPECTED]
        return {
            "clip": name, "seconds": round(seconds, 2), "analysed": stats.frames, "events": len(events),
            "secondary_only_events": sum(e.seen_by == "secondary" for e in events),
            "evasion_alerts": len(evasion),
            "alerts": [{"time": al.source_time, "message": al.message} for al in evasion],
            "second_opinion_checks": stats.second_opinion_checks,
            "checked_share": round(stats.second_opinion_checks / stats.frames, 4) if stats.frames else None,
            # detector time, not process CPU: bench/ measures the CPU ratio of the whole pipeline
            "second_opinion_seconds": round(stats.second_opinion_seconds, 3),
            "primary_seconds": round(stats.detector_seconds, 3),
            "detector_time_ratio": round(stats.second_opinion_seconds / stats.detector_seconds, 4)
            if stats.detector_seconds else None,
        }

    # -- the section ----------------------------------------------------------------------------

    def report(self, clean: _Run, pgd_key: str | None, patch_key: str | None) -> dict[str, Any]:
        """``metrics["defences"]["second_opinion"]``: every measured set side by side, the goals, the false alarms."""
        for row in self.sets.values():
            reference = self.sets[row["clean"]]["without"]["recall"]
            for side in ("without", "with"):
                row[side]["ratio_to_clean"] = _ratio(row[side]["recall"], reference)
        alarms = self.false_alarms()
        goals: dict[str, Any] = {}
        if pgd_key in self.sets:
            goals["pgd"] = _goal(self.sets[pgd_key], PGD_GOAL, pgd_key)
        if patch_key in self.sets:
            goals["patch"] = _goal(self.sets[patch_key], PATCH_GOAL, patch_key)
        goals["false_alarms"] = {"target": 0, "evasion_alerts": alarms["evasion_alerts"],
                                 "met": None if alarms["evasion_alerts"] is None else alarms["evasion_alerts"] == 0}
        detector = self.detector
        return {"model": detector.name, "sha256": detector.sha256, "primary": self.assessor.detector.name,
                "level": "detection", "assumes": ASSUMPTION, "image_sets": self.sets,
                "precision_cost": self.precision_cost(clean), "false_alarms": alarms, "goals": goals}


def defended(primary: Detections, secondary: Detections, objects: ObjectsConfig) -> Detections:
    """Primary detections (all scores kept, for curves) plus the second model's that no primary detection at the
    operating point confirms: the union the pipeline hands the tracker when both look at a frame."""
    extra = split(at_operating_point(secondary, objects), at_operating_point(primary, objects)).secondary_only
    return Detections.concat([primary, extra]) if len(extra) else primary


def at_operating_point(dets: Detections, objects: ObjectsConfig) -> Detections:
    """Detections at or above their label's ``min_score``, as the pipeline keeps them at run time."""
    if len(dets) == 0:
        return dets
    keep = [i for i, (c, s) in enumerate(zip(dets.class_ids, dets.scores, strict=True))
            if s >= objects.filter_for(COCO_LABELS[int(c)]).min_score]
    return dets.select(keep)


def enabled(settings: Settings) -> Settings:
    """The same settings with ``detector.second_opinion.enabled`` on."""
    det = settings.detector
    opinion = det.second_opinion.model_copy(update={"enabled": True})
    return settings.model_copy(update={"detector": det.model_copy(update={"second_opinion": opinion})})


def _video_frames(path: str, camera: CameraConfig, limit_s: float | None) -> Iterator[tuple[Frame, float]]:
    """A clip decoded like ``trustcam analyze`` (PyAV, at the camera's detect fps), with the seconds covered."""
    from trustcam.ingest.source import VideoSource
    from trustcam.service import detect_size

    source = VideoSource(path, fps=camera.detect.fps, size=detect_size(camera), timeout_s=camera.timeout_s)
    first: float | None = None
    for frame in source.frames():
        first = frame.time if first is None else first
        if limit_s is not None and frame.time - first >= limit_s:
            break
        yield frame, frame.time - first + 1 / camera.detect.fps


def _expected_frames(path: str, fps: float, limit_s: float | None) -> int:
    """Roughly how many frames a clip yields at ``fps`` (for the progress bar only; 0 when unknown)."""
    import av

    try:
        with av.open(path) as container:
            seconds = (container.duration or 0) / 1_000_000
    except (av.error.FFmpegError, OSError):  # VideoSource reports the real problem when it reads the clip
        return 0
    return round(min(seconds, limit_s or seconds) * fps)


def _sequence_frames(frames: list[Sample], fps: float, camera: CameraConfig, limit_s: float | None, *,
                     load: bool = True) -> Iterator[tuple[Frame | None, float]]:
    """A MOT sequence sampled at the camera's detect fps, as the video assessment runs it (``load=False``: only
    count the frames)."""
    step = max(1, round(fps / camera.detect.fps))
    end = (frames[-1].frame or len(frames)) / fps if frames else 0.0
    for i, sample in enumerate(frames):
        t = ((sample.frame or 1) - 1) / fps
        if limit_s is not None and t >= limit_s:
            break
        if i % step == 0:
            yield (Frame.from_image(sample.load(), sample.frame or 0, t) if load else None), min(t + step / fps, end)


def _run(predictions: dict[str, Detections]) -> _Run:
    from trustcam.assess.runner import _Run

    return _Run(predictions, {}, {}, 0.0, len(predictions))


def _side(result: dict[str, Any]) -> dict[str, Any]:
    o = result["overall"]
    return {"recall": _num(o.get("recall")), "recall_ci": _interval(o, "recall"), "tp": o.get("tp"), "fn": o.get("fn")}


def _interval(overall: dict[str, Any], key: str) -> list[float | None] | None:
    ci = (overall.get("ci") or {}).get(key)
    return [_num(v) for v in ci] if ci else None


def _goal(row: dict[str, Any], target: float, key: str) -> dict[str, Any]:
    with_ = row["with"]["ratio_to_clean"]
    return {"set": key, "target_ratio": target, "ratio_without": row["without"]["ratio_to_clean"],
            "ratio_with": with_, "met": None if with_ is None else with_ >= target}


def _num(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 4)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def _per_hour(count: int, hours: float) -> float | None:
    return round(count / hours, 3) if hours > 0 else None
