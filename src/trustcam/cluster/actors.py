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
from trustcam.storage.leases import holder_id

log = logging.getLogger(__name__)
HEALTH_EVERY_S = 1.0  # how often the actor publishes camera health alerts, as `trustcam run` does


def one_camera(settings: Settings, camera: str) -> Settings:
    """``settings`` with only ``camera``: each actor runs its own camera and nothing else."""
    return settings.model_copy(update={"cameras": {camera: settings.cameras[camera]}})


class CameraActor:
    """Runs one camera under its lease (a new holder per actor incarnation, so a restarted actor fences its previous
    life at once). When the lease is lost the process exits: Ray restarts the actor, which then waits as a standby."""

    def __init__(self, settings: Settings, camera: str, lease_ttl_s: float) -> None:
        from trustcam.service import Service

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.camera = camera
        self.holder = holder_id()
        self.started = time.time()
        self.service = Service(one_camera(settings, camera), lease_holder=self.holder, lease_ttl_s=lease_ttl_s)
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
                os._exit(3)  # not ray.actor.exit_actor(): an intentional exit would not be restarted
            return

    def state(self) -> dict[str, Any]:
        """Where this camera runs and how it is doing (``trustcam cluster status``)."""
        import ray

        worker = self.service.workers[0]
        lease = worker.lease.lease if worker.lease is not None else None
        return {"camera": self.camera, "node_id": ray.get_runtime_context().get_node_id(),
                "host": socket.gethostname(), "pid": os.getpid(), "holder": self.holder,
                "token": lease.token if lease is not None else None, "frames": worker.pipeline.stats.frames,
                "connected": worker.stream.stats.connected, "lease_lost": worker.lease_lost,
                "started": self.started}

    def stop(self) -> None:
        """A clean stop: open events finished, then the lease released, so the next holder starts at once."""
        self._stopping.set()
        self.service.stop()
