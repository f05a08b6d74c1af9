"""Build static INT8 versions of the bundled detectors, calibrated on coco128 through each backend's own
pre-processing, and print their sha256 so that a rebuild can be compared byte for byte.

    python scripts/quantize_models.py [--models yolox-nano,nanodet-m-320] \\
        [--calibration ../shared/data/coco128-train] [--images 64] [--seed 0] [--out var/quantized]

Writes ``OUT/<model>-int8.onnx``. Nothing is installed or promoted here: run ``trustcam models promote`` on the
output (see docs/models.md), which refuses the model if any condition regresses beyond the margin.
The FP32 models are installed from ``TRUSTCAM_MODEL_SOURCES`` if missing (never downloaded).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from trustcam.errors import UserError
from trustcam.vision import catalog
from trustcam.vision.quantize import QuantizeOptions, quantize_model

# Chosen per model by measuring person recall/precision on coco128 (docs/models.md, "INT8 models"): YOLOX-nano's
# depthwise blocks give activations with rare large outliers, which min/max ranges spend the 8 bits on; the
# 99.999th percentile keeps far more of its recall. NanoDet loses nothing with plain min/max.
DEFAULTS = {
    "yolox-nano": QuantizeOptions(method="percentile"),
    "nanodet-m-320": QuantizeOptions(method="minmax"),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="yolox-nano,nanodet-m-320", help="comma-separated catalog names")
    parser.add_argument("--calibration", type=Path, default=Path("../shared/data/coco128-train"),
                        help="folder of calibration images (searched recursively)")
    parser.add_argument("--images", type=int, default=64, help="number of calibration images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration image choice")
    parser.add_argument("--out", type=Path, default=Path("var/quantized"), help="output folder")
    parser.add_argument("--method", choices=("minmax", "entropy", "percentile"), default=None,
                        help="calibration method for every model (default: per model, see DEFAULTS)")
    parser.add_argument("--quantize-head", action="store_true",
                        help="quantise the output head too (default: keep it in float; it costs accuracy)")
    parser.add_argument("--per-tensor", action="store_true", help="per-tensor weights (default: per channel)")
    return parser.parse_args(argv)


def options_for(name: str, args: argparse.Namespace) -> QuantizeOptions:
    base = DEFAULTS.get(name, QuantizeOptions())
    return QuantizeOptions(images=args.images, seed=args.seed, per_channel=not args.per_tensor,
                           keep_head_float=not args.quantize_head, method=args.method or base.method)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        for name in [n.strip() for n in args.models.split(",") if n.strip()]:
            spec = catalog.get_spec(name)
            source, _ = catalog.install(spec, allow_download=False)
            options = options_for(name, args)
            start = time.perf_counter()
            result = quantize_model(spec, source, args.out / f"{name}-int8.onnx", args.calibration.resolve(),
                                    options)
            print(f"{name}: {result.path} ({result.size / 1e6:.2f} MB, {len(result.calibration)} calibration "
                  f"images, {options.method}, {'per-channel' if options.per_channel else 'per-tensor'}, "
                  f"{len(result.kept_float)} head nodes kept float, {time.perf_counter() - start:.0f} s)")
            print(f"  sha256 {result.sha256}")
            print(f"  gate: trustcam models promote {result.path} --name {name}-int8 "
                  f"--architecture {spec.architecture} --dataset {args.calibration} --baseline {name}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
