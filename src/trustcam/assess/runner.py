"""Run the exact pipeline a user runs over labelled footage: clean, under each condition, under attack.

Still images go through the same whole-frame strategy as ``trustcam detect`` (tiling and object filters
included); video sequences go through the full camera pipeline (motion gating, tracking, events), sampled at
the camera's detect fps. Predictions keep scores down to :data:`AP_SCORE_FLOOR` so precision-recall curves
can be drawn; the operating point is the configured ``min_score``.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from trustcam import __version__
from trustcam.assess import conditions as cond
from trustcam.assess.datasets import Dataset, Sample
from trustcam.assess.metrics import detection_metrics, event_metrics, tracking_metrics
from trustcam.bus import Bus
from trustcam.config.schema import CameraConfig, Settings
from trustcam.events.model import EventStarted
from trustcam.ingest.frame import Frame
from trustcam.pipeline import CameraPipeline, filter_detections
from trustcam.vision.detections import Detections
from trustcam.vision.detectors.base import Detector
from trustcam.vision.frame_detector import FrameDetector
from trustcam.vision.labels import COCO_LABELS
from trustcam.vision.motion import polygon_mask

if TYPE_CHECKING:
    from trustcam.assess.defence import SecondOpinionDefence

AP_SCORE_FLOOR = 0.05

# progress(description, total) -> advance(); the CLI backs it with a rich progress bar
Progress = Callable[[str, int], Callable[[], None]]


def _no_progress(_description: str, _total: int) -> Callable[[], None]:
    return lambda: None


@dataclass(frozen=True)
class AssessOptions:
    conditions: tuple[str, ...] = ()
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    attacks: tuple[str, ...] = ()
    eps: tuple[float, ...] = (2.0, 4.0, 8.0)
    pgd_steps: int = 10
    attack_images: int = 24
    patch_steps: int = 200
    transfer_model: str | None = None
    labels: tuple[str, ...] | None = None
    target_precision: float = 0.9
    bootstrap: int = 1000
    seed: int = 0
    max_images: int | None = None
    worst_misses: int = 12
    defences: tuple[str, ...] = ()  # "second-opinion": see trustcam.assess.defence
    clean_clips: tuple[str, ...] = ()  # video files for the defence's false alarms (MOT: the dataset's sequences)
    attack_clips: tuple[str, ...] = ()  # video with people: the patch worn across each person's clip (video_attack)
    clean_clip_seconds: float | None = None  # only the first seconds of each clean clip


@dataclass
class Assessment:
    metrics: dict[str, Any]
    misses: list[tuple[str, np.ndarray]] = field(default_factory=list)  # caption, BGR thumbnail
    patch: np.ndarray | None = None


@dataclass
class _Run:
    """One pass of the pipeline over the dataset (clean or transformed)."""

    predictions: dict[str, Detections]
    tracked: dict[str, list[tuple[int, str, tuple[float, float, float, float]]]]
    events: dict[str, list[tuple[int, str]]]
    seconds: float
    images: int


def _seed_for(sample_id: str, seed: int) -> int:
    return (zlib.crc32(sample_id.encode()) + seed * 7919) % (2**31)


class Assessor:
    def __init__(self, dataset: Dataset, settings: Settings, camera: CameraConfig, detector: Detector,
                 options: AssessOptions, progress: Progress | None = None) -> None:
        self.dataset = dataset
        self.settings = settings
        self.camera = camera
        self.detector = detector
        self.options = options
        self.progress = progress or _no_progress
        self.labels = list(options.labels or camera.objects.track)
        self.operating_point = min(camera.objects.filter_for(label).min_score for label in self.labels)
        samples = sorted(dataset.samples, key=lambda s: s.id)
        if options.max_images is not None and dataset.format != "mot":
            samples = samples[: options.max_images]
        self.samples = samples
        self.defence: SecondOpinionDefence | None = None
        if options.defences:
            from trustcam.assess.defence import SecondOpinionDefence

            self.defence = SecondOpinionDefence(self)  # checks the model now, before minutes of attacks

    # -- running the pipeline -------------------------------------------------------------------------

    @contextmanager
    def _low_threshold(self, detector: Detector) -> Iterator[None]:
        saved = detector.score_threshold
        detector.score_threshold = min(saved, AP_SCORE_FLOOR)
        try:
            yield
        finally:
            detector.score_threshold = saved

    def _still(self, detector: Detector, image: np.ndarray) -> Detections:
        h, w = image.shape[:2]
        dets = FrameDetector(detector, self.settings.detector.tiling).detect_full(image)
        mask = polygon_mask(self.camera.objects.mask, w, h)
        return filter_detections(dets, self.camera.objects, mask, w * h, min_scores=False)

    def run(self, transform: Callable[[np.ndarray, Sample], np.ndarray] | None = None, *,
            detector: Detector | None = None, samples: Sequence[Sample] | None = None,
            description: str = "clean", stills: bool = False) -> _Run:
        """One pass; video datasets run through the camera pipeline unless ``stills`` (attacks are per image)."""
        detector = detector or self.detector
        samples = list(samples if samples is not None else self.samples)
        start = time.perf_counter()
        with self._low_threshold(detector):
            if self.dataset.format == "mot" and not stills:
                run = self._run_video(detector, samples, transform, description)
            else:
                advance = self.progress(description, len(samples))
                predictions = {}
                for sample in samples:
                    image = sample.load()
                    predictions[sample.id] = self._still(detector, transform(image, sample) if transform else image)
                    advance()
                run = _Run(predictions, {}, {}, 0.0, len(samples))
        run.seconds = time.perf_counter() - start
        return run

    def _run_video(self, detector: Detector, samples: list[Sample],
                   transform: Callable[[np.ndarray, Sample], np.ndarray] | None, description: str) -> _Run:
        by_sequence: dict[str, list[Sample]] = {}
        for sample in samples:
            by_sequence.setdefault(sample.sequence or "", []).append(sample)
        predictions: dict[str, Detections] = {}
        tracked: dict[str, list[tuple[int, str, tuple[float, float, float, float]]]] = {}
        events: dict[str, list[tuple[int, str]]] = {}
        analysed = 0
        plans = {}
        for name, frames in by_sequence.items():
            fps = self.dataset.fps.get(name, 25.0)
            step = max(1, round(fps / self.camera.detect.fps))
            plans[name] = (fps, [s for i, s in enumerate(sorted(frames, key=lambda s: s.frame or 0)) if i % step == 0])
        advance = self.progress(description, sum(len(p[1]) for p in plans.values()))
        for name, (fps, frames) in plans.items():
            bus = Bus()
            started: list[tuple[int, str]] = []
            bus.subscribe(EventStarted, lambda m, acc=started: acc.append((m.event.track_id, m.event.label)))
            pipeline = CameraPipeline(name, self.camera, self.settings, detector, bus, None)
            for sample in frames:
                image = sample.load()
                if transform is not None:
                    image = transform(image, sample)
                result = pipeline.process(Frame.from_image(image, sample.frame or 0, ((sample.frame or 1) - 1) / fps))
                objs = [o for o in result.objects if o.label in self.labels]
                tracked[sample.id] = [(o.track_id, o.label, o.box) for o in objs]
                predictions[sample.id] = Detections(
                    np.array([o.box for o in objs], np.float32).reshape(-1, 4),
                    np.array([o.score for o in objs], np.float32),
                    np.array([COCO_LABELS.index(o.label) for o in objs], np.int64),
                )
                analysed += 1
                advance()
            pipeline.close()
            events[name] = started
        return _Run(predictions, tracked, events, 0.0, analysed)

    # -- measuring --------------------------------------------------------------------------------

    def _detection(self, run: _Run, samples: Sequence[Sample] | None = None, labels: Sequence[str] | None = None,
                   bootstrap: int | None = None) -> dict[str, Any]:
        chosen = [s for s in (samples or self.samples) if s.id in run.predictions]
        return detection_metrics(
            chosen, run.predictions, labels=list(labels or self.labels), score_threshold=self.operating_point,
            target_precision=self.options.target_precision, bootstrap=self.options.bootstrap if bootstrap is None
            else bootstrap, seed=self.options.seed)

    def _video_metrics(self, run: _Run) -> dict[str, Any]:
        # whole sequences: only analysed frames are scored, but the hours of video are all of them
        sequences = self.dataset.sequences
        return {
            "tracking": tracking_metrics(sequences, run.tracked, labels=self.labels),
            "events": event_metrics(sequences, run.tracked, run.events, labels=self.labels, fps=self.dataset.fps),
        }

    def assess(self) -> Assessment:
        opts = self.options
        clean = self.run()
        clean_metrics = self._detection(clean)
        metrics: dict[str, Any] = {
            "trustcam_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "dataset": {"name": self.dataset.name, "format": self.dataset.format, "path": str(self.dataset.root),
                        "images": len(self.samples), "analysed": clean.images},
            "pipeline": {"model": self.detector.name, "sha256": self.detector.sha256,
                         "tiling": self.settings.detector.tiling, "labels": self.labels,
                         "score_threshold": self.operating_point, "detect_fps": self.camera.detect.fps},
            "overall": clean_metrics["overall"],
            "per_class": clean_metrics["per_class"],
            "pr_curves": clean_metrics["pr_curves"],
            "timing": {"clean_images_per_s": round(clean.images / max(clean.seconds, 1e-9), 2)},
        }
        if self.dataset.format == "mot":
            metrics.update(self._video_metrics(clean))
        assessment = Assessment(metrics, self._worst_misses(clean_metrics))
        if opts.conditions:
            self._conditions(metrics, clean_metrics)
        if opts.attacks:
            self._attacks(metrics, assessment)
        if self.defence is not None:
            pgd_key = f"pgd_eps_{max(opts.eps):g}" if opts.eps else None
            metrics["defences"] = {"second_opinion": self.defence.report(clean, pgd_key, "patch")}
            if opts.attack_clips:
                from trustcam.assess.video_attack import video_patch_attack

                advance = self.progress("video patch attack", 1)
                metrics["defences"]["video_patch"] = video_patch_attack(
                    [Path(c) for c in opts.attack_clips], self.settings, self.camera, self.detector,
                    self.defence.detector, patch_steps=opts.patch_steps, seed=opts.seed)
                advance()
        return assessment

    def _conditions(self, metrics: dict[str, Any], clean: dict[str, Any]) -> None:
        per_condition: dict[str, Any] = {}
        ap_all, recall_all = [], []
        for name in self.options.conditions:
            severities: dict[str, Any] = {}
            for severity in self.options.severities:
                def transform(image: np.ndarray, sample: Sample, name: str = name, severity: int = severity) -> \
                        np.ndarray:
                    return cond.corrupt(image, name, severity, _seed_for(sample.id, self.options.seed))

                run = self.run(transform, description=f"{name} severity {severity}")
                result = self._detection(run, bootstrap=0)["overall"]
                severities[str(severity)] = {"recall": result["recall"], "precision": result["precision"],
                                             "ap50": result["ap50"], "fp_per_image": result["fp_per_image"],
                                             "images_per_s": round(run.images / max(run.seconds, 1e-9), 2)}
            recalls = [v["recall"] for v in severities.values() if v["recall"] is not None]
            aps = [v["ap50"] for v in severities.values() if v["ap50"] is not None]
            per_condition[name] = {
                "description": cond.describe(name),
                "recall": _mean(recalls), "ap50": _mean(aps),
                "precision": _mean([v["precision"] for v in severities.values() if v["precision"] is not None]),
                "severities": severities,
            }
            ap_all += aps
            recall_all += recalls
        metrics["conditions"] = per_condition
        metrics["mpc"] = _mean(ap_all)
        metrics["rpc"] = _ratio(metrics["mpc"], clean["overall"]["ap50"])
        metrics["mpc_recall"] = _mean(recall_all)
        metrics["rpc_recall"] = _ratio(metrics["mpc_recall"], clean["overall"]["recall"])

    def _attack_samples(self) -> list[Sample]:
        with_people = [s for s in self.samples
                       if any(lbl == "person" and not ig for lbl, ig in zip(s.truth.labels, s.truth.ignore,
                                                                            strict=True))]
        if len(with_people) <= self.options.attack_images:
            return with_people
        idx = np.linspace(0, len(with_people) - 1, self.options.attack_images).round().astype(int)
        return [with_people[i] for i in idx]

    def _transfer_detector(self) -> Detector:
        from trustcam.vision.catalog import CATALOG
        from trustcam.vision.detectors.onnx_models import load_detector

        name = self.options.transfer_model or next(n for n in CATALOG if n != self.detector.name)
        return load_detector(name, threads=self.settings.detector.threads)

    def _attacks(self, metrics: dict[str, Any], assessment: Assessment) -> None:
        from trustcam.assess import adversarial as adv

        samples = self._attack_samples()
        model = adv.DifferentiableDetector(self.detector)
        other = self._transfer_detector()
        people = ["person"]
        originals = {s.id: s.load() for s in samples}

        def recall(images: dict[str, np.ndarray], detector: Detector, subset: Sequence[Sample]) -> float | None:
            run = self.run(lambda _img, s: images[s.id], detector=detector, samples=subset,
                           description=f"evaluate on {detector.name}", stills=True)
            return self._detection(run, subset, people, bootstrap=0)["overall"]["recall"]

        results: dict[str, Any] = {}
        clean_recall = recall(originals, self.detector, samples)
        clean_transfer = recall(originals, other, samples)
        defence = self.defence
        if defence is not None:
            defence.measure("clean", "clean", originals, samples)
        if "pgd" in self.options.attacks:
            by_eps: dict[str, Any] = {}
            for eps in self.options.eps:
                config = adv.AttackConfig(eps=eps, steps=self.options.pgd_steps, seed=self.options.seed)
                advance = self.progress(f"PGD eps={eps:g}", len(samples))
                attacked = {}
                for s in samples:
                    attacked[s.id] = adv.pgd(model, originals[s.id], config)
                    advance()
                if defence is not None:
                    defence.measure(f"pgd_eps_{eps:g}", f"PGD L∞ ε={eps:g}, {self.options.pgd_steps} steps", attacked,
                                    samples, "clean")
                by_eps[f"{eps:g}"] = {"recall": recall(attacked, self.detector, samples),
                                      "transfer_recall": recall(attacked, other, samples)}
            strongest = by_eps[f"{max(self.options.eps):g}"]
            results["pgd"] = {"recall": strongest["recall"], "transfer_recall": strongest["transfer_recall"],
                              "eps": max(self.options.eps), "by_eps": by_eps, "steps": self.options.pgd_steps,
                              "clean_recall": clean_recall, "clean_transfer_recall": clean_transfer,
                              "images": len(samples), "transfer_model": other.name, "norm": "Linf (pixel levels)"}
        if "patch" in self.options.attacks:
            half = max(1, len(samples) // 2)
            train, test = samples[:half], samples[half:] or samples[:half]

            def boxes(s: Sample) -> np.ndarray:
                keep = [i for i, (lbl, ig) in enumerate(zip(s.truth.labels, s.truth.ignore, strict=True))
                        if lbl == "person" and not ig]
                return s.truth.boxes[keep]

            advance = self.progress("patch optimisation", 1)
            patch = adv.train_patch(model, [originals[s.id] for s in train], [boxes(s) for s in train],
                                    steps=self.options.patch_steps, seed=self.options.seed)
            advance()
            patched = {s.id: adv.apply_patch(originals[s.id], boxes(s), patch) for s in test}
            control = adv.random_patch(patch.shape[0], self.options.seed)
            random_patched = {s.id: adv.apply_patch(originals[s.id], boxes(s), control) for s in test}
            if defence is not None:
                defence.measure("patch_clean", "held-out patch images, clean", originals, test)
                defence.measure("patch", f"adversarial patch ({patch.shape[0]} px)", patched, test, "patch_clean")
                defence.measure("random_patch", "random patch (control)", random_patched, test, "patch_clean")
            results["patch"] = {
                "recall": recall(patched, self.detector, test),
                "random_patch_recall": recall(random_patched, self.detector, test),
                "clean_recall": recall(originals, self.detector, test),
                "transfer_recall": recall(patched, other, test),
                "transfer_model": other.name,
                "train_images": len(train), "test_images": len(test), "steps": self.options.patch_steps,
                "size": int(patch.shape[0]),
            }
            assessment.patch = patch
        metrics["attacks"] = results

    def _worst_misses(self, clean: dict[str, Any]) -> list[tuple[str, np.ndarray]]:
        """The largest missed objects: the misses a person would find most glaring."""
        by_id = {s.id: s for s in self.samples}
        misses = [(sid, m) for sid, img in clean["per_image"].items() for m in img["misses"]]
        misses.sort(key=lambda item: (item[1][2] - item[1][0]) * (item[1][3] - item[1][1]), reverse=True)
        thumbs = []
        for sid, (x1, y1, x2, y2, label) in misses[: self.options.worst_misses]:
            image = by_id[sid].load()
            h, w = image.shape[:2]
            mx, my = (x2 - x1) * 0.3 + 10, (y2 - y1) * 0.3 + 10
            cx1, cy1 = int(max(0, x1 - mx)), int(max(0, y1 - my))
            cx2, cy2 = int(min(w, x2 + mx)), int(min(h, y2 + my))
            crop = image[cy1:cy2, cx1:cx2].copy()
            cv2.rectangle(crop, (int(x1) - cx1, int(y1) - cy1), (int(x2) - cx1, int(y2) - cy1), (0, 0, 255), 2)
            scale = 160 / max(crop.shape[0], 1)
            thumbs.append((f"{label} missed in {sid}", cv2.resize(crop, None, fx=scale, fy=scale)))
        return thumbs


def _mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None
