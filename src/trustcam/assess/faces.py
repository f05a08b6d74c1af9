"""How well does face recognition work here? Verification, identification, conditions and groups, with intervals.

Measured through the pipeline the cameras run (YuNet detection, dlib alignment and ResNet embedding of
:mod:`trustcam.vision.faces`) on an identity-labelled set (``faces-id`` or ``<person>/<images>``):

* **Operating threshold.** The one matching uses, from ``trustcam faces calibrate`` (``threshold_for``) when the
  data directory holds a calibration made on another dataset; otherwise one calibrated here on a held-out half of
  the people (split per group, seeded). Calibration and measurement never share an image (nor, with the split, a
  person): a threshold tuned on the measured images would flatter its own FMR.
* **Verification** over every pair of measured images: TAR at fixed FMR (the ROC view; ``null`` where the impostor
  pairs are too few for 30 false matches at that rate) and FNMR/FMR at the operating threshold (what a camera
  does).
* **Identification:** gallery = the first image(s) of each person (the enrolment photos), probes = the rest;
  rank-1 = share of probes whose nearest gallery face is the right person.
* **Failures to acquire count as errors** (ISO/IEC 19795-1 generalised rates): an image where no face is found
  matches nobody, so it is a false non-match in its genuine pairs and a wrong rank-1 answer; ``failure_to_acquire``
  gives the share of probes.
* **Conditions** degrade the probes only (the gallery stays clean, as enrolment photos are): every condition of
  the corruption engine plus ``small_faces`` (the image shrunk until the face is a few pixels across).
* **Groups:** with group labels (faces-id: gender), each group's FNMR and FMR at the threshold (impostor pairs
  within the group, as NIST FRVT's demographic reports do), rank-1 and the largest gap between groups.
* **Intervals:** 95% percentile bootstrap resampling *people* with replacement (pairs of one person are not
  independent: resampling pairs would give intervals far too narrow). The same resamples serve every figure, so
  conditions are compared on the same people.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from trustcam.assess import conditions as cond
from trustcam.assess.metrics import CI_LEVEL, _clean
from trustcam.storage.faces import FaceStoreError, calibration_path, load_calibration, threshold_for
from trustcam.vision import catalog
from trustcam.vision.faces import (
    EMBEDDING_SIZE,
    MIN_ERRORS,
    RESNET,
    SHAPE_PREDICTOR,
    YUNET,
    FaceError,
    FaceRecognizer,
    LabelledImage,
    calibrate,
    central_face,
    embed_set,
    identity_set,
    load_image,
)

FMR_POINTS: tuple[float, ...] = (1e-2, 1e-3)
SMALL_FACES = "small_faces"
FACE_CONDITIONS: tuple[str, ...] = (*cond.CONDITIONS, SMALL_FACES)
SMALL_FACE_PX: tuple[int, ...] = (48, 36, 28, 20, 14)  # face size (shorter side of the box) per severity 1..5

Progress = Callable[[str, int], Callable[[], None]]


def _no_progress(_description: str, _total: int) -> Callable[[], None]:
    return lambda: None


@dataclass(frozen=True)
class FaceAssessOptions:
    conditions: tuple[str, ...] = ()
    severities: tuple[int, ...] = (3,)
    bootstrap: int = 1000
    seed: int = 0
    identities: int | None = None  # only the first N people (a quick run)
    gallery: int = 1  # enrolment images per person; the rest are probes
    target_fmr: float = 1e-3  # the camera's faces.target_fmr: picks the operating threshold


# --- conditions ------------------------------------------------------------------------------------------------


def parse_face_conditions(spec: str | None) -> tuple[str, ...]:
    """Like :func:`conditions.parse_conditions`, plus ``small_faces`` (in ``all`` too)."""
    if spec is None or spec.strip().lower() in ("", "none"):
        return ()
    if spec.strip().lower() == "all":
        return FACE_CONDITIONS
    names = [part.strip() for part in spec.split(",") if part.strip()]
    unknown = [name for name in names if name not in FACE_CONDITIONS]
    if unknown:
        raise cond.ConditionError(f"unknown condition(s) {', '.join(map(repr, unknown))}; valid: all, none, "
                                  f"{', '.join(FACE_CONDITIONS)}")
    return tuple(dict.fromkeys(names))


def describe_face_condition(name: str) -> str:
    if name == SMALL_FACES:
        return (f"{SMALL_FACES}: a distant face: the image area-averaged down until the face is N px across, centred "
                f"on a plain frame of the original size; face size {SMALL_FACE_PX[0]} px (severity 1) .. "
                f"{SMALL_FACE_PX[-1]} px (severity 5)")
    return cond.describe(name)


def small_face(image: np.ndarray, face_px: float, face_size: float | None) -> np.ndarray:
    """``image`` shrunk so its face is ``face_px`` across, centred on a frame of the original size filled with the
    image's mean colour (no blurred copy of the face around it for the detector to find).

    ``face_size`` is the face's size on the clean image; when no face was found there, 45% of the shorter side (an
    LFW-like centred crop) stands in.
    """
    h, w = image.shape[:2]
    size = face_size if face_size and face_size > 0 else 0.45 * min(h, w)
    scale = min(1.0, face_px / size)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    frame = np.empty_like(image)
    frame[:] = image.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    y, x = (h - nh) // 2, (w - nw) // 2
    frame[y:y + nh, x:x + nw] = small
    return frame


def degrade(image: np.ndarray, name: str, severity: int, seed: int, face_size: float | None) -> np.ndarray:
    if name == SMALL_FACES:
        if severity not in cond.SEVERITIES:
            raise cond.ConditionError(f"severity must be one of {cond.SEVERITIES}, got {severity!r}")
        return small_face(image, SMALL_FACE_PX[severity - 1], face_size)
    return cond.corrupt(image, name, severity, seed)


def _seed_for(path: Path, seed: int) -> int:
    return (zlib.crc32(f"{path.parent.name}/{path.name}".encode()) + seed * 7919) % (2**31)


# --- the operating threshold ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatingThreshold:
    value: float
    target_fmr: float
    source: str  # "calibration" (trustcam faces calibrate, another dataset) or "held-out split"
    note: str
    calibration: dict[str, Any]


def _same_dataset(recorded: str | None, root: Path) -> bool:
    """Whether a calibration was made on the assessed dataset (or a folder inside it, or around it)."""
    if not recorded:
        return False
    a, b = Path(recorded).resolve(), root.resolve()
    return a == b or a in b.parents or b in a.parents


def calibrated_threshold(data_dir: Path, target_fmr: float, root: Path) -> tuple[OperatingThreshold | None, str]:
    """The threshold matching uses, when it was calibrated on another dataset; else ``None`` and why not."""
    path = calibration_path(data_dir)
    if not path.is_file():
        return None, (f"no calibration in {path} (only the built-in threshold, calibrated on faces-id: measured on "
                      "faces-id it would flatter itself)")
    try:
        value = threshold_for(data_dir, target_fmr)
    except FaceStoreError as exc:
        return None, str(exc)
    record = next((r for r in load_calibration(data_dir)["thresholds"].values()
                   if math.isclose(float(r.get("target_fmr", math.nan)), target_fmr, rel_tol=1e-9)), {})
    if _same_dataset(record.get("dataset"), root):
        return None, (f"{path} was calibrated on {record['dataset']}, the assessed dataset: measuring on the images "
                      "that set the threshold would flatter its FMR")
    where = record.get("dataset") or "an unrecorded dataset"
    return OperatingThreshold(value, target_fmr, "calibration",
                              f"calibrated by `trustcam faces calibrate` on {where} ({path}); all people measured",
                              record), ""


def split_people(images: Sequence[LabelledImage], seed: int) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """(calibration, measured): half the people of each group each side, drawn with ``seed``; no person in both."""
    by_group: dict[str | None, list[str]] = {}
    for item in images:
        people = by_group.setdefault(item.group, [])
        if item.identity not in people:
            people.append(item.identity)
    rng = np.random.default_rng(seed)
    calibration: set[str] = set()
    for group in sorted(by_group, key=str):
        people = sorted(by_group[group])
        calibration.update(people[i] for i in rng.permutation(len(people))[: len(people) // 2])
    return ([i for i in images if i.identity in calibration], [i for i in images if i.identity not in calibration])


def held_out_threshold(recognizer: FaceRecognizer, images: Sequence[LabelledImage], target_fmr: float, why: str,
                       progress: Progress) -> OperatingThreshold:
    advance = progress("faces: calibration half", len(images))
    embedded = embed_set(recognizer, list(images), lambda _n, _t: advance())
    result = calibrate(embedded.embeddings, embedded.identities, target_fmr)
    record = {**result.as_dict(), "missed": len(embedded.missed)}
    note = (f"calibrated here on a held-out half of the people ({result.identities} people, {result.images} images), "
            f"measured on the other half; {why}")
    if not result.supported:
        note += (f"; only {result.impostor_pairs} impostor pairs, {result.needed_impostor_pairs} needed to support FMR "
                 f"{target_fmr:g}: the threshold is rough")
    return OperatingThreshold(result.threshold, target_fmr, "held-out split", note, record)


# --- embedding --------------------------------------------------------------------------------------------------


@dataclass
class _Embedded:
    vectors: np.ndarray  # (n, 128) float64; NaN rows where no face was found
    sizes: np.ndarray  # (n,) face size in px on the image; NaN where none
    seconds: float


def _embed(recognizer: FaceRecognizer, images: Iterable[np.ndarray], count: int,
           advance: Callable[[], None]) -> _Embedded:
    """The central face of each image, embedded (images are read one at a time: a large set never sits in memory)."""
    vectors = np.full((count, EMBEDDING_SIZE), np.nan)
    sizes = np.full(count, np.nan)
    start = time.perf_counter()
    for i, image in enumerate(images):
        face = central_face(recognizer.faces_in(image), image)
        if face is not None:
            vectors[i] = recognizer.embed(image, face)
            sizes[i] = face.size
        advance()
    return _Embedded(vectors, sizes, time.perf_counter() - start)


def _distances(vectors: np.ndarray) -> np.ndarray:
    """Euclidean distances between all rows; ``inf`` wherever a face is missing (it matches nothing)."""
    found = ~np.isnan(vectors).any(axis=1)
    v = np.where(found[:, None], vectors, 0.0)
    squared = (v * v).sum(1)
    d = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * v @ v.T, 0.0))
    d[~found, :] = np.inf
    d[:, ~found] = np.inf
    return d


# --- scores and their bootstrap -------------------------------------------------------------------------------


@dataclass
class _Scores:
    """Every pair and probe of one measured set, for weights over people (row 0 of ``W``: each person once)."""

    people: int
    gen_d: np.ndarray
    gen_id: np.ndarray
    imp_d: np.ndarray  # ascending
    imp_a: np.ndarray
    imp_b: np.ndarray
    probe_id: np.ndarray
    probe_right: np.ndarray  # bool: nearest gallery face is the same person
    probe_found: np.ndarray  # bool per probe: a face was found
    images_per_person: np.ndarray


def _scores(vectors: np.ndarray, ident: np.ndarray, gallery: np.ndarray, people: int) -> _Scores:
    d = _distances(vectors)
    rows, cols = np.triu_indices(len(ident), 1)
    a, b, pair_d = ident[rows], ident[cols], d[rows, cols]
    same = a == b
    order = np.argsort(pair_d[~same], kind="stable")
    probes, gallery_idx = np.flatnonzero(~gallery), np.flatnonzero(gallery)
    right = np.zeros(len(probes), bool)
    if len(probes) and len(gallery_idx):
        to_gallery = d[np.ix_(probes, gallery_idx)]
        nearest = np.argmin(to_gallery, axis=1)
        right = np.isfinite(to_gallery.min(axis=1)) & (ident[gallery_idx][nearest] == ident[probes])
    return _Scores(people, pair_d[same], a[same], pair_d[~same][order], a[~same][order], b[~same][order],
                   ident[probes], right, ~np.isnan(vectors[probes]).any(axis=1),
                   np.bincount(ident, minlength=people).astype(float))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _at_threshold(s: _Scores, threshold: float, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FNMR, FMR) per weight row: genuine pairs weigh their person's count, impostor pairs the product."""
    n = s.people
    gen_fail = np.bincount(s.gen_id, weights=(s.gen_d > threshold).astype(float), minlength=n)
    gen_all = np.bincount(s.gen_id, minlength=n).astype(float)
    hits, pairs = np.zeros((n, n)), np.zeros((n, n))
    np.add.at(pairs, (s.imp_a, s.imp_b), 1.0)
    np.add.at(hits, (s.imp_a, s.imp_b), (s.imp_d <= threshold).astype(float))
    return (_ratio(w @ gen_fail, w @ gen_all),
            _ratio(np.einsum("ki,ij,kj->k", w, hits, w), np.einsum("ki,ij,kj->k", w, pairs, w)))


