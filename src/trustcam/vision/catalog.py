"""The model catalog: every model file trustcam will load, pinned by sha256, each entry signed with Ed25519.

A file whose hash differs from the pin is refused, at install and at every load: a swapped or corrupted
model is a silent accuracy failure (or a planted backdoor), so it must never run. Installation copies
from local folders (``TRUSTCAM_MODEL_SOURCES``) first and only then downloads from the public URL;
nothing is ever downloaded at run time.

The pins themselves are signed, so that an edited entry (another sha256, architecture or input size) is refused
too: built-in entries by the project key (its public key is below; ``scripts/sign_catalog.py`` signs), the
operator's own models (``trustcam models sign``) by the operator's key, whose public key is recorded outside the
model folder in ``~/.config/trustcam/model-signers``. Whoever can write the model folder can thus neither swap a
model nor re-pin it to their own file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trustcam import paths
from trustcam.errors import UserError


class ModelError(UserError):
    """A model is missing, unknown or fails its integrity check; the message says how to fix it."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    architecture: Literal["yolox", "nanodet"]
    filename: str
    sha256: str
    size: int
    input_size: int
    url: str
    licence: str
    source: str

    kind: ClassVar[str] = "model"

    def path(self, directory: Path | None = None) -> Path:
        return (directory or paths.model_dir()) / self.name / self.filename


@dataclass(frozen=True)
class AssetSpec:
    """A pinned data file installed beside the models (the canary's reference person), checked like them."""

    name: str
    filename: str
    sha256: str
    size: int
    url: str
    licence: str
    source: str
    crop: tuple[int, int, int, int]  # x1, y1, x2, y2 of the object in the image, in pixels
    kind: ClassVar[str] = "reference image"

    def path(self, directory: Path | None = None) -> Path:
        return (directory or paths.model_dir()) / self.name / self.filename


@dataclass(frozen=True)
class FaceModelSpec(AssetSpec):
    """The face detector (YuNet), pinned and installed like the other models; it is not an object detector, so it
    stays out of ``CATALOG`` (no detector failover or comparison ever picks it). ``crop`` does not apply."""

    crop: tuple[int, int, int, int] = (0, 0, 0, 0)
    kind: ClassVar[str] = "face model"


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="yolox-nano",
            architecture="yolox",
            filename="yolox_nano.onnx",
            sha256="e8af074932d4ed7e232278e3055cefcdea3edf178874a3694ae292649fb464dd",
            size=3_678_356,
            input_size=416,
            url="https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/yolox_nano.onnx",
            licence="Apache-2.0 (YOLOX by Megvii)",
            source="https://github.com/Megvii-BaseDetection/YOLOX",
        ),
        ModelSpec(
            name="nanodet-m-320",
            architecture="nanodet",
            filename="nanodet_m_320.onnx",
            sha256="c59b6c947ce475d27023327808aed655fa000981fe144c4fd2026828999e19f8",
            size=3_795_445,
            input_size=320,
            url="https://raw.githubusercontent.com/hpc203/nanodet-opncv-dnn-cpp-python/"
            "15dd99c651d53c824f51d1eb5faddbd4f3d69bbc/nanodet.onnx",
            licence="Apache-2.0 (NanoDet by RangiLyu, presumed)",
            source="https://github.com/RangiLyu/nanodet",
        ),
    )
}


