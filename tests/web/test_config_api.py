"""Config over the API: declared fields change (validated, persisted atomically with a backup, audited with
before/after); paths, sources, secrets, unknown keys and YAML tags are refused and audited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from web_helpers import InProcessServer, bootstrap

from support import free_port
from trustcam.bus import Bus
from trustcam.config import ConfigError, load_settings
from trustcam.security.setup import ensure_setup_token
from trustcam.storage.database import open_database
from trustcam.web.context import AppContext

ZONE = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory, person_video: Path) -> Iterator[tuple[InProcessServer, str,
                                                                                                   Path]]:
    tmp = tmp_path_factory.mktemp("config")
    config = tmp / "trustcam.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(tmp / "data"),
        "server": {"host": "127.0.0.1", "port": free_port()},
        "alerts": {"webhooks": [{"name": "ops", "url": "https://hooks.example.com/T0K3N/secret-path",
                                 "secret_env": "OPS_SECRET"}]},
        "cameras": {"front": {"source": str(person_video), "zones": {"door": {"coordinates": ZONE}}}},
    }))
    settings = load_settings(config)
    engine = open_database(settings.resolved_database_url)
    ctx = AppContext(settings=settings, engine=engine, bus=Bus(), config_path=config)
    with InProcessServer(ctx) as server:
        tokens = bootstrap(server.url, server.verify, ensure_setup_token(settings, engine) or "")
        yield server, tokens["admin"], config


def test_get_config_is_redacted(configured, person_video):
    server, admin, _ = configured
    with server.client(admin) as client:
        answer = client.get("/api/config").json()
    text = str(answer)
    assert str(person_video) not in text and "T0K3N" not in text and "secret-path" not in text
    assert answer["config"]["data_dir"] == "<redacted>"
    assert answer["config"]["alerts"]["webhooks"][0]["url"] == "https://hooks.example.com/…"
    assert "cameras.<camera>.zones" in answer["changeable"]


def _with_marker(value: object, marker: Path) -> object:
    """``value`` with ``{marker}`` replaced by a file path the test owns (a tag that ran would create it)."""
    if isinstance(value, dict):
        return {_with_marker(k, marker): _with_marker(v, marker) for k, v in value.items()}
    return value.replace("{marker}", str(marker)) if isinstance(value, str) else value


@pytest.mark.parametrize(("patch", "status", "words"), [
    ({"cameras": {"front": {"source": "/etc/shadow"}}}, 403, "cameras.front.source cannot be changed"),
    ({"data_dir": "/tmp/elsewhere"}, 403, "data_dir cannot be changed"),
    ({"vault": {"key_file": "/tmp/evil.kek"}}, 403, "vault cannot be changed"),
    ({"database_url": "sqlite:////tmp/x.db"}, 403, "database_url cannot be changed"),
    ({"alerts": {"webhooks": [{"name": "x", "url": "https://evil.example", "secret_env": "X"}]}}, 403, "alerts"),
    ({"cameras": {"front": {"record": {"enabled": True}}}}, 403, "cameras.front.record"),
    ({"cameras": {"front": {"colour": "red"}}}, 403, "cameras.front.colour is not changeable"),
    ({"cameras": {"ghost": {"enabled": False}}}, 404, "no camera 'ghost'"),
    ({"cameras": {"front": {"zones": {"door": {"coordinates": "!!python/object/apply:os.system ['id']"}}}}}, 422,
     "YAML tags"),
    ({"detector": {"score_threshold": "!!python/object/apply:os.system ['touch {marker}']"}}, 422, "YAML tags"),
    ({"cameras": {"front": {"zones": {"!!python/object/apply:os.system ['touch {marker}']": {}}}}}, 422,
     "YAML tags"),
    ({"cameras": {"front": {"zones": {"door": {"coordinates": [[0.1, 0.1], [2.0, 0.1], [0.5, 0.5]]}}}}}, 422,
     "outside the frame"),
    ({"detector": {"score_threshold": 7}}, 422, "detector.score_threshold"),
])
def test_refused_changes_leave_the_file_alone_and_are_audited(configured, patch, status, words, tmp_path):
    server, admin, config = configured
    marker = tmp_path / "pwned"
    patch = _with_marker(patch, marker)
    before = config.read_bytes()
    with server.client(admin) as client:
        answer = client.patch("/api/config", json=patch)
        assert answer.status_code == status, answer.text
        assert words in answer.json()["detail"]
        assert config.read_bytes() == before
        entry = client.get("/api/audit", params={"action": "config_change_refused", "limit": 1}).json()["entries"][0]
        assert entry["outcome"] == "refused" and words in entry["details"]["reason"]
    load_settings(config)  # the file as it stands, read by the real loader: nothing in it runs either
    assert not marker.exists()


def test_tags_in_the_config_file_are_never_executed(configured, tmp_path):
    """The YAML loaders are safe: a config file carrying a tag (written by someone with access to the server) is
    refused with a clear message by `trustcam` and by the config API; the tag's command never runs."""
    server, admin, _ = configured
    marker = tmp_path / "pwned"
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text(f"detector:\n  score_threshold: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error.*could not determine a constructor"):
        load_settings(tagged)
    assert not marker.exists()
    original = server.ctx.config_path
    server.ctx.config_path = tagged  # the API reads the file it edits: the same tag, through the API's loader
    try:
        with server.client(admin) as client:
            answer = client.patch("/api/config", json={"detector": {"score_threshold": 0.4}})
    finally:
        server.ctx.config_path = original
    assert answer.status_code == 409, answer.text
    assert "YAML tags such as !!python/... are not accepted" in answer.json()["detail"]
    assert not marker.exists() and "0.4" not in tagged.read_text()


def test_zone_change_is_persisted_with_backup_and_audited(configured):
    server, admin, config = configured
    new_zone = [[0.2, 0.2], [0.8, 0.2], [0.8, 0.9], [0.2, 0.9]]
    original = config.read_text()
    with server.client(admin) as client:
        answer = client.patch("/api/config", json={"cameras": {"front": {"zones": {"door": {"coordinates": new_zone}},
                                                                          "detect": {"fps": 3}}},
                                                   "detector": {"score_threshold": 0.35}})
        assert answer.status_code == 200, answer.text
        assert answer.json()["restart_required"] is True and "restart" in answer.json()["detail"]
        after = client.get("/api/config").json()
        assert after["restart_pending"] is True
        assert after["config"]["cameras"]["front"]["zones"]["door"]["coordinates"] == ZONE  # still running
        assert after["saved"]["cameras"]["front"]["zones"]["door"]["coordinates"] == new_zone  # what an editor shows
        assert after["saved"]["detector"] == {"score_threshold": 0.35} and "source" not in str(after["saved"])
        entry = client.get("/api/audit", params={"action": "config_change", "limit": 1}).json()["entries"][0]
    changes = {c["path"]: c for c in entry["details"]["changes"]}
    assert changes["cameras.front.zones"]["before"] == {"door": {"coordinates": ZONE}}
    assert changes["cameras.front.zones"]["after"] == {"door": {"coordinates": new_zone}}
    threshold = changes["detector.score_threshold"]
    assert threshold["before"] is None and threshold["after"] == 0.35
    settings = load_settings(config)  # the file is still a valid config, with the change
    assert [list(p) for p in settings.cameras["front"].zones["door"].coordinates] == new_zone
    assert settings.cameras["front"].detect.fps == 3 and settings.detector.score_threshold == 0.35
    assert config.with_name(config.name + ".bak").read_text() == original
