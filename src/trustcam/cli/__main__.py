"""``python -m trustcam.cli``."""

from trustcam.cli import app

app()
