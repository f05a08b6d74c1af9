"""The printed-patch attack on video, measured at the level that matters to an operator: is the event still raised?

:func:`~trustcam.assess.adversarial.train_patch` shows that a patch lowers a detector's per-image recall; what a
camera owner cares about is whether a person wearing it walks through unreported. :func:`video_patch_attack` pastes
the patch on each walking person's torso across a clip (following their track, scaled with them), runs the real
:class:`~trustcam.pipeline.CameraPipeline` (motion, regions, tracking, events) without and with the run-time second
opinion, and counts the attacked clips in which an event for that person is still raised.

The sample clips have no labels, so the people's boxes are **pseudo ground truth**: the tracks that became events in
a clean pass of the same pipeline with the second opinion on. That is good enough to place a patch and to say whether
an event is "for" that person; the per-frame recall against it measures how much the patch hides a person from the
primary relative to what the pipeline itself saw, not against a human annotator.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trustcam.alerts.model import Alert
from trustcam.assess import adversarial as adv
from trustcam.bus import Bus
from trustcam.config.schema import CameraConfig, Settings
from trustcam.events.model import EventStarted
from trustcam.ingest.frame import Frame
from trustcam.ingest.source import VideoSource
from trustcam.pipeline import EVASION_SUSPECTED, CameraPipeline
from trustcam.storage.reviews import wilson
from trustcam.vision.detections import iou_matrix
from trustcam.vision.detectors.base import Detector
from trustcam.vision.frame_detector import FrameDetector

PERSON = "person"
GOAL_DEFENDED_EVENT_RATE = 0.9  # issue 12: with the defence, the event is still raised in ≥ 90% of attacked clips
MATCH_IOU = 0.3  # an event's track overlapping the attacked person this much in one frame is that person's event
CONDITIONS = ("clean", "patch", "random")

Box = tuple[float, float, float, float]


@dataclass
class PersonTrack:
    """One person of the clean pass: their (pseudo ground truth) box at each analysed frame time."""

    clip: Path
    track_id: int
    boxes: dict[float, Box]

    @property
    def first(self) -> float:
        return min(self.boxes)

    @property
    def last(self) -> float:
        return max(self.boxes)

    def box_at(self, time: float) -> Box | None:
        """The box at ``time``, linear between analysed frames where the track had a gap; None outside the track."""
        if time in self.boxes:
            return self.boxes[time]
        times = sorted(self.boxes)
        if time < times[0] or time > times[-1]:
            return None
        after = next(i for i, t in enumerate(times) if t > time)
        t0, t1 = times[after - 1], times[after]
        w = (time - t0) / (t1 - t0)
        a, b = np.array(self.boxes[t0]), np.array(self.boxes[t1])
        return tuple(float(v) for v in (1 - w) * a + w * b)  # type: ignore[return-value]


@dataclass
class RunOutcome:
    """One attacked clip through one pipeline: was the person's event raised, when, and what was alerted."""

    raised: bool
    raised_at: float | None
    evasion_alerts: int
    alerted: bool  # an evasion_suspected alert points at the person (raised or not, the operator was told)
    seen_by: str | None
    second_opinion_checks: int
    frames: int


@dataclass
class _Recorder:
    """Collects what a pipeline publishes and where each track was, frame by frame."""

    started: list[tuple[float, Any]] = field(default_factory=list)  # (frame time it was raised, event)
    alerts: list[Alert] = field(default_factory=list)
    tracks: dict[int, dict[float, Box]] = field(default_factory=dict)
    now: float = 0.0


def _with_defence(settings: Settings, enabled: bool) -> Settings:
    opinion = settings.detector.second_opinion.model_copy(update={"enabled": enabled})
    return settings.model_copy(update={"detector": settings.detector.model_copy(update={"second_opinion": opinion})})


def _decode(clip: Path, fps: float, start: float = 0.0, end: float = float("inf")) -> Iterator[tuple[int, float,
                                                                                                    np.ndarray]]:
    """(index, time, BGR) of the frames the pipeline would analyse at ``fps`` between ``start`` and ``end``."""
    for frame in VideoSource(str(clip), fps=fps).frames():
        if frame.time > end:
            return
        if frame.time >= start:
            yield frame.index, frame.time, frame.bgr


