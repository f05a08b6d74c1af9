"""Face detection, alignment, quality and embedding: YuNet finds faces, dlib aligns and embeds them.

* Detection: YuNet-n (ONNX, catalog entry ``yunet-n``, installed by ``trustcam models install``), run by OpenCV's
  ``FaceDetectorYN`` from the verified bytes (what was hashed is what runs).
* Alignment: dlib's 5-point shape predictor inside the YuNet box, then ``dlib.get_face_chip`` (150 px): the chip
  dlib's ResNet was trained on.
* Embedding: dlib's ResNet (128-d, Euclidean distance; same person is typically < 0.5). Maintained, installable and
  pinned: ``dlib-bin`` + ``face_recognition_models`` from PyPI, each weight file checked against its sha256 here
  before it is loaded. Nothing is downloaded at run time.
* Quality: size, sharpness and frontal pose, so the pipeline keeps the best face of a track.

Also here: the identity-labelled dataset reader and the threshold calibration behind ``trustcam faces calibrate``
(the match threshold comes from a target false-match rate measured on real pairs, not from a magic number).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from trustcam.errors import UserError
from trustcam.vision import catalog

YUNET = "yunet-n"
EMBEDDING_SIZE = 128
CHIP_SIZE = 150
CHIP_PADDING = 0.25
MIN_ENROL_SIZE = 40  # px: smaller faces give unreliable templates; enrolment refuses them


class FaceError(UserError):
    """A face model is missing or altered, or an image cannot be used; the message names it and the fix."""


@dataclass(frozen=True)
class PinnedFile:
    """A weight file shipped inside a PyPI package: pinned here, checked in place before loading."""

    filename: str
    sha256: str
    size: int


DLIB_PACKAGE = "face_recognition_models==0.3.0"
SHAPE_PREDICTOR = PinnedFile("shape_predictor_5_face_landmarks.dat",
                             "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888", 9_150_489)
RESNET = PinnedFile("dlib_face_recognition_resnet_model_v1.dat",
                    "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30", 22_466_066)


def dlib_model_dir() -> Path:
    """The ``models`` folder of ``face_recognition_models``, found without importing it (its ``__init__`` needs
    ``pkg_resources``, which recent setuptools no longer provide)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceError(f"the face embedding model is not installed; run `pip install {DLIB_PACKAGE} "
                        "dlib-bin==20.0.1.post1` (or `make setup`)")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def verify_pinned(pin: PinnedFile, folder: Path | None = None) -> Path:
    """The pinned file's path, or :class:`FaceError` if it is absent or its sha256 differs (refused, never run)."""
    path = (folder or dlib_model_dir()) / pin.filename
    if not path.is_file():
        raise FaceError(f"{path}: face model file missing; reinstall it with `pip install --force-reinstall "
                        f"{DLIB_PACKAGE}`")
    actual = catalog.sha256_of(path)
    if actual != pin.sha256:
        raise FaceError(f"{path} has sha256 {actual}, but trustcam pins {pin.sha256}: the file is corrupt or not "
                        f"the expected model and is refused; run `pip install --force-reinstall {DLIB_PACKAGE}`")
    return path


# --- faces and their quality ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceQuality:
    """Why one face of a track is better than another; ``score`` (0..1) ranks them, it is not a probability."""

    size: float  # shorter side of the box, px
    sharpness: float  # variance of the Laplacian on the face scaled to 64 px
    frontal: float  # 1 = nose between the eyes (frontal), 0 = nose at an eye (profile)

    @property
    def score(self) -> float:
        size = min(max((self.size - 20.0) / 60.0, 0.0), 1.0)  # 20 px useless, 80 px and more full marks
        sharp = min(self.sharpness / 150.0, 1.0)
        return round(0.4 * size + 0.3 * sharp + 0.3 * self.frontal, 4)


