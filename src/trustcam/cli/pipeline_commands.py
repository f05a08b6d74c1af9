"""Commands that run the vision pipeline: detect, analyze, run; and config checks."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from trustcam.cli.common import ConfigOption, camera_from, error, say, settings_from, user_errors
from trustcam.config import ConfigError, load_settings

config_app = typer.Typer(help="Check a configuration file.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command()(detect)
    app.command()(analyze)
    app.command()(run)
    app.add_typer(config_app, name="config")


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

    with user_errors():
        settings = settings_from(config)
        detector = FrameDetector(build_detector(settings), settings.detector.tiling)
        min_score = settings.detector.score_threshold if threshold is None else threshold
        detector.detector.score_threshold = min_score
        failed = 0
        for path in images:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
            if image is None:
                reason = "not found" if not path.exists() else "not a readable image"
                error(f"{path}: {reason}; pass JPEG or PNG files")
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

    with user_errors():
        settings = settings_from(config)
        name, cam = camera_from(settings, camera)
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
            say(
                f"analysed {stats.frames} of {result.report.decoded} decoded frames in {result.seconds:.1f}s "
                f"({result.report.decoded / max(result.seconds, 1e-9):.0f} fps); detector ran on "
                f"{stats.detect_fraction:.0%} of analysed frames, {stats.detector_calls} calls "
                f"({stats.full_pass_calls} in full passes, {stats.whole_frame_calls} whole-frame, "
                f"{stats.detector_calls - stats.full_pass_calls - stats.whole_frame_calls} on regions)")
        if result.error:
            error(result.error)
            raise typer.Exit(1)


def run(config: Annotated[Path, typer.Option("--config", "-c", help="YAML configuration file.")]) -> None:
    """Run every enabled camera until stopped (Ctrl-C or SIGTERM stop cleanly, finishing open events)."""
    from trustcam.service import Service

    with user_errors():
        settings = load_settings(config)
        if not any(c.enabled for c in settings.cameras.values()):
            raise ConfigError(f"{config}: no enabled camera; add one under 'cameras:'")
        service = Service(settings)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        web = None
        if settings.server.enabled:
            from trustcam.web.server import start_for_service

            web = start_for_service(service, config, say)
        service.start()
        say(f"running {len(service.workers)} camera(s); events in {settings.resolved_database_url}")
        ticks = 0
        while not stop.wait(1.0):
            service.check_health()
            ticks += 1
            if ticks % 60 == 0:
                for line in service.status_lines():
                    logging.getLogger("trustcam.run").info(line)
        say("stopping: finishing open events")
        if web is not None:
            web.stop()
        service.stop()
        for line in service.status_lines():
            say(line)


@config_app.command("check")
def config_check(config: Annotated[Path, typer.Argument(help="YAML configuration file.")]) -> None:
    """Validate a config file and print a summary."""
    with user_errors():
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


