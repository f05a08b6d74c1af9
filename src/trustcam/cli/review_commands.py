"""`trustcam review`: what operators' verdicts say about the detector in the field, and the labels themselves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from trustcam.cli.common import ConfigOption, say, settings_from, user_errors

review_app = typer.Typer(help="Operators' true/false-positive verdicts on events.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")


@review_app.command("stats")
def stats(config: ConfigOption = None) -> None:
    """Field precision per camera, label and model: TP / (TP + FP) with a Wilson 95% interval."""
    from trustcam.storage.database import open_database
    from trustcam.storage.reviews import Reviews

    with user_errors():
        settings = settings_from(config)
        rows = Reviews(open_database(settings.resolved_database_url)).precision()
        if not rows:
            say("no reviewed events yet: mark events true or false positive in the web UI (or POST "
                "/api/events/{id}/review)")
            return
        typer.echo(f"{'camera':<16} {'label':<12} {'model':<28} {'TP':>5} {'FP':>5} {'precision':>9}  95% interval")
        for row in rows:
            low, high = row.interval
            typer.echo(f"{row.camera:<16} {row.label:<12} {row.model:<28} {row.true_positives:>5} "
                       f"{row.false_positives:>5} {row.precision:>9.3f}  [{low:.3f}, {high:.3f}]")


@review_app.command("export")
def export(out: Annotated[Path, typer.Option("--out", "-o", help="JSON file to write.")],
           config: ConfigOption = None) -> None:
    """Write every reviewed event as a label (event, camera, label, box, time, verdict, model sha256)."""
    from trustcam.storage.database import open_database
    from trustcam.storage.reviews import Reviews

    with user_errors():
        settings = settings_from(config)
        labelled = Reviews(open_database(settings.resolved_database_url)).labelled()
        labels = [{"event": event.id, "camera": event.camera, "label": event.label, "box": event.box,
                   "start": event.start, "end": event.end, "score": event.best_score, "verdict": review.verdict,
                   "note": review.note, "reviewed_by": review.username, "reviewed_at": review.time,
                   "model": {"name": event.model_name, "sha256": event.model_sha256}}
                  for event, review in labelled]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"format": "trustcam-field-labels-v1", "labels": labels}, indent=2),
                       encoding="utf-8")
        say(f"{len(labels)} reviewed event(s) written to {out}")
