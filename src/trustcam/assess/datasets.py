"""Labelled images and video (YOLO txt, COCO JSON, MOTChallenge) read into one form the metrics understand.

Assessment is only as honest as its ground truth, so a malformed label is an error that names the file, the
line (or annotation id), the problem and the fix, never a silently dropped box. Boxes that a detector may
find but must not be scored on (COCO crowds, MOT distractors, occluded or flagged pedestrians, MOT vehicles
that are not exhaustively labelled) are kept with ``ignore=True`` so a prediction on them is neither a hit
nor a false alarm.
"""

from __future__ import annotations

import configparser
import json
import math
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import yaml

from trustcam.errors import UserError
from trustcam.vision.labels import COCO_LABELS

Format = Literal["coco", "yolo", "mot"]
FORMATS: tuple[str, ...] = ("coco", "yolo", "mot")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# Pascal VOC / older YOLO spellings of COCO classes: without them a VOC-style dataset's "motorbike" would
# never match the detector's "motorcycle" and every one would count as a miss.
ALIASES: dict[str, str] = {
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "sofa": "couch",
    "pottedplant": "potted plant",
    "diningtable": "dining table",
    "tvmonitor": "tv",
}

# Normalised YOLO coordinates may overshoot 0..1 by rounding in the exporting tool; more is a broken label.
YOLO_TOLERANCE = 0.01
MOT_DEFAULT_FPS = 25.0

# MOT16/17/20 class ids (MOT16 paper, table 2) -> (label, always ignored). Only class 1 (pedestrian) is
# scored; the person-like classes are distractors (a detector is right to see them, so not a false alarm),
# and vehicles are labelled but not exhaustively, so a car prediction is never counted against the model.
MOT_CLASSES: dict[int, tuple[str, bool]] = {
    1: ("person", False),  # pedestrian
    2: ("person", True),  # person on vehicle
    3: ("car", True),
    4: ("bicycle", True),
    5: ("motorcycle", True),  # motorbike
    6: ("non-motorized vehicle", True),
    7: ("person", True),  # static person
    8: ("person", True),  # distractor
    9: ("occluder", True),
    10: ("occluder", True),  # occluder on the ground
    11: ("occluder", True),  # occluder full
    12: ("person", True),  # reflection
}

EXPECTED_LAYOUTS = (
    "YOLO: a folder with images/ and labels/ (matching relative paths, .txt `class cx cy w h` normalised); "
    "COCO: a .json file, or a folder with annotations/*.json or a single .json; "
    "MOTChallenge: a sequence folder with img1/ and gt/gt.txt, or a folder of such sequences"
)


class DatasetError(UserError):
    """A dataset cannot be read as given; the message names the file (and line), the problem and the fix."""


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """The labelled objects of one image. ``ids`` are MOT track ids (None for still-image formats)."""

    boxes: np.ndarray  # (N, 4) float32 xyxy in image pixels
    labels: tuple[str, ...]  # COCO label names (trustcam.vision.labels.COCO_LABELS), or the dataset's own
    ignore: np.ndarray  # (N,) bool: a prediction matching it is neither TP nor FP, and it is never a miss
    ids: np.ndarray | None = None  # (N,) int64 MOT track ids

    @classmethod
    def empty(cls) -> GroundTruth:
        return cls(np.zeros((0, 4), np.float32), (), np.zeros(0, bool))

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Sample:
    """One labelled image, or one frame of a MOT sequence."""

    id: str  # unique and stable: image path relative to the dataset root, or "<sequence>/<frame:06d>"
    path: Path
    truth: GroundTruth
    sequence: str | None = None
    frame: int | None = None  # 1-based MOT frame number

    def load(self) -> np.ndarray:
        """The image as BGR uint8, read the way the pipeline reads stills (EXIF orientation applied)."""
        image = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"{self.path}: cannot read the image (missing, empty or not an image); "
                               "replace the file or remove it from the dataset")
        return image


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset. ``warnings`` lists what was skipped (label files without an image, ...)."""

    name: str
    format: Format
    root: Path
    samples: tuple[Sample, ...]
    fps: dict[str, float] = field(default_factory=dict)  # per MOT sequence; empty otherwise
    warnings: tuple[str, ...] = ()

    @property
    def sequences(self) -> dict[str, list[Sample]]:
        """Frames of each MOT sequence in frame order (empty for still-image datasets)."""
        out: dict[str, list[Sample]] = {}
        for sample in self.samples:
            if sample.sequence is not None:
                out.setdefault(sample.sequence, []).append(sample)
        for frames in out.values():
            frames.sort(key=lambda s: s.frame or 0)
        return out

    def __len__(self) -> int:
        return len(self.samples)


def load_dataset(path: Path | str, fmt: str | None = None, *, min_visibility: float = 0.25) -> Dataset:
    """Read a YOLO, COCO or MOTChallenge dataset; ``fmt`` None detects the format from the layout.

    ``min_visibility`` (MOT only): pedestrians less visible than this are ignored, as a detector cannot be
    blamed for missing someone almost fully hidden.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder; give a dataset folder or COCO .json ({EXPECTED_LAYOUTS})")
    if fmt is None:
        fmt = detect_format(path)
    if fmt == "yolo":
        return _load_yolo(path)
    if fmt == "coco":
        return _load_coco(path)
    if fmt == "mot":
        return _load_mot(path, min_visibility)
    raise DatasetError(f"{path}: unknown dataset format {fmt!r}; use one of {', '.join(FORMATS)} or leave it out")


