"""A flood of parallel logins must not exhaust the server: argon2 checks are bounded (503 beyond), memory stays
bounded, and health and signed-in pages keep answering. Runs the bench script, which drives a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "web_login_flood.py"
ARGON2_MIB = 64


@pytest.mark.slow
def test_200_parallel_logins_leave_memory_bounded_and_pages_answering() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--logins", "200", "--parallel", "200"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    answers = figures["answers"]
    assert set(answers) <= {"401", "503"}, figures  # wrong password or busy: never a crash, a hang or a 500
    assert answers.get("503", 0) > 0, figures  # the gate turned some away instead of queueing them all
    assert figures["page_failures"] == [], figures
    assert figures["slowest_health_s"] < 5 and figures["slowest_signed_in_s"] < 5, figures
    # unbounded, the 40 web threads would each hold an argon2 buffer at once (40 x 64 MiB); bounded, at most 4
    growth = figures["peak_rss_mib_after"] - figures["peak_rss_mib_before"]
    assert growth < 10 * ARGON2_MIB, figures