ASSETS: dict[str, AssetSpec] = {
    asset.name: asset
    for asset in (
        AssetSpec(
            name="canary-person",
            filename="000000000241.jpg",
            sha256="39df957040ee07907626207f3f80ae92e599b7b871034b1c4d677eda06a8bf1a",
            size=107_714,
            url="http://images.cocodataset.org/train2017/000000000241.jpg",
            licence="COCO train2017 image from Flickr under the Creative Commons licence recorded for it in COCO's "
            "annotations (images[].license); see https://cocodataset.org/#termsofuse",
            source="https://cocodataset.org (also in the coco128 sample: coco128/images/train2017)",
            crop=(133, 7, 333, 633),  # the standing man (COCO128 label: person 0.485 0.499 0.418 0.978)
        ),
        FaceModelSpec(
            name="yunet-n",
            filename="yunet_n_dynamic.onnx",
            sha256="104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12",
            size=322_906,
            url="https://raw.githubusercontent.com/ShiqiYu/libfacedetection.train/"
            "02246e79b1e976c83d1e135a85e0628120c93769/onnx/yunet_n_dynamic.onnx",
            licence="Apache-2.0 (libfacedetection.train by Shiqi Yu; weights trained on WIDER FACE, research use)",
            source="https://github.com/ShiqiYu/libfacedetection.train",
        ),
    )
}


def asset_sources() -> list[Path]:
    """Where an asset is looked for before its URL: ``TRUSTCAM_DATA_DIR``'s coco128 images (default
    ``../shared/data``), then the model sources."""
    data = Path(os.environ.get("TRUSTCAM_DATA_DIR", "../shared/data")).expanduser().resolve()
    return [data / "coco128-train" / "images", data, *paths.model_sources()]


# --- project signatures: written by scripts/sign_catalog.py, never by hand ---
PROJECT_PUBLIC_KEY = "117409b8a5896f7dbb80d340907acb88c1f7f2cc25ab807b154ed60e3d9890af"
SIGNATURES: dict[str, str] = {
    "yolox-nano": "6aa03c8ec40d74d32192c8598cd53c797e29e2ba39d33d0c731ae0d5fe4bc9ba"
    "d0aa6d206d917375a0e09d62f952ad7baffd0db307f0693c5c048b49329e7509",
    "nanodet-m-320": "1f026996122c847f17d7dd648d1f776288ab67a0684eb87a44f4c7b38f242f01"
    "3adb25c25fccc9427af956f5a693ec58b7c9c320828b37426a86228dbd1a0f0c",
    "canary-person": "dfad26bc7256998a42d427d3dcd16760704cbbd1fdec88d58e9517acf247e674"
    "713a48b79cef1458eefd67a7bc470e1f3a9c6d5aed55d7824d81ec2174e28704",
    "yunet-n": "fb0246bd8c77d9a86b9de7109f30b6445009951271ba263ffd9ef4fa92eab49f"
    "0363a9deac05a58303d9d3ce1c0e656893ea3c95a78a7e275e1f0e59eac0b408",
}
# --- end of project signatures ---

LOCAL_CATALOG = "local-catalog.json"
SIGNING_DOMAIN = b"trustcam/model-catalog-entry/v1\0"


def entry_message(spec: ModelSpec | AssetSpec) -> bytes:
    """The bytes an entry's signature covers: every field and the kind, as canonical JSON (one encoding only)."""
    fields = {"kind": spec.kind, **asdict(spec)}
    return SIGNING_DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def fingerprint(public_key: str | bytes) -> str:
    """sha256 (hex) of the raw 32-byte public key, as the vault's fingerprints: what an operator compares."""
    raw = bytes.fromhex(public_key) if isinstance(public_key, str) else public_key
    return hashlib.sha256(raw).hexdigest()


def public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def sign_entry(spec: ModelSpec | AssetSpec, key: Ed25519PrivateKey) -> str:
    return key.sign(entry_message(spec)).hex()


# --- the operator's signing key and the keys this installation trusts ----------------------------------------


def config_dir() -> Path:
    """``~/.config/trustcam``: outside the model folder, beside the vault keys."""
    return Path.home() / ".config" / "trustcam"


def default_signing_key() -> Path:
    return config_dir() / "model-signing.key"


def signers_file() -> Path:
    """Public keys (hex, one a line) whose signatures this installation accepts on its local catalog."""
    return config_dir() / "model-signers"


