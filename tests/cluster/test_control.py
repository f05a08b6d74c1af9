"""The `ray start` command lines `trustcam cluster head|worker` run (no Ray started here)."""

from __future__ import annotations

import json

from trustcam.cluster.control import RayPorts, camera_resources, head_command, worker_command


def test_pinned_ray_ports_reach_ray_start_so_a_firewall_can_name_them() -> None:
    ports = RayPorts(node_manager=6380, object_manager=6381, min_worker=11000, max_worker=11031)
    worker = worker_command("head:6379", 8, "north", 4, ports)
    assert worker[1:3] == ["start", "--address=head:6379"]
    assert json.loads(next(a for a in worker if a.startswith("--resources="))[12:]) == {"camera": 8,
                                                                                       "site-north": 1000}
    for option in ("--node-manager-port=6380", "--object-manager-port=6381", "--min-worker-port=11000",
                   "--max-worker-port=11031"):
        assert option in worker and option in head_command(6379, 1, None, ports)


def test_unpinned_ports_are_left_to_ray() -> None:
    assert not any("port" in a for a in worker_command("head:6379", 2, None, 1))
    assert [a for a in head_command(6379, 1, None) if "port" in a] == ["--port=6379"]


def test_a_camera_with_a_site_asks_for_that_sites_resource() -> None:
    """Placed (and, when its node dies, restarted) only on workers started with --site north."""
    from trustcam.config import parse_settings

    settings = parse_settings({"cameras": {"gate": {"source": "rtsp://10.1.0.5/stream", "site": "north"},
                                           "yard": {"source": "rtsp://10.2.0.5/stream"}}})
    assert camera_resources(settings, "gate") == {"camera": 1, "site-north": 1}
    assert camera_resources(settings, "yard") == {"camera": 1}
    assert "site-north" in next(a for a in worker_command("head:6379", 2, "north", 1) if a.startswith("--resources"))


def test_a_head_address_where_nothing_listens_fails_fast_with_the_fix() -> None:
    """Not Ray's 30 s GCS retries per attempt, page after page: one message naming the address and what to check."""
    import pytest

    from support import free_port
    from trustcam.cluster.control import connect
    from trustcam.errors import UserError

    with pytest.raises(UserError, match=r"nothing answers at 127\.0\.0\.1:\d+: start the head"):
        connect(f"127.0.0.1:{free_port()}", timeout_s=2.0)
