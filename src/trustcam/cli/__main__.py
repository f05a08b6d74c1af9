"""``python -m trustcam.cli``."""

from trustcam.cli import app

if __name__ == "__main__":  # detector child processes (spawn) import this module again: never re-run the app
    app()
