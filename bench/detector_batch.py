"""Detector service benchmark: per-region cost at batch 1, 4 and 8, and memory per additional camera.

Run ``python bench/detector_batch.py``. It prints figures and asserts nothing (about 3 minutes on 2 cores).

1. **Per-region cost.** B camera threads each send one region (real coco128 images, cropped to the model's input
   size) to one :class:`~trustcam.vision.detectors.service.DetectorService` at the same moment, ``--rounds`` times;
   the service gathers them into one batch (``max_batch`` = B). Printed: ms per batch call and per region, for the
   service with one worker thread and with one per core (the default ``trustcam run`` uses), next to the model
   in-process (no IPC) and, when ``onnx`` is installed, a dynamic-batch copy of yolox-nano run as ONE NCHW call
   (the bundled exports fix batch at 1, so the service loops over a batch inside its process).
2. **Memory.** ``trustcam run`` (server off, recording off, detection at 5 fps) on 1, 2 and 4 1080p cameras (the
   quiet car clip played like a live camera), RSS and PSS of the process tree (the main process, the one detector
   service, multiprocessing's resource tracker) after ``--warmup`` seconds, and the RSS per additional camera
   (1 -> 4, and 2 -> 4, once the batches' one-off cost is paid) next to the goal (<= 80 MiB, issue 15).

Last line: ``rss_per_additional_camera_mib=X``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_tree import memory_mib, tree
from trustcam.vision import catalog
from trustcam.vision.detectors.onnx_models import load_detector, load_file
from trustcam.vision.detectors.service import DetectorService

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TRUSTCAM_DATA_DIR", ROOT.parent / "shared" / "data"))
GOAL_RSS_MIB = 80.0  # issue 15: <= 80 MiB RSS per additional 1080p camera
MODEL = "yolox-nano"


def regions(count: int, size: int) -> list[np.ndarray]:
    """Model-sized crops of real images (what the pipeline sends for motion regions)."""
    paths = sorted((DATA / "coco128-train" / "images").glob("*.jpg"))[:count]
    crops = []
    for path in paths:
        image = cv2.imread(str(path))
        h, w = image.shape[:2]
        y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
        crops.append(np.ascontiguousarray(image[y : y + size, x : x + size]))
    if len(crops) < count:
        sys.exit(f"need {count} images in {DATA / 'coco128-train' / 'images'}; set TRUSTCAM_DATA_DIR")
    return crops


def _timed(run_round: Callable[[], None], rounds: int) -> float:
    """Seconds per round, after two warm-up rounds."""
    for _ in range(2):
        run_round()
    start = time.perf_counter()
    for _ in range(rounds):
        run_round()
    return (time.perf_counter() - start) / rounds


def time_service(batch: int, workers: int, crops: list[np.ndarray], rounds: int) -> tuple[float, float]:
    """(seconds per batch call, mean batch size) with ``batch`` camera threads released together each round."""
    service = DetectorService(MODEL, workers=workers, max_batch=batch, gather_s=0.05)
    clients = [service.client(deadline_s=30.0) for _ in range(batch)]
    start_round, end_round = threading.Barrier(batch + 1), threading.Barrier(batch + 1)
    stop = threading.Event()

    def camera(i: int) -> None:
        while True:
            start_round.wait()
            if stop.is_set():
                return
            clients[i].detect(crops[i % len(crops)])
            end_round.wait()

    threads = [threading.Thread(target=camera, args=(i,), daemon=True) for i in range(batch)]
    for t in threads:
        t.start()

    def run_round() -> None:
        start_round.wait()
        end_round.wait()

    try:
        per_call = _timed(run_round, rounds)
        stats = service.stats
        mean = stats.requests / max(stats.batches, 1)
    finally:
        stop.set()
        start_round.wait()
        for client in clients:
            client.close()
        service.close()
    return per_call, mean


def time_in_process(batch: int, crops: list[np.ndarray], rounds: int, detector: object) -> float:
    images = [crops[i % len(crops)] for i in range(batch)]
    return _timed(lambda: detector.detect_batch(images), rounds)  # type: ignore[attr-defined]


def dynamic_batch_detector(tmp: Path) -> object | None:
    """A dynamic-batch copy of the model (one NCHW call per batch), or None without the ``onnx`` package."""
    try:
        from trustcam.vision.detectors.onnx_models import dynamic_batch_copy

        spec = catalog.get_spec(MODEL)
        copy = dynamic_batch_copy(spec, spec.path(), tmp / "yolox-batch.onnx")
        return load_file(copy, tmp / "yolox-batch.onnx")
    except ModuleNotFoundError:
        return None


def batch_table(batches: list[int], rounds: int) -> None:
    workers = min(os.cpu_count() or 1, 4)
    crops = regions(8, 416)
    direct = load_detector(MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        dynamic = dynamic_batch_detector(Path(tmp))
        print(f"\nper-region cost, {MODEL}, 416x416 crops, {rounds} rounds ({os.cpu_count()} cores)")
        print(f"{'mode':<34} {'batch':>5} {'ms/call':>8} {'ms/region':>10} {'mean batch':>11}")
        for batch in batches:
            rows: list[tuple[str, float, float]] = []
            for w in sorted({1, workers}):
                per_call, mean = time_service(batch, w, crops, rounds)
                rows.append((f"service, {w} worker thread(s)", per_call, mean))
            rows.append(("in-process loop (no IPC)", time_in_process(batch, crops, rounds, direct), batch))
            if dynamic is not None:
                rows.append(("dynamic-batch copy, one NCHW call", time_in_process(batch, crops, rounds, dynamic),
                             batch))
            for mode, per_call, mean in rows:
                print(f"{mode:<34} {batch:>5} {per_call * 1000:>8.1f} {per_call * 1000 / batch:>10.1f} {mean:>11.2f}")
        if dynamic is None:
            print("(dynamic-batch row skipped: pip install '.[adversarial]' for the onnx package)")


# ------------------------------------------------------------------------------------------------ memory


def clip_1080p(cache: Path) -> Path:
    """The quiet car clip at 1080p (bench/pipeline.py's copy when present, else built once with ffmpeg)."""
    for path in (ROOT / "var" / "bench" / "car-1080p.mp4", cache / "car-1080p.mp4"):
        if path.is_file():
            return path
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg is needed to build the 1080p clip (apt install ffmpeg)")
    target = cache / "car-1080p.mp4"
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(DATA / "videos" / "car-detection.mp4"),
                    "-vf", "scale=1920:1080", "-c:v", "libx264", "-preset", "veryfast", "-an", str(target)],
                   check=True)
    return target