def _rank1(s: _Scores, w: np.ndarray) -> np.ndarray:
    n = s.people
    right = np.bincount(s.probe_id, weights=s.probe_right.astype(float), minlength=n)
    return _ratio(w @ right, w @ np.bincount(s.probe_id, minlength=n).astype(float))


def _tar_at(s: _Scores, fmr: float, m: np.ndarray) -> tuple[float, float, float]:
    """(TAR, threshold, FMR reached) at the largest threshold whose weighted FMR is at most ``fmr``.

    As :func:`trustcam.vision.faces.calibrate`: impostor pairs are accepted in ascending distance while their
    weight stays within ``fmr`` of the total; ties with the first refused pair are refused with it. Only a prefix
    of the sorted impostors is summed when it already holds more than the allowed weight (exact, and fast).
    """
    count = len(s.imp_d)
    weighted = m * s.images_per_person
    total = float((weighted.sum() ** 2 - (weighted * weighted).sum()) / 2)  # every pair of two people's images
    if count == 0 or total <= 0:
        return math.nan, math.nan, math.nan
    allowed = fmr * total * (1 + 1e-12)
    prefix = min(count, int(count * fmr * 8) + 1000)
    cum = np.cumsum(m[s.imp_a[:prefix]] * m[s.imp_b[:prefix]])
    if prefix < count and cum[-1] <= allowed:
        cum = np.cumsum(m[s.imp_a] * m[s.imp_b])
    accepted = int(np.searchsorted(cum, allowed, side="right"))
    bound = float(s.imp_d[accepted]) if accepted < count else math.inf
    kept = int(np.searchsorted(s.imp_d[:accepted], bound, side="left"))  # ties with the bound are refused
    reached = float(cum[kept - 1] / total) if kept else 0.0
    gen_w = m[s.gen_id]
    tar = float(gen_w[s.gen_d < bound].sum() / gen_w.sum()) if gen_w.sum() > 0 else math.nan
    lower = float(s.imp_d[kept - 1]) if kept else max(0.0, bound - 1e-3)
    threshold = (lower + bound) / 2 if math.isfinite(bound) else lower + 1e-3
    return tar, threshold, reached


