"""Faces of tracked people, for cameras with ``faces.enabled``: who is this person, from their best face.

Per person track (only inside ``faces.zones`` when set, tested on the foot point like rules):

* every ``sample_every`` analysed frames, YuNet looks for a face in the upper part of the person's box (a crop:
  the head is there, and a crop is far cheaper than the whole frame);
* the best face of the track is kept by quality (size, sharpness, frontal pose);
* it is embedded and matched only when it beats the last embedded face by ``improve_by`` (the embedding costs
  ~20x the detection), at most ``max_embeds`` times per track;
* the answer is the enrolled identity, or "unknown face": a stranger's embedding is matched and then dropped,
  never stored (there is no option to keep strangers' templates: consent is what makes a template).

The embedding of any face, known or not, lives only for the duration of one match.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from trustcam.config.schema import CameraConfig
from trustcam.errors import UserError
from trustcam.events.model import FaceIdentity
from trustcam.ingest.frame import Frame
from trustcam.storage.faces import UNKNOWN
from trustcam.vision.faces import Face, FaceRecognizer
from trustcam.vision.tracker import TrackedObject

if TYPE_CHECKING:
    from trustcam.storage.faces import FaceStore

log = logging.getLogger(__name__)

PERSON = "person"
SAMPLE_EVERY = 3  # analysed frames between two face detections on one track (5 fps analysis: ~0.6 s)
IMPROVE_BY = 0.1  # quality score (0..1) a face must gain over the last embedded one to be embedded again
MAX_EMBEDS = 5  # per track: a person standing for minutes is not re-embedded forever
MIN_FACE_PX = 32  # smaller faces give embeddings too unreliable to name anyone (enrolment needs 40)
CROP_PAD = 0.1  # of the box width, each side: a face at the box's edge is not cut
CONTEXT = 0.6  # of the face size, each side: room for the alignment's padding when embedding


@dataclass(frozen=True)
class FaceModels:
    """The recogniser and the enrolled gallery, built once by the service and shared by the cameras with faces on
    (both are thread-safe)."""

    recognizer: FaceRecognizer
    store: FaceStore


@dataclass
class FaceStats:
    detections: int = 0  # face detection runs (one per sampled person crop)
    faces_found: int = 0
    embeddings: int = 0
    identified: int = 0  # embeddings that matched an enrolled identity
    unknown: int = 0
    detect_seconds: float = 0.0
    embed_seconds: float = 0.0  # alignment + embedding + matching


@dataclass
class _Track:
    seen: int = 0  # analysed frames this track was present (and in a face zone)
    best_quality: float = -1.0
    embedded_quality: float = -math.inf
    embeds: int = 0
    last_seen: float = 0.0


class FaceTracks:
    """One camera's face sampling and matching, fed the tracked objects of each analysed frame."""

    def __init__(self, camera: CameraConfig, models: FaceModels, threshold: float, *,
                 sample_every: int = SAMPLE_EVERY, improve_by: float = IMPROVE_BY, max_embeds: int = MAX_EMBEDS,
                 min_face_px: float = MIN_FACE_PX, forget_after_s: float = 60.0) -> None:
        if not camera.faces.enabled:
            raise ValueError("FaceTracks built for a camera with faces.enabled false; nothing face-related may "
                             "run there")
        self.camera = camera
        self.recognizer = models.recognizer
        self.store = models.store
        self.threshold = threshold
        self.sample_every = max(1, sample_every)
        self.improve_by = improve_by
        self.max_embeds = max_embeds
        self.min_face_px = min_face_px
        self.forget_after_s = forget_after_s
        self.stats = FaceStats()
        self._tracks: dict[int, _Track] = {}
        self._zones: dict[str, np.ndarray] | None = None
        self._zone_size: tuple[int, int] | None = None
        self._store_problem: str | None = None

    def update(self, frame: Frame, objects: Iterable[TrackedObject]) -> dict[int, FaceIdentity]:
        """Sample faces of this frame's people; returns the tracks whose identity was (re)decided now."""
        decided: dict[int, FaceIdentity] = {}
        now = frame.time
        for obj in objects:
            if obj.label != PERSON or not self._in_zones(obj, frame.width, frame.height):
                continue
            track = self._tracks.setdefault(obj.track_id, _Track())
            track.last_seen = now
            track.seen += 1
            if (track.seen - 1) % self.sample_every or track.embeds >= self.max_embeds:
                continue
            identity = self._sample(frame, obj, track)
            if identity is not None:
                decided[obj.track_id] = identity
        self._tracks = {tid: t for tid, t in self._tracks.items() if now - t.last_seen <= self.forget_after_s}
        return decided

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop the state of ended tracks (their events are finished)."""
        for track_id in track_ids:
            self._tracks.pop(track_id, None)

    # --- one track, one frame -------------------------------------------------------------------------------

    def _sample(self, frame: Frame, obj: TrackedObject, track: _Track) -> FaceIdentity | None:
        face = self._face_of(frame, obj)
        if face is None or face.size < self.min_face_px:
            return None
        quality = face.quality.score
        track.best_quality = max(track.best_quality, quality)
        if quality < track.embedded_quality + self.improve_by:
            return None  # not meaningfully better than the face the current answer came from
        identity = self._identify(frame, face, quality)
        if identity is not None:
            track.embedded_quality = quality
            track.embeds += 1
        return identity

    def _face_of(self, frame: Frame, obj: TrackedObject) -> Face | None:
        """The face of this person: found in the upper part of its box, the one nearest the box's vertical axis
        (another person's face may overlap the box), in frame coordinates."""
        x1, y1, x2, y2 = obj.box
        w, h = x2 - x1, y2 - y1
        if w < self.min_face_px or h < self.min_face_px:
            return None
        pad = CROP_PAD * w
        # a standing person's head is in the top half; a close-up (box about as wide as tall) is mostly head
        top = min(h, max(0.5 * h, w))
        crop_box = _clip((x1 - pad, y1 - pad, x2 + pad, y1 + top), frame.width, frame.height)
        if crop_box[2] - crop_box[0] < self.min_face_px or crop_box[3] - crop_box[1] < self.min_face_px:
            return None
        start = time.perf_counter()
        faces = self.recognizer.faces_in(np.ascontiguousarray(frame.crop(crop_box)))
        self.stats.detect_seconds += time.perf_counter() - start
        self.stats.detections += 1
        if not faces:
            return None
        self.stats.faces_found += 1
        axis = (x1 + x2) / 2 - crop_box[0]
        face = min(faces, key=lambda f: (abs(f.center[0] - axis), -f.quality.score))
        return _shifted(face, crop_box[0], crop_box[1])

    def _identify(self, frame: Frame, face: Face, quality: float) -> FaceIdentity | None:
        """Embed ``face``, match it and forget the embedding; None if the gallery cannot be read (logged)."""
        size = face.size
        context = _clip((face.box[0] - CONTEXT * size, face.box[1] - CONTEXT * size, face.box[2] + CONTEXT * size,
                         face.box[3] + CONTEXT * size), frame.width, frame.height)
        start = time.perf_counter()
        try:
            vector = self.recognizer.embed(np.ascontiguousarray(frame.crop(context)),
                                           _shifted(face, -context[0], -context[1]))
            self.stats.embeddings += 1
            found = self.store.match(vector, self.threshold)
        except UserError as exc:  # a key file gone, a gallery that does not decrypt: name it, keep the camera
            if str(exc) != self._store_problem:
                self._store_problem = str(exc)
                log.error("camera faces: matching failed (%s); events get no identity until it is fixed", exc)
            return None
        finally:
            self.stats.embed_seconds += time.perf_counter() - start
        del vector  # never kept: a stranger's face leaves nothing behind
        if found is None:
            self.stats.unknown += 1
            return FaceIdentity(UNKNOWN, None, None, round(quality, 4))
        self.stats.identified += 1
        return FaceIdentity(found.identity, found.distance, found.margin, round(quality, 4))

    def _in_zones(self, obj: TrackedObject, width: int, height: int) -> bool:
        """True when faces.zones is unset, or the object's foot point is inside one of them."""
        names = self.camera.faces.zones
        if not names:
            return True
        if self._zones is None or self._zone_size != (width, height):
            self._zones = {name: np.array([[x * width, y * height] for x, y in self.camera.zones[name].coordinates],
                                          np.float32) for name in names}
            self._zone_size = (width, height)
        foot = obj.foot
        return any(cv2.pointPolygonTest(poly, foot, False) >= 0 for poly in self._zones.values())


def _clip(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    x1, y1 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    return x1, y1, max(x1, min(width, math.ceil(box[2]))), max(y1, min(height, math.ceil(box[3])))


def _shifted(face: Face, dx: float, dy: float) -> Face:
    """``face`` moved by (dx, dy): from crop to frame coordinates and back."""
    x1, y1, x2, y2 = face.box
    return dataclasses.replace(face, box=(x1 + dx, y1 + dy, x2 + dx, y2 + dy),
                               landmarks=tuple((x + dx, y + dy) for x, y in face.landmarks))