def measure_run(cameras: int, clip: Path, warmup: float, tmp: Path) -> tuple[float, float, int]:
    """(RSS MiB, PSS MiB, processes) of `trustcam run` with ``cameras`` cameras on ``clip``."""
    folder = tmp / f"run-{cameras}"
    folder.mkdir()
    config = folder / "trustcam.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(folder / "data"), "server": {"enabled": False},
        "cameras": {f"cam{i + 1:02d}": {"source": str(clip), "detect": {"fps": 5}} for i in range(cameras)}}))
    log = folder / "stderr.log"
    with open(log, "w") as err:
        process = subprocess.Popen([sys.executable, "-m", "trustcam.cli", "run", "--config", str(config)],
                                   stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 180
        while not any(line.startswith("running ") for line in log.read_text().splitlines()):
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"trustcam run did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        time.sleep(warmup)
        samples = []
        for _ in range(5):
            pids = tree(process.pid)
            samples.append((*memory_mib(pids), len(pids)))
            time.sleep(1)
        rss, pss, count = max(samples)
        return rss, pss, count
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def memory_table(counts: list[int], warmup: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        clip = clip_1080p(ROOT / "var" / "bench" / "detector_batch")
        print(f"\n`trustcam run`, {clip.name} as live 1080p cameras, detection at 5 fps, after {warmup:g} s")
        print(f"{'cameras':>7} {'RSS MiB':>8} {'PSS MiB':>8} {'processes':>9}")
        results = {}
        for n in counts:
            rss, pss, processes = measure_run(n, clip, warmup, Path(tmp))
            results[n] = (rss, pss)
            print(f"{n:>7} {rss:>8.0f} {pss:>8.0f} {processes:>9}")
    low, high = min(counts), max(counts)
    per_rss = (results[high][0] - results[low][0]) / (high - low)
    per_pss = (results[high][1] - results[low][1]) / (high - low)
    verdict = "met" if per_rss <= GOAL_RSS_MIB else "NOT met"
    print(f"per additional camera ({low} -> {high}): RSS {per_rss:.0f} MiB, PSS {per_pss:.0f} MiB "
          f"(goal <= {GOAL_RSS_MIB:.0f} MiB RSS: {verdict}; before the shared service: ~230 MiB RSS)")
    if len(counts) > 2:  # from the second camera on: the one-off cost of batches (worker threads' buffers) is paid
        mid = sorted(counts)[-2]
        print(f"per additional camera ({mid} -> {high}): RSS {(results[high][0] - results[mid][0]) / (high - mid):.0f}"
              f" MiB, PSS {(results[high][1] - results[mid][1]) / (high - mid):.0f} MiB")
    return per_rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=20, help="batch calls timed per row")
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 4], help="camera counts to measure")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of running before memory is read")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    for spec in catalog.CATALOG.values():
        catalog.install(spec, allow_download=False)
    batch_table(args.batches, args.rounds)
    if not args.skip_memory:
        per_rss = memory_table(sorted(args.cameras), args.warmup)
        print(f"rss_per_additional_camera_mib={per_rss:.1f}")


if __name__ == "__main__":
    main()
