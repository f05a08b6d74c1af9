"""The ``trustcam`` command line. Every expected failure prints one clear message and exits non-zero."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trustcam import __version__, paths
from trustcam.config import ConfigError, Settings, load_settings
from trustcam.config.schema import CameraConfig
from trustcam.ingest.source import SourceError
from trustcam.storage.database import DatabaseError
from trustcam.vision import catalog
from trustcam.vision.catalog import ModelError

app = typer.Typer(help="trustcam: AI video surveillance that measures and proves its own reliability.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
models_app = typer.Typer(help="Install and verify the pinned model files.", no_args_is_help=True)
config_app = typer.Typer(help="Check a configuration file.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
err = Console(stderr=True, soft_wrap=True, highlight=False)
T = TypeVar("T")

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML configuration file.")]


def _error(message: object) -> None:
    """Print one ``error:`` line; the message is escaped (paths may contain '[' that rich reads as markup)."""
    err.print(f"[red]error:[/red] {escape(str(message))}")


def _say(message: str) -> None:
    err.print(message, markup=False)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Expected failures become one line on stderr and exit code 2 (usage/config) or 1 (runtime)."""
    try:
        yield
    except ConfigError as exc:
        _error(exc)
        raise typer.Exit(2) from None
    except (ModelError, SourceError, DatabaseError) as exc:
        _error(exc)
        raise typer.Exit(1) from None


def _settings(config: Path | None) -> Settings:
    return load_settings(config) if config else Settings()


def _camera(settings: Settings, name: str | None) -> tuple[str, CameraConfig]:
    if name is not None:
        if name not in settings.cameras:
            known = ", ".join(settings.cameras) or "none"
            raise ConfigError(f"--camera {name}: no such camera in the config (cameras: {known})")
        return name, settings.cameras[name]
    if settings.cameras:
        return next(iter(settings.cameras.items()))
    return "file", CameraConfig(source="")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"trustcam {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress to stderr.")] = False,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def detect(
    images: Annotated[list[Path], typer.Argument(help="Image files (JPEG, PNG, ...).")],
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    threshold: Annotated[float | None, typer.Option(help="Minimum score (default: the config's).")] = None,
) -> None:
    """Detect objects in still images with the pipeline's strategy (tiling included)."""
    import cv2

    from trustcam.service import build_detector
    from trustcam.vision.frame_detector import FrameDetector

    with _user_errors():
        settings = _settings(config)
        detector = FrameDetector(build_detector(settings), settings.detector.tiling)
        min_score = settings.detector.score_threshold if threshold is None else threshold
        detector.detector.score_threshold = min_score
        failed = 0
        for path in images:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
            if image is None:
                reason = "not found" if not path.exists() else "not a readable image"
                _error(f"{path}: {reason}; pass JPEG or PNG files")
                failed += 1
                continue
            dets = detector.detect_full(image)
            record = {"image": str(path), "detections": dets.to_json()}
            if as_json:
                typer.echo(json.dumps(record))
            else:
                typer.echo(f"{path}: " + (", ".join(f"{d['label']} {d['score']:.2f}" for d in record["detections"])
                                          or "nothing"))
        if failed:
            raise typer.Exit(1)


@app.command()
def analyze(
    video: Annotated[str, typer.Argument(help="Video file (or stream URL) to analyse once, at full speed.")],
    config: ConfigOption = None,
    camera: Annotated[str | None, typer.Option(help="Camera whose zones/rules apply (default: the first).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per finished event on stdout.")] = False,
    snapshots: Annotated[Path | None, typer.Option(help="Folder for snapshots (default: <data_dir>/snapshots).")]
    = None,
    save: Annotated[bool, typer.Option(help="Also store events in the database.")] = False,
) -> None:
    """Run the whole pipeline over a video file and print its events."""
    from trustcam.bus import Bus
    from trustcam.events.model import EventEnded
    from trustcam.service import analyze_file, build_detector
    from trustcam.storage.database import open_database
    from trustcam.storage.event_store import EventStore

    with _user_errors():
        settings = _settings(config)
        name, cam = _camera(settings, camera)
        bus = Bus()

        def show(message: EventEnded) -> None:
            event = message.event
            if as_json:
                typer.echo(json.dumps(event.to_json()))
            else:
                rules = ", ".join(f"{h.rule} ({h.threat.value})" for h in event.rules) or "no rule"
                typer.echo(f"{event.start:8.1f}s-{event.end:6.1f}s  {event.label:<8} {event.best_score:.2f}  "
                           f"zones: {', '.join(event.zones) or '-'}  rules: {rules}  {event.snapshot or ''}")
            sys.stdout.flush()

        bus.subscribe(EventEnded, show)
        if save:
            EventStore(open_database(settings.resolved_database_url)).attach(bus)
        result = analyze_file(video, cam, settings, bus, build_detector(settings),
                              snapshots or settings.data_dir / "snapshots", name)
        stats = result.pipeline.stats
        if result.report.decoded:
            _say(
                f"analysed {stats.frames} of {result.report.decoded} decoded frames in {result.seconds:.1f}s "
                f"({result.report.decoded / max(result.seconds, 1e-9):.0f} fps); detector ran on "
                f"{stats.detect_fraction:.0%} of analysed frames, {stats.detector_calls} calls")
        if result.error:
            _error(result.error)
            raise typer.Exit(1)


