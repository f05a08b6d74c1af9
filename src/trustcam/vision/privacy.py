"""Privacy masks and face blurring: what a user is shown of a camera (live, snapshots, clips).

Masks are polygons of a camera blacked out for users without the ``unmasked`` permission; on cameras with
``faces.enabled``, faces are blurred (``trustcam.vision.face_blur``) for users without the ``biometrics`` permission.
:func:`redaction` decides both for one viewer and camera, :func:`apply_redaction` applies both in one pass.

Both happen when footage is *shown*, never when it is recorded: the vault keeps the original, so evidence stays
original and a user granted the permission (per user, by an admin) sees it whole. No role grants either, admins
included: seeing behind a mask or an unblurred face is a deliberate, audited grant.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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

    @property
    def biometrics(self) -> bool: ...


def must_mask(viewer: Viewer, camera: CameraConfig | None) -> bool:
    """True when ``camera`` has privacy masks and ``viewer`` lacks the ``unmasked`` permission (whatever its role).

    A camera no longer in the config has no masks to apply (None): its footage is shown as recorded."""
    return camera is not None and bool(camera.privacy_masks) and not viewer.unmasked


def must_blur_faces(viewer: Viewer, camera: CameraConfig | None) -> bool:
    """True when ``camera`` recognises faces (``faces.enabled``) and ``viewer`` lacks the ``biometrics`` permission
    (whatever its role). A camera no longer in the config is shown as recorded, as for masks."""
    return camera is not None and camera.faces.enabled and not viewer.biometrics


@dataclass(frozen=True)
class Redaction:
    """What one viewer is shown of one camera: its privacy masks filled black (``polygons``) and, with ``faces``,
    every face blurred. Empty (false): the original footage."""

    polygons: tuple[Polygon, ...] = ()
    faces: bool = False

    def __bool__(self) -> bool:
        return bool(self.polygons) or self.faces

    @property
    def masked(self) -> bool:
        return bool(self.polygons)

    @property
    def key(self) -> str:
        """Names the variant (cache keys): one variant is never served to a user who should get another."""
        return "+".join(n for n, on in (("masked", self.masked), ("blurred", self.faces)) if on) or "original"

    @property
    def reason(self) -> str:
        """For audit entries of a refused export."""
        return ", ".join(n for n, on in (("privacy masks", self.masked), ("faces", self.faces)) if on)

    def lost(self, now: Redaction) -> str | None:
        """Why a view started with this redaction must end now that the viewer needs ``now`` (a permission was
        revoked), or None."""
        if now.masked and not self.masked:
            return "unmasked permission revoked"
        if now.faces and not self.faces:
            return "biometrics permission revoked"
        return None


ORIGINAL = Redaction()


def redaction(viewer: Viewer, camera: CameraConfig | None) -> Redaction:
    """What ``viewer`` may not see of ``camera``: the one decision for live, snapshots, clips and exports."""
    polygons = tuple(camera.privacy_masks) if camera is not None and must_mask(viewer, camera) else ()
    return Redaction(polygons, must_blur_faces(viewer, camera))


def export_refusal(camera: str, view: Redaction | None = None) -> str:
    """Why an evidence export is refused to a user who sees ``camera`` masked or with faces blurred: a bundle is the
    original, signed footage; a redacted copy would be neither original nor verifiable against the vault's chain,
    so none is made."""
    reasons = []
    if view is None or view.masked:
        reasons.append(f"camera '{camera}' has privacy masks and you lack the 'unmasked' permission: an evidence "
                       "export is the original, unmasked footage, so it is refused; ask an admin to export it or to "
                       "grant you 'unmasked' (PATCH /api/users/<name> {\"unmasked\": true} or `trustcam users "
                       "grant-unmasked <name>`)")
    if view is not None and view.faces:
        reasons.append(f"camera '{camera}' recognises faces and you lack the 'biometrics' permission: an evidence "
                       "export is the original footage with faces unblurred, so it is refused; ask an admin to "
                       "export it or to grant you 'biometrics' (PATCH /api/users/<name> {\"biometrics\": true} or "
                       "`trustcam users grant-biometrics <name>`)")
    return "; ".join(reasons)


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


FaceFinder = Callable[[np.ndarray], Sequence[tuple[int, int, int, int]] | None]  # None: no detector, blur it all


def apply_redaction(image: np.ndarray, view: Redaction, overlay: Callable[[np.ndarray], np.ndarray] | None = None,
                    faces: FaceFinder | None = None) -> np.ndarray:
    """A copy of ``image`` as ``view`` allows it to be shown, in the one safe order: faces blurred on the camera's
    own pixels (found by ``faces``, default: detected in ``image``), then ``overlay`` (boxes and zones drawn: they
    stay readable), then masks filled black over everything (a box inside a mask shows nothing either)."""
    from trustcam.vision import face_blur

    shown = image
    if view.faces:
        shown = face_blur.blur_boxes(image, (faces or face_blur.face_boxes)(image))
    if overlay is not None:
        shown = overlay(shown)
    if view.polygons:
        return apply_privacy_masks(shown, view.polygons)
    return image.copy() if shown is image else shown


def redact_jpeg(data: bytes, view: Redaction, quality: int = 90) -> bytes:
    """A stored snapshot (JPEG or PNG) decoded, redacted as ``view`` says and encoded again as JPEG."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("the snapshot is not a decodable image, so its privacy masks and face blurring cannot be "
                         "applied")
    ok, encoded = cv2.imencode(".jpg", apply_redaction(image, view), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError("could not encode the redacted snapshot as JPEG")
    return encoded.tobytes()


def mask_jpeg(data: bytes, polygons: Sequence[Polygon], quality: int = 90) -> bytes:
    """A stored snapshot (JPEG or PNG) decoded, masked and encoded again as JPEG."""
    return redact_jpeg(data, Redaction(tuple(polygons)), quality)


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
    """An MP4 decoded, masked frame by frame and re-encoded into a fragmented MP4, in memory (see redact_video)."""
    return redact_video(data, Redaction(tuple(polygons)))


def redact_video(data: bytes, view: Redaction) -> bytes:
    """An MP4 decoded, redacted frame by frame (masks, faces blurred where they are and were in the frames just
    before) and re-encoded (libx264, else mpeg4) into a fragmented MP4, in memory.

    Only the video is kept: the result is a derived view for the browser, never evidence (that is the vault's
    original, exported by a user with the ``unmasked`` and, for face cameras, ``biometrics`` permissions)."""
    import av

    from trustcam.vision.face_blur import FaceTrail

    trail = FaceTrail()

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
            shown = apply_redaction(frame.to_ndarray(format="bgr24"), view, faces=trail.boxes)
            masked = av.VideoFrame.from_ndarray(shown, format="bgr24")
            masked.pts, masked.time_base, last = pts, MILLISECOND, pts
            dst.mux(target.encode(masked))
        dst.mux(target.encode(None))
    return out.getvalue()
