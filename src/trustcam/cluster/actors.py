"""The camera actor: one camera's :class:`~trustcam.service.Service` inside a Ray worker process.

Kept free of ``import ray`` at module level: the class is wrapped with ``ray.remote`` where it is placed
(:mod:`trustcam.cluster.control`), so this module imports on a box without the ``cluster`` extra too.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from trustcam.config.schema import Settings
from trustcam.monitor.status import StatusBoard
from trustcam.storage.leases import holder_id
from trustcam.vision.privacy import Redaction
from trustcam.web.live import LiveHub

log = logging.getLogger(__name__)
HEALTH_EVERY_S = 1.0  # how often the actor publishes camera health alerts, as `trustcam run` does


def one_camera(settings: Settings, camera: str) -> Settings:
    """``settings`` in which only ``camera`` is enabled: each actor runs its own camera and nothing else. The other
    cameras stay in (disabled) because shared parts read their config: retention applies each camera's own policy
    to the segments it shreds on the shared storage, whichever actor runs the pass."""
    cameras = {name: cam if name == camera else cam.model_copy(update={"enabled": False})
               for name, cam in settings.cameras.items()}
    return settings.model_copy(update={"cameras": cameras})


class CameraActor:
    """Runs one camera under its lease (a new holder per actor incarnation, so a restarted actor fences its previous
    life at once). When the lease is lost the process exits: Ray restarts the actor, which then waits as a standby.
    Alerts are queued in the shared outbox, not sent: the head's dispatcher delivers them once for the cluster."""

    def __init__(self, settings: Settings, camera: str, lease_ttl_s: float) -> None:
        from trustcam.service import Service

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.camera = camera
        self.holder = holder_id()
        self.started = time.time()
        detectors = None
        if settings.cluster.detector_pool:
            from trustcam.cluster.detector_pool import PoolDetectors

            detectors = PoolDetectors(settings)  # the node's pool: one model process for all its cameras
        self.service = Service(one_camera(settings, camera), lease_holder=self.holder, lease_ttl_s=lease_ttl_s,
                               deliver_alerts=False, detectors=detectors)  # type: ignore[arg-type]
        worker = self.service.workers[0]
        # the camera's conditions (health, tamper, drift, coverage, canary) as the web UI shows them, for the head
        self.board = StatusBoard(self.service.bus, [camera], {camera: worker.stream.stats})
        # the latest analysed frame, drawn, redacted and encoded here, where the frame is: the head asks for the JPEG
        self.live = LiveHub({camera: settings.cameras[camera]})
        worker.on_result = self.live.publish
        self._stopping = threading.Event()
        self.service.start()
        threading.Thread(target=self._watch, name=f"watch-{camera}", daemon=True).start()
        log.info("camera %s: actor started as %s", camera, self.holder)

    def _watch(self) -> None:
        """Health alerts every second; exit the process (Ray restarts it as a standby) once the lease is lost."""
        worker = self.service.workers[0]
        while not self._stopping.wait(HEALTH_EVERY_S):
            if worker.is_alive():
                self.service.check_health()
                continue
            if worker.lease_lost is not None:
                log.error("camera %s: %s; ending this actor so that Ray restarts it as a standby", self.camera,
                          worker.lease_lost)
                time.sleep(HEALTH_EVERY_S)  # the lease_lost alert reaches the outbox (the bus is synchronous)
                os._exit(3)  # not ray.actor.exit_actor(): an intentional exit would not be restarted
            return

    def state(self) -> dict[str, Any]:
        """Where this camera runs and how it is doing (``trustcam cluster status``, the head's web UI)."""
        import ray

        worker = self.service.workers[0]
        lease = worker.lease.lease if worker.lease is not None else None
        stream, stats = worker.stream.stats, worker.pipeline.stats
        now = time.time()
        recorder = worker.recorder.stats if worker.recorder is not None else None
        return {"camera": self.camera, "node_id": ray.get_runtime_context().get_node_id(),
                "node_ip": ray.util.get_node_ip_address(), "host": socket.gethostname(), "pid": os.getpid(),
                "holder": self.holder, "token": lease.token if lease is not None else None,
                "frames": stats.frames, "connected": stream.connected, "lease_lost": worker.lease_lost,
                "started": self.started, "time": now,
                # lag: how old the newest analysed frame is (capture time), None before the first one
                "lag_s": round(now - stats.last_time, 3) if stats.last_time is not None else None,
                "detector": {"calls": stats.detector_calls, "seconds": round(stats.detector_seconds, 3)},
                "recording": {"stored": recorder.stored, "failed": recorder.failed} if recorder else None,
                "board": self.board.camera(self.camera)}

    def live_seq(self) -> int:
        """Sequence number of the latest analysed frame (0 before the first): the head's live view polls it."""
        return self.live.seq(self.camera)

    def live_jpeg(self, view: Redaction) -> tuple[int, bytes] | None:
        """The latest frame as the viewer may see it (``view``: masks, blurred faces), as :meth:`LiveHub.jpeg`."""
        return self.live.jpeg(self.camera, view)

    def stop(self) -> None:
        """A clean stop: open events finished, then the lease released, so the next holder starts at once."""
        self._stopping.set()
        self.service.stop()