@app.command()
def run(config: Annotated[Path, typer.Option("--config", "-c", help="YAML configuration file.")]) -> None:
    """Run every enabled camera until stopped (Ctrl-C or SIGTERM stop cleanly, finishing open events)."""
    from trustcam.service import Service

    with _user_errors():
        settings = load_settings(config)
        if not any(c.enabled for c in settings.cameras.values()):
            raise ConfigError(f"{config}: no enabled camera; add one under 'cameras:'")
        service = Service(settings)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        service.start()
        _say(f"running {len(service.workers)} camera(s); events in {settings.resolved_database_url}")
        ticks = 0
        while not stop.wait(1.0):
            ticks += 1
            if ticks % 60 == 0:
                for line in service.status_lines():
                    logging.getLogger("trustcam.run").info(line)
        _say("stopping: finishing open events")
        service.stop()
        for line in service.status_lines():
            _say(line)


@config_app.command("check")
def config_check(config: Annotated[Path, typer.Argument(help="YAML configuration file.")]) -> None:
    """Validate a config file and print a summary."""
    with _user_errors():
        settings = load_settings(config)
        for name, cam in settings.cameras.items():
            typer.echo(f"{name}: {len(cam.zones)} zone(s), {len(cam.rules)} rule(s), tracks "
                       f"{', '.join(cam.objects.track)}")
        typer.echo(f"{config}: OK")


@config_app.command("reference")
def config_reference() -> None:
    """Print every config key with its type, default and meaning (Markdown)."""
    from trustcam.config.reference import render

    typer.echo(render(), nl=False)


def _models(names: list[str] | None) -> list[catalog.ModelSpec]:
    return [catalog.get_spec(n) for n in names] if names else list(catalog.CATALOG.values())


def _each(specs: list[catalog.ModelSpec], action: Callable[[catalog.ModelSpec], T]) -> list[T | None]:
    results: list[Any] = []
    failed = False
    for spec in specs:
        try:
            results.append(action(spec))
        except ModelError as exc:
            _error(exc)
            results.append(None)
            failed = True
    if failed:
        raise typer.Exit(1)
    return results


@models_app.command("list")
def models_list() -> None:
    """Show the catalog and whether each model is installed and intact."""
    table = Table("name", "architecture", "input", "sha256", "status", "licence")
    for spec in catalog.CATALOG.values():
        path = spec.path()
        try:
            catalog.verify(spec, path)
            status = "installed, verified"
        except ModelError:
            status = "ALTERED" if path.exists() else "not installed"
        table.add_row(spec.name, spec.architecture, str(spec.input_size), spec.sha256[:16] + "…", status, spec.licence)
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    typer.echo(f"model folder: {paths.model_dir()}")


@models_app.command("install")
def models_install(
    names: Annotated[list[str] | None, typer.Argument(help="Models to install (default: all).")] = None,
    force: Annotated[bool, typer.Option(help="Reinstall even if present.")] = False,
    offline: Annotated[bool, typer.Option(help="Never download; local sources only.")] = False,
) -> None:
    """Install models from TRUSTCAM_MODEL_SOURCES folders, else from the catalog URL; hashes are checked."""
    with _user_errors():
        def one(spec: catalog.ModelSpec) -> None:
            path, origin = catalog.install(spec, force=force, allow_download=not offline)
            typer.echo(f"{spec.name}: {path} ({origin}), sha256 OK")

        _each(_models(names), one)


@models_app.command("verify")
def models_verify(
    names: Annotated[list[str] | None, typer.Argument(help="Models to check (default: all).")] = None,
) -> None:
    """Re-hash installed models against the catalog; exits 1 if any is missing or altered."""
    with _user_errors():
        def one(spec: catalog.ModelSpec) -> None:
            catalog.verify(spec, spec.path())
            typer.echo(f"{spec.name}: OK ({spec.sha256})")

        _each(_models(names), one)


if __name__ == "__main__":
    app()