def local_signers() -> set[str]:
    path = signers_file()
    if not path.is_file():
        return set()
    keys = {line.split()[0].lower() for line in path.read_text().splitlines() if line.strip()
            and not line.startswith("#")}
    return {k for k in keys if len(k) == 64 and all(c in "0123456789abcdef" for c in k)}


def trust_signer(public_key: str, label: str) -> None:
    """Add ``public_key`` to the accepted signers (0600 file, replaced atomically)."""
    from trustcam.storage.private import private_dir

    if public_key in local_signers():
        return
    path = signers_file()
    private_dir(path.parent)
    old = path.read_text() if path.is_file() else "# model-signing public keys trusted by `trustcam models`\n"
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"{old}{public_key} {label}\n")
    os.replace(tmp, path)


def load_signing_key(path: Path | None = None, *, create: bool = True) -> tuple[Ed25519PrivateKey, bool]:
    """The Ed25519 key at ``path`` (raw 32 bytes or PEM), created 0600 at the default path if absent.

    Returns the key and whether it was just created (the caller tells the operator to back it up).
    """
    from trustcam.storage.keys import write_secret
    from trustcam.storage.private import private_dir

    path = Path(os.path.expanduser(path)) if path is not None else default_signing_key()
    created = False
    if not path.exists():
        if not create:
            raise ModelError(f"{path}: signing key not found; give the path of an existing key with --key, or "
                             "leave --key out to use (and create) ~/.config/trustcam/model-signing.key")
        private_dir(path.parent)
        try:
            write_secret(path, Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()))
            created = True
        except FileExistsError:  # another process made it first: use theirs
            pass
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ModelError(f"{path}: the model-signing key is readable or writable by group/others (mode {mode:04o}); "
                         f"run `chmod 600 {path}`")
    data = path.read_bytes()
    try:
        if data.startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError("not an Ed25519 key")
            return key, created
        return Ed25519PrivateKey.from_private_bytes(data), created
    except ValueError as exc:
        raise ModelError(f"{path}: not an Ed25519 private key (raw 32 bytes or PEM) ({exc}); check the path") \
            from None


# --- checking an entry's signature ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureCheck:
    """Who signed an entry and whether the signature holds; ``problem`` is None when it does."""

    signer: str | None  # hex public key, None if unsigned
    origin: Literal["project", "local"]
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def fingerprint(self) -> str | None:
        return fingerprint(self.signer) if self.signer else None


def _builtin(name: str) -> bool:
    return name in CATALOG or name in ASSETS


def _verify_with(public_key: str, signature: str, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key)).verify(bytes.fromhex(signature), message)
        return True
    except (InvalidSignature, ValueError):
        return False


def check_signature(spec: ModelSpec | AssetSpec, directory: Path | None = None) -> SignatureCheck:
    """Check ``spec`` against its signature: the project's for a built-in name, the local catalog's otherwise."""
    if _builtin(spec.name):
        signer, signature, origin = PROJECT_PUBLIC_KEY, SIGNATURES.get(spec.name), "project"
        trusted = {PROJECT_PUBLIC_KEY}
        fix = "reinstall trustcam, or restore the catalog entry as released"
    else:
        signer, signature = _local_entries(directory).get(spec.name, (None, None))[1:]
        origin, trusted = "local", {PROJECT_PUBLIC_KEY, *local_signers()}
        fix = (f"if you trust the file, sign it again with `trustcam models sign FILE --name {spec.name} "
               f"--architecture {getattr(spec, 'architecture', '?')}`")
    where = f"{spec.kind} '{spec.name}'"
    if not signer or not signature:
        return SignatureCheck(None, origin, f"{where}: its catalog entry is not signed and is refused; {fix}")
    if signer not in trusted:
        return SignatureCheck(signer, origin, (
            f"{where}: its catalog entry is signed by key {fingerprint(signer)[:16]}…, which is not a trusted "
            f"model signer (not the project key nor one in {signers_file()}) and is refused; {fix}"))
    if not _verify_with(signer, signature, entry_message(spec)):
        return SignatureCheck(signer, origin, (
            f"{where}: its catalog entry (sha256 {spec.sha256[:12]}…, {getattr(spec, 'architecture', spec.kind)}) "
            f"does not match its signature by key {fingerprint(signer)[:16]}…: the entry was altered after it was "
            f"signed and is refused; {fix}"))
    return SignatureCheck(signer, origin, None)


