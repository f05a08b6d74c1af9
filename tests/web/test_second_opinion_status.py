"""The second opinion's status where an operator looks: the camera grid / cameras API and Prometheus metrics.

A real service (real models, a file camera, real SQLite) runs with ``detector.second_opinion`` on behind the real
HTTPS API: `GET /api/cameras/grid` and `GET /api/cameras` carry `second_opinion: {enabled, checked_share,
disagreements_per_hour}` computed from the pipeline's own counters, and `/metrics` has the same counters per camera.
With the second opinion off, the grid says so.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from web_helpers import InProcessServer, bootstrap, person_camera

from support import free_port
from trustcam.bus import Bus
from trustcam.config.loader import parse_settings
from trustcam.config.schema import Settings
from trustcam.security.setup import ensure_setup_token
from trustcam.storage.database import open_database
from trustcam.web.context import AppContext


def config(tmp: Path, video: Path, enabled: bool) -> Settings:
    return parse_settings({
        "data_dir": str(tmp / "data"),
        "server": {"host": "127.0.0.1", "port": free_port(), "auth_key_file": str(tmp / "keys" / "auth.key")},
        "detector": {"failover": [], "second_opinion": {"enabled": enabled}},
        "cameras": {"office": person_camera(video)},
    })


def metric(text: str, name: str) -> float:
    found = re.search(rf'^{name}\{{camera="office"\}} (\S+)$', text, re.M)
    assert found, f"{name} missing from /metrics"
    return float(found.group(1))


def test_grid_api_and_metrics_show_the_running_second_opinion(person_video: Path, installed_models: None,
                                                               tmp_path: Path) -> None:
    from trustcam.service import Service

    service = Service(config(tmp_path, person_video, True))
    ctx = AppContext.for_service(service, None)
    service.start()
    try:
        deadline = time.monotonic() + 60
        while service.workers[0].pipeline.stats.frames < 40 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        service.stop()
    stats = service.workers[0].pipeline.stats
    assert stats.frames >= 40 and stats.second_opinion_checks > 0
    with InProcessServer(ctx) as server:
        tokens = bootstrap(server.url, server.verify, ensure_setup_token(ctx.settings, ctx.engine) or "")
        with server.client(tokens["viewer"]) as viewer:
            [tile] = viewer.get("/api/cameras/grid").json()["cameras"]
            [listed] = viewer.get("/api/cameras").json()
        with server.client(tokens["admin"]) as admin:
            text = admin.get("/metrics").text
    opinion = tile["second_opinion"]
    assert opinion == listed["second_opinion"]
    assert opinion["enabled"] is True
    assert opinion["checked_share"] == round(stats.second_opinion_checks / stats.frames, 4)
    assert 0 < opinion["checked_share"] < 1  # a sample and persisting motion, not every frame
    assert opinion["disagreements_per_hour"] == round(stats.disagreements / (stats.span_s / 3600), 2)
    assert opinion["disagreements_per_hour"] == 0  # both models see the people: no disagreement

    assert metric(text, "trustcam_second_opinion_enabled") == 1.0
    checked = metric(text, "trustcam_second_opinion_frames_checked_total")
    analysed = metric(text, "trustcam_frames_analysed_total")
    assert (checked, analysed) == (stats.second_opinion_checks, stats.frames)
    assert round(checked / analysed, 4) == opinion["checked_share"]  # the share, from the two counters
    assert metric(text, "trustcam_second_opinion_seconds_total") > 0
    assert metric(text, "trustcam_second_opinion_disagreements_total") == stats.disagreements == 0
    assert metric(text, "trustcam_second_opinion_secondary_only_detections_total") == stats.secondary_only_detections
    assert metric(text, "trustcam_evasion_suspected_total") == stats.evasion_alerts == 0


def test_grid_says_when_the_second_opinion_is_off(person_video: Path, tmp_path: Path) -> None:
    settings = config(tmp_path, person_video, False)
    engine = open_database(settings.resolved_database_url)
    with InProcessServer(AppContext(settings=settings, engine=engine, bus=Bus())) as server:
        tokens = bootstrap(server.url, server.verify, ensure_setup_token(settings, engine) or "")
        with server.client(tokens["viewer"]) as viewer:
            [tile] = viewer.get("/api/cameras/grid").json()["cameras"]
    assert tile["second_opinion"] == {"enabled": False, "checked_share": None, "disagreements_per_hour": None}