def _run(frames: Sequence[tuple[int, float, np.ndarray]], camera: CameraConfig, settings: Settings,
         primary: Detector, secondary: Detector | None) -> tuple[_Recorder, CameraPipeline]:
    """Run one pipeline (a new camera: fresh motion background, tracker and events) over decoded frames."""
    bus = Bus()
    rec = _Recorder()
    bus.subscribe(EventStarted, lambda m: rec.started.append((rec.now, m.event)))
    bus.subscribe(Alert, rec.alerts.append)
    camera = camera.switched_by_detector()
    opinion = secondary if settings.detector.second_opinion.enabled else None
    pipeline = CameraPipeline("attack", camera, settings, primary, bus, None, secondary=opinion)
    for index, time, image in frames:
        rec.now = time
        for obj in pipeline.process(Frame(image, index, time)).objects:
            if obj.label == PERSON:
                rec.tracks.setdefault(obj.track_id, {})[time] = obj.box
    pipeline.close()
    return rec, pipeline


def clean_people(clip: Path, camera: CameraConfig, settings: Settings, primary: Detector, secondary: Detector,
                 until_s: float | None = None) -> tuple[list[PersonTrack], dict[str, Any]]:
    """Pseudo ground truth: the person tracks that became events in a clean pass with the second opinion on, and
    that pass's figures (its ``evasion_suspected`` alerts are false alarms: nobody is attacking)."""
    frames = list(_decode(clip, camera.detect.fps, end=float("inf") if until_s is None else until_s))
    if not frames:
        raise ValueError(f"{clip}: no frame decoded; is it a video file?")
    rec, pipeline = _run(frames, camera, _with_defence(settings, True), primary, secondary)
    people = [PersonTrack(clip, event.track_id, rec.tracks[event.track_id]) for _, event in rec.started
              if event.label == PERSON and event.track_id in rec.tracks]
    seconds = frames[-1][1] - frames[0][1] if len(frames) > 1 else 0.0
    figures = {"clip": clip.name, "analysed_frames": len(frames), "seconds": round(seconds, 2),
               "person_events": len(people), "evasion_alerts": sum(a.kind == EVASION_SUSPECTED for a in rec.alerts),
               "second_opinion_checks": pipeline.stats.second_opinion_checks,
               "seen_by": sorted({str(e.seen_by) for _, e in rec.started if e.label == PERSON})}
    return people, figures