def require_signature(spec: ModelSpec | AssetSpec, directory: Path | None = None) -> SignatureCheck:
    """Raise :class:`ModelError` unless ``spec`` carries a valid signature by a trusted key."""
    check = check_signature(spec, directory)
    if check.problem is not None:
        raise ModelError(check.problem)
    return check


# --- the local catalog: models promoted or signed on this installation ---------------------------------------


def _local_path(directory: Path | None) -> Path:
    return (directory or paths.model_dir()) / LOCAL_CATALOG


def _local_entries(directory: Path | None = None) -> dict[str, tuple[ModelSpec, str | None, str | None]]:
    """name -> (spec, signer public key, signature) as stored; signatures are checked by the caller."""
    path = _local_path(directory)
    if not path.is_file():
        return {}
    entries: dict[str, tuple[ModelSpec, str | None, str | None]] = {}
    try:
        for raw in json.loads(path.read_text()):
            fields = dict(raw)
            signer, signature = fields.pop("signer", None), fields.pop("signature", None)
            spec = ModelSpec(**fields)
            if _builtin(spec.name):
                raise ValueError(f"entry '{spec.name}' reuses a built-in name")
            entries[spec.name] = (spec, signer, signature)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ModelError(f"{path}: unreadable local catalog ({exc}); restore it, or delete it and sign your models "
                         "again with `trustcam models sign`") from None
    return entries


def local_specs(directory: Path | None = None) -> dict[str, ModelSpec]:
    """Models promoted or signed on this installation (``trustcam models promote`` / ``sign``)."""
    return {name: entry[0] for name, entry in _local_entries(directory).items()}


def all_specs(directory: Path | None = None) -> dict[str, ModelSpec]:
    return {**CATALOG, **local_specs(directory)}


def get_spec(name: str, directory: Path | None = None) -> ModelSpec:
    specs = all_specs(directory)
    try:
        return specs[name]
    except KeyError:
        known = ", ".join(sorted(specs))
        raise ModelError(f"unknown model '{name}'; the catalog has: {known}") from None


def spec_for_file(path: Path, architecture: str, name: str | None = None) -> ModelSpec:
    """A spec pinning an arbitrary ONNX file (a candidate model), its input size read from the graph."""
    import onnxruntime as ort

    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    if architecture not in ("yolox", "nanodet"):
        raise ModelError(f"architecture '{architecture}' is not supported; use yolox or nanodet")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        raise ModelError(f"{path}: not a loadable ONNX model ({exc.__class__.__name__}); check the file") from None
    shape = session.get_inputs()[0].shape
    size = shape[-1] if isinstance(shape[-1], int) else 416
    return ModelSpec(name=name or path.stem, architecture=architecture,  # type: ignore[arg-type]
                     filename=path.name, sha256=sha256_of(path), size=path.stat().st_size, input_size=int(size),
                     url=path.resolve().as_uri(), licence="local candidate", source=str(path.resolve()))


