"""The canary's test person: a real photo of a standing person, pinned by sha256, cut out with a soft edge and
composited into a copy of a camera frame.

A real person (not a drawn shape) is what the detector is trained on, so finding it says the camera and the
model can still see people; a soft edge keeps the paste from adding a hard rectangle the model might key on
instead. Placement keeps clear of tracked objects (a real person must not hide the canary, nor the canary a
real person) and moves between probes, so one bad spot cannot make the canary always pass or always fail.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from trustcam.vision import catalog
from trustcam.vision.catalog import AssetSpec, ModelError

Box = tuple[int, int, int, int]
REFERENCE = "canary-person"
HEIGHT_FRACTIONS = (0.42, 0.46, 0.5)  # of the frame height: large enough to be found at any analysis size
_FEET_FROM = 0.7  # feet in the lower part of the picture: a person floating on a wall is found less reliably
_FEATHER = 0.06  # soft-edge width as a fraction of the person box width


@dataclass(frozen=True)
class CanaryTarget:
    """The cut-out person: ``bgr`` and ``alpha`` (0..1) of the crop, and the person's box inside the crop."""

    bgr: np.ndarray
    alpha: np.ndarray
    person: tuple[float, float, float, float]

    @property
    def aspect(self) -> float:
        """Person width / height."""
        x1, y1, x2, y2 = self.person
        return (x2 - x1) / (y2 - y1)


def load_target(directory: Path | None = None, spec: AssetSpec | None = None) -> CanaryTarget:
    """Load the pinned reference image (refused unless its sha256 matches) and cut out its person."""
    spec = spec or catalog.ASSETS[REFERENCE]
    path = spec.path(directory)
    catalog.verify(spec, path)  # raises ModelError naming the fix (install / reinstall with --force)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ModelError(f"{path}: not a readable image; run `trustcam models install --force {spec.name}`")
    return cut_out(image, spec.crop)


def cut_out(image: np.ndarray, box: Box) -> CanaryTarget:
    """The person in ``box`` with a margin, masked by a rounded box whose edge fades out.

    The rounded corners drop most of the background a plain box would carry (here: parts of people sitting
    beside him) while keeping head, feet and elbows, which sit at the box's edge centres.
    """
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    feather = max(2, round(_FEATHER * (x2 - x1)))
    cx1, cy1, cx2, cy2 = max(x1 - feather, 0), max(y1 - feather, 0), min(x2 + feather, w), min(y2 + feather, h)
    crop = image[cy1:cy2, cx1:cx2].copy()
    ys, xs = np.mgrid[cy1:cy2, cx1:cx2].astype(np.float32)
    # superellipse |u|^4 + |v|^4 <= 1 over the person box: a rounded rectangle
    u = (xs - (x1 + x2) / 2) / ((x2 - x1) / 2)
    v = (ys - (y1 + y2) / 2) / ((y2 - y1) / 2)
    inside = (np.abs(u) ** 4 + np.abs(v) ** 4 <= 1.0).astype(np.float32)
    alpha = cv2.GaussianBlur(inside, (0, 0), feather / 2)
    person = (float(x1 - cx1), float(y1 - cy1), float(x2 - cx1), float(y2 - cy1))
    return CanaryTarget(crop, alpha, person)


def place(frame_w: int, frame_h: int, target: CanaryTarget, occupied: list[tuple[float, float, float, float]],
          rng: random.Random, allowed: np.ndarray | None = None) -> Box:
    """A box for the person (its visible extent, in frame pixels): inside the frame, clear of ``occupied``
    boxes and with its feet where objects count (``allowed`` mask, non-zero = kept). The least crowded of
    several random candidates if none is clear."""
    best: tuple[float, Box] | None = None
    for _ in range(32):
        ph = round(rng.choice(HEIGHT_FRACTIONS) * frame_h)
        pw = max(8, round(ph * target.aspect))
        x = rng.randint(2, max(2, frame_w - pw - 2))
        bottom = rng.randint(min(round(_FEET_FROM * frame_h), frame_h - 2), frame_h - 2)  # feet on the ground
        box: Box = (x, max(bottom - ph, 0), x + pw, bottom)
        if allowed is not None and allowed[min(box[3] - 1, frame_h - 1), min((box[0] + box[2]) // 2, frame_w - 1)] == 0:
            continue
        crowd = sum(_overlap(box, o) for o in occupied)
        if crowd == 0:
            return box
        if best is None or crowd < best[0]:
            best = (crowd, box)
    if best is None:
        raise ValueError("no place for the canary: the object mask excludes every candidate spot")
    return best[1]


def composite(image: np.ndarray, target: CanaryTarget, box: Box) -> np.ndarray:
    """A copy of ``image`` with the person scaled so that it fills ``box`` (the original is not touched)."""
    out = image.copy()
    px1, py1, _, py2 = target.person
    scale = (box[3] - box[1]) / (py2 - py1)
    ch, cw = target.bgr.shape[:2]
    sw, sh = max(1, round(cw * scale)), max(1, round(ch * scale))
    bgr = cv2.resize(target.bgr, (sw, sh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    alpha = cv2.resize(target.alpha, (sw, sh), interpolation=cv2.INTER_LINEAR)
    ox, oy = round(box[0] - px1 * scale), round(box[1] - py1 * scale)  # crop origin in the frame
    h, w = out.shape[:2]
    fx1, fy1, fx2, fy2 = max(ox, 0), max(oy, 0), min(ox + sw, w), min(oy + sh, h)
    if fx2 <= fx1 or fy2 <= fy1:
        return out
    a = alpha[fy1 - oy : fy2 - oy, fx1 - ox : fx2 - ox, None]
    src = bgr[fy1 - oy : fy2 - oy, fx1 - ox : fx2 - ox].astype(np.float32)
    dst = out[fy1:fy2, fx1:fx2].astype(np.float32)
    out[fy1:fy2, fx1:fx2] = np.clip(src * a + dst * (1 - a) + 0.5, 0, 255).astype(np.uint8)
    return out


def _overlap(a: Box, b: tuple[float, float, float, float]) -> float:
    """Intersection area of ``a`` and ``b`` grown by 10% (people next to the canary blur its box)."""
    gx, gy = 0.1 * (b[2] - b[0]), 0.1 * (b[3] - b[1])
    iw = min(a[2], b[2] + gx) - max(a[0], b[0] - gx)
    ih = min(a[3], b[3] + gy) - max(a[1], b[1] - gy)
    return max(iw, 0.0) * max(ih, 0.0)
