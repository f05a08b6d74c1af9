"""Face recognition cost: faces per second (detect + align + embed) and the CPU a camera adds with faces on.

Run ``python bench/faces.py``. It prints figures and asserts nothing.

* Faces/s: YuNet detection, 5-point alignment and dlib's ResNet embedding on identity-labelled photos
  (``faces-id``, LFW deep-funneled 250 px, the face about 100 px) and on the large example photos
  (``faces/knn_examples``, up to 2000 px, detected at 640 px), one stream, timed per stage.
* Added CPU per camera: ``trustcam.service.analyze_file`` over the same clip with ``faces.enabled`` false and true
  (two people enrolled), CPU seconds of the process (all threads). Clips: a door camera built from the example
  photos (three people, each shown 2 s, as in tests/pipeline/test_pipeline_faces.py) and the person sample video
  (people walking through an office; faces small). The ratio is CPU with faces / CPU without.

Last line: ``faces_added_cpu_ratio=R`` for the door clip.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np

from pipeline import cpu_model, data_dir, ensure_models  # bench/pipeline.py, beside this script
from trustcam.bus import Bus
from trustcam.config.schema import Settings
from trustcam.service import AnalyzeResult, analyze_file, build_detector, build_face_models
from trustcam.storage.faces import Template
from trustcam.vision.face_tracks import FaceModels
from trustcam.vision.faces import FaceRecognizer, identity_set, load_image, single_face

ENROLMENT = {"Barack Obama": ["train/obama/obama.jpg", "train/obama/obama2.jpg"],
             "Kit Harington": ["train/kit_harington/john1.jpeg", "train/kit_harington/john2.jpeg"]}
SHOWN = ["test/obama1.jpg", "test/johnsnow_test1.jpg", "test/alex_lacamoire1.jpg"]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------------------ faces per second


def faces_per_second(recognizer: FaceRecognizer, images: list[Path], label: str) -> None:
    detect_s = embed_s = 0.0
    faces = 0
    cpu = cpu_seconds()
    for path in images:
        image = load_image(path)
        start = time.perf_counter()
        found = recognizer.faces_in(image)
        detect_s += time.perf_counter() - start
        if not found:
            continue
        start = time.perf_counter()
        recognizer.embed(image, found[0])
        embed_s += time.perf_counter() - start
        faces += 1
    cpu = cpu_seconds() - cpu
    total = detect_s + embed_s
    print(f"{label}: {len(images)} images, {faces} faces embedded")
    print(f"  detect (YuNet)         {1000 * detect_s / len(images):7.1f} ms/image")
    print(f"  align + embed (ResNet) {1000 * embed_s / max(faces, 1):7.1f} ms/face")
    print(f"  faces/s (one stream)   {faces / total:7.1f}   detect + align + embed, wall time")
    print(f"  CPU per face           {1000 * cpu / max(faces, 1):7.1f} ms   (all threads: OpenCV may use several)")


# ------------------------------------------------------------------------------------- added CPU per camera


def door_clip(path: Path, knn: Path, fps: int = 10, show_s: float = 2.0, gap_s: float = 2.0) -> Path:
    """Three people at a door, each for ``show_s``, an empty scene between (what the pipeline test uses)."""
    blank = np.full((720, 1280, 3), 128, np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}

        def show(image: np.ndarray, seconds: float) -> None:
            for _ in range(round(seconds * fps)):
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                    container.mux(packet)

        show(blank, gap_s)
        for name in SHOWN:
            photo = load_image(knn / name)
            scale = min(600 / photo.shape[0], 900 / photo.shape[1])
            small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            frame = blank.copy()
            h, w = small.shape[:2]
            frame[(720 - h) // 2:(720 - h) // 2 + h, (1280 - w) // 2:(1280 - w) // 2 + w] = small
            show(frame, show_s)
            show(blank, gap_s)
        for packet in stream.encode():
            container.mux(packet)
    return path


def site(root: Path, enabled: bool) -> Settings:
    return Settings(data_dir=root / "data", tracker={"lost_after_s": 1.0},
                    vault={"root": root / "rec", "key_file": root / "keys" / "kek",
                           "signing_key_file": root / "keys" / "sign"},
                    cameras={"cam": {"source": "x", "detect": {"fps": 5, "stationary_recheck_s": 0.5},
                                     "objects": {"track": ["person"]}, "faces": {"enabled": enabled}}})


def enrol(models: FaceModels, knn: Path) -> None:
    for name, files in ENROLMENT.items():
        templates = []
        for file in files:
            image = load_image(knn / file)
            face = single_face(models.recognizer, image, file)
            templates.append(Template(models.recognizer.embed(image, face),
                                      hashlib.sha256(file.encode()).hexdigest(), face.quality.score))
        models.store.enroll(name, templates, consent="benchmark", by="bench/faces.py")


def measure(run: Callable[[], AnalyzeResult], repeat: int) -> tuple[float, float, AnalyzeResult]:
    """(CPU s, wall s, result) of the run with the least CPU of ``repeat``."""
    best: tuple[float, float, AnalyzeResult] | None = None
    for _ in range(repeat):
        cpu, wall = cpu_seconds(), time.perf_counter()
        result = run()
        sample = (cpu_seconds() - cpu, time.perf_counter() - wall, result)
        if best is None or sample[0] < best[0]:
            best = sample
    assert best is not None
    return best


def added_cpu(clip: Path, seconds: float, root: Path, knn: Path, repeat: int) -> float:
    detector = build_detector(site(root, False))
    off = site(root / "off", False)
    on = site(root / "on", True)
    models = build_face_models(on)
    assert models is not None
    enrol(models, knn)
    cpu_off, wall_off, _ = measure(lambda: analyze_file(str(clip), off.cameras["cam"], off, Bus(), detector, None,
                                                        "cam"), repeat)
    cpu_on, wall_on, result = measure(lambda: analyze_file(str(clip), on.cameras["cam"], on, Bus(), detector, None,
                                                           "cam", faces=models), repeat)
    assert result.pipeline.faces is not None
    stats = result.pipeline.faces.stats
    frames = result.pipeline.stats.frames
    ratio = cpu_on / cpu_off
    print(f"{clip.name}: {seconds:.0f} s of video, {frames} analysed frames (5 fps)")
    print(f"  CPU faces off / on     {cpu_off:6.2f} s / {cpu_on:6.2f} s   (wall {wall_off:.2f} s / {wall_on:.2f} s)")
    print(f"  CPU ratio on/off       {ratio:6.2f}     (1.00 = faces cost nothing)")
    print(f"  added CPU              {1000 * (cpu_on - cpu_off) / frames:6.1f} ms per analysed frame, "
          f"{100 * (cpu_on - cpu_off) / seconds:.1f} % of one core per camera (at 5 fps analysis)")
    print(f"  face work              {stats.detections} face detections on person crops "
          f"({1000 * stats.detect_seconds / max(stats.detections, 1):.1f} ms each), {stats.embeddings} embeddings "
          f"({1000 * stats.embed_seconds / max(stats.embeddings, 1):.0f} ms each), {stats.identified} identified, "
          f"{stats.unknown} unknown")
    return ratio


def clip_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        return (container.duration or 0) / av.time_base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120, help="faces-id images timed (default 120)")
    parser.add_argument("--repeat", type=int, default=2, help="pipeline runs per setting, least CPU kept")
    args = parser.parse_args()
    ensure_models()
    data = data_dir()
    knn = data / "faces" / "knn_examples"
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, OpenCV threads {cv2.getNumThreads()}")
    recognizer = FaceRecognizer()
    lfw = [item.path for item in identity_set(data / "faces-id")[:args.images]]
    faces_per_second(recognizer, lfw, "faces-id (LFW 250 px)")
    faces_per_second(recognizer, sorted(knn.glob("*/*.jp*g")) + sorted(knn.glob("train/*/*.jp*g")),
                     "knn_examples (large photos)")
    with tempfile.TemporaryDirectory(prefix="trustcam-bench-faces-") as tmp:
        root = Path(tmp)
        door = door_clip(root / "door.mp4", knn)
        ratio = added_cpu(door, clip_seconds(door), root / "door", knn, args.repeat)
        office = data / "videos" / "one-by-one-person-detection.mp4"
        added_cpu(office, clip_seconds(office), root / "office", knn, 1)
    print(f"faces_added_cpu_ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
