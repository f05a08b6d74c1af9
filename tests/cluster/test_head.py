"""The head's node watch and camera board, fed the same dictionaries Ray and the camera actors return."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from trustcam.bus import Bus
from trustcam.cluster.head import ClusterBoard, NodeWatch


def node(node_id: str, alive: bool, address: str = "10.0.0.7") -> dict[str, Any]:
    return {"NodeID": node_id, "Alive": alive, "NodeManagerAddress": address}


def test_a_node_that_dies_raises_one_health_alert_naming_it_and_its_cameras() -> None:
    watch = NodeWatch()
    placed = {"n1" * 10: ["a", "b"], "n2" * 10: ["c"]}
    assert watch.check([node("n1" * 10, True), node("n2" * 10, True, "10.0.0.8")], lambda n: placed[n]) == []

    alerts = watch.check([node("n1" * 10, False), node("n2" * 10, True, "10.0.0.8")], lambda n: placed[n])

    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert.kind, alert.severity.value, alert.camera) == ("health", "critical", None)
    assert alert.data == {"condition": "node_lost", "node_id": "n1" * 10, "address": "10.0.0.7",
                          "cameras": ["a", "b"]}
    assert "10.0.0.7" in alert.message and "a, b" in alert.message
    # said once: the dead node stays dead in Ray's table; a node that vanishes from the table counts as lost too
    assert watch.check([node("n1" * 10, False), node("n2" * 10, True)], lambda n: placed[n]) == []
    gone = watch.check([], lambda n: placed[n])
    assert [a.data["node_id"] for a in gone] == ["n2" * 10]


def test_a_node_dead_before_the_head_started_watching_is_not_news() -> None:
    assert NodeWatch().check([node("old", False)], lambda n: []) == []


def test_the_board_shows_what_each_actor_reported_and_where_it_runs() -> None:
    board = ClusterBoard(Bus(), ["a", "b"])
    condition = {"kind": "health", "detail": "offline", "message": "camera a offline", "since": 1.0}
    reported = {"state": "connected", "fps": 2.0, "frames": 40, "coverage": "full", "canary": None,
                "alerts": [condition], "name": "a"}
    board.update({"a": {"node_ip": "10.0.0.7", "node_id": "n1", "board": reported}, "b": None})

    assert board.camera("a") == {**reported, "node": "10.0.0.7 (n1)"}
    assert board.camera("b")["state"] == "not running" and board.camera("b")["node"] is None
    assert board.all_conditions() == [{**condition, "camera": "a"}]


def test_prometheus_figures_per_node_and_camera_from_the_last_round() -> None:
    """Scraped at the head's /metrics: node liveness, where each camera runs, its frames and lag, pool batching."""
    from prometheus_client import CollectorRegistry, generate_latest

    from trustcam.cluster.head import ClusterCollector

    head = SimpleNamespace(
        nodes=[{**node("n1", True, "10.0.0.7"), "Resources": {"camera": 4}}, node("n2", False, "10.0.0.8")],
        cameras=["a", "b"], states={"a": {"node_id": "n1", "frames": 120, "lag_s": 0.4}, "b": None},
        pools={"n1": {"calls": 30, "requests": 55}})
    registry = CollectorRegistry()
    registry.register(ClusterCollector(head))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()

    assert 'trustcam_cluster_node_up{address="10.0.0.7",camera_slots="4",node="n1"} 1.0' in text
    assert 'trustcam_cluster_node_up{address="10.0.0.8",camera_slots="0",node="n2"} 0.0' in text
    assert 'trustcam_cluster_camera_running{camera="a",node="n1"} 1.0' in text
    assert 'trustcam_cluster_camera_running{camera="b",node=""} 0.0' in text
    assert 'trustcam_cluster_camera_frames_analysed_total{camera="a",node="n1"} 120.0' in text
    assert 'trustcam_cluster_camera_lag_seconds{camera="a",node="n1"} 0.4' in text
    assert 'trustcam_cluster_detector_pool_requests_total{node="n1"} 55.0' in text
