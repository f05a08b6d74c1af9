"""Cluster benchmark: clip throughput with 1 vs 2 Ray worker processes, and the node's detector pool at batch 1 vs N.

    python bench/cluster.py [--jobs 2] [--seconds 60] [--callers 4] [--rounds 30] [--batch 4] [--cpus 2]

It prints figures and asserts nothing (about 2-3 minutes on 2 cores). A local Ray (one node, ``--cpus`` CPUs, no
dashboard) is started in this process and stopped at the end.

1. **Worker processes.** ``--jobs`` analyses of the person clip (its first ``--seconds`` seconds, cut once with
   ffmpeg into ``var/bench/cluster``; somebody walks through most of it, so the detector runs on most frames) by
   camera-like Ray actors, each running :func:`trustcam.service.analyze_file` (the whole pipeline, detection at
   5 fps) as fast as it can: all jobs in 1 worker process one after the other, then spread over 2 worker
   processes. Twice: each worker with its own in-process detector, and each worker calling the node's detector
   pool (:mod:`trustcam.cluster.detector_pool`, what a camera actor uses under ``trustcam cluster``). Printed:
   decoded and analysed frames per second of wall time (actors started and models loaded before the clock runs).
2. **Pool batch size.** ``--callers`` camera-like actors each send ``--rounds`` frames of the clip, one call at a
   time, to a pool with ``max_batch`` 1 and then ``--batch`` (and 1 caller at batch 1: the bare cost of the hop).
   Printed: the pool's mean batch, ms per call as a caller sees it (Ray round trip and queueing included), ms per
   frame of wall time (all callers' frames / wall seconds: the node's cost per frame), and the model run in this
   process as the reference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TRUSTCAM_DATA_DIR") or ROOT.parent / "shared" / "data").resolve()
CLIP = "one-by-one-person-detection.mp4"
DETECT_FPS = 5.0
GATHER_S = 0.005


def cut_clip(seconds: float, cache: Path) -> Path:
    """The first ``seconds`` of the person clip (stream copy, built once); the whole clip when 0."""
    source = DATA / "videos" / CLIP
    if not source.is_file():
        sys.exit(f"{source}: sample video not found; set TRUSTCAM_DATA_DIR to the shared data folder")
    if seconds <= 0:
        return source
    target = cache / f"person-{seconds:g}s.mp4"
    if not target.is_file():
        if shutil.which("ffmpeg") is None:
            sys.exit("ffmpeg is needed to cut the clip (apt-get install ffmpeg), or pass --seconds 0")
        cache.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}")
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), "-t", f"{seconds:g}", "-an",
                        "-c:v", "copy", "-f", "mp4", str(part)], check=True)
        part.replace(target)
    return target


def bench_settings(data_dir: Path) -> Any:
    from trustcam.config.schema import Settings

    return Settings(data_dir=data_dir, detector={"failover": []})  # type: ignore[arg-type]


class ClipWorker:
    """A camera-like worker process: the pipeline over a clip, with its own detector or the node's pool."""

    def __init__(self, use_pool: bool, pool_name: str | None) -> None:
        from trustcam.cluster.detector_pool import PoolClient, node_pool
        from trustcam.service import build_detector

        self.settings = bench_settings(Path(tempfile.mkdtemp(prefix="tc-bench-")))
        if use_pool:
            self.detector: Any = PoolClient(node_pool(self.settings, gather_s=GATHER_S, name=pool_name),
                                            deadline_s=10.0)
        else:
            self.detector = build_detector(self.settings)

    def ready(self) -> bool:
        return True

    def analyse(self, clips: list[str]) -> tuple[int, int]:
        """(decoded, analysed) frames over ``clips``, one after the other."""
        from trustcam.bus import Bus
        from trustcam.config.schema import CameraConfig
        from trustcam.service import analyze_file

        decoded = analysed = 0
        for clip in clips:
            camera = CameraConfig(source=clip, detect={"fps": DETECT_FPS})  # type: ignore[arg-type]
            with tempfile.TemporaryDirectory(prefix="tc-bench-") as tmp:
                result = analyze_file(clip, camera, self.settings, Bus(), self.detector, Path(tmp), "bench")
            if result.error:
                raise RuntimeError(f"{clip}: {result.error}")
            decoded += result.report.decoded
            analysed += result.pipeline.stats.frames
        return decoded, analysed


class Caller:
    """A camera-like process that calls the pool one frame at a time and times each call."""

    def __init__(self, pool_name: str, max_batch: int) -> None:
        from trustcam.cluster.detector_pool import PoolClient, node_pool

        settings = bench_settings(Path(tempfile.mkdtemp(prefix="tc-bench-")))
        self.client = PoolClient(node_pool(settings, max_batch=max_batch, gather_s=GATHER_S, name=pool_name),
                                 deadline_s=10.0)

    def run(self, frames: list[np.ndarray], rounds: int, start_at: float) -> list[float]:
        """Seconds per call, starting at wall time ``start_at`` (so that all callers start together)."""
        time.sleep(max(0.0, start_at - time.time()))
        took = []
        for i in range(rounds):
            start = time.perf_counter()
            self.client.detect(frames[i % len(frames)])
            took.append(time.perf_counter() - start)
        return took


def read_frames(clip: Path, count: int, every: int = 10) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(clip))
    frames: list[np.ndarray] = []
    index = 0
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        if index % every == 0:
            frames.append(frame)
        index += 1
    capture.release()
    return frames


