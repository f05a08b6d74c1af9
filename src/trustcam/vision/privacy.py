"""Privacy masks: polygons of a camera blacked out in what users see (live, snapshots, clips).

Masking happens when footage is *shown*, never when it is recorded: the vault keeps the original, so evidence
stays original and a user with the ``unmasked`` permission (granted per user by an admin) sees it whole. The
role does not grant it, admins included: seeing behind a mask is a deliberate, audited grant.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

if TYPE_CHECKING:
    from trustcam.config.schema import CameraConfig

Polygon = Sequence[tuple[float, float]]
FRAGMENTED_MP4 = "frag_keyframe+empty_moov+default_base_moof"  # as the unmasked clips: playable while loading
ENCODERS = ("libx264", "mpeg4")  # the first one this PyAV build has is used
ENCODER_OPTIONS = {"libx264": {"preset": "veryfast", "crf": "20"}, "mpeg4": {"qscale": "3"}}  # fast, still sharp
MILLISECOND = Fraction(1, 1000)


class Viewer(Protocol):
    """Whoever is shown the footage (``trustcam.web.auth.Principal``)."""

    @property
    def unmasked(self) -> bool: ...


def must_mask(viewer: Viewer, camera: CameraConfig | None) -> bool:
    """True when ``camera`` has privacy masks and ``viewer`` lacks the ``unmasked`` permission (whatever its role).

    A camera no longer in the config has no masks to apply (None): its footage is shown as recorded."""
    return camera is not None and bool(camera.privacy_masks) and not viewer.unmasked


def export_refusal(camera: str) -> str:
    """Why an evidence export is refused to a user who sees ``camera`` masked: a bundle is the original, signed
    footage; a masked copy would be neither original nor verifiable against the vault's chain, so none is made."""
    return (f"camera '{camera}' has privacy masks and you lack the 'unmasked' permission: an evidence export is the "
            "original, unmasked footage, so it is refused; ask an admin to export it or to grant you 'unmasked' "
            "(PATCH /api/users/<name> {\"unmasked\": true} or `trustcam users grant-unmasked <name>`)")


def _pixels(polygon: Polygon, width: int, height: int) -> np.ndarray:
    return np.array([[round(x * width), round(y * height)] for x, y in polygon], np.int32)


def apply_privacy_masks(image: np.ndarray, polygons: Sequence[Polygon]) -> np.ndarray:
    """A copy of ``image`` (any size: coordinates are fractions of the frame) with every polygon filled black."""
    masked = image.copy()
    if polygons:
        height, width = masked.shape[:2]
        black = (0,) * (masked.shape[2] if masked.ndim == 3 else 1)
        cv2.fillPoly(masked, [_pixels(p, width, height) for p in polygons], black)
    return masked


def mask_jpeg(data: bytes, polygons: Sequence[Polygon], quality: int = 90) -> bytes:
    """A stored snapshot (JPEG or PNG) decoded, masked and encoded again as JPEG."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("the snapshot is not a decodable image, so its privacy masks cannot be applied")
    ok, encoded = cv2.imencode(".jpg", apply_privacy_masks(image, polygons), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError("could not encode the masked snapshot as JPEG")
    return encoded.tobytes()


def _encoder() -> str:
    from av.codec import Codec

    for name in ENCODERS:
        try:
            Codec(name, "w")
            return name
        except Exception:  # PyAV raises different types for an absent encoder
            continue
    raise RuntimeError(f"no video encoder available in PyAV (tried {', '.join(ENCODERS)}); masked clips need one")


def mask_video(data: bytes, polygons: Sequence[Polygon]) -> bytes:
    """An MP4 decoded, masked frame by frame and re-encoded (libx264, else mpeg4) into a fragmented MP4, in memory.

    Only the video is kept: the result is a derived view for the browser, never evidence (that is the vault's
    original, exported by a user with the ``unmasked`` permission)."""
    import av

    out = io.BytesIO()
    with av.open(io.BytesIO(data)) as src, av.open(out, "w", format="mp4",
                                                   options={"movflags": FRAGMENTED_MP4}) as dst:
        source = src.streams.video[0]
        rate = source.average_rate or source.guessed_rate or Fraction(25)
        encoder = _encoder()
        target = dst.add_stream(encoder, rate=rate, options=ENCODER_OPTIONS.get(encoder, {}))
        target.width, target.height = source.codec_context.width, source.codec_context.height
        target.pix_fmt = "yuv420p"
        target.time_base = MILLISECOND  # fine enough for any frame rate, and within what mpeg4 accepts
        last = -1
        for number, frame in enumerate(src.decode(source)):
            seconds = frame.pts * frame.time_base if frame.pts is not None else number / rate
            pts = max(round(seconds / MILLISECOND), last + 1)  # strictly increasing, whatever the source did
            masked = av.VideoFrame.from_ndarray(apply_privacy_masks(frame.to_ndarray(format="bgr24"), polygons),
                                                format="bgr24")
            masked.pts, masked.time_base, last = pts, MILLISECOND, pts
            dst.mux(target.encode(masked))
        dst.mux(target.encode(None))
    return out.getvalue()
