"""The systemd units and commands of docs/deployment.md cannot rot silently.

Every option of each unit's ``ExecStart`` (and of each ``trustcam cluster`` line in the guide) is parsed by the real
CLI, values converted, so a renamed or removed option fails here, not on a customer's head node at boot. systemd
itself checks the unit syntax (``systemd-analyze verify``) where it is installed, and the hardening is checked to
leave Ray the folders it writes.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from trustcam.cli import app

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
ENV_EXAMPLE = UNITS / "trustcam-cluster.env.example"
GUIDE = REPO / "docs" / "deployment.md"
ROLES = ["head", "worker"]
SECRET_VARIABLES = ("TRUSTCAM_VAULT_KEK", "TRUSTCAM_MQTT_PASSWORD", "PGPASSWORD", "RAY_AUTH_TOKEN")


def read_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """``{section: [(key, value), ...]}`` as systemd reads it: repeated keys kept in order, ``#``/``;`` comments,
    backslash continuation lines joined."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not KEY=VALUE"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}: expected one value, found {found}"
    return found[0]


def unit_path(role: str) -> Path:
    return UNITS / f"trustcam-{role}.service"


def exec_start(role: str) -> list[str]:
    return shlex.split(one(read_unit(unit_path(role)), "Service", "ExecStart"))


def cluster_command(role: str) -> Any:
    """The click command behind ``trustcam cluster <role>`` (typer bundles its own click: duck-typed)."""
    return typer.main.get_command(app).commands["cluster"].commands[role]  # type: ignore[attr-defined]


def parse_with_cli(role: str, args: list[str]) -> dict[str, object]:
    """The options as the real command would receive them (unknown options, missing ones and bad values raise
    click's usage errors)."""
    with cluster_command(role).make_context(f"trustcam cluster {role}", list(args)) as context:
        return dict(context.params)


@pytest.mark.parametrize("role", ROLES)
def test_each_unit_runs_its_trustcam_cluster_command_with_options_the_cli_accepts(role: str) -> None:
    argv = exec_start(role)
    assert Path(argv[0]).name == "trustcam" and argv[1:3] == ["cluster", role], argv
    params = parse_with_cli(role, argv[3:])  # raises NoSuchOption / BadParameter on a rotted unit
    if role == "head":
        assert params["port"] == 6379 and params["config"] == Path("/etc/trustcam/site.yaml")
    else:
        assert params["address"].endswith(":6379") and params["cameras"] >= 1  # type: ignore[union-attr]
    # the same command line through typer's runner, as a shell would run it: --help answers only when every option
    # before it exists
    result = CliRunner().invoke(app, [*argv[1:], "--help"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("role", ROLES)
def test_the_cli_check_refuses_an_option_the_command_does_not_have(role: str) -> None:
    """The check above bites: an option that does not exist (a rename) fails to parse."""
    with pytest.raises(Exception) as refused:
        parse_with_cli(role, [*exec_start(role)[3:], "--raylet-socket-name", "/tmp/raylet"])
    assert type(refused.value).__name__ == "NoSuchOption", refused.value
    assert CliRunner().invoke(app, [*exec_start(role)[1:], "--no-such-option", "--help"]).exit_code == 2


@pytest.mark.parametrize("role", ROLES)
def test_each_unit_restarts_always_as_the_trustcam_user_with_hardening_ray_tolerates(role: str) -> None:
    unit = read_unit(unit_path(role))
    service = dict(unit["Service"])  # last value wins, as in systemd
    assert service["User"] == "trustcam" and service["Group"] == "trustcam"
    assert service["Restart"] == "always"
    assert one(unit, "Unit", "StartLimitIntervalSec") == "0"  # never give up while the head or database is down
    for key, expected in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                          "PrivateTmp": "yes", "UMask": "0077"}.items():
        assert service[key] == expected, f"{unit_path(role).name}: {key}={service.get(key)}, want {expected}"
    # Ray's object store lives in /dev/shm and GPUs in /dev: a private /dev would break both
    assert "PrivateDevices" not in service and "MemoryDenyWriteExecute" not in service
    # head: SIGTERM to trustcam only, which stops the cameras through Ray before stopping Ray's head itself
    assert service["KillMode"] == ("mixed" if role == "head" else "control-group")
    writable = [Path(p.lstrip("-")) for line in values(unit, "Service", "ReadWritePaths") for p in line.split()]
    argv = exec_start(role)
    needs_writing = [Path(service["WorkingDirectory"])]
    if "--temp-dir" in argv:
        needs_writing.append(Path(argv[argv.index("--temp-dir") + 1]))
    for path in needs_writing:  # under ProtectSystem=strict everything else is read-only
        assert any(path.is_relative_to(w) for w in writable), f"{path} is not under ReadWritePaths {writable}"


@pytest.mark.parametrize("role", ROLES)
def test_no_unit_carries_a_secret(role: str) -> None:
    unit = read_unit(unit_path(role))
    environment = " ".join(values(unit, "Service", "Environment"))
    assert not any(name in environment for name in SECRET_VARIABLES), environment
    assert values(unit, "Service", "EnvironmentFile") == ["/etc/trustcam/trustcam-cluster.env"]
    assert "postgresql://" not in unit_path(role).read_text()  # the URL (and any password in it) is in site.yaml


def test_the_environment_example_names_secret_files_never_secret_values() -> None:
    settings = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                    if line and not line.startswith("#"))
    assert not set(settings) & set(SECRET_VARIABLES), sorted(settings)
    assert settings["PGPASSFILE"].startswith("/etc/trustcam/secrets/")
    assert settings["RAY_TLS_SERVER_KEY"].startswith("/etc/trustcam/secrets/")
    # Ray refuses RAY_USE_TLS=1 unless all three are set (ray._common.tls_utils.load_certs_from_env)
    assert settings["RAY_USE_TLS"] == "1"
    assert {"RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT"} <= set(settings)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (Debian: systemd)")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on copies whose ExecStart names this checkout's trustcam (it checks that the
    program exists); any warning (unknown key, bad value) fails. The typo control proves the tool reads them."""
    program = Path(sys.executable).parent / "trustcam"
    copies = []
    for role in ROLES:
        text = unit_path(role).read_text().replace("/opt/trustcam/venv/bin/trustcam", str(program))
        copies.append(tmp_path / unit_path(role).name)
        copies[-1].write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", *map(str, copies)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr
    typo = tmp_path / "trustcam-typo.service"
    typo.write_text(copies[0].read_text().replace("KillMode=mixed", "KillMode=mixd\nProtectSystm=strict"))
    done = subprocess.run(["systemd-analyze", "verify", str(typo)], capture_output=True, text=True, timeout=60)
    assert "mixd" in done.stderr and "ProtectSystm" in done.stderr, done.stderr


def test_every_trustcam_cluster_command_in_the_guide_parses() -> None:
    """The guide's ``trustcam cluster head|worker|status ...`` lines (code blocks, placeholders as written)."""
    commands = re.findall(r"^\s*(?:\$ )?trustcam cluster (head|worker|status)\b([^#\n]*)", GUIDE.read_text(),
                          re.MULTILINE)
    assert {role for role, _ in commands} == {"head", "worker", "status"}, commands
    for role, rest in commands:
        parse_with_cli(role, shlex.split(rest.rstrip(" \\")))
    for role in ROLES:
        assert f"deploy/systemd/trustcam-{role}.service" in GUIDE.read_text()
