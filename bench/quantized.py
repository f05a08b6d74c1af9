"""Per-call latency of the FP32 detectors against their INT8 builds (scripts/quantize_models.py), one thread.

Run ``python bench/quantized.py [--int8 var/quantized] [--calls 200]``. It prints figures and asserts nothing.
For each model: the median (and p90) of N ``InferenceSession.run`` calls on the model's own input tensor made
from real coco128 images (cycled), and of N ``Detector.detect`` calls on the full images (pre- and
post-processing included), then the speed-up FP32 / INT8. FP32 and INT8 calls are interleaved, so a machine
that gets busier during the run slows both alike.

Last line: ``int8_speedup_min=X`` (the smaller raw speed-up of the models measured).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from pipeline import data_dir, ensure_models  # bench/pipeline.py, beside this script
from trustcam.vision.catalog import get_spec, spec_for_file
from trustcam.vision.detectors import Detector, load_detector
from trustcam.vision.detectors.onnx_models import load_file

MODELS = ("yolox-nano", "nanodet-m-320")


def images(count: int) -> list[np.ndarray]:
    folder = data_dir() / "coco128-train" / "images"
    paths = sorted(folder.rglob("*.jpg"))[:count]
    return [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]


def interleaved(a: Detector, b: Detector, inputs: list[np.ndarray], calls: int, raw: bool) -> tuple[list[float],
                                                                                                       list[float]]:
    """Per-call seconds of ``a`` and ``b``, alternating call by call on the same inputs."""
    times: tuple[list[float], list[float]] = ([], [])
    tensors = [(a.preprocess(i)[0], b.preprocess(i)[0]) for i in inputs] if raw else []
    for n in range(calls):
        for k, det in enumerate((a, b)):
            start = time.perf_counter()
            if raw:
                det.run_raw(tensors[n % len(tensors)][k])
            else:
                det.detect(inputs[n % len(inputs)])
            times[k].append(time.perf_counter() - start)
    return times


def ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--int8", type=Path, default=Path("var/quantized"), help="folder of <model>-int8.onnx")
    parser.add_argument("--calls", type=int, default=200, help="calls per model and kind (median of N)")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    ensure_models()
    inputs = images(16)
    speedups: list[float] = []
    print(f"{'model':15s} {'call':7s} {'fp32 p50':>9s} {'int8 p50':>9s} {'fp32 p90':>9s} {'int8 p90':>9s} "
          f"{'speed-up':>8s}   (ms, 1 thread, {args.calls} calls)")
    for name in args.models.split(","):
        path = args.int8 / f"{name}-int8.onnx"
        if not path.is_file():
            print(f"{path}: not found; build it with `python scripts/quantize_models.py --models {name}`",
                  file=sys.stderr)
            return 1
        fp32 = load_detector(name, threads=1)
        int8 = load_file(spec_for_file(path, get_spec(name).architecture, f"{name}-int8"), path, threads=1)
        for kind, raw in (("raw", True), ("detect", False)):
            interleaved(fp32, int8, inputs, 10, raw)  # warm-up
            a, b = interleaved(fp32, int8, inputs, args.calls, raw)
            speedup = ms(a, 50) / ms(b, 50)
            if raw:
                speedups.append(speedup)
            print(f"{name:15s} {kind:7s} {ms(a, 50):9.2f} {ms(b, 50):9.2f} {ms(a, 90):9.2f} {ms(b, 90):9.2f} "
                  f"{speedup:7.2f}x")
    print(f"int8_speedup_min={min(speedups):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