def close_pool(name: str) -> None:
    import ray

    from trustcam.cluster.detector_pool import NAMESPACE

    handle = ray.get_actor(name, namespace=NAMESPACE)
    ray.get(handle.close.remote())
    ray.kill(handle, no_restart=True)


def workers_table(clip: Path, jobs: int) -> None:
    import ray

    print(f"\n1. {jobs} analyses of {clip.name} (analyze_file, detection at {DETECT_FPS:g} fps), all in 1 worker "
          "process vs spread over 2")
    print(f"{'detector':<22} {'workers':>7} {'wall s':>7} {'decoded fps':>12} {'analysed fps':>13} {'speed-up':>9}")
    remote = ray.remote(num_cpus=1)(ClipWorker)
    for use_pool in (False, True):
        base = None
        pool = "bench-clip-pool" if use_pool else None
        for count in (1, 2):
            workers = [remote.remote(use_pool, pool) for _ in range(count)]
            ray.get([w.ready.remote() for w in workers])  # started and model loaded: not timed
            shares = [[str(clip)] * (jobs // count + (1 if i < jobs % count else 0)) for i in range(count)]
            start = time.perf_counter()
            done = ray.get([w.analyse.remote(share) for w, share in zip(workers, shares, strict=True)])
            wall = time.perf_counter() - start
            decoded, analysed = sum(d for d, _ in done), sum(a for _, a in done)
            base = base or wall
            label = "node pool (1 process)" if use_pool else "in-process, per worker"
            print(f"{label:<22} {count:>7} {wall:>7.1f} {decoded / wall:>12.1f} {analysed / wall:>13.1f} "
                  f"{base / wall:>8.2f}x")
            for w in workers:
                ray.kill(w)
        if pool is not None:
            close_pool(pool)


def batch_table(clip: Path, callers: int, rounds: int, batch: int) -> None:
    import ray

    from trustcam.cluster.detector_pool import NAMESPACE
    from trustcam.vision.detectors.onnx_models import load_detector

    frames = read_frames(clip, 16)
    direct = load_detector("yolox-nano")
    for frame in frames[:3]:
        direct.detect(frame)
    start = time.perf_counter()
    for i in range(rounds):
        direct.detect(frames[i % len(frames)])
    in_process = (time.perf_counter() - start) / rounds
    print(f"\n2. node pool, {callers} caller processes x {rounds} frames ({frames[0].shape[1]}x{frames[0].shape[0]}),"
          f" one call at a time each, gather {GATHER_S * 1000:g} ms")
    print(f"{'callers':>7} {'max batch':>9} {'mean batch':>10} {'model calls':>11} {'ms/call':>8} {'ms/frame':>9} "
          f"{'frames/s':>9}")
    remote = ray.remote(num_cpus=0)(Caller)
    for count, max_batch in ((1, 1), (callers, 1), (callers, batch)):
        name = f"bench-pool-{count}-b{max_batch}"
        group = [remote.remote(name, max_batch) for _ in range(count)]
        ray.get([c.run.remote(frames, 3, 0.0) for c in group])  # warm-up: clients made, buffers grown
        pool = ray.get_actor(name, namespace=NAMESPACE)
        before = ray.get(pool.stats.remote())
        start_at = time.time() + 0.5
        took = ray.get([c.run.remote(frames, rounds, start_at) for c in group])
        wall = time.time() - start_at
        after = ray.get(pool.stats.remote())
        calls = after["calls"] - before["calls"]
        requests = after["requests"] - before["requests"]
        per_call = float(np.mean([t for ts in took for t in ts]))
        print(f"{count:>7} {max_batch:>9} {requests / max(calls, 1):>10.2f} {calls:>11} {per_call * 1000:>8.1f} "
              f"{wall * 1000 / requests:>9.1f} {requests / wall:>9.1f}")
        for c in group:
            ray.kill(c)
        close_pool(name)
    print(f"{'(the model in this process, one frame at a time)':<49} {in_process * 1000:>8.1f} "
          f"{in_process * 1000:>9.1f} {1 / in_process:>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="clip analyses in part 1 (split over the workers)")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of the clip to analyse (0 = all)")
    parser.add_argument("--callers", type=int, default=4, help="caller processes in part 2")
    parser.add_argument("--rounds", type=int, default=30, help="frames each caller sends in part 2")
    parser.add_argument("--batch", type=int, default=4, help="the pool's max batch compared with 1 in part 2")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs the local Ray offers")
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--skip-batch", action="store_true")
    args = parser.parse_args()

    import ray

    from trustcam.cluster.detector_pool import NAMESPACE
    from trustcam.vision import catalog

    for spec in catalog.CATALOG.values():
        catalog.install(spec, allow_download=False)
    clip = cut_clip(args.seconds, ROOT / "var" / "bench" / "cluster")
    load = os.getloadavg()
    print(f"{os.cpu_count()} cores, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; Ray {ray.__version__}"
          f", local node with {args.cpus} CPUs")
    ray.init(num_cpus=args.cpus, include_dashboard=False, namespace=NAMESPACE, logging_level="WARNING",
             log_to_driver=False)
    try:
        if not args.skip_workers:
            workers_table(clip, args.jobs)
        if not args.skip_batch:
            batch_table(clip, args.callers, args.rounds, args.batch)
    finally:
        ray.shutdown()
    load = os.getloadavg()
    print(f"\nload average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")


if __name__ == "__main__":
    main()