def detect_format(path: Path) -> Format:
    """Guess the format from the layout (the rules are in ``EXPECTED_LAYOUTS``)."""
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        raise DatasetError(f"{path}: a file that is not .json is not a dataset; expected one of: {EXPECTED_LAYOUTS}")
    if _mot_sequence_dirs(path):
        return "mot"
    if (path / "labels").is_dir():
        return "yolo"
    if _coco_json_candidates(path):
        return "coco"
    raise DatasetError(f"{path}: cannot tell the dataset format from its layout; expected one of: {EXPECTED_LAYOUTS}")


def to_coco_label(name: str) -> str:
    """A dataset class name as the detector's COCO label (aliases applied); unknown names are kept as is."""
    if name in COCO_LABELS:
        return name
    key = name.strip().lower()
    if key in COCO_LABELS:
        return key
    return ALIASES.get(key.replace(" ", "").replace("_", ""), name)


# ---------------------------------------------------------------------------------------------------- YOLO


def _load_yolo(root: Path) -> Dataset:
    images_dir, labels_dir = root / "images", root / "labels"
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise DatasetError(f"{root}: a YOLO dataset needs both images/ and labels/, {folder.name}/ is missing; "
                               f"expected one of: {EXPECTED_LAYOUTS}")
    names, names_file = _yolo_names(root)
    image_paths = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not image_paths:
        raise DatasetError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)}); put the images there")
    stems = {p.relative_to(images_dir).with_suffix("") for p in image_paths}
    if len(stems) != len(image_paths):
        raise DatasetError(f"{images_dir}: two images share a name with different extensions, so a label file "
                           "cannot say which it belongs to; rename one of them")
    sizes = _image_sizes(image_paths)
    samples = []
    for image_path, (width, height) in zip(image_paths, sizes, strict=True):
        label_path = labels_dir / image_path.relative_to(images_dir).with_suffix(".txt")
        truth = (_read_yolo_labels(label_path, width, height, names, names_file) if label_path.is_file()
                 else GroundTruth.empty())  # no label file: a true negative, nothing to find
        samples.append(Sample(image_path.relative_to(root).as_posix(), image_path, truth))
    label_files = [p for p in sorted(labels_dir.rglob("*.txt")) if p.name != "classes.txt"]
    orphans = [p for p in label_files if p.relative_to(labels_dir).with_suffix("") not in stems]
    if label_files and len(orphans) == len(label_files):
        # every image would pass as a true negative: a layout mistake, not a dataset without objects
        raise DatasetError(f"{labels_dir}: no label file matches an image (e.g. {orphans[0]}); labels/ must mirror "
                           "images/ (images/a/b.jpg <-> labels/a/b.txt)")
    warnings = tuple(f"{p}: label file has no image (skipped)" for p in orphans)
    return Dataset(root.name, "yolo", root, tuple(samples), {}, warnings)