@dataclass(frozen=True)
class Face:
    """One detected face in image pixels; ``landmarks`` are YuNet's: right eye, left eye, nose tip, right and left
    mouth corners."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    landmarks: tuple[tuple[float, float], ...]
    score: float
    quality: FaceQuality

    @property
    def size(self) -> float:
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


def _frontal(landmarks: np.ndarray) -> float:
    right_eye, left_eye, nose = landmarks[0], landmarks[1], landmarks[2]
    axis = left_eye - right_eye
    span = float(np.linalg.norm(axis))
    if span < 1e-6:
        return 0.0
    offset = abs(float(np.dot(nose - (right_eye + left_eye) / 2, axis / span))) / span  # 0 frontal, 0.5 profile
    return float(min(max(1.0 - offset / 0.5, 0.0), 1.0))


def _sharpness(image: np.ndarray, box: tuple[float, float, float, float]) -> float:
    h, w = image.shape[:2]
    x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
    x2, y2 = min(math.ceil(box[2]), w), min(math.ceil(box[3]), h)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return 0.0
    crop = image[y1:y2, x1:x2]
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    grey = cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def best_face(faces: Iterable[Face]) -> Face | None:
    """The face to embed for a track: highest quality (size, sharpness, frontal pose)."""
    return max(faces, key=lambda f: (f.quality.score, f.score), default=None)


# --- the recogniser ------------------------------------------------------------------------------------------


class FaceRecognizer:
    """Detect, align and embed faces in BGR images (thread-safe: one lock per model).

    ``faces_in`` downscales large frames to ``max_side`` for detection only (YuNet is fast at 640 px, 4x slower at
    2000 px, and finds the same faces); landmarks and embeddings use the full-resolution image.
    """

    def __init__(self, model_dir: Path | None = None, *, score_threshold: float = 0.6, nms_threshold: float = 0.3,
                 max_side: int = 640, dlib_dir: Path | None = None) -> None:
        import dlib

        spec = catalog.ASSETS[YUNET]
        catalog.require_signature(spec, model_dir)
        path = spec.path(model_dir)
        catalog.verify(spec, path)
        model = np.frombuffer(path.read_bytes(), np.uint8)
        if hashlib.sha256(model.tobytes()).hexdigest() != spec.sha256:  # changed since verify: refuse
            raise FaceError(f"{path} changed while it was being loaded; run `trustcam models install --force {YUNET}`")
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # a harmless backend warning per create
        try:
            self._detector = cv2.FaceDetectorYN.create("onnx", model, np.empty(0, np.uint8), (320, 320),
                                                       score_threshold, nms_threshold, 5000)
        finally:
            cv2.utils.logging.setLogLevel(level)
        self._predictor = dlib.shape_predictor(str(verify_pinned(SHAPE_PREDICTOR, dlib_dir)))
        self._resnet = dlib.face_recognition_model_v1(str(verify_pinned(RESNET, dlib_dir)))
        self._rectangle = dlib.rectangle
        self._chip = dlib.get_face_chip
        self.max_side = max_side
        self._detect_lock = threading.Lock()
        self._embed_lock = threading.Lock()

    def faces_in(self, image: np.ndarray) -> list[Face]:
        """Every face YuNet finds in a BGR image, with its quality, best first."""
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = image if scale == 1.0 else cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                      interpolation=cv2.INTER_AREA)
        with self._detect_lock:
            self._detector.setInputSize((small.shape[1], small.shape[0]))
            _, rows = self._detector.detect(small)
        faces = []
        for row in rows if rows is not None else ():
            x, y, bw, bh = (float(v) / scale for v in row[:4])
            box = (max(x, 0.0), max(y, 0.0), min(x + bw, float(w)), min(y + bh, float(h)))
            marks = row[4:14].reshape(5, 2) / scale
            quality = FaceQuality(size=round(min(box[2] - box[0], box[3] - box[1]), 1),
                                  sharpness=round(_sharpness(image, box), 1), frontal=round(_frontal(marks), 3))
            faces.append(Face(box=box, landmarks=tuple((float(a), float(b)) for a, b in marks),
                              score=round(float(row[14]), 4), quality=quality))
        return sorted(faces, key=lambda f: -f.quality.score)

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The 150x150 RGB chip dlib's ResNet expects: 5-point landmarks inside the face box, similarity warp."""
        rgb = np.ascontiguousarray(image[:, :, ::-1]) if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        x1, y1, x2, y2 = (round(v) for v in face.box)
        with self._embed_lock:
            shape = self._predictor(rgb, self._rectangle(x1, y1, x2, y2))
            return np.asarray(self._chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING))

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The face's 128-d embedding (float32); compare with Euclidean distance."""
        chip = self.align(image, face)
        with self._embed_lock:
            vector = self._resnet.compute_face_descriptor(chip)
        return np.asarray(vector, dtype=np.float32)


