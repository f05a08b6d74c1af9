"""Detection, tracking and event accuracy of the pipeline against labelled data, with confidence intervals.

The numbers follow the conventions people already trust, so a figure here means what it means elsewhere:
AP through pycocotools' COCOeval, tracking through motmetrics (MOTChallenge's CLEAR-MOT and IDF1), and
ignore boxes handled as COCO crowds and MOTChallenge distractors. On top of that come the figures an
operator acts on: precision/recall at the configured threshold, the lowest threshold that reaches a target
precision, frame-level "person present" sensitivity/specificity, event recall and false alarms per hour,
plus bootstrap intervals so a small test set does not pass off luck as accuracy.

Matching at the operating point is COCOeval's, so the operating point lies on the AP curve: per image and
label, predictions in descending score order (stable) take the unmatched non-ignored ground truth box with
the highest IoU ≥ the threshold; a prediction with no such box that overlaps an ignore box is dropped
(neither TP nor FP). As in COCO, overlap with an ignore box is intersection over the prediction's area, so
a small prediction inside a crowd region is swallowed too. Greedy matching in score order gives every
prediction the same outcome whatever the score threshold, so one matching over all predictions serves the
operating point, the PR curve and the threshold search alike.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from trustcam.assess.datasets import Sample
from trustcam.storage.reviews import MIN_SAMPLES, operating_point, wilson
from trustcam.vision.detections import Detections, iou_matrix
from trustcam.vision.labels import COCO_LABELS

CI_LEVEL = 0.95
MAX_DETS = 100  # COCO's per-image, per-class cap for AP (the operating point uses every prediction)
PR_POINTS = 200
REC_THRS = np.linspace(0.0, 1.0, 101)  # COCO's 101 recall points
SIZES = ("small", "medium", "large")  # COCO's object sizes: box area < 32², < 96², the rest (pixels of the image)
_SIZE_LIMITS = (32.0**2, 96.0**2)
_BOOTSTRAP_CELLS = 2_000_000  # resamples x predictions held at once while bootstrapping AP

Track = tuple[int, str, tuple[float, float, float, float]]


@dataclass
class _Matched:
    """Outcome of every prediction of one label in one image, at one IoU threshold."""

    scores: np.ndarray  # (P,) in descending score order (stable)
    boxes: np.ndarray  # (P, 4)
    gt_index: np.ndarray  # (P,) index into the non-ignored GT boxes; -1 false positive; -2 dropped on ignore
    gt_boxes: np.ndarray  # (G, 4) non-ignored GT boxes


def _match(boxes: np.ndarray, scores: np.ndarray, gt: np.ndarray, ignore_boxes: np.ndarray, thr: float) -> _Matched:
    """COCOeval's greedy matching of one image and label (see the module docstring)."""
    order = np.argsort(-scores, kind="mergesort")
    boxes, scores = boxes[order].astype(np.float64), scores[order].astype(np.float64)
    gt = gt.astype(np.float64)
    ious = iou_matrix(boxes, gt)
    crowd = _overlap_of_prediction(boxes, ignore_boxes.astype(np.float64))
    result = np.full(len(scores), -1, np.int64)
    free = np.ones(len(gt), bool)
    for i in range(len(scores)):
        candidates = np.where(free, ious[i], -1.0) if len(gt) else ious[i]
        if len(candidates) and candidates.max() >= thr:
            # COCOeval keeps the last of equal IoUs; follow it so ties resolve the same way
            j = len(candidates) - 1 - int(np.argmax(candidates[::-1]))
            result[i] = j
            free[j] = False
        elif crowd.shape[1] and crowd[i].max() >= thr:
            result[i] = -2
    return _Matched(scores, boxes, result, gt)


