"""Bundles an older version wrote decrypted into <data_dir>/exports are named at start, never silently kept."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from trustcam.service import warn_legacy_exports


def test_old_plaintext_exports_are_named_with_the_fix(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "ev1-20260101T000000Z.zip").write_bytes(b"PK\x03\x04")
    with caplog.at_level(logging.WARNING, logger="trustcam.service"):
        assert warn_legacy_exports(tmp_path) == [exports / "ev1-20260101T000000Z.zip"]
    assert "1 evidence bundle(s)" in caplog.text and f"rm -r {exports}" in caplog.text
    assert (exports / "ev1-20260101T000000Z.zip").exists()  # named, not deleted: it may be evidence handed out


def test_nothing_to_say_without_old_exports(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert warn_legacy_exports(tmp_path) == [] and caplog.text == ""
