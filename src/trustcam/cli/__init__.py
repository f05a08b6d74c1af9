"""The ``trustcam`` command line. Every expected failure prints one clear message and exits non-zero."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from trustcam import __version__
from trustcam.cli import (
    alert_commands,
    assess_command,
    cluster_commands,
    face_commands,
    model_commands,
    pipeline_commands,
    review_commands,
    security_commands,
    vault_commands,
)

app = typer.Typer(help="trustcam: AI video surveillance that measures and proves its own reliability.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


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


pipeline_commands.register(app)
assess_command.register(app)
app.add_typer(model_commands.models_app, name="models")
vault_commands.register(app)
security_commands.register(app)
review_commands.register(app)
alert_commands.register(app)
face_commands.register(app)
cluster_commands.register(app)