def _yolo_names(root: Path) -> tuple[list[str], str]:
    """Class names from data.yaml/config.yaml/dataset.yaml ``names:`` or classes.txt, else COCO-80 order."""
    for candidate in (root / "data.yaml", root / "config.yaml", root / "dataset.yaml", root / "data.yml"):
        if not candidate.is_file():
            continue
        try:
            config = yaml.safe_load(candidate.read_text(encoding="utf-8-sig"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{candidate}: not valid YAML ({exc}); fix the file or remove it to use COCO-80 "
                               "class order") from exc
        names = config.get("names") if isinstance(config, dict) else None
        if names is None:
            continue
        if isinstance(names, list):
            return [to_coco_label(str(n)) for n in names], str(candidate)
        if isinstance(names, dict):
            try:
                index = {int(k): str(v) for k, v in names.items()}
            except (TypeError, ValueError) as exc:
                raise DatasetError(f"{candidate}: names: keys must be class indices 0..N-1; write "
                                   "`names: {0: person, 1: car}` or a list") from exc
            if sorted(index) != list(range(len(index))):
                raise DatasetError(f"{candidate}: names: indices must be 0..{len(index) - 1} without gaps, got "
                                   f"{sorted(index)}; number the classes consecutively from 0")
            return [to_coco_label(index[i]) for i in range(len(index))], str(candidate)
        raise DatasetError(f"{candidate}: names: must be a list or an index->name mapping, got "
                           f"{type(names).__name__}; write `names: [person, car]`")
    for candidate in (root / "classes.txt", root / "labels" / "classes.txt"):
        if candidate.is_file():
            lines = candidate.read_text(encoding="utf-8-sig").splitlines()
            return [to_coco_label(n.strip()) for n in lines if n.strip()], str(candidate)
    return list(COCO_LABELS), "COCO-80 order (no data.yaml/config.yaml names:)"


def _image_sizes(paths: list[Path]) -> list[tuple[int, int]]:
    """(width, height) of each image as ``cv2.imread`` sees it (EXIF orientation applied, like Sample.load)."""

    def size(path: Path) -> tuple[int, int]:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise DatasetError(f"{path}: cannot read the image to get its size (corrupt or not an image); "
                               "replace or remove it")
        return image.shape[1], image.shape[0]

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # cv2 decodes without the GIL
        return list(pool.map(size, paths))


def _read_yolo_labels(path: Path, width: int, height: int, names: list[str], names_source: str) -> GroundTruth:
    boxes: list[list[float]] = []
    labels: list[str] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the label file ({exc}); it must be UTF-8 text") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) != 5:
            raise DatasetError(f"{where}: expected 5 fields `class cx cy w h`, got {len(fields)} ({line.strip()!r}); "
                               "write one box per line (segmentation polygons are not supported: convert to boxes)")
        try:
            values = [float(v) for v in fields]
        except ValueError as exc:
            raise DatasetError(f"{where}: not a number in {line.strip()!r}; write `class cx cy w h` with a "
                               "class index and four numbers") from exc
        cls, cx, cy, w, h = values
        if not all(math.isfinite(v) for v in values):
            raise DatasetError(f"{where}: non-finite value in {line.strip()!r}; write finite numbers")
        if cls != int(cls) or not 0 <= cls < len(names):
            raise DatasetError(f"{where}: class {fields[0]} is not an index 0..{len(names) - 1} of the "
                               f"{len(names)} classes ({names_source}); fix the index or the names: list")
        if w <= 0 or h <= 0:
            raise DatasetError(f"{where}: box size {w:g}x{h:g} is not positive; remove the line or fix the box")
        lo, hi = -YOLO_TOLERANCE, 1 + YOLO_TOLERANCE
        if not all(lo <= v <= hi for v in (cx, cy, w, h)):
            raise DatasetError(f"{where}: coordinates {cx:g} {cy:g} {w:g} {h:g} are outside 0..1; YOLO labels "
                               "are normalised by the image width and height (divide pixel values by them)")
        x1, x2 = max((cx - w / 2) * width, 0.0), min((cx + w / 2) * width, float(width))
        y1, y2 = max((cy - h / 2) * height, 0.0), min((cy + h / 2) * height, float(height))
        boxes.append([x1, y1, x2, y2])
        labels.append(names[int(cls)])
    if not boxes:
        return GroundTruth.empty()
    return GroundTruth(np.array(boxes, np.float32), tuple(labels), np.zeros(len(boxes), bool))


# ---------------------------------------------------------------------------------------------------- COCO


def _coco_json_candidates(folder: Path) -> list[Path]:
    annotations = sorted((folder / "annotations").glob("*.json")) if (folder / "annotations").is_dir() else []
    return annotations or sorted(folder.glob("*.json"))


def _load_coco(path: Path) -> Dataset:
    if path.is_dir():
        candidates = _coco_json_candidates(path)
        if len(candidates) != 1:
            found = ", ".join(p.name for p in candidates) or "none"
            raise DatasetError(f"{path}: COCO needs exactly one annotation .json (in annotations/ or the folder), "
                               f"found {found}; pass the .json file itself")
        json_path, root = candidates[0], path
    else:
        json_path = path
        root = path.parent.parent if path.parent.name == "annotations" else path.parent
    try:
        data = json.loads(json_path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{json_path}: not a readable JSON file ({exc}); fix or re-export it") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{json_path}: top level must be an object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{json_path}: missing or non-list {key!r}; a COCO detection file has "
                               "\"images\", \"annotations\" and \"categories\" lists")

    categories: dict[Any, str] = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DatasetError(f"{json_path}: categories[{i}] needs \"id\" and \"name\"; add them")
        categories[cat["id"]] = to_coco_label(str(cat["name"]))

    bases = [json_path.parent, json_path.parent / "images", json_path.parent.parent / "images",
             json_path.parent.parent, root, root / "images"]
    images: dict[Any, tuple[str, Path]] = {}
    warnings: list[str] = []
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise DatasetError(f"{json_path}: images[{i}] needs \"id\" and \"file_name\"; add them")
        file_name = str(image["file_name"])
        found = next((b / file_name for b in bases if (b / file_name).is_file()), None)
        if found is None:
            warnings.append(f"{json_path}: image id {image['id']} {file_name!r} not found beside the json, in "
                            "images/ or in an images/ folder beside it (skipped)")
            continue
        if image["id"] in images:
            raise DatasetError(f"{json_path}: image id {image['id']} appears twice; give each image a unique id")
        images[image["id"]] = (_relative_id(found, root, file_name), found)
    if data["images"] and not images:
        raise DatasetError(f"{json_path}: none of the {len(data['images'])} images was found (looked in "
                           f"{', '.join(str(b) for b in dict.fromkeys(bases))}); put the images there")

    per_image: dict[Any, tuple[list[list[float]], list[str], list[bool]]] = {k: ([], [], []) for k in images}
    known_images = {image.get("id") for image in data["images"] if isinstance(image, dict)}
    for i, ann in enumerate(data["annotations"]):
        ident = f"annotation id {ann['id']}" if isinstance(ann, dict) and "id" in ann else f"annotations[{i}]"
        where = f"{json_path}: {ident}"
        if not isinstance(ann, dict):
            raise DatasetError(f"{where}: must be an object; fix the annotation")
        missing = [k for k in ("image_id", "category_id", "bbox") if k not in ann]
        if missing:
            raise DatasetError(f"{where}: missing {', '.join(missing)}; every annotation needs image_id, "
                               "category_id and bbox [x, y, width, height]")
        bbox = ann["bbox"]
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
            raise DatasetError(f"{where}: bbox {bbox!r} is not 4 numbers; write [x, y, width, height] in pixels")
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            raise DatasetError(f"{where}: bbox {bbox!r} has a non-positive width or height; fix or remove it "
                               "(COCO boxes are [x, y, width, height], not corners)")
        if ann["category_id"] not in categories:
            raise DatasetError(f"{where}: category_id {ann['category_id']!r} is not in categories; add the "
                               "category or fix the id")
        if ann["image_id"] not in known_images:
            raise DatasetError(f"{where}: image_id {ann['image_id']!r} is not in images; add the image or fix "
                               "the id")
        if ann["image_id"] not in per_image:
            continue  # its image file is missing: already warned
        boxes, labels, ignore = per_image[ann["image_id"]]
        boxes.append([x, y, x + w, y + h])
        labels.append(categories[ann["category_id"]])
        ignore.append(bool(ann.get("iscrowd", 0)) or bool(ann.get("ignore", 0)))

    samples = []
    for image_id, (sample_id, image_path) in images.items():
        boxes, labels, ignore = per_image[image_id]
        truth = (GroundTruth(np.array(boxes, np.float32).reshape(-1, 4), tuple(labels), np.array(ignore, bool))
                 if boxes else GroundTruth.empty())
        samples.append(Sample(sample_id, image_path, truth))
    samples.sort(key=lambda s: s.id)
    _check_unique(samples, json_path)
    return Dataset(root.name, "coco", root, tuple(samples), {}, tuple(warnings))


def _relative_id(path: Path, root: Path, fallback: str) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            return fallback


def _check_unique(samples: Iterable[Sample], source: Path) -> None:
    seen: set[str] = set()
    for sample in samples:
        if sample.id in seen:
            raise DatasetError(f"{source}: two images resolve to {sample.id!r}; give each image its own file")
        seen.add(sample.id)


# ----------------------------------------------------------------------------------------------------- MOT

_FRAME_FILE = re.compile(r"^(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)


def _is_mot_sequence(folder: Path) -> bool:
    return (folder / "gt" / "gt.txt").is_file()


def _mot_sequence_dirs(path: Path) -> list[Path]:
    if _is_mot_sequence(path):
        return [path]
    return sorted(p for p in path.iterdir() if p.is_dir() and _is_mot_sequence(p)) if path.is_dir() else []


def _load_mot(path: Path, min_visibility: float) -> Dataset:
    sequence_dirs = _mot_sequence_dirs(path)
    if not sequence_dirs:
        raise DatasetError(f"{path}: no MOTChallenge sequence (a folder with img1/ and gt/gt.txt) here or in its "
                           "subfolders; point at a sequence or at the folder holding them")
    samples: list[Sample] = []
    fps: dict[str, float] = {}
    warnings: list[str] = []
    for folder in sequence_dirs:
        name = folder.name
        rate, image_dir = _read_seqinfo(folder)
        fps[name] = rate
        frames = {}
        if image_dir.is_dir():
            for p in image_dir.iterdir():
                m = _FRAME_FILE.match(p.name)
                if m:
                    frames[int(m.group(1))] = p
        if not frames:
            raise DatasetError(f"{image_dir}: no frames named 000001.jpg (or .png); extract the sequence's "
                               "frames there")
        gt_path = folder / "gt" / "gt.txt"
        per_frame = _read_mot_gt(gt_path, min_visibility)
        orphans = sorted(set(per_frame) - set(frames))
        if orphans:
            warnings.append(f"{gt_path}: {len(orphans)} frame(s) have labels but no image in {image_dir.name}/, "
                            f"e.g. frame {orphans[0]} (skipped)")
        for number in sorted(frames):
            rows = per_frame.get(number)
            if rows:
                truth = GroundTruth(np.array([r[1] for r in rows], np.float32), tuple(r[2] for r in rows),
                                    np.array([r[3] for r in rows], bool), np.array([r[0] for r in rows], np.int64))
            else:
                truth = GroundTruth(np.zeros((0, 4), np.float32), (), np.zeros(0, bool), np.zeros(0, np.int64))
            samples.append(Sample(f"{name}/{number:06d}", frames[number], truth, name, number))
    root = path
    return Dataset(root.name, "mot", root, tuple(samples), fps, tuple(warnings))


def _read_seqinfo(folder: Path) -> tuple[float, Path]:
    """Frame rate and image folder from seqinfo.ini (25 fps and img1/ when it is absent)."""
    ini = folder / "seqinfo.ini"
    if not ini.is_file():
        return MOT_DEFAULT_FPS, folder / "img1"
    parser = configparser.ConfigParser()
    try:
        parser.read_string(ini.read_text(encoding="utf-8-sig"))
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise DatasetError(f"{ini}: not a valid INI file ({exc}); it needs a [Sequence] section") from exc
    section = parser["Sequence"] if parser.has_section("Sequence") else {}
    raw = section.get("frameRate")
    rate = MOT_DEFAULT_FPS
    if raw is not None:
        try:
            rate = float(raw)
        except ValueError:
            rate = float("nan")
        if not math.isfinite(rate) or rate <= 0:
            raise DatasetError(f"{ini}: frameRate={raw!r} is not a positive number; write e.g. frameRate=30")
    return rate, folder / section.get("imDir", "img1")


def _read_mot_gt(path: Path, min_visibility: float) -> dict[int, list[tuple[int, list[float], str, bool]]]:
    """gt.txt -> frame -> [(id, xyxy, label, ignore)].

    Columns: frame, id, x, y, w, h[, flag[, class[, visibility]]] (MOT16/17/20 have all 9). A 10-column line is
    MOT15's (flag, then world x y z): a pedestrian, fully visible, as are lines without class/visibility.
    """
    per_frame: dict[int, list[tuple[int, list[float], str, bool]]] = {}
    seen: dict[tuple[int, int], int] = {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc}); it must be CSV text") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        fields = [f.strip() for f in line.replace(",", " ").split()]
        if not 6 <= len(fields) <= 10:
            raise DatasetError(f"{where}: expected 9 comma-separated fields `frame, id, x, y, w, h, flag, class, "
                               f"visibility` (6 to 10 accepted), got {len(fields)}; fix the line")
        try:
            values = [float(v) for v in fields]
        except ValueError as exc:
            raise DatasetError(f"{where}: not a number in {line.strip()!r}; every field must be numeric") from exc
        if not all(math.isfinite(v) for v in values):
            raise DatasetError(f"{where}: non-finite value in {line.strip()!r}; write finite numbers")
        frame, ident, x, y, w, h = values[:6]
        if frame != int(frame) or frame < 1:
            raise DatasetError(f"{where}: frame {fields[0]} is not a 1-based integer; frames count from 1")
        if ident != int(ident):
            raise DatasetError(f"{where}: track id {fields[1]} is not an integer; fix the id")
        if w <= 0 or h <= 0:
            raise DatasetError(f"{where}: box size {w:g}x{h:g} is not positive; fix or remove the line")
        flag = values[6] if len(values) >= 7 else 1.0
        mot15 = len(values) == 10
        cls = int(values[7]) if 8 <= len(values) <= 9 else 1
        visibility = values[8] if len(values) == 9 else 1.0
        if 8 <= len(values) <= 9 and values[7] != cls:
            raise DatasetError(f"{where}: class {fields[7]} is not an integer; use the MOT class ids 1-12")
        if cls == -1 or mot15:
            cls = 1  # class not given (MOT15-style): pedestrian
        if cls not in MOT_CLASSES:
            raise DatasetError(f"{where}: class {cls} is not a MOTChallenge class (1 pedestrian ... 12 "
                               "reflection); fix the class column (the 8th)")
        if not -0.01 <= visibility <= 1.01:
            raise DatasetError(f"{where}: visibility {fields[8]} is outside 0..1; fix the 9th column")
        label, ignore = MOT_CLASSES[cls]
        ignore = ignore or flag == 0 or visibility < min_visibility
        key = (int(frame), int(ident))
        if key in seen:
            raise DatasetError(f"{where}: track id {int(ident)} appears twice in frame {int(frame)} (also line "
                               f"{seen[key]}); give each object its own id")
        seen[key] = number
        per_frame.setdefault(int(frame), []).append((int(ident), [x, y, x + w, y + h], label, ignore))
    return per_frame