def _weights(people: int, resamples: int, seed: int) -> np.ndarray:
    """Row 0: every person once (the point estimate); then ``resamples`` bootstrap draws of people."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, people, size=(resamples, people))
    draws = np.stack([np.bincount(row, minlength=people) for row in picks]) if resamples else np.empty((0, people))
    return np.vstack([np.ones(people), draws]).astype(np.float64)


def _interval(values: np.ndarray) -> list[float | None]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return [None, None]
    tail = (1 - CI_LEVEL) / 2 * 100
    return [float(v) for v in np.percentile(finite, [tail, 100 - tail])]


def _tar_points(s: _Scores, w: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for point in FMR_POINTS:
        pairs = len(s.imp_d)
        if pairs * point < MIN_ERRORS:
            out[f"{point:g}"] = {
                "tar": None, "threshold": None, "fmr": None, "supported": False, "ci": [None, None],
                "note": f"{pairs} impostor pairs give {pairs * point:.1f} false matches at FMR {point:g}; "
                        f"{math.ceil(MIN_ERRORS / point)} (30 errors) are needed: measure more people"}
            continue
        tar, threshold, reached = _tar_at(s, point, w[0])
        boot = np.array([_tar_at(s, point, row)[0] for row in w[1:]])
        out[f"{point:g}"] = {"tar": tar, "threshold": threshold, "fmr": reached, "supported": True,
                             "ci": _interval(boot)}
    return out


def _measure(s: _Scores, threshold: float, w: np.ndarray, sizes: np.ndarray) -> dict[str, Any]:
    """Every figure of one measured set (clean, or one condition at one severity)."""
    fnmr, fmr = _at_threshold(s, threshold, w)
    rank1 = _rank1(s, w)
    found_sizes = sizes[np.isfinite(sizes)]
    found = s.probe_found
    return {"failure_to_acquire": float(1 - found.mean()) if len(found) else None,
            "median_face_px": float(np.median(found_sizes)) if len(found_sizes) else None,
            "genuine_pairs": len(s.gen_d), "impostor_pairs": len(s.imp_d), "probes": len(s.probe_id),
            "rank1": rank1[0], "fnmr": fnmr[0], "fmr": fmr[0], "tar_at_fmr": _tar_points(s, w),
            "ci": {"rank1": _interval(rank1[1:]), "fnmr": _interval(fnmr[1:]), "fmr": _interval(fmr[1:]),
                   "level": CI_LEVEL, "resamples": len(w) - 1}}


def _groups(s: _Scores, threshold: float, w: np.ndarray, group_of: Sequence[str | None]) -> dict[str, Any] | None:
    """Each group's FNMR, FMR (impostor pairs within the group) and rank-1, and the largest gap between groups."""
    labels = sorted({g for g in group_of if g})
    if len(labels) < 2:
        return None
    per: dict[str, Any] = {}
    rows: dict[str, list[np.ndarray]] = {"fnmr": [], "fmr": [], "rank1": []}
    for label in labels:
        mask = np.array([g == label for g in group_of], np.float64)
        fnmr, fmr = _at_threshold(s, threshold, w * mask)
        rank1 = _rank1(s, w * mask)
        for key, values in (("fnmr", fnmr), ("fmr", fmr), ("rank1", rank1)):
            rows[key].append(values)
        per[label] = {"people": int(mask.sum()), "fnmr": fnmr[0], "fmr": fmr[0], "rank1": rank1[0],
                      "ci": {"fnmr": _interval(fnmr[1:]), "fmr": _interval(fmr[1:]), "rank1": _interval(rank1[1:])}}
    gaps: dict[str, Any] = {}
    for key, values in rows.items():
        stacked = np.stack(values)  # (groups, 1 + resamples)
        point = stacked[:, 0]
        if not np.isfinite(point).any():
            gaps[key] = {"gap": None, "ci": [None, None], "highest": None, "lowest": None}
            continue
        high, low = int(np.nanargmax(point)), int(np.nanargmin(point))
        gap = stacked[high] - stacked[low]  # signed in the resamples: an interval holding 0 says "could be chance"
        gaps[key] = {"gap": gap[0], "ci": _interval(gap[1:]), "highest": labels[high], "lowest": labels[low]}
    low, high = np.nanmin(np.stack(rows["fmr"])[:, 0]), np.nanmax(np.stack(rows["fmr"])[:, 0])
    gaps["fmr"]["ratio"] = float(high / low) if low > 0 else None
    return {"groups": per, "gaps": gaps}


