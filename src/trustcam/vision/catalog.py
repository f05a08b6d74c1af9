"""The model catalog: every model file trustcam will load, pinned by sha256.

A file whose hash differs from the pin is refused, at install and at every load: a swapped or corrupted
model is a silent accuracy failure (or a planted backdoor), so it must never run. Installation copies
from local folders (``TRUSTCAM_MODEL_SOURCES``) first and only then downloads from the public URL;
nothing is ever downloaded at run time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Literal

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
    )
}


def asset_sources() -> list[Path]:
    """Where an asset is looked for before its URL: ``TRUSTCAM_DATA_DIR``'s coco128 images (default
    ``../shared/data``), then the model sources."""
    data = Path(os.environ.get("TRUSTCAM_DATA_DIR", "../shared/data")).expanduser().resolve()
    return [data / "coco128-train" / "images", data, *paths.model_sources()]


LOCAL_CATALOG = "local-catalog.json"


def local_specs(directory: Path | None = None) -> dict[str, ModelSpec]:
    """Models promoted on this installation (``trustcam models promote``), pinned like the built-in ones."""
    path = (directory or paths.model_dir()) / LOCAL_CATALOG
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
        return {e["name"]: ModelSpec(**e) for e in entries}
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{path}: unreadable local catalog ({exc}); restore it or delete it and promote again") \
            from None


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


def register_local(spec: ModelSpec, file: Path, directory: Path | None = None) -> Path:
    """Install ``file`` under ``spec.name`` and pin it in the local catalog."""
    if spec.name in CATALOG:
        raise ModelError(f"'{spec.name}' is a built-in model name; promote the candidate under another name")
    directory = directory or paths.model_dir()
    target = spec.path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, target)
    verify(spec, target)
    entries = {**local_specs(directory), spec.name: spec}
    (directory / LOCAL_CATALOG).write_text(json.dumps([asdict(e) for e in entries.values()], indent=2) + "\n")
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
    """Install ``spec`` into ``directory``; returns the path and where it came from."""
    target = spec.path(directory)
    if target.is_file() and not force:
        verify(spec, target)
        return target, "already installed"
    if sources is None:
        sources = asset_sources() if isinstance(spec, AssetSpec) else paths.model_sources()
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
