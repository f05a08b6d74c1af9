"""Signed catalog entries: an altered pin, an unknown signer or a tampered local catalog is refused.

Each attack test does what an attacker with write access to the catalog or the model folder would do (swap the
file *and* re-pin it, re-sign with their own key, edit local-catalog.json) and checks that install, load and the
CLI refuse it, naming the entry.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from typer.testing import CliRunner, Result

from trustcam.cli import app
from trustcam.vision import catalog
from trustcam.vision.catalog import ModelError
from trustcam.vision.detectors import load_detector

REPO = Path(__file__).resolve().parents[2]
YOLOX = "yolox-nano"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of its own: the operator's key and trusted signers start empty in every test."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    return path


@pytest.fixture
def source(installed_models: None, tmp_path: Path) -> Path:
    """A local source folder holding copies of the real, pinned model files."""
    root = tmp_path / "sources"
    root.mkdir()
    for spec in catalog.CATALOG.values():
        shutil.copyfile(spec.path(), root / spec.filename)
    return root


@pytest.fixture
def models(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """An empty model folder for the CLI (after ``source`` has read the real installed models)."""
    path = tmp_path / "models"
    monkeypatch.setenv("TRUSTCAM_MODEL_DIR", str(path))
    return path


def cli(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def raw_key(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return key


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def flip_hex(value: str) -> str:
    return ("1" if value[0] == "0" else "0") + value[1:]


# ---- the project's catalog ---------------------------------------------------------------------------------


def test_the_shipped_catalog_verifies_with_the_committed_public_key() -> None:
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(catalog.PROJECT_PUBLIC_KEY))
    entries = [*catalog.CATALOG.values(), *catalog.ASSETS.values()]
    assert sorted(catalog.SIGNATURES) == sorted(e.name for e in entries), "every entry has a signature"
    for spec in entries:
        public.verify(bytes.fromhex(catalog.SIGNATURES[spec.name]), catalog.entry_message(spec))  # raises if bad
        check = catalog.require_signature(spec)
        assert (check.origin, check.signer) == ("project", catalog.PROJECT_PUBLIC_KEY)
    result = subprocess.run([sys.executable, "scripts/sign_catalog.py", "--check"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert catalog.fingerprint(catalog.PROJECT_PUBLIC_KEY) in result.stdout


def test_the_sign_script_refuses_a_key_that_is_not_the_project_key(tmp_path: Path) -> None:
    raw_key(tmp_path / "other.key")
    before = (REPO / "src/trustcam/vision/catalog.py").read_bytes()
    result = subprocess.run([sys.executable, "scripts/sign_catalog.py", "--key", str(tmp_path / "other.key")],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not the project key" in result.stderr, result.stderr
    assert (REPO / "src/trustcam/vision/catalog.py").read_bytes() == before


@pytest.mark.parametrize("field", ["sha256", "architecture", "input_size"])
def test_an_altered_builtin_entry_is_refused_at_install_and_load(field: str, source: Path, models: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    genuine = catalog.CATALOG[YOLOX]
    catalog.install(genuine, directory=models, sources=[source], allow_download=False)
    altered = replace(genuine, **{field: {"sha256": flip_hex(genuine.sha256), "architecture": "nanodet",
                                          "input_size": 640}[field]})
    monkeypatch.setitem(catalog.CATALOG, YOLOX, altered)

    for attempt in (lambda: load_detector(YOLOX, model_dir=models),
                    lambda: catalog.install(altered, directory=models, sources=[source], allow_download=False,
                                            force=True)):
        with pytest.raises(ModelError) as info:
            attempt()
        message = str(info.value)
        assert f"model '{YOLOX}'" in message and "altered after it was signed" in message, message

    result = cli("models", "install", "--offline", YOLOX)
    assert result.exit_code == 1 and YOLOX in result.stderr and "signature" in result.stderr, result.output
    listed = cli("models", "list")
    assert "REFUSED" in listed.stdout


def test_a_swapped_and_repinned_model_is_refused(source: Path, models: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The attack the hash pin alone does not stop: replace the file and write its hash into the entry."""
    genuine = catalog.CATALOG[YOLOX]
    evil_source = tmp_path / "evil"
    evil_source.mkdir()
    evil = shutil.copyfile(source / genuine.filename, evil_source / genuine.filename)
    flip_byte(evil)
    monkeypatch.setitem(catalog.CATALOG, YOLOX, replace(genuine, sha256=catalog.sha256_of(evil)))
    with pytest.raises(ModelError, match=f"model '{YOLOX}'.*altered after it was signed"):
        catalog.install(catalog.CATALOG[YOLOX], directory=models, sources=[evil_source], allow_download=False)
    assert not genuine.path(models).exists()