def _gallery(ident: np.ndarray, per_person: int) -> np.ndarray:
    """The first ``per_person`` images of each person (in dataset order) are the enrolment photos."""
    seen: dict[int, int] = {}
    mask = np.zeros(len(ident), bool)
    for i, person in enumerate(ident.tolist()):
        seen[person] = seen.get(person, 0) + 1
        mask[i] = seen[person] <= per_person
    return mask


def _mean(blocks: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [b[key] for b in blocks]
    return float(np.mean(values)) if values and all(v is not None and math.isfinite(v) for v in values) else None


def assess_faces(root: Path, recognizer: FaceRecognizer, options: FaceAssessOptions, data_dir: Path, *,
                 variant: str = "lfw_deepfunneled_250", progress: Progress | None = None) -> dict[str, Any]:
    """The ``faces`` key of metrics.json (see docs/assess.md): every figure on ``root``, clean and per condition."""
    progress = progress or _no_progress
    images = identity_set(root, variant, options.identities)
    threshold, why = calibrated_threshold(data_dir, options.target_fmr, root)
    measured = images
    if threshold is None:
        calibration, measured = split_people(images, options.seed)
        if len({i.identity for i in calibration}) < 2:
            raise FaceError(f"{root}: {len({i.identity for i in images})} people; the held-out calibration needs at "
                            "least 4 (or calibrate on another set with `trustcam faces calibrate`)")
        threshold = held_out_threshold(recognizer, calibration, options.target_fmr, why, progress)
    people = sorted({i.identity for i in measured})
    index = {name: k for k, name in enumerate(people)}
    ident = np.array([index[i.identity] for i in measured], np.int64)
    gallery = _gallery(ident, options.gallery)
    group_of = [next(i.group for i in measured if i.identity == name) for name in people]
    w = _weights(len(people), options.bootstrap, options.seed)

    advance = progress("faces: clean", len(measured))
    clean = _embed(recognizer, (load_image(i.path) for i in measured), len(measured), advance)
    scores = _scores(clean.vectors, ident, gallery, len(people))
    result: dict[str, Any] = {
        "dataset": {"name": root.name, "path": str(root), "variant": variant if (root / "identities.csv").is_file()
                    else None, "people": len({i.identity for i in images}), "images": len(images)},
        "model": {"detector": YUNET, "detector_sha256": catalog.ASSETS[YUNET].sha256,
                  "landmarks_sha256": SHAPE_PREDICTOR.sha256, "embedding": RESNET.filename,
                  "embedding_sha256": RESNET.sha256},
        "threshold": {"value": threshold.value, "target_fmr": threshold.target_fmr, "source": threshold.source,
                      "note": threshold.note, "calibration": threshold.calibration},
        "measured": {"people": len(people), "images": len(measured), "gallery_per_person": options.gallery,
                     "gallery_images": int(gallery.sum()), "probes": int((~gallery).sum()),
                     "gallery_without_face": int(np.isnan(clean.vectors[gallery]).any(axis=1).sum())},
        "clean": _measure(scores, threshold.value, w, np.where(gallery, np.nan, clean.sizes)),
        "groups": _groups(scores, threshold.value, w, group_of),
        "timing": {"faces_per_s": round(len(measured) / max(clean.seconds, 1e-9), 2)},
    }
    if options.conditions:
        result["conditions"] = _conditions(recognizer, measured, ident, gallery, clean, threshold.value, w, options,
                                           progress)
    return _clean(result)


def _conditions(recognizer: FaceRecognizer, measured: Sequence[LabelledImage], ident: np.ndarray,
                gallery: np.ndarray, clean: _Embedded, threshold: float, w: np.ndarray, options: FaceAssessOptions,
                progress: Progress) -> dict[str, Any]:
    """Each condition at each severity on the probes; the gallery stays clean."""
    probes = np.flatnonzero(~gallery)
    people = int(ident.max()) + 1 if len(ident) else 0
    out: dict[str, Any] = {}
    for name in options.conditions:
        severities: dict[str, Any] = {}
        for severity in options.severities:
            advance = progress(f"faces: {name} {severity}", len(probes))
            degraded = (degrade(load_image(measured[i].path), name, severity, _seed_for(measured[i].path, options.seed),
                                float(clean.sizes[i]) if np.isfinite(clean.sizes[i]) else None) for i in probes)
            embedded = _embed(recognizer, degraded, len(probes), advance)
            vectors, sizes = clean.vectors.copy(), np.full(len(ident), np.nan)
            vectors[probes], sizes[probes] = embedded.vectors, embedded.sizes
            severities[str(severity)] = _measure(_scores(vectors, ident, gallery, people), threshold, w, sizes)
        blocks = list(severities.values())
        tar = [{"tar": b["tar_at_fmr"][f"{FMR_POINTS[0]:g}"]["tar"]} for b in blocks]
        out[name] = {"description": describe_face_condition(name), "severities": severities,
                     "rank1": _mean(blocks, "rank1"), "fnmr": _mean(blocks, "fnmr"), "fmr": _mean(blocks, "fmr"),
                     "failure_to_acquire": _mean(blocks, "failure_to_acquire"),
                     f"tar_at_fmr_{FMR_POINTS[0]:g}": _mean(tar, "tar")}
    return out