def training_frames(people: Sequence[PersonTrack], fps: float, count: int) -> tuple[list[np.ndarray],
                                                                                 list[np.ndarray]]:
    """Up to ``count`` frames spread evenly over the people (round robin, evenly in time within each), with the
    person boxes of every tracked person in them: what a white-box attacker who has filmed the scene trains on."""
    picks: list[list[float]] = []
    for person in people:
        times = sorted(person.boxes)
        share = max(1, -(-count // max(len(people), 1)))
        idx = np.unique(np.linspace(0, len(times) - 1, min(share, len(times))).round().astype(int))
        picks.append([times[i] for i in idx])
    chosen: dict[Path, set[float]] = {}
    for rank in range(max((len(p) for p in picks), default=0)):
        for person, times in zip(people, picks, strict=True):
            if rank < len(times) and sum(len(v) for v in chosen.values()) < count:
                chosen.setdefault(person.clip, set()).add(times[rank])
    images, boxes = [], []
    for clip, times in chosen.items():
        for _, time, image in _decode(clip, fps, min(times), max(times)):
            if time in times:
                images.append(image)
                boxes.append(np.array([p.boxes[time] for p in people if p.clip == clip and time in p.boxes],
                                      np.float32))
    return images, boxes


def _attacked(person: PersonTrack, frames: Sequence[tuple[int, float, np.ndarray]], patch: np.ndarray | None,
              scale: float) -> list[tuple[int, float, np.ndarray]]:
    """The clip with ``patch`` on the person's torso in every frame where they are (None: the clean clip)."""
    if patch is None:
        return list(frames)
    out = []
    for index, time, image in frames:
        box = person.box_at(time)
        out.append((index, time, image if box is None else adv.apply_patch(image, np.array([box]), patch, scale)))
    return out


def _outcome(person: PersonTrack, rec: _Recorder, pipeline: CameraPipeline) -> RunOutcome:
    """Was an event raised whose track overlaps the person (IoU ≥ :data:`MATCH_IOU` in one frame)?"""
    evasions = [a for a in rec.alerts if a.kind == EVASION_SUSPECTED]
    alerted = any(_is(person, a.data["frame_time"], a.data["box"]) for a in evasions)
    stats = pipeline.stats
    for raised_at, event in sorted(rec.started, key=lambda s: s[0]):
        if event.label == PERSON and any(_is(person, t, b) for t, b in rec.tracks.get(event.track_id, {}).items()):
            return RunOutcome(True, raised_at, len(evasions), alerted, event.seen_by, stats.second_opinion_checks,
                              stats.frames)
    return RunOutcome(False, None, len(evasions), alerted, None, stats.second_opinion_checks, stats.frames)


def _is(person: PersonTrack, time: float, box: Sequence[float]) -> bool:
    truth = person.box_at(time)
    return truth is not None and float(iou_matrix(np.array([box], np.float32),
                                                  np.array([truth], np.float32))[0, 0]) >= MATCH_IOU


def _recall(primary: FrameDetector, person: PersonTrack, frames: Sequence[tuple[int, float, np.ndarray]]) -> tuple[
        int, int]:
    """(found, frames) of the primary's whole-frame person detections against the person's own analysed boxes."""
    images = [image for _, time, image in frames if time in person.boxes]
    truths = [np.array([person.boxes[time]], np.float32) for _, time, _ in frames if time in person.boxes]
    if not images:
        return 0, 0
    recall = adv.detection_recall(primary, images, truths, threshold=0.3)
    return round(recall * len(images)), len(images)


def _rates(outcomes: list[RunOutcome], people: Sequence[PersonTrack]) -> dict[str, Any]:
    raised = sum(o.raised for o in outcomes)
    low, high = wilson(raised, len(outcomes))
    delays = [round(o.raised_at - p.first, 2) for o, p in zip(outcomes, people, strict=True)
              if o.raised_at is not None]
    return {"clips": len(outcomes), "events": raised,
            "event_rate": round(raised / len(outcomes), 4) if outcomes else None,
            "event_rate_ci95": [round(low, 4), round(high, 4)],
            "evasion_alerts": sum(o.evasion_alerts for o in outcomes),
            "clips_with_evasion_alert": sum(o.evasion_alerts > 0 for o in outcomes),
            # event raised, or at least an evasion_suspected alert on the person: the operator was told
            "caught": sum(o.raised or o.alerted for o in outcomes),
            "time_to_event_s": {"mean": round(float(np.mean(delays)), 2) if delays else None,
                                "max": max(delays) if delays else None, "each": delays},
            "seen_by": sorted({o.seen_by for o in outcomes if o.seen_by is not None}),
            "second_opinion_checks": sum(o.second_opinion_checks for o in outcomes),
            "frames": sum(o.frames for o in outcomes)}


def video_patch_attack(clips: Sequence[Path], settings: Settings, camera: CameraConfig, primary: Detector,
                       secondary: Detector, *, patch: np.ndarray | None = None, patch_steps: int = 200,
                       patch_size: int = 64, scale: float = 0.3, seed: int = 0, train_frames: int = 24,
                       patch_lr: float = 0.03, patch_batch: int = 2, until_s: float | None = None,
                       lead_s: float = 2.0, tail_s: float = 1.0, max_people: int | None = None,
                       conditions: Sequence[str] = CONDITIONS) -> dict[str, Any]:
    """Attack every person of ``clips`` with a worn patch and measure, per condition ("clean", "patch" = optimised
    against ``primary``, "random" = noise of the same size, the control), the share of per-person clips in which an
    event for that person is raised without and with the second opinion (``secondary``), with Wilson 95% intervals.

    Each person's clip runs from ``lead_s`` before they are first tracked to ``tail_s`` after, through a fresh
    pipeline. ``patch`` None trains one (white box, seeded) on ``train_frames`` frames of these people; a given patch
    is used as it is. ``until_s`` analyses only the start of each clip and ``max_people`` keeps the first N people
    (tests). Returns a JSON-serialisable dict; see the
    module docstring for what "ground truth" means here."""
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        raise ValueError(f"unknown condition(s) {sorted(unknown)}; choose from {list(CONDITIONS)}")
    if not clips:
        raise ValueError("video_patch_attack needs at least one clip")
    if primary.name == secondary.name:
        raise ValueError(f"the second opinion is the same model as the primary ({primary.name}): an attack on one "
                         "fools both; pass another catalog model (detector.second_opinion.model)")
    fps = camera.detect.fps
    people: list[PersonTrack] = []
    clean: list[dict[str, Any]] = []
    for clip in clips:
        found, figures = clean_people(Path(clip), camera, settings, primary, secondary, until_s)
        people += found
        clean.append(figures)
    if max_people is not None:
        people = people[:max_people]
    if not people:
        raise ValueError(f"no person event in the clean pass of {[Path(c).name for c in clips]}: nobody to attack; "
                         "use clips with people in them")
    given = patch is not None
    if patch is None:
        images, boxes = training_frames(people, fps, train_frames)
        patch = adv.train_patch(adv.DifferentiableDetector(primary), images, boxes, size=patch_size,
                                steps=patch_steps, scale=scale, seed=seed, lr=patch_lr, batch=patch_batch)
    patches = {"clean": None, "patch": patch, "random": adv.random_patch(patch.shape[0], seed)}
    frame_detector = FrameDetector(primary, settings.detector.tiling)
    runs: dict[str, dict[bool, list[RunOutcome]]] = {c: {False: [], True: []} for c in conditions}
    recall: dict[str, list[tuple[int, int]]] = {c: [] for c in conditions}
    per_person: list[dict[str, Any]] = []
    for person in people:
        frames = list(_decode(person.clip, fps, max(0.0, person.first - lead_s), person.last + tail_s))
        row: dict[str, Any] = {"clip": person.clip.name, "track_id": person.track_id,
                               "first_s": round(person.first, 2), "last_s": round(person.last, 2)}
        for condition in conditions:
            attacked = _attacked(person, frames, patches[condition], scale)
            recall[condition].append(_recall(frame_detector, person, attacked))
            for defence in (False, True):
                rec, pipeline = _run(attacked, camera, _with_defence(settings, defence), primary, secondary)
                outcome = _outcome(person, rec, pipeline)
                runs[condition][defence].append(outcome)
                row[f"{condition}{'_defended' if defence else ''}"] = {
                    "raised": outcome.raised, "evasion_alerts": outcome.evasion_alerts, "alerted": outcome.alerted,
                    "seen_by": outcome.seen_by}
            row[f"{condition}_primary_recall"] = _ratio(*recall[condition][-1])
        per_person.append(row)
    results: dict[str, Any] = {}
    for condition in conditions:
        found, total = (sum(v) for v in zip(*recall[condition], strict=True))
        results[condition] = {"primary_recall": _ratio(found, total), "recall_frames": total,
                              "no_defence": _rates(runs[condition][False], people),
                              "defence": _rates(runs[condition][True], people)}
    clean_hours = sum(c["seconds"] for c in clean) / 3600
    false_alerts = sum(c["evasion_alerts"] for c in clean)
    defended = results.get("patch", {}).get("defence", {}).get("event_rate")
    return {
        "ground_truth": "pseudo: person tracks that became events in a clean pass with the second opinion on "
                        "(the clips are unlabelled); per-frame recall is against those boxes",
        "clips": [Path(c).name for c in clips], "people": len(people), "fps": fps,
        "primary": primary.name, "secondary": secondary.name,
        "patch": {"trained": not given, "size": int(patch.shape[0]), "scale": scale, "steps": 0 if given else
                  patch_steps, "seed": seed, "train_frames": 0 if given else train_frames,
                  "lr": patch_lr, "batch": patch_batch,
                  "placement": "torso, side = scale x box height, following the track (interpolated in gaps)"},
        "clean_pass": {"clips": clean, "false_evasion_alerts": false_alerts,
                       "false_evasion_alerts_per_hour": round(false_alerts / clean_hours, 2) if clean_hours else None},
        "conditions": results,
        "per_person": per_person,
        "goal": {"defended_event_rate_min": GOAL_DEFENDED_EVENT_RATE, "defended_event_rate": defended,
                 "met": defended is not None and defended >= GOAL_DEFENDED_EVENT_RATE},
    }


def _ratio(found: int, total: int) -> float | None:
    return round(found / total, 4) if total else None


def main() -> None:
    """``python -m trustcam.assess.video_attack CLIP... [--out FILE]``: default settings, yolox-nano attacked, the
    second opinion's model as the defence; prints (or writes) the JSON result."""
    import argparse
    import json

    from trustcam.vision.detectors import load_detector

    parser = argparse.ArgumentParser(description="The printed-patch attack on video, without and with the defence.")
    parser.add_argument("clips", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="write the JSON here instead of printing it")
    parser.add_argument("--patch-steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = Settings()
    camera = CameraConfig(source="x", objects={"track": [PERSON]})
    primary = load_detector(settings.detector.model, threads=settings.detector.threads)
    secondary = load_detector(settings.detector.second_opinion.model, threads=settings.detector.threads)
    result = video_patch_attack(args.clips, settings, camera, primary, secondary, patch_steps=args.patch_steps,
                                seed=args.seed)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
