"""Config errors name the key path, the bad value and the fix; a good config loads with its defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trustcam.config import ConfigError, load_settings, parse_settings
from trustcam.config.schema import LoiterRule, ThreatLevel

REPO = Path(__file__).resolve().parents[2]


def error_of(data: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_settings(data)
    return str(info.value)


def cam(**extra: object) -> dict:
    return {"cameras": {"front": {"source": "rtsp://cam/stream", **extra}}}


def test_example_config_loads() -> None:
    settings = load_settings(REPO / "examples" / "demo.yaml")
    office = settings.cameras["office"]
    assert office.objects.track == ["person"]
    loiter = next(r for r in office.rules if isinstance(r, LoiterRule))
    assert loiter.seconds == 8 and loiter.threat is ThreatLevel.medium


def test_defaults_are_sane() -> None:
    settings = parse_settings(cam())
    front = settings.cameras["front"]
    assert front.detect.fps == 5 and front.rtsp_transport == "tcp"
    assert settings.resolved_database_url.startswith("sqlite:///")


def test_polygon_with_two_points() -> None:
    message = error_of(cam(zones={"door": {"coordinates": [[0.1, 0.1], [0.2, 0.2]]}}))
    assert "cameras.front.zones.door.coordinates: polygon needs ≥ 3 points, got 2" in message


def test_point_outside_frame_names_the_fix() -> None:
    message = error_of(cam(zones={"door": {"coordinates": [[0, 0], [1, 0], [640, 480]]}}))
    assert "cameras.front.zones.door.coordinates" in message and "between 0 and 1" in message


def test_unknown_key_suggests_the_right_one() -> None:
    message = error_of(cam(zonez={}))
    assert "cameras.front.zonez: unknown key 'zonez'; did you mean 'zones'?" in message


def test_unknown_top_level_key() -> None:
    assert "camras: unknown key 'camras'; did you mean 'cameras'?" in error_of({"camras": {}})


def test_rule_naming_missing_zone() -> None:
    message = error_of(cam(rules=[{"name": "l", "type": "loiter", "zone": "yard", "seconds": 5}]))
    assert "rule 'l' names zone 'yard', which does not exist" in message


def test_unknown_rule_type_lists_valid_ones() -> None:
    message = error_of(cam(rules=[{"name": "l", "type": "lurk", "zone": "yard"}]))
    assert "cameras.front.rules.0" in message and "'enter_zone', 'loiter', 'cross_line'" in message


def test_bad_values_are_shown() -> None:
    message = error_of(cam(detect={"fps": -1}, objects={"track": ["persn"]}))
    assert "cameras.front.detect.fps: Input should be greater than 0 (got -1)" in message
    assert "unknown object label 'persn' (did you mean 'person'?)" in message


def test_duplicate_rule_names_and_line_points() -> None:
    rule = {"name": "x", "type": "cross_line", "line": [[0, 0], [1, 1]]}
    assert "used twice" in error_of(cam(rules=[rule, rule]))
    bad = {"name": "y", "type": "cross_line", "line": [[0.5, 0.5]]}
    assert "a line needs exactly 2 points" in error_of(cam(rules=[bad]))


def test_missing_source() -> None:
    assert "cameras.front.source: required key is missing" in error_of({"cameras": {"front": {}}})


def test_detect_size_needs_both() -> None:
    assert "give both width and height" in error_of(cam(detect={"width": 640}))


def test_yaml_syntax_error_has_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras:\n  front:\n    source: [unclosed\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error at line \d+, column \d+"):
        load_settings(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_cli_reports_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "cameras:\n  front:\n    source: x.mp4\n    zones:\n      door:\n        coordinates: [[0, 0], [1, 1]]\n"
    )
    result = subprocess.run([sys.executable, "-m", "trustcam.cli", "config", "check", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cameras.front.zones.door.coordinates: polygon needs ≥ 3 points, got 2" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_accepts_good_config() -> None:
    result = subprocess.run([sys.executable, "-m", "trustcam.cli", "config", "check",
                             str(REPO / "examples" / "demo.yaml")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "office: 1 zone(s), 3 rule(s)" in result.stdout