def _overlap_of_prediction(boxes: np.ndarray, ignore_boxes: np.ndarray) -> np.ndarray:
    """Intersection over prediction area (COCO's IoU against crowd boxes)."""
    if len(boxes) == 0 or len(ignore_boxes) == 0:
        return np.zeros((len(boxes), len(ignore_boxes)))
    x1 = np.maximum(boxes[:, None, 0], ignore_boxes[None, :, 0])
    y1 = np.maximum(boxes[:, None, 1], ignore_boxes[None, :, 1])
    x2 = np.minimum(boxes[:, None, 2], ignore_boxes[None, :, 2])
    y2 = np.minimum(boxes[:, None, 3], ignore_boxes[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area[:, None], 1e-9)


def _split(sample: Sample, dets: Detections, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pred boxes, pred scores, non-ignored GT boxes, ignore GT boxes) of one label in one image."""
    class_id = COCO_LABELS.index(label) if label in COCO_LABELS else -1
    keep = dets.class_ids == class_id
    truth = sample.truth
    is_label = np.array([name == label for name in truth.labels], bool)
    ignore = np.asarray(truth.ignore, bool)
    gt_boxes = np.asarray(truth.boxes, np.float64).reshape(-1, 4)
    return (np.asarray(dets.boxes, np.float64).reshape(-1, 4)[keep], np.asarray(dets.scores, np.float64)[keep],
            gt_boxes[is_label & ~ignore], gt_boxes[is_label & ignore])


def detection_metrics(samples: Sequence[Sample], predictions: Mapping[str, Detections], *, labels: Sequence[str],
                      score_threshold: float, target_precision: float = 0.9, iou: float = 0.5,
                      bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """AP (COCOeval), the operating point at ``score_threshold``, PR curves, per-image errors and bootstrap CIs.

    ``predictions`` hold every prediction down to a low score; figures "at the operating point" use those
    with score ≥ ``score_threshold``. Predictions and ground truth of labels not in ``labels`` are left out.
    Intervals resample images; their AP50 is :func:`interpolated_ap` (COCO's 101-point rule on this module's
    matching, equal to COCOeval's AP50 on the full set), as re-running COCOeval 1000 times would take minutes.
    """
    labels = list(dict.fromkeys(labels))
    if not labels:
        raise ValueError("labels is empty: name the labels to evaluate, e.g. ['person']")
    missing = [s.id for s in samples if s.id not in predictions]
    if missing:
        raise ValueError(f"no predictions for {len(missing)} sample(s), e.g. {missing[0]!r}; run the detector on "
                         "every sample (an empty Detections for an image with nothing found)")
    n = len(samples)
    splits = {label: [_split(s, predictions[s.id], label) for s in samples] for label in labels}
    at_op = {label: [_match(p, sc, g, ig, iou) for p, sc, g, ig in splits[label]] for label in labels}
    at_50 = at_op if math.isclose(iou, 0.5) else {
        label: [_match(p, sc, g, ig, 0.5) for p, sc, g, ig in splits[label]] for label in labels}
    coco = _cocoeval(samples, splits, labels)

    # operating point, per image and label
    tp = np.zeros((len(labels), n), np.int64)
    fp = np.zeros((len(labels), n), np.int64)
    gt = np.zeros((len(labels), n), np.int64)
    sized = np.zeros((len(labels), len(SIZES), 3), np.int64)  # per label and size: TP, FP, GT
    per_image: dict[str, dict[str, Any]] = {}
    for i, sample in enumerate(samples):
        misses: list[list[Any]] = []
        false_positives: list[list[Any]] = []
        for k, label in enumerate(labels):
            m = at_op[label][i]
            above = m.scores >= score_threshold
            hit = m.gt_index[above & (m.gt_index >= 0)]
            tp[k, i], fp[k, i], gt[k, i] = len(hit), int(np.sum(above & (m.gt_index == -1))), len(m.gt_boxes)
            sized[k] += _size_counts(m, above, hit)
            missed = np.setdiff1d(np.arange(len(m.gt_boxes)), hit)
            misses += [[*_box(m.gt_boxes[j]), label] for j in missed]
            false_positives += [[*_box(m.boxes[j]), label, round(float(m.scores[j]), 4)]
                                for j in np.flatnonzero(above & (m.gt_index == -1))]
        per_image[sample.id] = {"tp": int(tp[:, i].sum()), "fp": int(fp[:, i].sum()),
                                "fn": int(gt[:, i].sum() - tp[:, i].sum()),
                                "misses": misses, "false_positives": false_positives}

    per_class: dict[str, dict[str, Any]] = {}
    pr_curves: dict[str, dict[str, list[Any]]] = {}
    for k, label in enumerate(labels):
        counts = _counts(int(tp[k].sum()), int(fp[k].sum()), int(gt[k].sum()), n)
        per_class[label] = {"ap50": coco[label][0], "ap50_95": coco[label][1], **counts, "gt": int(gt[k].sum()),
                            "threshold_for_target_precision": _threshold_for_precision(
                                [at_op[label]], target_precision),
                            "operating_point": operating_point(*_ranked(at_op[label])[1:], target_precision,
                                                               MIN_SAMPLES).to_json(),
                            "by_size": _by_size(sized[k])}
        pr_curves[label] = _pr_curve(at_50[label])

    with_gt = [label for k, label in enumerate(labels) if gt[k].sum() > 0]
    overall = _counts(int(tp.sum()), int(fp.sum()), int(gt.sum()), n)
    overall = {
        "ap50": _mean([coco[label][0] for label in with_gt]),
        "ap50_95": _mean([coco[label][1] for label in with_gt]),
        **overall,
        "threshold_for_target_precision": _threshold_for_precision([at_op[lb] for lb in labels], target_precision),
        "target_precision": target_precision,
        "by_size": _by_size(sized.sum(axis=0)),
        "presence": _presence(samples, predictions, "person" if "person" in labels else labels[0], score_threshold),
        "ci": _bootstrap(tp.sum(0), fp.sum(0), gt.sum(0), [at_50[label] for label in with_gt], bootstrap, seed),
    }
    return _clean({"images": n, "overall": overall, "per_class": per_class, "pr_curves": pr_curves,
                   "per_image": per_image})


def _size_of(boxes: np.ndarray) -> np.ndarray:
    """Index into SIZES of each box (area exactly 32² is medium, 96² large)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.searchsorted(_SIZE_LIMITS, area, side="right")


def _size_counts(m: _Matched, above: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """(size, [TP, FP, GT]) of one image and label at the operating point.

    As in COCOeval's area ranges, a true positive counts in the size of the object it found (so it counts
    for recall and precision alike) and a false positive in its own size.
    """
    out = np.zeros((len(SIZES), 3), np.int64)
    if len(m.gt_boxes):
        out[:, 0] = np.bincount(_size_of(m.gt_boxes[hit]), minlength=len(SIZES))
        out[:, 2] = np.bincount(_size_of(m.gt_boxes), minlength=len(SIZES))
    wrong = above & (m.gt_index == -1)
    if wrong.any():
        out[:, 1] = np.bincount(_size_of(m.boxes[wrong]), minlength=len(SIZES))
    return out


def _by_size(counts: np.ndarray) -> dict[str, dict[str, Any]]:
    """Precision and recall per object size with Wilson 95% intervals (objects counted as independent)."""
    out = {}
    for name, (tp, fp, gt) in zip(SIZES, counts.tolist(), strict=True):
        out[name] = {"gt": gt, "tp": tp, "fp": fp, "fn": gt - tp,
                     "precision": tp / (tp + fp) if tp + fp else math.nan, "recall": tp / gt if gt else math.nan,
                     "precision_ci": list(wilson(tp, tp + fp)) if tp + fp else None,
                     "recall_ci": list(wilson(tp, gt)) if gt else None}
    return out


def _box(box: np.ndarray) -> list[float]:
    return [round(float(v), 1) for v in box]


def _counts(tp: int, fp: int, gt: int, images: int) -> dict[str, Any]:
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / gt if gt else math.nan
    f1 = 2 * tp / (2 * tp + fp + (gt - tp)) if tp + fp + gt else math.nan
    return {"precision": precision, "recall": recall, "f1": f1, "fp_per_image": fp / images if images else math.nan,
            "tp": tp, "fp": fp, "fn": gt - tp}


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values and not any(math.isnan(v) for v in values) else math.nan


def _cocoeval(samples: Sequence[Sample], splits: dict[str, list[tuple[np.ndarray, ...]]],
              labels: list[str]) -> dict[str, tuple[float, float]]:
    """AP50 and AP50:95 per label from pycocotools (NaN for a label without ground truth)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = [{"id": i + 1} for i in range(len(samples))]
    categories = [{"id": k + 1, "name": label} for k, label in enumerate(labels)]
    gts: list[dict[str, Any]] = []
    dts: list[dict[str, Any]] = []
    for k, label in enumerate(labels):
        for i, (boxes, scores, gt, ignore) in enumerate(splits[label]):
            for box, crowd in [(b, 0) for b in gt] + [(b, 1) for b in ignore]:
                gts.append(_coco_ann(len(gts) + 1, i + 1, k + 1, box) | {"iscrowd": crowd})
            for box, score in zip(boxes, scores, strict=True):
                dts.append(_coco_ann(len(dts) + 1, i + 1, k + 1, box) | {"iscrowd": 0, "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {"images": images, "categories": categories, "annotations": gts}
        coco_dt.dataset = {"images": images, "categories": categories, "annotations": dts}
        coco_gt.createIndex()
        coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.maxDets = [MAX_DETS]
        evaluator.params.areaRng = [[0.0, 1e12]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"]  # (iou thresholds, recall points, classes, areas, max dets)
    out = {}
    for k, label in enumerate(labels):
        p = precision[:, :, k, 0, 0]
        out[label] = (float(p[0][p[0] > -1].mean()) if (p[0] > -1).any() else math.nan,
                      float(p[p > -1].mean()) if (p > -1).any() else math.nan)
    return out


def _coco_ann(ann_id: int, image_id: int, category_id: int, box: np.ndarray) -> dict[str, Any]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": (x2 - x1) * (y2 - y1)}


def _ranked(matches: list[_Matched], max_dets: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image index, score, is TP) of the scored predictions (dropped ones left out), best score first.

    Concatenated in image order and sorted stably, as COCOeval's accumulate does, so ties order alike.
    """
    image, scores, hits = [], [], []
    for i, m in enumerate(matches):
        keep = m.gt_index[:max_dets] != -2
        image.append(np.full(int(keep.sum()), i))
        scores.append(m.scores[:max_dets][keep])
        hits.append(m.gt_index[:max_dets][keep] >= 0)
    if not scores:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool)
    image_a, scores_a, hits_a = np.concatenate(image), np.concatenate(scores), np.concatenate(hits)
    order = np.argsort(-scores_a, kind="mergesort")
    return image_a[order], scores_a[order], hits_a[order]


def _last_of_ties(scores: np.ndarray) -> np.ndarray:
    """Indices where a run of equal scores ends: the only places a score threshold can cut."""
    return np.flatnonzero(np.append(scores[1:] != scores[:-1], True)) if len(scores) else np.zeros(0, np.int64)


def _threshold_for_precision(groups: list[list[_Matched]], target: float) -> float:
    """Lowest score threshold whose precision (all labels of ``groups`` pooled) reaches ``target``; NaN if none."""
    ranked = [_ranked(g) for g in groups]
    scores = np.concatenate([r[1] for r in ranked]) if ranked else np.zeros(0)
    hits = np.concatenate([r[2] for r in ranked]) if ranked else np.zeros(0, bool)
    order = np.argsort(-scores, kind="mergesort")
    scores, hits = scores[order], hits[order]
    cuts = _last_of_ties(scores)
    if not len(cuts):
        return math.nan
    precision = np.cumsum(hits)[cuts] / (cuts + 1)
    ok = np.flatnonzero(precision >= target - 1e-12)
    return float(scores[cuts[ok[-1]]]) if len(ok) else math.nan


def _pr_curve(matches: list[_Matched]) -> dict[str, list[Any]]:
    """Precision and recall if the threshold were each prediction's score (IoU 0.5), at most ~200 points."""
    _, scores, hits = _ranked(matches)
    npos = sum(len(m.gt_boxes) for m in matches)
    cuts = _last_of_ties(scores)
    if not npos or not len(cuts):
        return {"recall": [], "precision": [], "scores": []}
    if len(cuts) > PR_POINTS:
        cuts = cuts[np.unique(np.linspace(0, len(cuts) - 1, PR_POINTS).round().astype(np.int64))]
    tps = np.cumsum(hits)[cuts]
    return {"recall": [round(float(v), 4) for v in tps / npos],
            "precision": [round(float(v), 4) for v in tps / (cuts + 1)],
            "scores": [round(float(v), 4) for v in scores[cuts]]}


def interpolated_ap(hits: np.ndarray, npos: np.ndarray | float, weights: np.ndarray | None = None) -> np.ndarray:
    """COCO's 101-point interpolated AP of predictions ranked best first (``hits`` = is TP).

    ``weights`` (B, P) count each prediction B ways at once (bootstrap resamples); the result has shape (B,).
    Matches COCOeval exactly for the same ranking, so bootstrap intervals surround the reported AP50.
    """
    w = np.ones((1, len(hits))) if weights is None else np.asarray(weights, np.float64)
    npos = np.broadcast_to(np.asarray(npos, np.float64), (len(w),))
    tp = np.cumsum(w * hits, axis=1)
    fp = np.cumsum(w * ~hits, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / npos[:, None]
    precision = tp / (tp + fp + np.spacing(1))
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    ap = np.full(len(w), math.nan)
    for b in range(len(w)):
        if npos[b] <= 0:
            continue
        if not len(hits):
            ap[b] = 0.0
            continue
        idx = np.searchsorted(recall[b], REC_THRS, side="left")
        ap[b] = np.where(idx < len(hits), envelope[b, np.minimum(idx, len(hits) - 1)], 0.0).mean()
    return ap


def _bootstrap(tp: np.ndarray, fp: np.ndarray, gt: np.ndarray, ap_groups: list[list[_Matched]], resamples: int,
               seed: int) -> dict[str, Any]:
    """Percentile intervals over images resampled with replacement.

    AP50 per resample is :func:`interpolated_ap` (COCO 101-point, top-100 predictions per image and label),
    averaged over labels with ground truth in the resample.
    """
    n = len(tp)
    out: dict[str, Any] = {"recall": [None, None], "precision": [None, None], "ap50": [None, None],
                           "level": CI_LEVEL, "resamples": int(resamples)}
    if resamples <= 0 or n == 0:
        return out
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n))
    weights = np.bincount((picks + n * np.arange(resamples)[:, None]).ravel(),
                          minlength=resamples * n).reshape(resamples, n).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = weights @ tp / (weights @ gt)
        precision = weights @ tp / (weights @ (tp + fp))
    aps = []
    for matches in ap_groups:
        image, _, hits = _ranked(matches, MAX_DETS)
        npos = weights @ np.array([len(m.gt_boxes) for m in matches], np.float64)
        step = max(1, _BOOTSTRAP_CELLS // max(len(hits), 1))
        aps.append(np.concatenate([interpolated_ap(hits, npos[s:s + step], weights[s:s + step][:, image])
                                   for s in range(0, resamples, step)]))
    if aps:  # mean over the labels with ground truth in each resample
        stacked = np.stack(aps)
        counted = np.isfinite(stacked).sum(axis=0)
        ap50 = np.where(counted > 0, np.nansum(stacked, axis=0) / np.maximum(counted, 1), math.nan)
    else:
        ap50 = np.full(resamples, math.nan)
    tail = (1 - CI_LEVEL) / 2 * 100
    for key, values in (("recall", recall), ("precision", precision), ("ap50", ap50)):
        finite = values[np.isfinite(values)]
        if len(finite):
            out[key] = [float(v) for v in np.percentile(finite, [tail, 100 - tail])]
    return out


def _presence(samples: Sequence[Sample], predictions: Mapping[str, Detections], label: str,
              threshold: float) -> dict[str, Any]:
    """Frame-level "``label`` present": does any prediction ≥ threshold fire on frames that have one?

    Positives hold a non-ignored ``label`` box, negatives no ``label`` box at all; frames with only ignored
    ones (a crowd, a static person) are neither. Where in the frame the prediction lies does not matter:
    this is the question an alarm answers.
    """
    class_id = COCO_LABELS.index(label) if label in COCO_LABELS else -1
    positives = negatives = true_pos = true_neg = 0
    for sample in samples:
        dets = predictions[sample.id]
        fired = bool(np.any((dets.class_ids == class_id) & (dets.scores >= threshold)))
        is_label = np.array([name == label for name in sample.truth.labels], bool)
        if np.any(is_label & ~np.asarray(sample.truth.ignore, bool)):
            positives += 1
            true_pos += fired
        elif not is_label.any():
            negatives += 1
            true_neg += not fired
    return {"label": label, "sensitivity": true_pos / positives if positives else math.nan,
            "specificity": true_neg / negatives if negatives else math.nan,
            "positives": positives, "negatives": negatives}


def _clean(value: Any) -> Any:
    """Plain JSON types: NumPy scalars to Python, NaN and inf to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


# ------------------------------------------------------------------------------------------------ tracking


def _frame_gt(sample: Sample, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """(ids, boxes, labels, ignore) of the evaluated labels in one MOT frame."""
    truth = sample.truth
    if truth.ids is None:
        raise ValueError(f"{sample.id}: ground truth has no track ids; tracking needs a MOTChallenge dataset")
    keep = np.array([name in labels for name in truth.labels], bool)
    return (np.asarray(truth.ids)[keep], np.asarray(truth.boxes, np.float64).reshape(-1, 4)[keep],
            [name for name, k in zip(truth.labels, keep, strict=True) if k], np.asarray(truth.ignore, bool)[keep])


def _label_iou(boxes_a: np.ndarray, labels_a: Sequence[str], boxes_b: np.ndarray,
               labels_b: Sequence[str]) -> np.ndarray:
    """IoU, zero between different labels."""
    ious = iou_matrix(boxes_a.reshape(-1, 4), boxes_b.reshape(-1, 4)).astype(np.float64)
    if ious.size:
        ious[np.array(labels_a)[:, None] != np.array(labels_b)[None, :]] = 0.0
    return ious


def tracking_metrics(sequences: Mapping[str, list[Sample]], tracked: Mapping[str, list[Track]], *,
                     labels: Sequence[str], iou: float = 0.5) -> dict[str, Any]:
    """MOTA, MOTP, IDF1, ID switches, mostly tracked/lost over the frames present in ``tracked``.

    Tracker boxes assigned (Hungarian, IoU ≥ ``iou``, same label) to an ignore box are removed first, as
    MOTChallenge does with distractors. ``motp`` is MOTChallenge's: the mean IoU of matched pairs (1 minus
    motmetrics' mean distance), so higher is better.
    """
    import motmetrics as mm

    accumulators, names = [], []
    for name, frames in sequences.items():
        acc = mm.MOTAccumulator(auto_id=False)
        used = False
        for index, sample in enumerate(frames):
            if sample.id not in tracked:
                continue
            used = True
            ids, boxes, gt_labels, ignore = _frame_gt(sample, labels)
            hyps = [t for t in tracked[sample.id] if t[1] in labels]
            hyp_boxes = np.array([t[2] for t in hyps], np.float64).reshape(-1, 4)
            hyp_labels = [t[1] for t in hyps]
            ious = _label_iou(boxes, gt_labels, hyp_boxes, hyp_labels)
            if ignore.any() and len(hyps):
                cost = np.where(ious >= iou, 1.0 - ious, 1e6)
                rows, cols = linear_sum_assignment(cost)
                drop = {c for r, c in zip(rows, cols, strict=True) if cost[r, c] < 1e6 and ignore[r]}
                keep = [j for j in range(len(hyps)) if j not in drop]
                hyps, ious = [hyps[j] for j in keep], ious[:, keep]
            dists = np.where(ious >= iou, 1.0 - ious, np.nan)[~ignore]
            frame_id = sample.frame if sample.frame is not None else index
            acc.update(ids[~ignore].tolist(), [t[0] for t in hyps], dists, frameid=frame_id)
        if used:
            accumulators.append(acc)
            names.append(name)
    keys = ("mota", "motp", "idf1", "id_switches", "mostly_tracked", "mostly_lost", "num_frames", "gt_tracks")
    if not accumulators:
        return {**dict.fromkeys(keys), "num_frames": 0, "gt_tracks": 0}
    metrics = ["mota", "motp", "idf1", "num_switches", "mostly_tracked", "mostly_lost", "num_frames",
               "num_unique_objects"]
    summary = mm.metrics.create().compute_many(accumulators, metrics=metrics, names=names, generate_overall=True)
    row = summary.loc["OVERALL"]
    return _clean({"mota": float(row["mota"]), "motp": 1.0 - float(row["motp"]), "idf1": float(row["idf1"]),
                   "id_switches": int(row["num_switches"]), "mostly_tracked": int(row["mostly_tracked"]),
                   "mostly_lost": int(row["mostly_lost"]), "num_frames": int(row["num_frames"]),
                   "gt_tracks": int(row["num_unique_objects"])})


def event_metrics(sequences: Mapping[str, list[Sample]], tracked: Mapping[str, list[Track]],
                  events: Mapping[str, list[tuple[int, str]]], *, labels: Sequence[str], fps: Mapping[str, float],
                  iou: float = 0.5) -> dict[str, Any]:
    """Did each labelled object raise an event, and how many events had no object behind them?

    Over the frames present in ``tracked``, an event's track covers a GT track when, in at least half of
    the frames where both appear (and at least one), its box overlaps the GT box with IoU ≥ ``iou`` and the
    same label. GT tracks count when they have a non-ignored box of an evaluated label in those frames; an
    event covering only ignored tracks (a static person, a parked car) is neither a hit nor a false alarm.
    """
    gt_tracks = alerted = n_events = false_alarms = 0
    hours = 0.0
    for name, frames in sequences.items():
        if name not in fps or not fps[name] > 0:
            raise ValueError(f"no positive frame rate for sequence {name!r}; pass Dataset.fps")
        hours += len(frames) / fps[name] / 3600.0
        wanted = list(dict.fromkeys((tid, label) for tid, label in events.get(name, []) if label in labels))
        event_ids = {tid for tid, _ in wanted}
        gt_boxes: dict[int, dict[int, tuple[np.ndarray, str, bool]]] = {}  # gt id -> frame -> (box, label, ignore)
        ev_boxes: dict[int, dict[int, np.ndarray]] = {}  # event track id -> frame -> box
        for index, sample in enumerate(frames):
            if sample.id not in tracked:
                continue
            ids, boxes, gt_labels, ignore = _frame_gt(sample, labels)
            for gid, box, label, ig in zip(ids.tolist(), boxes, gt_labels, ignore.tolist(), strict=True):
                gt_boxes.setdefault(gid, {})[index] = (box, label, ig)
            for tid, _, box in tracked[sample.id]:
                if tid in event_ids:
                    ev_boxes.setdefault(tid, {})[index] = np.asarray(box, np.float64)
        countable = {gid for gid, seen in gt_boxes.items() if any(not ig for _, _, ig in seen.values())}
        covered: set[int] = set()
        for tid, label in wanted:
            n_events += 1
            matched = [gid for gid, seen in gt_boxes.items() if _covers(ev_boxes.get(tid, {}), label, seen, iou)]
            covered.update(matched)
            if not matched:
                false_alarms += 1
        gt_tracks += len(countable)
        alerted += len(countable & covered)
    return _clean({"gt_tracks": gt_tracks, "alerted": alerted,
                   "event_recall": alerted / gt_tracks if gt_tracks else math.nan,
                   "events": n_events, "false_alarms": false_alarms,
                   "false_alarms_per_hour": false_alarms / hours if hours > 0 else math.nan, "hours": hours})


def _covers(event: dict[int, np.ndarray], label: str, gt: dict[int, tuple[np.ndarray, str, bool]],
            iou: float) -> bool:
    both = [f for f in event if f in gt]
    overlapping = sum(
        gt[f][1] == label and float(iou_matrix(event[f][None], gt[f][0][None])[0, 0]) >= iou for f in both
    )
    return overlapping >= 1 and overlapping >= len(both) / 2
