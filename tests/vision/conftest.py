"""Fixtures for the vision tests: the coco128 samples and a helper module (``coco128``) beside this file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ has no packages: make `import coco128` work

import coco128


@pytest.fixture(scope="session")
def coco_root(data_dir: Path) -> Path:
    root = data_dir / "coco128-train"
    if not (root / "images").is_dir() or not (root / "labels").is_dir():
        pytest.fail(f"coco128 not found at {root} (expected images/ and labels/)")
    return root


@pytest.fixture(scope="session")
def coco_samples(coco_root: Path) -> list[coco128.Sample]:
    return list(coco128.samples(coco_root))
