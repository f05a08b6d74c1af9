"""Run a detector over parts of a frame and merge the results in frame coordinates.

``trustcam detect`` and the live pipeline share this, so what a user tests on a still is what runs on
the camera (tiling included).
"""

from __future__ import annotations

import numpy as np

from trustcam.ingest.frame import Frame
from trustcam.vision.detections import Detections, nms, suppress_contained
from trustcam.vision.detectors.base import Detector
from trustcam.vision.regions import Box, needs_tiling, tiles

_EDGE_PX = 2.0


def _drop_cut_at_inner_edges(dets: Detections, region: Box, frame_w: int, frame_h: int) -> Detections:
    """Remove boxes touching a region edge that lies inside the frame: they are objects cut in two by the
    crop, and an overlapping tile or the whole-frame pass sees them whole."""
    if len(dets) == 0:
        return dets
    x1, y1, x2, y2 = region
    b = dets.boxes
    cut = np.zeros(len(dets), bool)
    if x1 > 0:
        cut |= b[:, 0] <= x1 + _EDGE_PX
    if y1 > 0:
        cut |= b[:, 1] <= y1 + _EDGE_PX
    if x2 < frame_w:
        cut |= b[:, 2] >= x2 - _EDGE_PX
    if y2 < frame_h:
        cut |= b[:, 3] >= y2 - _EDGE_PX
    return dets.select(np.flatnonzero(~cut))


class FrameDetector:
    """Detect on regions, tiles or the whole frame with one model."""

    def __init__(self, detector: Detector, tiling: str = "auto", tile_overlap: float = 0.25) -> None:
        self.detector = detector
        self.tiling = tiling
        self.tile_overlap = tile_overlap

    def detect_regions(self, image: np.ndarray | Frame, regions: list[Box], drop_cut: bool = False) -> Detections:
        """Detect in each region; a :class:`Frame` converts only the regions' pixels."""
        if isinstance(image, Frame):
            w, h = image.size
            crop = image.crop
        else:
            h, w = image.shape[:2]
            crop = lambda r: image[r[1] : r[3], r[0] : r[2]]  # noqa: E731
        many = getattr(self.detector, "detect_many", None)
        together = None  # several crops at once where the detector takes them together (the shared service)
        if many is not None and len(regions) > 1 and (0, 0, w, h) not in regions:
            together = many([crop(region) for region in regions])
        parts = []
        for i, region in enumerate(regions):
            x1, y1, _, _ = region
            if together is not None:
                dets = together[i].shifted(x1, y1)
            else:
                shrunk = self._detect_shrunk(image) if isinstance(image, Frame) and region == (0, 0, w, h) else None
                dets = shrunk if shrunk is not None else self.detector.detect(crop(region)).shifted(x1, y1)
            if drop_cut:
                dets = _drop_cut_at_inner_edges(dets, region, w, h)
            parts.append(dets)
        return merge(parts, self.detector.nms_iou)

    def full_frame_regions(self, width: int, height: int) -> list[Box]:
        """The whole frame, plus model-sized tiles when the frame is much larger than the model."""
        whole: Box = (0, 0, width, height)
        side = self.detector.input_size
        if not needs_tiling(width, height, side, self.tiling):
            return [whole]
        return [whole, *tiles(width, height, side, self.tile_overlap)]

    def detect_full(self, image: np.ndarray | Frame) -> Detections:
        if isinstance(image, Frame):
            w, h = image.size
            shrunk = self._detect_shrunk(image)
            whole = shrunk if shrunk is not None else self.detector.detect(image.bgr)
        else:
            h, w = image.shape[:2]
            whole = self.detector.detect(image)
        regions = self.full_frame_regions(w, h)
        if len(regions) == 1:
            return whole
        pixels = image.bgr if isinstance(image, Frame) else image  # tiles cover it all: convert once
        tiled = self.detect_regions(pixels, regions[1:], drop_cut=True)
        return merge([whole, tiled], self.detector.nms_iou)

    def _detect_shrunk(self, frame: Frame) -> Detections | None:
        """The whole frame in one call when the model's letterbox would shrink it more than 2x (None otherwise):
        area-resampling the full BGR frame is most of such a call's cost at 1080p besides the model, so the frame
        is scaled to the letterbox size while still YUV, and the boxes are scaled back."""
        w, h = frame.size
        side = self.detector.input_size
        scale = min(side / w, side / h)
        if scale >= 0.5:
            return None
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        dets = self.detector.detect(frame.scaled((nw, nh)))
        if len(dets) == 0:
            return dets
        boxes = dets.boxes * np.array([w / nw, h / nh, w / nw, h / nh], np.float32)
        np.clip(boxes[:, 0::2], 0, w, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, h, out=boxes[:, 1::2])
        return Detections(boxes, dets.scores, dets.class_ids)


def merge(parts: list[Detections], iou: float) -> Detections:
    return suppress_contained(nms(Detections.concat(parts), iou))
