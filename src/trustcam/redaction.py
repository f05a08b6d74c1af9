"""Hide secrets that URLs carry before a URL is shown (config API) or stored (alert errors, dead letters).

A webhook or camera URL often holds its credential in the user part or the query string
(``https://hooks.example/T0/B1?token=...``, ``rtsp://admin:pw@cam/``): only the scheme, host and port are kept.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

REDACTED = "<redacted>"
# a URL ends at a space or quote; punctuation right after it (``url: error``, ``url, ...``) is not part of it
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]*[^\s'\"<>`:,.;!?)\]]")


def redact_url(url: str) -> str:
    """``scheme://host:port/…``: no user, password, path, query or fragment (``<redacted>`` if it has no host)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # e.g. a port that is not a number: show nothing of it
        return REDACTED
    if not parts.scheme or not parts.hostname:
        return REDACTED
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}/…"


def redact_urls(text: str) -> str:
    """``text`` (an error message) with every URL in it replaced by :func:`redact_url`; idempotent."""
    return _URL.sub(lambda match: redact_url(match.group(0)), text)
