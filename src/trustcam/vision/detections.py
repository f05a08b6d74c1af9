"""Detections as parallel NumPy arrays, and the box operations every stage shares (NMS, IoU, shifting)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from trustcam.vision.labels import COCO_LABELS


@dataclass(frozen=True)
class Detections:
    """``boxes`` (N, 4) xyxy pixels of the analysed image, ``scores`` (N,), ``class_ids`` (N,) COCO indices."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    @classmethod
    def concat(cls, parts: list[Detections]) -> Detections:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.boxes for p in parts]).astype(np.float32),
            np.concatenate([p.scores for p in parts]).astype(np.float32),
            np.concatenate([p.class_ids for p in parts]).astype(np.int64),
        )

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep: np.ndarray | list[int]) -> Detections:
        keep = np.asarray(keep, dtype=np.int64)
        return Detections(self.boxes[keep], self.scores[keep], self.class_ids[keep])

    def shifted(self, dx: float, dy: float) -> Detections:
        return Detections(self.boxes + np.array([dx, dy, dx, dy], np.float32), self.scores, self.class_ids)

    def labels(self) -> list[str]:
        return [COCO_LABELS[int(c)] for c in self.class_ids]

    def to_json(self) -> list[dict[str, object]]:
        return [
            {"label": label, "score": round(float(s), 4), "box": [round(float(v), 1) for v in b]}
            for label, s, b in zip(self.labels(), self.scores, self.boxes, strict=True)
        ]


def nms(dets: Detections, iou: float, max_out: int = 300) -> Detections:
    """Class-aware non-maximum suppression (OpenCV's batched NMS)."""
    if len(dets) == 0:
        return dets
    xywh = dets.boxes.copy()
    xywh[:, 2:] -= xywh[:, :2]
    keep = cv2.dnn.NMSBoxesBatched(
        xywh.tolist(), dets.scores.tolist(), dets.class_ids.tolist(), 0.0, iou, top_k=max_out
    )
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    return dets.select(keep[np.argsort(-dets.scores[keep], kind="stable")])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def suppress_contained(dets: Detections, ratio: float = 0.85) -> Detections:
    """Drop a box mostly inside a higher-scoring box of the same class (a fragment from a tile or crop)."""
    if len(dets) < 2:
        return dets
    order = np.argsort(-dets.scores, kind="stable")
    boxes = dets.boxes[order]
    classes = dets.class_ids[order]
    areas = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-9)
    keep: list[int] = []
    for i in range(len(order)):
        inside = False
        for j in keep:
            if classes[j] != classes[i]:
                continue
            iw = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
            ih = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
            if iw > 0 and ih > 0 and iw * ih / areas[i] >= ratio and areas[i] < areas[j]:
                inside = True
                break
        if not inside:
            keep.append(i)
    return dets.select(order[keep])
