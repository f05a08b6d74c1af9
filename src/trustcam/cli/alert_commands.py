"""``trustcam alerts``: the dead-letter queue, replaying it, and a test alert to every configured sink."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from trustcam.cli.common import ConfigOption, error, say, settings_from, user_errors
from trustcam.config import ConfigError, load_settings
from trustcam.redaction import redact_urls  # errors name webhook URLs, whose query string may hold a token

alerts_app = typer.Typer(help="Alert delivery: dead-letter queue, replay, test alert.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


@alerts_app.command("dlq")
def dlq(config: ConfigOption = None) -> None:
    """List alerts that could not be delivered (dead letters), one per line: ID, sink, time, kind, error."""
    from trustcam.alerts.outbox import Outbox
    from trustcam.storage.database import open_database

    with user_errors():
        settings = settings_from(config)
        rows = Outbox(open_database(settings.resolved_database_url)).rows(state="dead")
        for r in rows:
            a = r.alert
            typer.echo(f"{r.id}\t{r.sink}\t{_when(r.created)}\t{a.kind}\t{a.camera or '-'}\t{a.severity.value}\t"
                       f"{r.attempts} attempts\t{r.last_error}\t{a.message}")
        hint = "; send them again with `trustcam alerts replay ID|--all`" if rows else ""
        say(f"{len(rows)} dead letter(s){hint}")


@alerts_app.command("replay")
def replay(
    dead_letter: Annotated[str | None, typer.Argument(help="ID from `trustcam alerts dlq` (or an alert id).")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    config: ConfigOption = None,
) -> None:
    """Put dead letters back in the outbox and try each once now with the configured sinks; what still fails
    stays pending and `trustcam run` keeps retrying it."""
    from trustcam.alerts.dispatcher import AlertDispatcher
    from trustcam.alerts.outbox import Outbox
    from trustcam.bus import Bus
    from trustcam.storage.database import open_database

    with user_errors():
        if (dead_letter is None) == (not replay_all):
            raise ConfigError("give one dead-letter ID (listed by `trustcam alerts dlq`) or --all")
        settings = settings_from(config)
        engine = open_database(settings.resolved_database_url)
        outbox = Outbox(engine)
        if replay_all:
            ids = outbox.replay()
        elif dead_letter is not None and dead_letter.isdigit():
            ids = outbox.replay([int(dead_letter)])
        else:
            ids = outbox.replay([r.id for r in outbox.rows(state="dead", alert_id=dead_letter)])
        if not ids:
            if replay_all:
                say("the dead-letter queue is empty; nothing to replay")
                return
            error(f"no dead letter with ID {dead_letter}; `trustcam alerts dlq` lists them")
            raise typer.Exit(1)
        wanted = set(ids)
        rows = [r for r in outbox.rows(state="pending") if r.id in wanted]
        results = AlertDispatcher(settings, engine, Bus()).deliver_now(rows)
        failed = 0
        for result in results:
            r = result.delivery
            if result.outcome == "delivered":
                typer.echo(f"{r.id}\t{r.sink}\tdelivered\t{r.alert.kind}\t{r.alert.message}")
            else:
                failed += 1
                typer.echo(f"{r.id}\t{r.sink}\tnot delivered ({result.outcome}): {redact_urls(result.error or '')}")
        if failed:
            error(f"{failed} of {len(results)} not delivered yet; they stay pending and `trustcam run` retries them")
            raise typer.Exit(1)


@alerts_app.command("test")
def test(config: Annotated[Path, typer.Option("--config", "-c", help="YAML configuration file.")]) -> None:
    """Send one test alert (test=true) directly to every configured sink and report each result."""
    from trustcam.alerts.dispatcher import AlertDispatcher
    from trustcam.bus import Bus
    from trustcam.storage.database import open_database

    with user_errors():
        settings = load_settings(config)
        dispatcher = AlertDispatcher(settings, open_database(settings.resolved_database_url), Bus())
        results = dispatcher.send_test()
        for sink, problem in results.items():
            typer.echo(f"{sink}: {'delivered' if problem is None else f'FAILED: {redact_urls(problem)}'}")
        failed = [sink for sink, problem in results.items() if problem is not None]
        if failed:
            error(f"test alert not delivered to {', '.join(failed)}; fix the sink settings in {config} and retry")
            raise typer.Exit(1)