def load_image(path: Path) -> np.ndarray:
    """A BGR image from ``path``, or :class:`FaceError` naming the file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FaceError(f"{path}: not a readable image (JPEG, PNG, …); check the path")
    return image


def single_face(recognizer: FaceRecognizer, image: np.ndarray, source: str) -> Face:
    """The one usable face of an enrolment image, or :class:`FaceError` saying why the image is refused."""
    faces = recognizer.faces_in(image)
    if not faces:
        raise FaceError(f"{source}: no face found; use a photo where the face is visible, frontal and well lit")
    if len(faces) > 1:
        raise FaceError(f"{source}: {len(faces)} faces found; enrolment needs a photo of this person alone "
                        "(crop the others out)")
    face = faces[0]
    if face.size < MIN_ENROL_SIZE:
        raise FaceError(f"{source}: the face is only {face.size:.0f} px across (at least {MIN_ENROL_SIZE} needed); "
                        "use a larger or closer photo")
    return face


def central_face(faces: list[Face], image: np.ndarray) -> Face | None:
    """For labelled datasets whose subject is centred (LFW): the face nearest the centre, bystanders ignored."""
    h, w = image.shape[:2]
    return min(faces, key=lambda f: math.dist(f.center, (w / 2, h / 2)), default=None)


# --- identity-labelled datasets and calibration ----------------------------------------------------------------


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    identity: str
    group: str | None = None  # demographic label when the dataset has one (faces-id: gender)


def identity_set(root: Path, variant: str = "lfw_deepfunneled_250", identities: int | None = None) \
        -> list[LabelledImage]:
    """An identity-labelled set: ``faces-id`` (``identities.csv``, one ``variant`` folder), or any folder of
    ``<identity>/<images>``. ``identities`` keeps the first N identities (sorted), for quick runs."""
    if not root.is_dir():
        raise FaceError(f"{root}: dataset folder not found")
    images: list[LabelledImage] = []
    if (root / "identities.csv").is_file():
        with (root / "identities.csv").open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row["variant"] == variant:
                    images.append(LabelledImage(root / row["path"], row["identity"], row.get("gender") or None))
        if not images:
            raise FaceError(f"{root}/identities.csv has no image of variant '{variant}'; pick one of its variant "
                            "folders with --variant")
    else:
        suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            images += [LabelledImage(p, folder.name) for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes]
        if not images:
            raise FaceError(f"{root}: no <identity>/<image> files found; give a folder of one folder per person")
    if identities is not None:
        keep = set(sorted({i.identity for i in images})[:identities])
        images = [i for i in images if i.identity in keep]
    return images


@dataclass
class EmbeddedSet:
    """Embeddings of a labelled set; images where no face was found are listed in ``missed``."""

    embeddings: np.ndarray  # (n, 128) float32
    identities: list[str]
    groups: list[str | None]
    paths: list[Path]
    missed: list[Path] = field(default_factory=list)
    seconds: float = 0.0  # detect + align + embed, wall time

    @property
    def faces_per_second(self) -> float:
        return len(self.identities) / self.seconds if self.seconds else 0.0


def embed_set(recognizer: FaceRecognizer, images: list[LabelledImage],
              progress: Callable[[int, int], None] | None = None) -> EmbeddedSet:
    """Detect (central face), align and embed every image of a labelled set."""
    import time

    vectors: list[np.ndarray] = []
    result = EmbeddedSet(np.empty((0, EMBEDDING_SIZE), np.float32), [], [], [])
    start = time.perf_counter()
    for number, item in enumerate(images, 1):
        image = load_image(item.path)
        face = central_face(recognizer.faces_in(image), image)
        if face is None:
            result.missed.append(item.path)
        else:
            vectors.append(recognizer.embed(image, face))
            result.identities.append(item.identity)
            result.groups.append(item.group)
            result.paths.append(item.path)
        if progress is not None:
            progress(number, len(images))
    result.seconds = time.perf_counter() - start
    if vectors:
        result.embeddings = np.stack(vectors)
    return result


MIN_ERRORS = 30  # "rule of 30": an error rate is only estimated within ±30 % (90 % confidence) with 30 errors


@dataclass(frozen=True)
class Calibration:
    """The threshold that reaches ``target_fmr`` on a labelled set, and what it costs in false non-matches."""

    target_fmr: float
    threshold: float  # match when distance <= threshold
    fmr: float  # measured at the threshold
    fnmr: float
    genuine_pairs: int
    impostor_pairs: int
    identities: int
    images: int

    @property
    def supported(self) -> bool:
        """Whether the set has enough impostor pairs for ``MIN_ERRORS`` false matches at the target rate."""
        return self.impostor_pairs * self.target_fmr >= MIN_ERRORS

    @property
    def needed_impostor_pairs(self) -> int:
        return math.ceil(MIN_ERRORS / self.target_fmr)

    def as_dict(self) -> dict[str, Any]:
        return {"target_fmr": self.target_fmr, "threshold": self.threshold, "fmr": self.fmr, "fnmr": self.fnmr,
                "genuine_pairs": self.genuine_pairs, "impostor_pairs": self.impostor_pairs,
                "identities": self.identities, "images": self.images, "supported": self.supported}


def pair_distances(embeddings: np.ndarray, identities: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) Euclidean distances over every unordered pair of images."""
    vectors = embeddings.astype(np.float64)
    squared = (vectors * vectors).sum(1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * vectors @ vectors.T, 0.0))
    labels = np.asarray(identities)
    upper = np.triu(np.ones(distances.shape, dtype=bool), k=1)
    same = labels[:, None] == labels[None, :]
    return distances[upper & same], distances[upper & ~same]


