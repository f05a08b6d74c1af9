"""Where to run the detector: model-sized square crops around motion and tracked objects, or tiles.

Detecting on crops near native resolution (as Frigate does) finds small people that a whole-frame
letterbox would shrink to a few pixels, and costs one model call per busy area instead of per frame.
"""

from __future__ import annotations

import math

Box = tuple[int, int, int, int]


def square_region(box: tuple[float, float, float, float], frame_w: int, frame_h: int, min_side: int,
                  margin: float = 1.4) -> Box:
    """A square around ``box`` of side ≥ ``min_side`` (and ``margin`` × the box), shifted to stay in the frame."""
    x1, y1, x2, y2 = box
    side = max(min_side, int(max(x2 - x1, y2 - y1) * margin))
    side = min(side, max(frame_w, frame_h))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    rx = int(min(max(cx - side / 2, 0), max(frame_w - side, 0)))
    ry = int(min(max(cy - side / 2, 0), max(frame_h - side, 0)))
    return rx, ry, min(rx + side, frame_w), min(ry + side, frame_h)


def _union(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> tuple[float, ...]:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def cluster_boxes(boxes: list[tuple[float, float, float, float]], max_side: int) -> list[tuple[float, ...]]:
    """Greedily merge boxes whose union still fits in ``max_side``, so nearby motion shares one crop."""
    clusters: list[tuple[float, ...]] = []
    for box in sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True):
        for i, cluster in enumerate(clusters):
            merged = _union(cluster, box)  # type: ignore[arg-type]
            if max(merged[2] - merged[0], merged[3] - merged[1]) <= max_side:
                clusters[i] = merged
                break
        else:
            clusters.append(tuple(box))
    return clusters


def regions_for(boxes: list[tuple[float, float, float, float]], frame_w: int, frame_h: int, model_side: int,
                max_regions: int = 6, max_coverage: float = 0.6) -> list[Box]:
    """Square detection regions covering ``boxes``; one whole-frame region instead when there would be more
    than ``max_regions`` or they would add up to more than ``max_coverage`` of the frame (cheaper, same view)."""
    if not boxes:
        return []
    clusters = cluster_boxes(boxes, max_side=int(model_side * 1.5))
    regions = [square_region(c, frame_w, frame_h, model_side) for c in clusters]  # type: ignore[arg-type]
    # drop regions fully inside another
    regions = [r for r in regions if not any(o != r and _contains(o, r) for o in regions)]
    regions = list(dict.fromkeys(regions))
    area = sum((r[2] - r[0]) * (r[3] - r[1]) for r in regions)
    if len(regions) > max_regions or area > max_coverage * frame_w * frame_h:
        return [(0, 0, frame_w, frame_h)]
    return regions


def _contains(outer: Box, inner: Box) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


def tiles(frame_w: int, frame_h: int, tile: int, overlap: float = 0.25) -> list[Box]:
    """Overlapping ``tile``-sized squares covering the frame (edge tiles shifted inwards, never padded)."""
    if not 0 <= overlap < 1:
        raise ValueError(f"tile overlap must be in [0, 1), got {overlap}")

    def starts(length: int) -> list[int]:
        if length <= tile:
            return [0]
        step = tile * (1 - overlap)
        count = math.ceil((length - tile) / step) + 1
        return [round(i * (length - tile) / (count - 1)) for i in range(count)]

    return [(x, y, min(x + tile, frame_w), min(y + tile, frame_h)) for y in starts(frame_h) for x in starts(frame_w)]


def needs_tiling(frame_w: int, frame_h: int, model_side: int, mode: str) -> bool:
    """'auto' tiles when fitting the frame into the model would shrink it more than 2x."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    return min(model_side / frame_w, model_side / frame_h) < 0.5
