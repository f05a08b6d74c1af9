"""Corruption benchmark: what each image condition costs per image, alone and with the detector behind it.

Run ``python bench/assess.py``. It prints figures and asserts nothing. On coco128 images (640 px, first
``--images`` of them) it measures, for every condition of :mod:`trustcam.assess.conditions` at severities 1, 3
and 5,

* the corruption alone: wall and CPU milliseconds per image (mean over the images),
* end to end: images per second of corrupt + ``FrameDetector.detect_full`` with the configured detector (default
  settings: yolox-nano, 1 thread, tiling auto), which is what ``trustcam assess`` does per image and condition,

and the clean images per second (detector only) for reference. The last line is ``clean_images_per_s=X``, for
scripts that track it. Each (condition, severity) is warmed up on one image first (transform caches, scratch
arrays). Timings are wall-clock on a possibly shared machine: compare runs on the same box.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import albumentations
import av
import cv2
import numpy as np

from trustcam import paths
from trustcam.assess.conditions import CONDITIONS, corrupt
from trustcam.config import Settings
from trustcam.vision import catalog
from trustcam.vision.detectors import load_detector
from trustcam.vision.frame_detector import FrameDetector

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("TRUSTCAM_DATA_DIR") or ROOT.parent / "shared" / "data").resolve()


def ensure_model(name: str) -> None:
    """Install the model from local folders if it is missing (never downloads)."""
    spec = catalog.get_spec(name)
    catalog.install(spec, sources=[*paths.model_sources(), ROOT.parent / "shared" / "models"], allow_download=False)


def load_images(count: int) -> list[np.ndarray]:
    folder = data_dir() / "coco128-train" / "images"
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
    if not files:
        sys.exit(f"no images in {folder} (set TRUSTCAM_DATA_DIR)")
    images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in files]
    return [img for img in images if img is not None]


def run(images: list[np.ndarray], detector: FrameDetector, condition: str | None,
        severity: int) -> tuple[float, float, float]:
    """(corruption wall ms, corruption CPU ms, end-to-end images/s) over ``images``."""
    if condition is not None:
        corrupt(images[0], condition, severity, seed=0)  # warm-up: caches and scratch arrays
    wall = cpu = 0.0
    start = time.perf_counter()
    for n, image in enumerate(images):
        t0, c0 = time.perf_counter(), time.process_time()
        x = image if condition is None else corrupt(image, condition, severity, seed=n)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        detector.detect_full(x)
    total = time.perf_counter() - start
    return 1000 * wall / len(images), 1000 * cpu / len(images), len(images) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="coco128 images to use (default 32)")
    parser.add_argument("--severities", default="1,3,5", help="comma-separated severities (default 1,3,5)")
    args = parser.parse_args()
    severities = [int(s) for s in args.severities.split(",")]

    settings = Settings().detector
    ensure_model(settings.model)
    detector = FrameDetector(load_detector(settings.model, threads=settings.threads,
                                           score_threshold=settings.score_threshold), settings.tiling)
    images = load_images(args.images)
    sizes = {f"{img.shape[1]}x{img.shape[0]}" for img in images}
    print(f"trustcam corruption bench: {os.cpu_count()} cores ({platform.machine()}), OpenCV {cv2.__version__} "
          f"({cv2.getNumThreads()} threads), albumentations {albumentations.__version__}, PyAV {av.__version__}")
    print(f"{len(images)} coco128 images ({len(sizes)} sizes, e.g. {sorted(sizes)[0]}), detector {settings.model} "
          f"({settings.threads} thread(s), tiling {settings.tiling})")

    for image in images[:4]:  # warm the detector
        detector.detect_full(image)
    _, _, clean = run(images, detector, None, 0)
    print(f"\nclean: {clean:.1f} images/s ({1000 / clean:.1f} ms/image, detector only)\n")

    header = f"{'condition':<15} {'sev':>3} {'corrupt ms':>10} {'cpu ms':>7} {'e2e img/s':>9} {'vs clean':>8}"
    print(header)
    print("-" * len(header))
    start = time.perf_counter()
    slowest: tuple[float, str] = (0.0, "")
    for condition in CONDITIONS:
        for severity in severities:
            ms, cpu_ms, e2e = run(images, detector, condition, severity)
            slowest = max(slowest, (ms, f"{condition} {severity}"))
            print(f"{condition:<15} {severity:>3d} {ms:>10.2f} {cpu_ms:>7.2f} {e2e:>9.1f} {e2e / clean - 1:>+8.0%}")
    print(f"\ncorrupt ms: wall time of corrupt() per image (mean); cpu ms: process CPU time for it (all threads); "
          f"e2e: corrupt + detect_full.\nslowest corruption: {slowest[1]} ({slowest[0]:.1f} ms); "
          f"table took {time.perf_counter() - start:.0f}s")
    print(f"clean_images_per_s={clean:.1f}")


if __name__ == "__main__":
    main()
