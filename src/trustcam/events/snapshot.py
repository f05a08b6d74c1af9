"""Evidence snapshots: the frame at an object's best score, with its box and label drawn."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_snapshot(image: np.ndarray, box: tuple[float, float, float, float], caption: str, path: Path,
                   quality: int = 90) -> Path:
    """Write a JPEG with ``box`` outlined; the source image is not modified."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jpg.part")
    tmp.write_bytes(render_snapshot(image, box, caption, quality))
    tmp.replace(path)
    return path


def render_snapshot(image: np.ndarray, box: tuple[float, float, float, float], caption: str,
                    quality: int = 90) -> bytes:
    """JPEG bytes of ``image`` with ``box`` and ``caption`` drawn (for a file, or for the encrypted vault)."""
    canvas = image.copy()
    x1, y1, x2, y2 = (round(v) for v in box)
    thickness = max(2, canvas.shape[0] // 300)
    cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 0, 255), thickness)
    scale = max(0.5, canvas.shape[0] / 900)
    (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    ty = max(th + base, y1)
    cv2.rectangle(canvas, (x1, ty - th - base), (x1 + tw, ty), (0, 0, 255), cv2.FILLED)
    cv2.putText(canvas, caption, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError("could not encode a snapshot as JPEG")
    return encoded.tobytes()
