"""What runs once for the whole cluster, in the ``trustcam cluster head`` process: the alert dispatcher, the node
watch (a ``health`` alert naming a lost node), and the web UI/API seeing every camera.

The camera actors queue their alerts in the shared outbox without sending them (``Service(deliver_alerts=False)``);
the head's dispatcher claims and delivers them (``SELECT … FOR UPDATE SKIP LOCKED``), so each alert leaves once
whichever node raised it. The head polls the camera actors every ``cluster.node_check_s`` for the web UI's camera
states (health, AI coverage, canary and the node each camera runs on), and the Ray node table for lost nodes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from trustcam.alerts.dispatcher import AlertDispatcher
from trustcam.alerts.model import Alert, Severity
from trustcam.alerts.outbox import Outbox
from trustcam.bus import Bus
from trustcam.config.schema import CameraConfig, Settings
from trustcam.monitor.metrics import Metrics
from trustcam.monitor.status import Condition, RecentAlerts, StatusBoard
from trustcam.storage.database import open_database
from trustcam.vision.privacy import ORIGINAL, Redaction
from trustcam.web.live import LiveHub

log = logging.getLogger(__name__)
NOT_RUNNING = {"state": "not running", "fps": 0.0, "frames": 0, "coverage": "full", "canary": None, "alerts": []}


class ClusterBoard(StatusBoard):
    """The camera states the web UI shows, as the camera actors last reported them (each keeps its own
    :class:`StatusBoard`), with the node each runs on. A camera whose actor does not answer (moving to another
    node, starting) shows ``not running`` with no node."""

    def __init__(self, bus: Bus, cameras: list[str]) -> None:
        super().__init__(bus, cameras)
        self._remote: dict[str, dict[str, Any]] = {}

    def update(self, states: dict[str, dict[str, Any] | None]) -> None:
        with self._lock:
            self._remote = {name: state for name, state in states.items() if state is not None}

    def camera(self, name: str) -> dict[str, Any]:
        with self._lock:
            state = self._remote.get(name)
        if state is None:
            return {"name": name, **NOT_RUNNING, "node": None}
        return {**state["board"], "name": name, "node": f"{state['node_ip']} ({state['node_id'][:8]})"}

    def conditions(self, camera: str) -> list[Condition]:
        with self._lock:
            state = self._remote.get(camera)
        own = super().conditions(camera)  # raised on the head itself (none today), kept for completeness
        return own + [Condition(**c) for c in (state["board"]["alerts"] if state else [])]


class ActorLiveHub(LiveHub):
    """The live view (snapshot.jpg, live.mjpeg) of cameras that run on other nodes: each camera actor keeps the
    latest analysed frame and draws, redacts and encodes it where the frame is; the head asks it for the JPEG (one
    Ray call per new frame and viewer). A camera whose actor does not answer (moving) has no frame."""

    def __init__(self, cameras: dict[str, CameraConfig], running: Callable[[str], bool],
                 timeout_s: float = 5.0) -> None:
        """``running``: whether the camera's actor answered the head's last round; one that did not (moving,
        starting) is not asked, so a camera list or a viewer never waits ``timeout_s`` on a restarting actor."""
        super().__init__(cameras)
        self.running = running
        self.timeout_s = timeout_s

    def _ask(self, camera: str, method: str, *args: Any) -> Any:
        import ray

        from trustcam.cluster.control import NAMESPACE, actor_name

        if not self.running(camera):
            return None
        try:
            handle = ray.get_actor(actor_name(camera), namespace=NAMESPACE)
            return ray.get(getattr(handle, method).remote(*args), timeout=self.timeout_s)
        except Exception:  # not placed, dead, moving or slow: no frame now, the viewer tries again
            return None

    def seq(self, camera: str) -> int:
        return int(self._ask(camera, "live_seq") or 0)

    def jpeg(self, camera: str, view: Redaction = ORIGINAL) -> tuple[int, bytes] | None:
        got = self._ask(camera, "live_jpeg", view)
        return None if got is None else (int(got[0]), bytes(got[1]))


class OutboxAlerts(RecentAlerts):
    """Recent alerts from the shared outbox: the head's bus never sees the alerts the cameras raise elsewhere."""

    def __init__(self, bus: Bus, outbox: Outbox) -> None:
        super().__init__(bus)
        self.outbox = outbox

    def recent(self, limit: int = 100) -> list[Alert]:
        return self.outbox.recent_alerts(min(limit, 500))