def test_a_builtin_entry_signed_by_another_key_is_refused(source: Path, models: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    spec = catalog.CATALOG[YOLOX]
    catalog.install(spec, directory=models, sources=[source], allow_download=False)
    monkeypatch.setitem(catalog.SIGNATURES, YOLOX, catalog.sign_entry(spec, Ed25519PrivateKey.generate()))
    with pytest.raises(ModelError, match=f"model '{YOLOX}'.*refused"):
        load_detector(YOLOX, model_dir=models)


# ---- the operator's own models -----------------------------------------------------------------------------


def sign_local(source: Path, tmp_path: Path, *options: str, name: str = "my-nanodet") -> tuple[Path, Result]:
    model = shutil.copyfile(source / catalog.CATALOG["nanodet-m-320"].filename, tmp_path / "my_nanodet.onnx")
    return model, cli("models", "sign", str(model), "--name", name, "--architecture", "nanodet", *options)


def test_models_sign_then_install_load_and_list(source: Path, models: Path, home: Path, tmp_path: Path) -> None:
    model, result = sign_local(source, tmp_path)
    assert result.exit_code == 0, result.output
    key_file = home / ".config" / "trustcam" / "model-signing.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and "back it up" in result.stderr
    key = Ed25519PrivateKey.from_private_bytes(key_file.read_bytes())
    ours = catalog.fingerprint(catalog.public_hex(key))
    assert ours in result.stdout

    installed = models / "my-nanodet" / model.name
    assert catalog.sha256_of(installed) == catalog.sha256_of(model)
    assert "already installed" in cli("models", "install", "--offline", "my-nanodet").stdout
    installed.unlink()
    again = cli("models", "install", "--offline", "my-nanodet")
    assert again.exit_code == 0 and str(model) in again.stdout, again.output  # found where it was signed
    detector = load_detector("my-nanodet")
    assert detector.name == "my-nanodet" and detector.sha256 == catalog.sha256_of(model)

    listed = cli("models", "list")
    row = next(line for line in listed.stdout.splitlines() if "my-nanodet" in line)
    assert f"{ours[:16]}… (local)" in row and "verified" in row, listed.stdout
    assert f"your signing key: {ours}" in listed.stdout
    assert cli("models", "verify", "my-nanodet").exit_code == 0


def test_models_sign_with_a_key_file(source: Path, models: Path, home: Path, tmp_path: Path) -> None:
    key = raw_key(tmp_path / "team.key")
    _, result = sign_local(source, tmp_path, "--key", str(tmp_path / "team.key"))
    assert result.exit_code == 0, result.output
    assert catalog.fingerprint(catalog.public_hex(key)) in result.stdout
    assert not (home / ".config" / "trustcam" / "model-signing.key").exists()
    assert load_detector("my-nanodet").name == "my-nanodet"

    (tmp_path / "team.key").chmod(0o644)
    _, loose = sign_local(source, tmp_path, "--key", str(tmp_path / "team.key"), name="other")
    assert loose.exit_code == 1 and "chmod 600" in loose.stderr, loose.output
    _, missing = sign_local(source, tmp_path, "--key", str(tmp_path / "nope.key"), name="other")
    assert missing.exit_code == 1 and "signing key not found" in missing.stderr, missing.output
    assert not (tmp_path / "nope.key").exists(), "a key is only created at the default path"


def test_tampering_with_the_local_catalog_is_refused(source: Path, models: Path, tmp_path: Path) -> None:
    model, result = sign_local(source, tmp_path)
    assert result.exit_code == 0, result.output
    local = models / catalog.LOCAL_CATALOG
    signed = json.loads(local.read_text())

    # swap the installed file for another model and re-pin the entry to it
    installed = models / "my-nanodet" / model.name
    shutil.copyfile(source / catalog.CATALOG[YOLOX].filename, installed)
    entry = {**signed[0], "sha256": catalog.sha256_of(installed), "size": installed.stat().st_size}
    local.write_text(json.dumps([entry]))
    with pytest.raises(ModelError, match=r"model 'my-nanodet'.*altered after it was signed"):
        load_detector("my-nanodet")
    refused = cli("models", "install", "--offline", "my-nanodet")
    assert refused.exit_code == 1 and "my-nanodet" in refused.stderr and "models sign" in refused.stderr
    assert cli("models", "verify", "my-nanodet").exit_code == 1
    assert "REFUSED" in next(line for line in cli("models", "list").stdout.splitlines() if "my-nanodet" in line)

    # an architecture edit alone
    local.write_text(json.dumps([{**signed[0], "architecture": "yolox"}]))
    with pytest.raises(ModelError, match="altered after it was signed"):
        load_detector("my-nanodet")

    # the signature removed
    local.write_text(json.dumps([{k: v for k, v in signed[0].items() if k != "signature"}]))
    with pytest.raises(ModelError, match="model 'my-nanodet': its catalog entry is not signed"):
        load_detector("my-nanodet")

    # a local entry that would shadow a built-in model
    local.write_text(json.dumps([{**signed[0], "name": YOLOX}]))
    with pytest.raises(ModelError, match="reuses a built-in name"):
        load_detector(YOLOX)


def test_an_entry_signed_by_an_unknown_key_is_refused(source: Path, models: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _, result = sign_local(source, tmp_path)
    assert result.exit_code == 0, result.output
    local = models / catalog.LOCAL_CATALOG
    signed = json.loads(local.read_text())
    spec = catalog.get_spec("my-nanodet")

    # the attacker re-signs the entry with a key of their own, correctly
    theirs = Ed25519PrivateKey.generate()
    local.write_text(json.dumps([{**signed[0], "signer": catalog.public_hex(theirs),
                                  "signature": catalog.sign_entry(spec, theirs)}]))
    with pytest.raises(ModelError, match=r"model 'my-nanodet'.*not a trusted model signer"):
        load_detector("my-nanodet")

    # the genuine entry, but on an installation that never trusted the operator's key
    local.write_text(json.dumps(signed))
    assert load_detector("my-nanodet").name == "my-nanodet"
    other_home = tmp_path / "other-home"
    other_home.mkdir()
    monkeypatch.setenv("HOME", str(other_home))
    with pytest.raises(ModelError, match="not a trusted model signer"):
        load_detector("my-nanodet")


def test_a_model_promoted_before_signing_existed_is_refused_until_signed(source: Path, models: Path,
                                                                          tmp_path: Path) -> None:
    model = shutil.copyfile(source / catalog.CATALOG["nanodet-m-320"].filename, tmp_path / "old.onnx")
    spec = catalog.spec_for_file(model, "nanodet", "old-promoted")
    (models / "old-promoted").mkdir(parents=True)
    shutil.copyfile(model, models / "old-promoted" / model.name)
    (models / catalog.LOCAL_CATALOG).write_text(json.dumps([{**spec.__dict__}]))  # the unsigned format of before
    with pytest.raises(ModelError, match=r"not signed.*trustcam models sign FILE --name old-promoted"):
        load_detector("old-promoted")
    assert cli("models", "sign", str(model), "--name", "old-promoted", "--architecture", "nanodet").exit_code == 0
    assert load_detector("old-promoted").name == "old-promoted"
    assert os.environ["HOME"] in str(catalog.signers_file())
