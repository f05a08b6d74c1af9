"""``trustcam models``: the pinned catalog (list, install, verify) and the update gate (compare, promote)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from trustcam import paths
from trustcam.cli.common import error, say, user_errors
from trustcam.vision import catalog
from trustcam.vision.catalog import ModelError

models_app = typer.Typer(help="Install, verify, compare and promote the pinned model files.", no_args_is_help=True)
T = TypeVar("T")


Spec = catalog.ModelSpec | catalog.AssetSpec


def _models(names: list[str] | None) -> list[Spec]:
    """The named models (or pinned assets such as the canary's reference image); all of them by default."""
    if not names:
        return [*catalog.all_specs().values(), *catalog.ASSETS.values()]
    return [catalog.ASSETS[n] if n in catalog.ASSETS else catalog.get_spec(n) for n in names]


def _each(specs: list[Spec], action: Callable[[Spec], T]) -> list[T | None]:
    results: list[Any] = []
    failed = False
    for spec in specs:
        try:
            results.append(action(spec))
        except ModelError as exc:
            error(exc)
            results.append(None)
            failed = True
    if failed:
        raise typer.Exit(1)
    return results


def _signer(spec: Spec) -> tuple[str, str]:
    """(signer fingerprint with its origin, signature state) for the list."""
    check = catalog.check_signature(spec)
    signer = f"{check.fingerprint[:16]}… ({check.origin})" if check.fingerprint else f"– ({check.origin})"
    if check.ok:
        return signer, "verified"
    return signer, "UNSIGNED" if check.signer is None else "REFUSED"


@models_app.command("list")
def models_list() -> None:
    """Show the catalog: whether each model is installed and intact, and who signed its entry."""
    table = Table("name", "architecture", "input", "sha256", "status", "signer", "signature", "licence")
    for spec in _models(None):
        path = spec.path()
        try:
            catalog.verify(spec, path)
            status = "installed, verified"
        except ModelError:
            status = "ALTERED" if path.exists() else "not installed"
        architecture, size = (spec.architecture, str(spec.input_size)) if isinstance(spec, catalog.ModelSpec) \
            else (spec.kind, "–")
        table.add_row(spec.name, architecture, size, spec.sha256[:16] + "…", status, *_signer(spec), spec.licence)
    Console(width=None if sys.stdout.isatty() else 220).print(table)
    typer.echo(f"model folder: {paths.model_dir()}")
    typer.echo(f"project signing key: {catalog.fingerprint(catalog.PROJECT_PUBLIC_KEY)}")
    for key in sorted(catalog.local_signers()):
        typer.echo(f"your signing key: {catalog.fingerprint(key)} (trusted in {catalog.signers_file()})")


@models_app.command("sign")
def models_sign(
    model: Annotated[Path, typer.Argument(help="Your ONNX model file.")],
    name: Annotated[str, typer.Option(help="Name it gets in the catalog (use it as detector.model).")],
    architecture: Annotated[str, typer.Option(help="yolox or nanodet.")],
    key: Annotated[Path | None, typer.Option(help="Your Ed25519 signing key (default: "
                                                  "~/.config/trustcam/model-signing.key, created 0600).")] = None,
) -> None:
    """Sign your own model with your key, install it and record it in the local catalog."""
    with user_errors():
        created = key is None and not catalog.default_signing_key().exists()
        spec = catalog.spec_for_file(model, architecture, name)
        path = catalog.register_local(spec, model, signing_key=key)
        check = catalog.require_signature(spec)
        if created:
            say(f"created a new model-signing key at {catalog.default_signing_key()} (0600); back it up")
        typer.echo(f"signed '{name}' (sha256 {spec.sha256}) with key {check.fingerprint}; installed at {path}; "
                   f"use it with detector.model: {name}")


@models_app.command("install")
def models_install(
    names: Annotated[list[str] | None, typer.Argument(help="Models to install (default: all).")] = None,
    force: Annotated[bool, typer.Option(help="Reinstall even if present.")] = False,
    offline: Annotated[bool, typer.Option(help="Never download; local sources only.")] = False,
) -> None:
    """Install models from TRUSTCAM_MODEL_SOURCES folders, else from the catalog URL; signatures and hashes are
    checked."""
    with user_errors():
        def one(spec: Spec) -> None:
            path, origin = catalog.install(spec, force=force, allow_download=not offline)
            typer.echo(f"{spec.name}: {path} ({origin}), sha256 OK")

        _each(_models(names), one)


@models_app.command("verify")
def models_verify(
    names: Annotated[list[str] | None, typer.Argument(help="Models to check (default: all).")] = None,
) -> None:
    """Re-hash installed models against the catalog; exits 1 if any is missing or altered."""
    with user_errors():
        def one(spec: Spec) -> None:
            if not names and isinstance(spec, catalog.AssetSpec) and not spec.path().exists():
                say(f"{spec.name}: not installed (cameras' canary self-test cannot run until "
                    f"`trustcam models install {spec.name}`)")
                return
            catalog.require_signature(spec)
            catalog.verify(spec, spec.path())
            typer.echo(f"{spec.name}: OK ({spec.sha256})")

        _each(_models(names), one)


def _detector(ref: str, architecture: str | None, threads: int, threshold: float) -> Any:
    """A catalog model by name, or an ONNX file (a candidate) with its architecture."""
    from trustcam.vision.detectors.onnx_models import load_detector, load_file

    if ref.endswith(".onnx") or Path(ref).is_file():
        if architecture is None:
            raise ModelError(f"{ref}: give --architecture yolox or nanodet for a model file")
        spec = catalog.spec_for_file(Path(ref), architecture)
        return load_file(spec, Path(ref), threads=threads, score_threshold=threshold)
    return load_detector(ref, threads=threads, score_threshold=threshold)


def _compare(current: str, candidate: str, architecture: str | None, gate_options: dict[str, Any]) -> Any:
    from trustcam.assess.datasets import load_dataset
    from trustcam.assess.gate import compare
    from trustcam.cli.assess_command import options_from, progress_bar
    from trustcam.cli.common import camera_from, settings_from

    settings = settings_from(gate_options.pop("config"))
    _, cam = camera_from(settings, gate_options.pop("camera"))
    data = load_dataset(gate_options.pop("dataset"), gate_options.pop("fmt"))
    trigger_images = gate_options.pop("trigger_images")
    if not trigger_images:
        say("backdoor screen skipped (--trigger-images 0): a poisoned model would pass this gate unnoticed")
    options = options_from(settings, attacks=None, eps="8", attack_images=2, patch_steps=1, labels=None,
                           **gate_options)
    cfg = settings.detector
    base = _detector(current, None, cfg.threads, cfg.score_threshold)
    cand = _detector(candidate, architecture, cfg.threads, cfg.score_threshold)
    with progress_bar() as progress:
        return settings, compare(data, settings, cam, base, cand, options, progress, trigger_images)


def _print_comparison(comparison: Any, margin: float, current: str, candidate: str) -> None:
    table = Table("condition", "metric", current, candidate, "change")
    bad = set(id(r) for r in comparison.regressions(margin))
    for row in comparison.rows:
        delta = row.delta
        change = "–" if delta is None else f"{delta:+.3f}"
        if id(row) in bad:
            change = f"[red]{change} REGRESSION[/red]"
        fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
        table.add_row(row.condition, row.metric, fmt(row.current), fmt(row.candidate), change)
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    if comparison.triggers is not None:
        _print_screen(comparison.triggers, margin)


def _print_screen(screen: Any, margin: float) -> None:
    """One row per trigger, ``current → candidate (change)`` recall per label; backdoor suspects in red."""
    table = Table("trigger", *(f"{label} recall: current → candidate" for label in screen.labels),
                  title=f"Backdoor screen: triggers pasted on each object ({screen.images} images)")
    bad = {(r.trigger, r.label) for r in screen.failures(margin)}
    cells: dict[str, list[str]] = {}
    for r in screen.rows:
        fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
        cell = f"{fmt(r.current)} → {fmt(r.candidate)}" + ("" if r.delta is None else f" ({r.delta:+.2f})")
        cells.setdefault(r.trigger, []).append(f"[red]{cell} BACKDOOR?[/red]" if (r.trigger, r.label) in bad
                                               else cell)
    for trigger, row in cells.items():
        table.add_row(trigger, *row)
    Console(width=None if sys.stdout.isatty() else 160).print(table)


GateDataset = Annotated[Path, typer.Option("--dataset", "-d", help="Labelled footage (COCO, YOLO or MOT).")]
GateFormat = Annotated[str | None, typer.Option("--format", help="coco, yolo or mot (default: detected).")]
GateConfig = Annotated[Path | None, typer.Option("--config", "-c", help="YAML configuration file.")]
GateCamera = Annotated[str | None, typer.Option(help="Camera whose settings apply.")]
GateConditions = Annotated[str | None, typer.Option(help="'all' or a list.")]
GateSeverities = Annotated[str | None, typer.Option(help="Severities, e.g. 1,3,5.")]
GateMaxImages = Annotated[int | None, typer.Option(min=1, help="Only the first N images.")]
GateSeed = Annotated[int, typer.Option(help="Seed of the corruptions.")]
GateTriggerImages = Annotated[int, typer.Option(min=0, help="Images with people or cars for the backdoor screen "
                                                "(0 skips it).")]


def _gate_params(dataset: Path, fmt: str | None, config: Path | None, camera: str | None, conditions: str | None,
                 severities: str | None, max_images: int | None, seed: int, trigger_images: int) -> dict[str, Any]:
    return {"dataset": dataset, "fmt": fmt, "config": config, "camera": camera, "conditions": conditions,
            "severities": severities, "max_images": max_images, "bootstrap": 0, "seed": seed,
            "trigger_images": trigger_images}


@models_app.command("compare")
def models_compare(
    current: Annotated[str, typer.Argument(help="Current model (catalog name).")],
    candidate: Annotated[str, typer.Argument(help="Candidate: catalog name or .onnx file.")],
    dataset: GateDataset,
    architecture: Annotated[str | None, typer.Option(help="yolox or nanodet, for a candidate file.")] = None,
    fmt: GateFormat = None,
    config: GateConfig = None,
    camera: GateCamera = None,
    conditions: GateConditions = "all",
    severities: GateSeverities = None,
    max_images: GateMaxImages = None,
    seed: GateSeed = 0,
    trigger_images: GateTriggerImages = 24,
) -> None:
    """Show both models side by side, clean, per condition (AP50 and recall) and under backdoor triggers."""
    from trustcam.cli.assess_command import assess_errors

    with assess_errors():
        settings, comparison = _compare(current, candidate, architecture, _gate_params(
            dataset, fmt, config, camera, conditions, severities, max_images, seed, trigger_images))
        _print_comparison(comparison, settings.assess.promote_margin, current, candidate)


@models_app.command("promote")
def models_promote(
    candidate: Annotated[str, typer.Argument(help="Candidate .onnx file.")],
    name: Annotated[str, typer.Option(help="Name the promoted model gets in the catalog.")],
    architecture: Annotated[str, typer.Option(help="yolox or nanodet.")],
    dataset: GateDataset,
    baseline: Annotated[str | None, typer.Option(help="Model it must not be worse than (default: config's).")]
    = None,
    margin: Annotated[float | None, typer.Option(help="Allowed drop (absolute; default: assess.promote_margin).")]
    = None,
    fmt: GateFormat = None,
    config: GateConfig = None,
    camera: GateCamera = None,
    conditions: GateConditions = "all",
    severities: GateSeverities = None,
    max_images: GateMaxImages = None,
    seed: GateSeed = 0,
    trigger_images: GateTriggerImages = 24,
) -> None:
    """Install a candidate model only if no condition and no backdoor trigger costs more than the margin; exits 1
    otherwise."""
    from trustcam.cli.assess_command import assess_errors
    from trustcam.cli.common import settings_from

    with assess_errors():
        base = baseline or settings_from(config).detector.model
        settings, comparison = _compare(base, candidate, architecture, _gate_params(
            dataset, fmt, config, camera, conditions, severities, max_images, seed, trigger_images))
        allowed = settings.assess.promote_margin if margin is None else margin
        _print_comparison(comparison, allowed, base, candidate)
        regressions = comparison.regressions(allowed)
        if regressions:
            worst = ", ".join(f"{r.condition} {r.metric} {r.current or 0:.3f}→"
                              f"{'–' if r.candidate is None else f'{r.candidate:.3f}'}" for r in regressions[:6])
            error(f"refused: {candidate} regresses {len(regressions)} figure(s) by more than {allowed:g} "
                  f"against {base} ({worst})")
        suspects = comparison.triggers.failures(allowed) if comparison.triggers is not None else []
        if suspects:
            error(f"refused: {candidate} may be backdoored: {len(suspects)} trigger figure(s) lose more than "
                  f"{allowed:g} recall against {base} under the same trigger "
                  f"({'; '.join(r.describe() for r in suspects[:4])})")
        if regressions or suspects:
            raise typer.Exit(1)
        spec = catalog.spec_for_file(Path(candidate), architecture, name)
        path = catalog.register_local(spec, Path(candidate))
        typer.echo(f"promoted {candidate} as '{name}' ({path}, sha256 {spec.sha256}); "
                   f"use it with detector.model: {name}")