def register_local(spec: ModelSpec, file: Path, directory: Path | None = None, *,
                   signing_key: Path | None = None) -> Path:
    """Install ``file`` under ``spec.name`` and pin it in the local catalog, signed with the operator's key
    (``signing_key``, default ``~/.config/trustcam/model-signing.key``, created if absent), which becomes trusted."""
    if _builtin(spec.name):
        raise ModelError(f"'{spec.name}' is a built-in model name; choose another name for your model")
    key, _ = load_signing_key(signing_key, create=signing_key is None)
    directory = directory or paths.model_dir()
    target = spec.path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, target)
    verify(spec, target)
    signer = public_hex(key)
    trust_signer(signer, f"{signing_key or default_signing_key()}")
    entries = {**_local_entries(directory), spec.name: (spec, signer, sign_entry(spec, key))}
    rows = [{**asdict(s), "signer": k, "signature": sig} for s, k, sig in entries.values()]
    path = _local_path(directory)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(rows, indent=2) + "\n")
    tmp.replace(path)
    return target


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(spec: ModelSpec | AssetSpec, path: Path) -> None:
    """Raise :class:`ModelError` unless ``path`` is exactly the pinned file."""
    if not path.is_file():
        raise ModelError(
            f"{spec.kind} '{spec.name}' is not installed (expected {path}); run `trustcam models install {spec.name}`"
        )
    actual = sha256_of(path)
    if actual != spec.sha256:
        raise ModelError(
            f"{spec.kind} '{spec.name}' at {path} has sha256 {actual}, but the catalog pins {spec.sha256}: "
            f"the file is corrupt or not the expected {spec.kind} and is refused; "
            f"run `trustcam models install --force {spec.name}`"
        )


def _origin(spec: ModelSpec | AssetSpec) -> list[Path]:
    """The folder a locally signed model came from (its ``file:`` URL), searched like a model source."""
    parsed = urllib.parse.urlparse(spec.url)
    return [Path(urllib.request.url2pathname(parsed.path)).parent] if parsed.scheme == "file" else []


def _find_in_sources(spec: ModelSpec | AssetSpec, sources: list[Path]) -> Path | None:
    for root in sources:
        if not root.is_dir():
            continue
        for candidate in sorted(root.rglob(spec.filename)):
            if candidate.is_file() and candidate.stat().st_size == spec.size and sha256_of(candidate) == spec.sha256:
                return candidate
    return None


def install(
    spec: ModelSpec | AssetSpec,
    *,
    directory: Path | None = None,
    sources: list[Path] | None = None,
    allow_download: bool = True,
    force: bool = False,
) -> tuple[Path, str]:
    """Install ``spec`` into ``directory``; returns the path and where it came from.

    The entry's signature is checked first: an altered pin would otherwise make the hash check vouch for the
    wrong file.
    """
    require_signature(spec, directory)
    target = spec.path(directory)
    if target.is_file() and not force:
        verify(spec, target)
        return target, "already installed"
    if sources is None:
        sources = asset_sources() if isinstance(spec, AssetSpec) else [*paths.model_sources(), *_origin(spec)]
    target.parent.mkdir(parents=True, exist_ok=True)
    found = _find_in_sources(spec, sources)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp:
        tmp_path = Path(tmp.name)
    try:
        if found is not None:
            shutil.copyfile(found, tmp_path)
            origin = str(found)
        elif allow_download:
            try:
                with urllib.request.urlopen(spec.url, timeout=60) as response, tmp_path.open("wb") as out:
                    shutil.copyfileobj(response, out)
            except OSError as exc:
                searched = ", ".join(str(s) for s in sources) or "none"
                raise ModelError(
                    f"{spec.kind} '{spec.name}': not in the local sources ({searched}) and the download from "
                    f"{spec.url} failed ({exc}); put {spec.filename} in a folder named by TRUSTCAM_MODEL_SOURCES"
                ) from None
            origin = spec.url
        else:
            searched = ", ".join(str(s) for s in sources) or "none"
            raise ModelError(
                f"{spec.kind} '{spec.name}': {spec.filename} with sha256 {spec.sha256[:12]}… is not in {searched}; "
                "set TRUSTCAM_MODEL_SOURCES to the folder that holds it"
            )
        verify(spec, tmp_path)  # a download that does not match the pin is refused before it is installed
        tmp_path.replace(target)
        return target, origin
    finally:
        tmp_path.unlink(missing_ok=True)
