"""The model catalog refuses any file whose sha256 is not the pinned one: at install, at load and on verify."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trustcam.vision import catalog
from trustcam.vision.catalog import ModelError, ModelSpec
from trustcam.vision.detectors import load_detector

SPEC = catalog.CATALOG["nanodet-m-320"]


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def good_source(installed_models: None, tmp_path: Path) -> Path:
    """A local source folder holding a copy of the real, pinned model files (one folder per model)."""
    root = tmp_path / "sources"
    for spec in catalog.CATALOG.values():
        (root / spec.name).mkdir(parents=True)
        shutil.copyfile(spec.path(), root / spec.name / spec.filename)
    return root


@pytest.fixture
def tampered_source(good_source: Path, tmp_path: Path) -> Path:
    root = tmp_path / "tampered-sources"
    shutil.copytree(good_source, root)
    for spec in catalog.CATALOG.values():
        flip_byte(root / spec.name / spec.filename)
    return root


def install(spec: ModelSpec, directory: Path, sources: list[Path], force: bool = False) -> tuple[Path, str]:
    return catalog.install(spec, directory=directory, sources=sources, allow_download=False, force=force)


def test_install_from_a_local_source_checks_the_hash(good_source: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    path, origin = install(SPEC, models, [good_source])
    assert path == models / SPEC.name / SPEC.filename
    assert origin == str(good_source / SPEC.name / SPEC.filename)
    assert catalog.sha256_of(path) == SPEC.sha256 and path.stat().st_size == SPEC.size
    assert sorted(p.name for p in path.parent.iterdir()) == [SPEC.filename], "no partial files left"
    assert install(SPEC, models, [good_source]) == (path, "already installed")
    assert load_detector(SPEC.name, model_dir=models).sha256 == SPEC.sha256


def test_a_tampered_source_is_not_installed(tampered_source: Path, good_source: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    assert (tampered_source / SPEC.name / SPEC.filename).stat().st_size == SPEC.size  # same size, other bytes
    with pytest.raises(ModelError) as info:
        install(SPEC, models, [tampered_source])
    message = str(info.value)
    assert SPEC.name in message and "TRUSTCAM_MODEL_SOURCES" in message and SPEC.sha256[:12] in message
    target = SPEC.path(models)
    assert not target.exists()
    assert not any(target.parent.glob("*.part")), "the rejected copy is cleaned up"
    # the good copy in a later source is the one installed
    path, origin = install(SPEC, models, [tampered_source, good_source])
    assert origin.startswith(str(good_source)) and catalog.sha256_of(path) == SPEC.sha256


def test_a_tampered_installed_model_is_refused_at_load(good_source: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    path, _ = install(SPEC, models, [good_source])
    flip_byte(path, offset=1000)
    with pytest.raises(ModelError) as info:
        load_detector(SPEC.name, model_dir=models)
    message = str(info.value)
    assert SPEC.sha256 in message, message
    assert f"trustcam models install --force {SPEC.name}" in message, message
    assert str(path) in message and catalog.sha256_of(path) in message
    # install without --force does not silently keep or replace it
    with pytest.raises(ModelError):
        install(SPEC, models, [good_source])
    # the suggested fix works
    install(SPEC, models, [good_source], force=True)
    assert load_detector(SPEC.name, model_dir=models).name == SPEC.name


def test_a_missing_model_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"not installed .*trustcam models install nanodet-m-320"):
        load_detector(SPEC.name, model_dir=tmp_path / "empty")


def test_unknown_model_name_is_a_clear_error() -> None:
    for call in (lambda: catalog.get_spec("yolox-huge"), lambda: load_detector("yolox-huge")):
        with pytest.raises(ModelError) as info:
            call()
        message = str(info.value)
        assert "unknown model 'yolox-huge'" in message
        assert all(name in message for name in catalog.CATALOG)


# ---- CLI -------------------------------------------------------------------------------------------------


def _cli(*args: str, model_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRUSTCAM_MODEL_DIR": str(model_dir)}
    return subprocess.run([sys.executable, "-m", "trustcam.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env)


def test_cli_models_verify(good_source: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    for spec in catalog.CATALOG.values():
        install(spec, models, [good_source])

    ok = _cli("models", "verify", model_dir=models, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    for spec in catalog.CATALOG.values():
        assert f"{spec.name}: OK ({spec.sha256})" in ok.stdout

    flip_byte(catalog.CATALOG["yolox-nano"].path(models))
    bad = _cli("models", "verify", model_dir=models, cwd=tmp_path)
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    assert "error:" in bad.stderr and "yolox-nano" in bad.stderr and "--force" in bad.stderr, bad.stderr
    assert "nanodet-m-320: OK" in bad.stdout, "the intact model is still checked and reported"

    empty = _cli("models", "verify", model_dir=tmp_path / "nothing-here", cwd=tmp_path)
    assert empty.returncode == 1 and "not installed" in empty.stderr and "Traceback" not in empty.stderr

    unknown = _cli("models", "verify", "yolox-huge", model_dir=models, cwd=tmp_path)
    assert unknown.returncode == 1
    assert "unknown model 'yolox-huge'" in unknown.stderr and "Traceback" not in unknown.stderr
