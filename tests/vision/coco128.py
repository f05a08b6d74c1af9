"""Read the coco128 YOLO-format labels and score person detections against them.

Labels are ``class cx cy w h`` normalised to the image size, one object a line. Two label files of the
snapshot have no image (skipped) and two images have no label file (true negatives: no objects).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from trustcam.vision.detections import Detections, iou_matrix

PERSON = 0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Sample:
    image_path: Path
    label_path: Path | None
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) xyxy pixels
    class_ids: np.ndarray  # (N,)

    def boxes_of(self, class_id: int) -> np.ndarray:
        return self.boxes[self.class_ids == class_id]

    def read(self) -> np.ndarray:
        image = cv2.imread(str(self.image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"cannot read {self.image_path}")
        return image


def read_labels(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """YOLO ``class cx cy w h`` (normalised) lines -> xyxy pixel boxes and class ids."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    data = np.array(rows, np.float64)
    if data.shape[1] != 5:
        raise ValueError(f"{path}: expected 5 columns, got {data.shape[1]}")
    cx, cy = data[:, 1] * width, data[:, 2] * height
    w, h = data[:, 3] * width, data[:, 4] * height
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
    return boxes, data[:, 0].astype(np.int64)


def samples(root: Path) -> Iterator[Sample]:
    """Every image of ``root/images/*`` with its labels (none when the label file is absent)."""
    for image_path in sorted(p for p in (root / "images").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        rel = image_path.relative_to(root / "images").with_suffix(".txt")
        label_path = root / "labels" / rel
        image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise OSError(f"cannot read {image_path}")
        height, width = image.shape[:2]
        if label_path.is_file():
            boxes, class_ids = read_labels(label_path, width, height)
            yield Sample(image_path, label_path, width, height, boxes, class_ids)
        else:
            yield Sample(image_path, None, width, height, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))


def orphan_labels(root: Path) -> list[Path]:
    """Label files without an image (not evaluated)."""
    stems = {p.relative_to(root / "images").with_suffix("") for p in (root / "images").rglob("*") if p.is_file()}
    return sorted(p for p in (root / "labels").rglob("*.txt") if p.relative_to(root / "labels").with_suffix("")
                  not in stems)


@dataclass
class Score:
    """True positives, false positives and ground-truth count accumulated over images."""

    tp: int = 0
    fp: int = 0
    gt: int = 0

    @property
    def recall(self) -> float:
        return self.tp / self.gt if self.gt else 0.0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    def add(self, other: Score) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.gt += other.gt

    def __str__(self) -> str:
        return (f"recall {self.recall:.3f} ({self.tp}/{self.gt}), precision {self.precision:.3f} "
                f"({self.tp}/{self.tp + self.fp})")


def match(pred_boxes: np.ndarray, pred_scores: np.ndarray, gt_boxes: np.ndarray, iou: float = 0.5) -> Score:
    """Greedy matching in descending score order; each ground-truth box is matched at most once."""
    order = np.argsort(-pred_scores, kind="stable")
    ious = iou_matrix(pred_boxes[order].astype(np.float32), gt_boxes.astype(np.float32))
    used = np.zeros(len(gt_boxes), bool)
    tp = 0
    for row in ious:
        candidates = np.where(used, -1.0, row)
        if len(candidates) and candidates.max() >= iou:
            used[int(candidates.argmax())] = True
            tp += 1
    return Score(tp=tp, fp=len(pred_boxes) - tp, gt=len(gt_boxes))


def score_class(dets: Detections, sample: Sample, class_id: int = PERSON, iou: float = 0.5,
                min_score: float = 0.0) -> Score:
    keep = (dets.class_ids == class_id) & (dets.scores >= min_score)
    return match(dets.boxes[keep], dets.scores[keep], sample.boxes_of(class_id), iou)
