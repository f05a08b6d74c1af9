"""``trustcam users`` and ``trustcam audit show`` as a user runs them (subprocess, real database)."""

from __future__ import annotations

import subprocess
import sys

import yaml
from authkit import PASSWORD


def run(config, *args, stdin=None):
    return subprocess.run([sys.executable, "-m", "trustcam.cli", *args, "--config", str(config)], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_users_lifecycle_from_the_shell(tmp_path):
    config = tmp_path / "trustcam.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data")}))
    made = run(config, "users", "create", "alice", "--admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert made.returncode == 0 and "created admin 'alice' (must enrol TOTP" in made.stderr, made.stderr
    weak = run(config, "users", "create", "bob", "--role", "viewer", "--password-stdin", stdin="password123\n")
    assert weak.returncode == 1 and "too short" in weak.stderr and "Traceback" not in weak.stderr
    neither = run(config, "users", "create", "bob", "--password-stdin", stdin=PASSWORD + "\n")
    assert neither.returncode == 1 and "--admin or --role" in neither.stderr
    assert run(config, "users", "create", "bob", "--role", "viewer", "--password-stdin",
               stdin=PASSWORD + "\n").returncode == 0
    assert run(config, "users", "disable", "bob").returncode == 0
    listing = run(config, "users", "list").stdout
    assert "alice\tadmin\tcameras=all" in listing and "bob\tviewer\tcameras=all\tDISABLED" in listing
    last = run(config, "users", "delete", "alice")
    assert last.returncode == 1 and "last active admin" in last.stderr
    assert run(config, "users", "reset-mfa", "bob").returncode == 0
    assert run(config, "users", "delete", "bob").returncode == 0
    missing = run(config, "users", "delete", "bob")
    assert missing.returncode == 1 and "no user named 'bob'" in missing.stderr
    shown = run(config, "audit", "show", "--json").stdout
    actions = [yaml.safe_load(line)["action"] for line in shown.splitlines()]
    assert actions == ["user.create", "user.create", "user.disable", "mfa.reset", "user.delete"]
    assert PASSWORD not in shown
