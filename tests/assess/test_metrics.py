"""Metrics checked two ways: against independent computations on real detections (yolox-nano on coco128), and
on hand-made cases whose answers are known (AP, thresholds, ignore boxes, bootstrap, tracking, events)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from trustcam.assess.datasets import Dataset, GroundTruth, Sample, load_dataset
from trustcam.assess.metrics import detection_metrics, event_metrics, tracking_metrics
from trustcam.storage.reviews import operating_point, wilson
from trustcam.vision.detections import Detections, iou_matrix
from trustcam.vision.detectors import Detector
from trustcam.vision.frame_detector import FrameDetector
from trustcam.vision.labels import COCO_LABELS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vision"))
import coco128  # tests/ has no packages: the vision tests' helper module

LOW = 0.05
OPERATING = 0.3
PERSON = COCO_LABELS.index("person")
CAR = COCO_LABELS.index("car")


# --------------------------------------------------------------------------------- coco128, real detector


@pytest.fixture(scope="module")
def coco(data_dir: Path) -> Dataset:
    return load_dataset(data_dir / "coco128-train")


@pytest.fixture(scope="module")
def coco_predictions(coco: Dataset, yolox: Detector) -> dict[str, Detections]:
    """yolox-nano run the way the pipeline runs stills (tiling included), down to score 0.05."""
    old = yolox.score_threshold
    yolox.score_threshold = LOW
    try:
        frame_detector = FrameDetector(yolox, "auto")
        return {s.id: frame_detector.detect_full(s.load()) for s in coco.samples}
    finally:
        yolox.score_threshold = old


@pytest.fixture(scope="module")
def coco_metrics(coco: Dataset, coco_predictions: dict[str, Detections]) -> dict:
    return detection_metrics(coco.samples, coco_predictions, labels=["person"], score_threshold=OPERATING)


def _greedy_flags(coco: Dataset, predictions: dict[str, Detections], thr: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Independent of metrics.py: (scores, is TP) of every person prediction, and the person count.

    Greedy by score within each image (top 100, as COCO caps), each GT box taken once by its best IoU."""
    scores, hits, npos = [], [], 0
    for sample in coco.samples:
        gt = sample.truth.boxes[np.array(sample.truth.labels) == "person"] if len(sample.truth) else np.zeros((0, 4))
        npos += len(gt)
        dets = predictions[sample.id]
        keep = dets.class_ids == PERSON
        order = np.argsort(-dets.scores[keep], kind="stable")[:100]
        boxes, image_scores = dets.boxes[keep][order], dets.scores[keep][order]
        ious = iou_matrix(boxes.astype(np.float64), gt.astype(np.float64))
        used = np.zeros(len(gt), bool)
        for row, score in zip(ious, image_scores, strict=True):
            free = np.where(used, -1.0, row)
            hit = len(free) > 0 and free.max() >= thr
            if hit:
                used[int(free.argmax())] = True
            scores.append(float(score))
            hits.append(hit)
    order = np.argsort(-np.array(scores), kind="stable")
    return np.array(scores)[order], np.array(hits, bool)[order], npos


def _ap_101(hits: np.ndarray, npos: int) -> float:
    """COCO's definition: precision made monotone, read at recall 0, 0.01, ... 1 (0 past the last recall)."""
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    recall, precision = tp / npos, tp / (tp + fp)
    total = 0.0
    for r in np.linspace(0, 1, 101):
        reached = precision[recall >= r]
        total += reached.max() if len(reached) else 0.0
    return total / 101