class ClusterCollector:
    """Prometheus figures per node and per camera, from the head's last round (:meth:`ClusterHead.poll_once`): the
    cameras' processes live on other machines, so their counters are read from their reports, labelled with the
    node that runs them."""

    def __init__(self, head: ClusterHead) -> None:
        self.head = head

    def collect(self) -> Iterator[Metric]:
        nodes = GaugeMetricFamily("trustcam_cluster_node_up", "1 while the Ray node is alive, 0 once it is dead.",
                                  labels=["node", "address", "camera_slots"])
        for n in self.head.nodes:
            nodes.add_metric([n["NodeID"], str(n.get("NodeManagerAddress")),
                              f"{n.get('Resources', {}).get('camera', 0):g}"], 1.0 if n["Alive"] else 0.0)
        running = GaugeMetricFamily("trustcam_cluster_camera_running", "1 while the camera's actor answers (0 while "
                                    "it moves to another node).", labels=["camera", "node"])
        frames = CounterMetricFamily("trustcam_cluster_camera_frames_analysed", "Frames analysed by the camera's "
                                     "current process (starts again from 0 after a move).", labels=["camera", "node"])
        lag = GaugeMetricFamily("trustcam_cluster_camera_lag_seconds", "Age of the newest analysed frame when the "
                                "actor answered.", labels=["camera", "node"])
        for camera in self.head.cameras:
            state = self.head.states.get(camera)
            node = state["node_id"] if state else ""
            running.add_metric([camera, node], 1.0 if state else 0.0)
            if state:
                frames.add_metric([camera, node], state["frames"])
                if state.get("lag_s") is not None:
                    lag.add_metric([camera, node], state["lag_s"])
        calls = CounterMetricFamily("trustcam_cluster_detector_pool_calls", "Model calls of the node's detector "
                                    "pool.", labels=["node"])
        requests = CounterMetricFamily("trustcam_cluster_detector_pool_requests", "Camera detector requests the "
                                       "node's pool answered (requests / calls = mean batch).", labels=["node"])
        for node_id, pool in self.head.pools.items():
            calls.add_metric([node_id], pool.get("calls", 0))
            requests.add_metric([node_id], pool.get("requests", 0))
        yield from (nodes, running, frames, lag, calls, requests)


@dataclass
class NodeWatch:
    """Turns the Ray node table into alerts: a node that was alive and is now dead (or gone) raises a critical
    ``health`` alert naming it (id, address) and the cameras it ran, which Ray is moving elsewhere."""

    alive: dict[str, dict[str, Any]] = field(default_factory=dict)

    def check(self, nodes: Sequence[dict[str, Any]], cameras_on: Callable[[str], list[str]],
              now: float | None = None) -> list[Alert]:
        current = {n["NodeID"]: n for n in nodes}
        alerts = []
        for node_id, known in list(self.alive.items()):
            seen = current.get(node_id)
            if seen is not None and seen["Alive"]:
                continue
            del self.alive[node_id]
            address = known.get("NodeManagerAddress")
            cameras = cameras_on(node_id)
            moving = f"; its camera(s) {', '.join(cameras)} move to other nodes" if cameras else ""
            alerts.append(Alert(kind="health", severity=Severity.critical, camera=None,
                                time=time.time() if now is None else now,
                                message=f"cluster node {node_id[:12]} at {address} lost (Ray marks it dead){moving}",
                                data={"condition": "node_lost", "node_id": node_id, "address": address,
                                      "cameras": cameras}))
        for node_id, seen in current.items():
            if seen["Alive"] and node_id not in self.alive:
                self.alive[node_id] = seen
                log.info("cluster node %s at %s is alive", node_id[:12], seen.get("NodeManagerAddress"))
        return alerts


