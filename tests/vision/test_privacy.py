"""Privacy masks on real footage: the polygon is filled black on a copy (any frame size), the rest of the picture
is left alone, who must see it masked, and the config refuses malformed masks with a message naming the fix."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from trustcam.config.schema import CameraConfig
from trustcam.storage.evidence import remux_segments
from trustcam.vision import privacy
from trustcam.vision.privacy import apply_privacy_masks, mask_jpeg, mask_video, must_mask

MASK = ((0.05, 0.05), (0.45, 0.05), (0.45, 0.45), (0.05, 0.45))


@dataclass(frozen=True)
class Someone:
    unmasked: bool


def _frames(video: Path | bytes, count: int | None = None) -> list[np.ndarray]:
    source = io.BytesIO(video) if isinstance(video, bytes) else str(video)
    with av.open(source) as container:
        frames = []
        for frame in container.decode(container.streams.video[0]):
            frames.append(frame.to_ndarray(format="bgr24"))
            if count is not None and len(frames) == count:
                break
    return frames


def inside(image: np.ndarray, polygon: tuple[tuple[float, float], ...] = MASK, margin: float = 0.02) -> np.ndarray:
    """The pixels well inside a rectangular mask (codec and JPEG blur its edges by a few pixels)."""
    h, w = image.shape[:2]
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    return image[round((min(ys) + margin) * h):round((max(ys) - margin) * h),
                 round((min(xs) + margin) * w):round((max(xs) - margin) * w)]


def outside(image: np.ndarray) -> np.ndarray:
    """A region far from the mask (bottom right)."""
    h, w = image.shape[:2]
    return image[round(0.6 * h):round(0.95 * h), round(0.6 * w):round(0.95 * w)]


def test_mask_fills_the_polygon_black_on_a_copy(car_video: Path) -> None:
    raw = _frames(car_video, 1)[0]
    before = raw.copy()
    assert inside(raw).mean() > 30, "the test needs picture content where the mask goes"
    masked = apply_privacy_masks(raw, [MASK])
    assert inside(masked, margin=0.005).max() == 0
    assert np.array_equal(outside(masked), outside(raw))
    assert np.array_equal(raw, before), "the source frame (shared with the recorder and detector) was modified"
    small = cv2.resize(raw, (raw.shape[1] // 3, raw.shape[0] // 3))  # fractions: any analysis size
    assert inside(apply_privacy_masks(small, [MASK]), margin=0.01).max() == 0
    assert np.array_equal(apply_privacy_masks(raw, []), raw)


def test_triangle_and_several_polygons(car_video: Path) -> None:
    raw = _frames(car_video, 1)[0]
    h, w = raw.shape[:2]
    triangle = ((0.6, 0.6), (0.95, 0.6), (0.95, 0.95))
    masked = apply_privacy_masks(raw, [MASK, triangle])
    assert masked[round(0.65 * h), round(0.9 * w)].max() == 0  # inside the triangle
    assert np.array_equal(masked[round(0.9 * h), round(0.65 * w)], raw[round(0.9 * h), round(0.65 * w)])  # beside it
    assert inside(masked).max() == 0


def test_must_mask_needs_masks_and_no_permission_whatever_the_role() -> None:
    masked_camera = CameraConfig(source="rtsp://cam/1", privacy_masks=[[list(p) for p in MASK]])
    plain_camera = CameraConfig(source="rtsp://cam/2")
    assert must_mask(Someone(unmasked=False), masked_camera)
    assert not must_mask(Someone(unmasked=True), masked_camera)
    assert not must_mask(Someone(unmasked=False), plain_camera)
    assert not must_mask(Someone(unmasked=False), None)  # camera gone from the config: no masks known


def test_masked_jpeg_and_png_snapshots(car_video: Path) -> None:
    raw = _frames(car_video, 1)[0]
    for ext in (".jpg", ".png"):
        ok, encoded = cv2.imencode(ext, raw)
        assert ok
        shown = cv2.imdecode(np.frombuffer(mask_jpeg(encoded.tobytes(), [MASK]), np.uint8), cv2.IMREAD_COLOR)
        assert shown.shape == raw.shape
        assert inside(shown).max() <= 8, ext
        assert np.abs(outside(shown).astype(int) - outside(raw)).mean() < 4, ext
    with pytest.raises(ValueError, match="not a decodable image"):
        mask_jpeg(b"not an image", [MASK])


@pytest.mark.parametrize("encoder", ["libx264", "mpeg4"])
def test_masked_video_is_a_playable_fragmented_mp4(car_video: Path, encoder: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(privacy, "ENCODERS", (encoder,))
    clip = remux_segments([car_video.read_bytes()], fragmented=True)
    masked = mask_video(clip, [MASK])
    assert masked[4:8] == b"ftyp" and b"moov" in masked[:4096]  # index first: a browser plays it at once
    with av.open(io.BytesIO(masked)) as container:
        assert container.streams.video[0].codec_context.name == {"libx264": "h264"}.get(encoder, encoder)
        assert not container.streams.audio  # a derived view: video only
    original, shown = _frames(clip), _frames(masked)
    assert len(shown) == len(original)
    for i in (0, len(shown) // 2, len(shown) - 1):
        assert inside(shown[i]).max() <= 16, i
        assert np.abs(outside(shown[i]).astype(int) - outside(original[i])).mean() < 6, i


@pytest.mark.parametrize(("masks", "message"), [
    ([[[0.1, 0.1], [0.2, 0.2]]], "privacy mask 1: polygon needs ≥ 3 points"),
    ([[[0.1, 0.1], [0.2, 0.1], [0.2, 0.2]], [[0.1, 0.1], [1.5, 0.1], [0.2, 0.2]]],
     "privacy mask 2: polygon: point [1.5, 0.1] is outside the frame"),
    ([[0.1, 0.1, 0.2]], "privacy mask 1 must be a polygon"),
    ([[[0.1], [0.2, 0.1], [0.2, 0.2]]], "each point is [x, y]"),
])
def test_malformed_masks_are_refused_with_the_fix(masks: list, message: str) -> None:
    with pytest.raises(ValidationError) as error:
        CameraConfig(source="rtsp://cam/1", privacy_masks=masks)
    assert message in str(error.value)
    assert "privacy_masks" in str(error.value)
