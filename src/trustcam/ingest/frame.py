"""A decoded video frame whose pixel conversions are done lazily, once, and only if a stage asks.

Most frames only need a small grey image for motion detection; converting every 1080p frame to BGR
would cost more than decoding it. The grey image comes straight from the luma plane.
"""

from __future__ import annotations

from functools import cached_property

import av
import cv2
import numpy as np

_LUMA_FIRST = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21"}


class Frame:
    """One frame at analysis size; ``time`` is stream seconds (file position, or wall clock for live)."""

    def __init__(
        self,
        source: av.VideoFrame | np.ndarray,
        index: int,
        time: float,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.index = index
        self.time = time
        self._source = source
        native = (source.shape[1], source.shape[0]) if isinstance(source, np.ndarray) else (source.width, source.height)
        self.native_size = native
        self.size: tuple[int, int] = size or native

    @classmethod
    def from_image(cls, image: np.ndarray, index: int = 0, time: float = 0.0) -> Frame:
        return cls(image, index, time)

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    @cached_property
    def bgr(self) -> np.ndarray:
        """BGR uint8 image at analysis size (what detectors and snapshots use)."""
        w, h = self.size
        src = self._source
        if isinstance(src, np.ndarray):
            if (w, h) == self.native_size:
                return src
            return cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA)
        if (w, h) == self.native_size:
            return src.to_ndarray(format="bgr24")
        return src.to_ndarray(format="bgr24", width=w, height=h)

    def gray(self, height: int) -> np.ndarray:
        """Grey image scaled to ``height`` rows, for motion detection (aspect ratio kept)."""
        luma = self._luma()
        width = max(1, round(luma.shape[1] * height / luma.shape[0]))
        return cv2.resize(luma, (width, height), interpolation=cv2.INTER_AREA)

    def _luma(self) -> np.ndarray:
        src = self._source
        if isinstance(src, np.ndarray):
            return cv2.cvtColor(src, cv2.COLOR_BGR2GRAY)
        if src.format.name in _LUMA_FIRST:
            plane = src.planes[0]
            rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            return rows[:, : plane.width]
        return src.to_ndarray(format="gray")