class ClusterHead:
    """The head's share of the work (see module docstring); :meth:`poll_once` is one round of the node and camera
    checks, run by :meth:`start`'s thread every ``cluster.node_check_s``."""

    def __init__(self, settings: Settings, cameras: list[str], config_path: Path | None = None) -> None:
        self.settings = settings
        self.cameras = cameras
        self.config_path = config_path
        self.engine = open_database(settings.resolved_database_url)
        self.bus = Bus()
        self.alerts = AlertDispatcher(settings, self.engine, self.bus)
        self.board = ClusterBoard(self.bus, cameras)
        self.watch = NodeWatch()
        self.states: dict[str, dict[str, Any] | None] = {}
        self.nodes: list[dict[str, Any]] = []  # Ray's node table at the last round
        self.pools: dict[str, dict[str, Any]] = {}  # node id -> its detector pool's figures at the last round
        self._last_node: dict[str, str] = {}  # camera -> node id it last reported: survives its node's death
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.web: Any = None
        self.vault = None
        if any(settings.cameras[c].record.enabled for c in cameras):
            from trustcam.storage.vault import Vault

            # made here, before any camera actor starts: the first start creates the vault's keys, once (actors
            # starting together would race to create them); the web UI reads recordings and exports through it
            self.vault = Vault(settings.vault, self.engine, on_alert=lambda m: log.warning("vault: %s", m))

    def start(self, web: bool = True, say: Callable[[str], None] = print) -> None:
        self.alerts.start()
        self.poll_once()
        self._thread = threading.Thread(target=self._loop, name="cluster-watch", daemon=True)
        self._thread.start()
        if web and self.settings.server.enabled:
            self.web = self._start_web(say)

    def _start_web(self, say: Callable[[str], None]) -> Any:
        from trustcam.security.access import AccessControl
        from trustcam.storage.witness import build_witness
        from trustcam.web.context import AppContext
        from trustcam.web.server import start_web

        ctx = AppContext(settings=self.settings, engine=self.engine, bus=self.bus, config_path=self.config_path,
                         vault=self.vault, status=self.board, alerts=OutboxAlerts(self.bus, self.alerts.outbox),
                         live=ActorLiveHub({c: self.settings.cameras[c] for c in self.cameras},
                                           running=lambda camera: self.states.get(camera) is not None))
        access = AccessControl(self.settings, self.engine, witness=build_witness(self.settings, self.bus.publish))
        access.start()
        ctx.extras["access_control"] = access  # the server's stop() signs the audit head
        metrics = Metrics(None, self.bus)  # the head's own: alert deliveries; the cameras' come from their reports
        metrics.registry.register(ClusterCollector(self))
        ctx.extras["metrics"] = metrics
        return start_web(ctx, say)

    def cameras_on(self, node_id: str) -> list[str]:
        return sorted(c for c, n in self._last_node.items() if n == node_id)

    def poll_once(self) -> None:
        """One round: camera actors' states (for the web UI and status) and the node table (lost-node alerts)."""
        import ray

        from trustcam.cluster.control import camera_states
        from trustcam.cluster.detector_pool import pool_stats

        timeout_s = max(2.0, self.settings.cluster.node_check_s)
        try:
            # the node table first: a node found dead is named with the cameras it ran as of the previous rounds,
            # before this round sees them restarted elsewhere (Ray restarts them as soon as it marks the node dead)
            self.nodes = ray.nodes()
            for alert in self.watch.check(self.nodes, self.cameras_on):
                log.error("%s", alert.message)
                self.bus.publish(alert)  # the dispatcher queues it in the outbox and delivers it
            self.states = camera_states(self.cameras, timeout_s=timeout_s)
            self.pools = pool_stats(timeout_s=timeout_s) if self.settings.cluster.detector_pool else {}
            for camera, state in self.states.items():
                if state is not None:
                    self._last_node[camera] = state["node_id"]
            self.board.update(self.states)
        except Exception:  # a failed round is retried at the next; the head must not die of a status query
            log.exception("cluster check failed; retrying in %g s", self.settings.cluster.node_check_s)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.cluster.node_check_s):
            self.poll_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self.web is not None:
            self.web.stop()
        self.alerts.stop()
        self.engine.dispose()