def _ap_voc(hits: np.ndarray, npos: int) -> float:
    """PASCAL VOC 2010+ all-point AP: area under the monotone precision envelope."""
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    recall = np.concatenate([[0.0], tp / npos, [1.0]])
    precision = np.concatenate([[0.0], tp / (tp + fp), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def test_operating_point_equals_the_vision_tests_matcher(coco: Dataset, coco_predictions: dict[str, Detections],
                                                          coco_metrics: dict) -> None:
    reference = coco128.Score()
    for theirs in coco128.samples(coco.root):
        sample_id = theirs.image_path.relative_to(coco.root).as_posix()
        reference.add(coco128.score_class(coco_predictions[sample_id], theirs, coco128.PERSON, 0.5, OPERATING))
    person = coco_metrics["per_class"]["person"]
    assert (person["tp"], person["fp"], person["gt"]) == (reference.tp, reference.fp, reference.gt)
    assert reference.gt == 254
    assert person["recall"] == pytest.approx(reference.recall, abs=1e-12)
    assert person["precision"] == pytest.approx(reference.precision, abs=1e-12)
    overall = coco_metrics["overall"]
    assert (overall["tp"], overall["fp"], overall["fn"]) == (reference.tp, reference.fp, reference.gt - reference.tp)
    per_image = coco_metrics["per_image"]
    assert len(per_image) == coco_metrics["images"] == 128
    assert sum(v["tp"] for v in per_image.values()) == reference.tp
    assert sum(len(v["false_positives"]) for v in per_image.values()) == reference.fp
    assert sum(len(v["misses"]) for v in per_image.values()) == reference.gt - reference.tp
    assert all(fp[5] >= OPERATING and fp[4] == "person" for v in per_image.values() for fp in v["false_positives"])


def test_ap_equals_independent_computations(coco: Dataset, coco_predictions: dict[str, Detections],
                                            coco_metrics: dict) -> None:
    scores, hits, npos = _greedy_flags(coco, coco_predictions, 0.5)
    person = coco_metrics["per_class"]["person"]
    # the same 101-point definition, the same matching: equal up to float summation order
    assert person["ap50"] == pytest.approx(_ap_101(hits, npos), abs=1e-9)
    # VOC all-point integrates the same envelope exactly instead of at 101 recalls: close, not equal
    assert person["ap50"] == pytest.approx(_ap_voc(hits, npos), abs=0.01)
    ap_50_95 = np.mean([_ap_101(_greedy_flags(coco, coco_predictions, t)[1], npos) for t in np.linspace(.5, .95, 10)])
    assert person["ap50_95"] == pytest.approx(ap_50_95, abs=1e-9)
    assert coco_metrics["overall"]["ap50"] == person["ap50"] and coco_metrics["overall"]["ap50_95"] == person["ap50_95"]

    # threshold for precision 0.9: brute force over every distinct score
    threshold = person["threshold_for_target_precision"]
    precision_at = {float(s): hits[scores >= s].mean() for s in np.unique(scores)}
    assert threshold == min(s for s, p in precision_at.items() if p >= 0.9)
    assert coco_metrics["overall"]["threshold_for_target_precision"] == threshold

    curve = coco_metrics["pr_curves"]["person"]
    assert 100 < len(curve["recall"]) <= 200 and len(curve["precision"]) == len(curve["scores"]) == len(curve["recall"])
    assert curve["recall"] == sorted(curve["recall"]) and curve["scores"] == sorted(curve["scores"], reverse=True)
    assert curve["recall"][-1] == pytest.approx(hits.sum() / npos, abs=1e-4)
    assert min(curve["scores"]) >= LOW - 1e-6


def test_confidence_intervals_and_presence_on_coco128(coco: Dataset, coco_metrics: dict) -> None:
    overall = coco_metrics["overall"]
    ci = overall["ci"]
    assert ci["level"] == 0.95 and ci["resamples"] == 1000
    for key in ("recall", "precision", "ap50"):
        lo, hi = ci[key]
        assert lo < overall[key] < hi, key
        assert hi - lo < 0.25, key
    presence = overall["presence"]
    with_person = sum(any(lbl == "person" for lbl in s.truth.labels) for s in coco.samples)
    assert presence["label"] == "person"
    assert (presence["positives"], presence["negatives"]) == (with_person, 128 - with_person)
    assert 0.8 < presence["sensitivity"] <= 1 and 0.8 < presence["specificity"] <= 1
    json.dumps(coco_metrics, allow_nan=False)


# -------------------------------------------------------------------------------------- hand-made cases


def _sample(name: str, boxes: list[list[float]], labels: list[str] | None = None,
            ignore: list[bool] | None = None) -> Sample:
    labels = labels or ["person"] * len(boxes)
    truth = GroundTruth(np.array(boxes, np.float32).reshape(-1, 4), tuple(labels),
                        np.array(ignore or [False] * len(boxes), bool))
    return Sample(name, Path(f"{name}.jpg"), truth)


def _dets(boxes: list[list[float]], scores: list[float], classes: list[int] | None = None) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                      np.array(classes or [PERSON] * len(scores), np.int64))


def _run(samples: list[Sample], predictions: dict[str, Detections], **kw: object) -> dict:
    kw = {"labels": ["person"], "score_threshold": 0.5, "bootstrap": 200} | kw
    result = detection_metrics(samples, predictions, **kw)
    json.dumps(result, allow_nan=False)
    return result


BOXES = [[10, 10, 50, 90], [100, 20, 140, 100], [200, 50, 260, 150]]


def test_perfect_predictions() -> None:
    samples = [_sample("a", BOXES), _sample("b", BOXES[:1]), _sample("empty", [])]
    preds = {"a": _dets(BOXES, [0.9, 0.8, 0.7]), "b": _dets(BOXES[:1], [0.6]), "empty": Detections.empty()}
    m = _run(samples, preds)
    o = m["overall"]
    assert (o["ap50"], o["ap50_95"], o["precision"], o["recall"], o["f1"]) == (1.0, 1.0, 1.0, 1.0, 1.0)
    assert (o["tp"], o["fp"], o["fn"], o["fp_per_image"]) == (4, 0, 0, 0.0)
    assert o["threshold_for_target_precision"] == pytest.approx(0.6)
    assert o["ci"]["recall"] == [1.0, 1.0] and o["ci"]["ap50"] == pytest.approx([1.0, 1.0])
    assert m["per_image"]["a"] == {"tp": 3, "fp": 0, "fn": 0, "misses": [], "false_positives": []}
    assert o["presence"] == {"label": "person", "sensitivity": 1.0, "specificity": 1.0, "positives": 2,
                             "negatives": 1}


def test_all_wrong_predictions() -> None:
    samples = [_sample("a", BOXES)]
    far = [[400, 400, 450, 480], [500, 10, 520, 40]]
    m = _run(samples, {"a": _dets(far, [0.9, 0.4])})
    o = m["overall"]
    assert (o["ap50"], o["ap50_95"], o["precision"], o["recall"], o["f1"]) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert (o["tp"], o["fp"], o["fn"], o["fp_per_image"]) == (0, 1, 3, 1.0)
    assert o["threshold_for_target_precision"] is None
    assert m["per_image"]["a"]["misses"] == [[*map(float, b), "person"] for b in BOXES]
    assert m["per_image"]["a"]["false_positives"] == [[400.0, 400.0, 450.0, 480.0, "person", 0.9]]
    # no predictions at all: AP 0, precision undefined
    m = _run(samples, {"a": Detections.empty()})
    assert m["overall"]["ap50"] == 0.0 and m["overall"]["precision"] is None and m["overall"]["recall"] == 0.0


def test_ignore_box_swallows_a_prediction_and_is_never_a_miss() -> None:
    samples = [_sample("a", BOXES, ignore=[False, True, False])]
    preds = {"a": _dets([BOXES[0], BOXES[1], [205, 60, 250, 140]], [0.9, 0.8, 0.7])}
    m = _run(samples, preds)
    o = m["overall"]
    assert (o["tp"], o["fp"], o["fn"]) == (2, 0, 0)
    assert o["ap50"] == 1.0 and m["per_class"]["person"]["gt"] == 2
    # an unmatched ignore box is no miss; a small prediction inside it (COCO crowd rule) is no false positive
    m = _run(samples, {"a": _dets([BOXES[0], [105, 30, 120, 50]], [0.9, 0.8])})
    assert (m["overall"]["tp"], m["overall"]["fp"], m["overall"]["fn"]) == (1, 0, 1)
    assert m["per_image"]["a"]["misses"] == [[200.0, 50.0, 260.0, 150.0, "person"]]


def test_other_labels_and_iou_threshold() -> None:
    samples = [_sample("a", [*BOXES, [300, 300, 400, 350]], labels=["person"] * 3 + ["dog"])]
    dog = COCO_LABELS.index("dog")
    shifted = [[18, 10, 58, 90]]  # IoU with BOXES[0]: 32*80 / (48*80) = 0.667
    preds = {"a": _dets([*shifted, [0, 0, 5, 5]], [0.9, 0.9], [PERSON, dog])}
    at_50 = _run(samples, preds)
    assert (at_50["overall"]["tp"], at_50["overall"]["fp"], at_50["overall"]["fn"]) == (1, 0, 2)
    at_70 = _run(samples, preds, iou=0.7)
    assert (at_70["overall"]["tp"], at_70["overall"]["fp"], at_70["overall"]["fn"]) == (0, 1, 3)
    assert at_70["overall"]["ap50"] == at_50["overall"]["ap50"], "AP50 does not depend on the operating IoU"
    # a label without ground truth: no AP, its false positives still count; overall AP is the person AP
    both = _run(samples, {"a": _dets([*shifted, [0, 0, 5, 5]], [0.9, 0.9], [PERSON, CAR])}, labels=["person", "car"])
    assert both["per_class"]["car"]["ap50"] is None and both["per_class"]["car"]["fp"] == 1
    assert both["per_class"]["car"]["gt"] == 0 and both["per_class"]["car"]["recall"] is None
    assert both["overall"]["ap50"] == both["per_class"]["person"]["ap50"]
    assert both["overall"]["fp"] == 1 and both["pr_curves"]["car"] == {"recall": [], "precision": [], "scores": []}
    with pytest.raises(ValueError, match="no predictions for 1 sample"):
        detection_metrics(samples, {}, labels=["person"], score_threshold=0.5)


def test_threshold_for_target_precision_on_a_crafted_list() -> None:
    gt = [[i * 100, 0, i * 100 + 50, 80] for i in range(10)]
    # scores 0.9 .. 0.2, outcome TP TP FP TP TP FP FP TP: precision 1, 1, .67, .75, .8, .67, .57, .625
    outcome = [True, True, False, True, True, False, False, True]
    boxes = [gt[i] if hit else [i * 100, 200, i * 100 + 50, 280] for i, hit in enumerate(outcome)]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    samples, preds = [_sample("a", gt)], {"a": _dets(boxes, scores)}
    for target, expected in ((0.8, 0.5), (0.9, 0.8), (1.0, 0.8), (0.6, 0.2), (0.75, 0.5), (0.76, 0.5)):
        result = _run(samples, preds, target_precision=target)["overall"]
        assert result["threshold_for_target_precision"] == pytest.approx(expected), target
        assert result["target_precision"] == target
    first_wrong = {"a": _dets(boxes[2:], scores[2:])}  # precision starts at 0 and never reaches 0.99
    assert _run(samples, first_wrong, target_precision=0.99)["overall"]["threshold_for_target_precision"] is None
    curve = _run(samples, preds)["pr_curves"]["person"]
    assert curve["recall"] == [0.1, 0.2, 0.2, 0.3, 0.4, 0.4, 0.4, 0.5]
    assert curve["precision"] == [1.0, 1.0, 0.6667, 0.75, 0.8, 0.6667, 0.5714, 0.625]
    # COCO 101-point AP: precision envelope 1 up to recall .2, .8 to .4, .625 to .5, then 0
    assert _run(samples, preds)["overall"]["ap50"] == pytest.approx((21 * 1 + 20 * 0.8 + 10 * 0.625) / 101)


def _population(n: int) -> tuple[list[Sample], dict[str, Detections]]:
    """n images with one person each; every third is missed and every fifth has a false positive."""
    samples, preds = [], {}
    for i in range(n):
        samples.append(_sample(f"{i:04d}", [BOXES[0]]))
        boxes, scores = [], []
        if i % 3:
            boxes.append(BOXES[0])
            scores.append(0.9 - 0.001 * (i % 7))
        if i % 5 == 0:
            boxes.append(BOXES[2])
            scores.append(0.6 + 0.001 * (i % 11))
        preds[f"{i:04d}"] = _dets(boxes, scores)
    return samples, preds


def test_bootstrap_contains_the_estimate_and_narrows_with_more_images() -> None:
    widths = {}
    for n in (30, 300):
        samples, preds = _population(n)
        m = _run(samples, preds, bootstrap=500)
        o = m["overall"]
        for key in ("recall", "precision", "ap50"):
            lo, hi = o["ci"][key]
            assert lo <= o[key] <= hi, (n, key)
        widths[n] = {key: o["ci"][key][1] - o["ci"][key][0] for key in ("recall", "precision", "ap50")}
        assert _run(samples, preds, bootstrap=500)["overall"]["ci"] == o["ci"], "same seed, same interval"
    for key in ("recall", "precision", "ap50"):
        assert widths[300][key] < widths[30][key] / 2, key
    samples, preds = _population(30)
    assert _run(samples, preds, bootstrap=500, seed=1)["overall"]["ci"] != _run(samples, preds, bootstrap=500)[
        "overall"]["ci"]
    assert _run(samples, preds, bootstrap=0)["overall"]["ci"]["recall"] == [None, None]


def test_presence_on_crafted_frames() -> None:
    samples = [
        _sample("person-found", BOXES[:1]),
        _sample("person-missed", BOXES[:1]),
        _sample("person-found-elsewhere", BOXES[:1]),  # wrong place, but "person present" is still right
        _sample("empty-false-alarm", []),
        _sample("empty-quiet", []),
        _sample("car-only", [BOXES[1]], labels=["car"]),
        _sample("ignored-person-only", BOXES[:1], ignore=[True]),  # neither positive nor negative
    ]
    preds = {
        "person-found": _dets(BOXES[:1], [0.9]),
        "person-missed": _dets(BOXES[:1], [0.2]),  # below the operating point
        "person-found-elsewhere": _dets([[400, 400, 450, 450]], [0.8]),
        "empty-false-alarm": _dets([[0, 0, 30, 60]], [0.7]),
        "empty-quiet": _dets([[0, 0, 30, 60]], [0.1]),
        "car-only": _dets([BOXES[1]], [0.9], [CAR]),
        "ignored-person-only": _dets(BOXES[:1], [0.9]),
    }
    presence = _run(samples, preds)["overall"]["presence"]
    assert presence == {"label": "person", "sensitivity": 2 / 3, "specificity": 2 / 3, "positives": 3,
                        "negatives": 3}
    cars = _run(samples, preds, labels=["car"])["overall"]["presence"]
    assert cars == {"label": "car", "sensitivity": 1.0, "specificity": 1.0, "positives": 1, "negatives": 6}


# ------------------------------------------------------------------------------------ tracking and events


def _frame(sequence: str, number: int, objects: list[tuple[int, list[float], str, bool]]) -> Sample:
    truth = GroundTruth(np.array([o[1] for o in objects], np.float32).reshape(-1, 4), tuple(o[2] for o in objects),
                        np.array([o[3] for o in objects], bool), np.array([o[0] for o in objects], np.int64))
    return Sample(f"{sequence}/{number:06d}", Path(f"{number:06d}.jpg"), truth, sequence, number)


def _walker(track: int, frame: int, x0: float, dx: float = 5) -> list[float]:
    x = x0 + dx * frame
    return [x, 100.0 + track, x + 40, 200.0 + track]


def _sequence(name: str = "seq", frames: int = 10) -> list[Sample]:
    """Two pedestrians walking, a static person (ignored) and a parked car (ignored)."""
    return [_frame(name, f, [(1, _walker(1, f, 0), "person", False), (2, _walker(2, f, 300), "person", False),
                             (3, [600, 100, 640, 200], "person", True), (4, [700, 300, 800, 360], "car", True)])
            for f in range(1, frames + 1)]


def _perfect(frames: list[Sample]) -> dict[str, list]:
    return {s.id: [(10 + int(i), label, tuple(map(float, box)))
                   for i, box, label, ig in zip(s.truth.ids, s.truth.boxes, s.truth.labels, s.truth.ignore,
                                                strict=True) if not ig] for s in frames}


def test_perfect_tracking() -> None:
    frames = _sequence()
    m = tracking_metrics({"seq": frames}, _perfect(frames), labels=["person"])
    assert m == {"mota": 1.0, "motp": 1.0, "idf1": 1.0, "id_switches": 0, "mostly_tracked": 2, "mostly_lost": 0,
                 "num_frames": 10, "gt_tracks": 2}
    json.dumps(m, allow_nan=False)


def test_id_switch_false_positive_and_ignored_boxes() -> None:
    frames = _sequence()
    tracked = _perfect(frames)
    for s in frames[5:]:  # pedestrian 1 gets a new track id from frame 6 on
        tracked[s.id] = [(99 if tid == 11 else tid, label, box) for tid, label, box in tracked[s.id]]
    m = tracking_metrics({"seq": frames}, tracked, labels=["person"])
    assert m["id_switches"] == 1
    assert m["mota"] == pytest.approx(1 - 1 / 20)
    assert m["idf1"] == pytest.approx(2 * 15 / (20 + 20)), "track 99 covers 5 of pedestrian 1's 10 frames"
    # boxes on the static person and the parked car are dropped (distractors), one on the background is an FP
    for s in frames:
        tracked[s.id] = [*tracked[s.id], (50, "person", (600.0, 102.0, 640.0, 200.0)),
                         (51, "car", (700, 300, 800, 360))]
    tracked[frames[0].id].append((52, "person", (0.0, 400.0, 30.0, 470.0)))
    m = tracking_metrics({"seq": frames}, tracked, labels=["person", "car"])
    assert m["mota"] == pytest.approx(1 - 2 / 20) and m["gt_tracks"] == 2
    # only frames the pipeline analysed count
    every_other = {k: v for k, v in _perfect(frames).items() if int(k[-6:]) % 2}
    m = tracking_metrics({"seq": frames}, every_other, labels=["person"])
    assert m["num_frames"] == 5 and m["mota"] == 1.0
    empty = tracking_metrics({"seq": frames}, {}, labels=["person"])
    assert empty["num_frames"] == 0 and empty["mota"] is None


def test_motp_is_mean_iou() -> None:
    frames = _sequence(frames=2)
    tracked = _perfect(frames)
    for s in frames:  # pedestrian 2's box 10 px too wide: IoU 40/50
        tracked[s.id] = [(tid, label, (b[0], b[1], b[2] + 10, b[3]) if tid == 12 else b)
                         for tid, label, b in tracked[s.id]]
    assert tracking_metrics({"seq": frames}, tracked, labels=["person"])["motp"] == pytest.approx(0.9)


def test_events() -> None:
    frames = _sequence(frames=100)
    tracked = _perfect(frames)
    for s in frames:  # a background track that became an event, and one on the static person
        tracked[s.id] += [(77, "person", (0.0, 400.0, 30.0, 470.0)), (78, "person", (600.0, 100.0, 640.0, 200.0))]
    events = {"seq": [(11, "person"), (77, "person"), (78, "person"), (11, "person")]}
    m = event_metrics({"seq": frames}, tracked, events, labels=["person"], fps={"seq": 10.0})
    hours = 100 / 10 / 3600
    assert m == {"gt_tracks": 2, "alerted": 1, "event_recall": 0.5, "events": 3, "false_alarms": 1,
                 "false_alarms_per_hour": pytest.approx(1 / hours), "hours": pytest.approx(hours)}
    json.dumps(m, allow_nan=False)
    # an event whose track sits on pedestrian 2 in only 40 of the 100 frames covers nobody: a false alarm
    for s in frames[40:]:
        tracked[s.id] = [(tid, label, (b[0], b[1] + 300, b[2], b[3] + 300) if tid == 12 else b)
                         for tid, label, b in tracked[s.id]]
    m = event_metrics({"seq": frames}, tracked, {"seq": [(11, "person"), (12, "person")]}, labels=["person"],
                      fps={"seq": 10.0})
    assert (m["alerted"], m["false_alarms"]) == (1, 1)
    # 50 of 100 is enough; events of labels not evaluated are left out
    for s in frames[40:50]:
        tracked[s.id] = [(tid, label, _walker(2, s.frame, 300) if tid == 12 else b) for tid, label, b in tracked[s.id]]
    m = event_metrics({"seq": frames}, tracked, {"seq": [(12, "person"), (13, "car")]}, labels=["person"],
                      fps={"seq": 10.0})
    assert (m["alerted"], m["events"], m["false_alarms"]) == (1, 1, 0)
    # analysed frames only: a pedestrian seen only in unanalysed frames is not counted
    late = [_frame("late", f, [(5, _walker(5, f, 0), "person", False)] if f > 5 else []) for f in range(1, 11)]
    m = event_metrics({"late": late}, {s.id: [] for s in late[:5]}, {}, labels=["person"], fps={"late": 5.0})
    assert (m["gt_tracks"], m["events"], m["event_recall"], m["false_alarms_per_hour"]) == (0, 0, None, 0.0)
    with pytest.raises(ValueError, match="no positive frame rate"):
        event_metrics({"late": late}, {}, {}, labels=["person"], fps={})


# ------------------------------------------------------------------- object sizes and the proposed threshold


def test_precision_and_recall_by_coco_object_size() -> None:
    gt = [[0, 0, 20, 20],  # small (400 px²), missed
          [100, 100, 150, 150],  # medium (2500)
          [200, 0, 232, 32],  # exactly 32²: medium
          [300, 300, 420, 420],  # large
          [800, 0, 896, 96]]  # exactly 96²: large, found by a box of 95 x 96 (medium by its own area)
    preds = _dets([gt[1], gt[2], gt[3], [800, 0, 895, 96],
                   [600, 0, 610, 10],  # small false positive
                   [500, 500, 700, 700],  # large false positive
                   [650, 0, 660, 10]],  # below the operating point: not counted
                  [0.9, 0.9, 0.9, 0.9, 0.8, 0.7, 0.3])
    m = _run([_sample("a", gt)], {"a": preds})
    sizes = m["overall"]["by_size"]
    assert {k: (v["gt"], v["tp"], v["fp"], v["fn"]) for k, v in sizes.items()} == {
        "small": (1, 0, 1, 1), "medium": (2, 2, 0, 0), "large": (2, 2, 1, 0)}
    assert sizes["small"]["recall"] == 0.0 and sizes["small"]["precision"] == 0.0
    assert sizes["large"]["precision"] == pytest.approx(2 / 3) and sizes["large"]["recall"] == 1.0
    assert sizes["medium"]["recall_ci"] == pytest.approx(list(wilson(2, 2)))
    assert m["per_class"]["person"]["by_size"] == sizes  # one label: the same
    # nothing of a size: no figure rather than a made-up one
    empty = _run([_sample("b", gt[3:4])], {"b": _dets(gt[3:4], [0.9])})["overall"]["by_size"]
    assert empty["small"] == {"gt": 0, "tp": 0, "fp": 0, "fn": 0, "precision": None, "recall": None,
                              "precision_ci": None, "recall_ci": None}


def test_proposed_threshold_holds_when_applied() -> None:
    """The per-label operating point is the Wilson-bound threshold; measuring at it reaches the target."""
    samples, preds = _population(300)
    m = _run(samples, preds, target_precision=0.9)
    point = m["per_class"]["person"]["operating_point"]
    # independently: every third image has no detection of its person, every fifth a false positive
    scores = [0.9 - 0.001 * (i % 7) for i in range(300) if i % 3] + [0.6 + 0.001 * (i % 11) for i in range(0, 300, 5)]
    hits = [True] * (len(scores) - 60) + [False] * 60
    assert point == {**operating_point(scores, hits, 0.9).to_json(), "at_score": pytest.approx(point["at_score"])}
    assert point["threshold"] is not None and point["kept"] >= 30
    at_it = _run(samples, preds, score_threshold=point["threshold"])["overall"]
    assert wilson(at_it["tp"], at_it["tp"] + at_it["fp"])[0] >= 0.9 > wilson(200, 260)[0]
    assert at_it["tp"] + at_it["fp"] == point["kept"]


def test_assess_cli_prints_the_threshold_as_a_config_change(data_dir: Path, installed_models: None,
                                                            tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trustcam.cli", "assess", "--dataset", str(data_dir / "coco128-train"), "--labels",
         "person", "--max-images", "48", "--bootstrap", "0", "--target-precision", "0.8", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    point = m["per_class"]["person"]["operating_point"]
    assert m["overall"]["target_precision"] == 0.8 and point["target"] == 0.8 and point["lower_bound"] >= 0.8
    proposal = yaml.safe_load(result.stdout)  # no camera in the default config: a placeholder to fill in
    assert proposal["cameras"]["CAMERA"]["objects"]["filters"]["person"]["min_score"] == point["threshold"]
    assert "precision ≥ 0.8 with 95% confidence" in result.stdout
    report = (tmp_path / "report.html").read_text()
    assert "By object size" in report and "small" in report and "large" in report
    sizes = m["overall"]["by_size"]
    assert sum(v["gt"] for v in sizes.values()) == m["per_class"]["person"]["gt"]
    assert sizes["small"]["recall"] < sizes["large"]["recall"]  # small people are where the detector is weakest