def calibrate(embeddings: np.ndarray, identities: list[str], target_fmr: float) -> Calibration:
    """The largest threshold whose false-match rate on every impostor pair is at most ``target_fmr``.

    With k = floor(target × impostor pairs) false matches allowed, the threshold lies halfway between the (k+1)-th
    smallest impostor distance and the next smaller one, so at most k impostor pairs match (exactly k without ties).
    """
    if not 0 < target_fmr < 1:
        raise FaceError(f"--target-fmr {target_fmr}: give a rate between 0 and 1, e.g. 1e-3")
    genuine, impostor = pair_distances(embeddings, identities)
    if len(genuine) == 0 or len(impostor) == 0:
        raise FaceError("the calibration set needs at least two images of one person and two different people")
    impostor = np.sort(impostor)
    allowed = math.floor(target_fmr * len(impostor))
    upper = impostor[allowed] if allowed < len(impostor) else impostor[-1] + 1e-3
    below = impostor[impostor < upper]  # ties with the first refused pair are refused with it
    lower = below[-1] if len(below) else max(0.0, upper - 1e-3)
    threshold = round(float((lower + upper) / 2), 6)
    return Calibration(
        target_fmr=target_fmr, threshold=threshold,
        fmr=float(np.count_nonzero(impostor <= threshold) / len(impostor)),
        fnmr=float(np.count_nonzero(genuine > threshold) / len(genuine)),
        genuine_pairs=len(genuine), impostor_pairs=len(impostor),
        identities=len(set(identities)), images=len(identities))
