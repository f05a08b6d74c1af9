"""One detector pool per Ray node: every camera actor of a node sends its detector calls to one model process.

Under ``trustcam cluster`` each camera is its own Ray worker process, so :func:`trustcam.service.build_shared_detectors`
would start one model process per camera (N cameras = N copies of the model, no call ever shared). Instead the
first camera actor on a node creates the node's pool, a named Ray actor ``detector-pool-<node id>`` pinned to that
node; the others find it by name. The pool hosts the existing :class:`DetectorService` (the model in a child process
that can be killed when it hangs), and is a *threaded* actor: each camera's call runs in its own actor thread and
waits on its own :class:`ServiceClient`, so calls from several camera processes are in the service's queue at once
and leave as one batch.

The pool is ``lifetime="detached"``: an actor is owned by whoever created it and dies with it, and the creator is
just the first camera actor of the node, which may die or move at any time while the node's other cameras still
use the pool. It ends with its node (or :func:`stop_pools`), and Ray restarts it in place if its process dies.

Integration (Ray imported lazily, like :mod:`trustcam.cluster.actors`): in a camera actor,
``PoolDetectors(settings)`` is a drop-in for the :class:`~trustcam.vision.detectors.service.SharedDetectors` that
``build_shared_detectors`` returns (``for_camera(on_change)`` and ``close()``): each camera keeps its own
:class:`~trustcam.vision.detectors.failover.FailoverDetector`, backups and coverage alerts; only the primary's
calls go to the pool, through a :class:`PoolClient` (the attributes and failures of a ``ProcessDetector``).
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from trustcam.config.schema import Settings
from trustcam.vision.detections import Detections
from trustcam.vision.detectors.failover import CoverageChange, DetectorFailure, DetectorLike, FailoverDetector
from trustcam.vision.detectors.service import DetectorService, DetectorView, ServiceClient

log = logging.getLogger(__name__)

NAMESPACE = "trustcam"  # trustcam.cluster.control.NAMESPACE (not imported: control will import this module)
POOL_PREFIX = "detector-pool-"
MAX_CONCURRENCY = 32  # actor threads: calls in flight at once, i.e. the most cameras one node's pool serves well
TRANSPORT_S = 0.5  # on top of the call deadline: Ray's hop to the pool and back (the pool enforces the deadline)
START_TIMEOUT_S = 120.0  # creating a pool: a worker process to start and the model to load
DEFAULT_GATHER_S = 0.002  # what the node's DetectorService waits for a fuller batch (as under `trustcam run`)


def pool_name(node_id: str) -> str:
    return f"{POOL_PREFIX}{node_id}"


class _CallerTrackingService(DetectorService):
    """The detector service, also counting batches that carried calls of more than one caller (camera): the
    evidence that the pool batches across a node's cameras, not only within one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.owners: dict[int, str] = {}  # ServiceClient id -> the caller using it now
        self.mixed_batches = 0
        super().__init__(*args, **kwargs)

    def _gather(self, generation: int) -> tuple[list[Any], list[int]] | None:
        gathered = super()._gather(generation)
        if gathered is not None and len({self.owners.get(r.client) for r in gathered[0]}) > 1:
            self.mixed_batches += 1
        return gathered


class DetectorPool:
    """The Ray actor body (wrapped with ``ray.remote`` by :func:`node_pool`): a :class:`DetectorService` and a
    free list of its clients, one per call in flight (a client holds one image buffer and one request).

    A model that cannot load does not fail the actor (Ray would then forget its name and every camera would try
    to create it again): the reason is kept, answered to each call, and :meth:`ensure_running` tries again."""

    def __init__(self, model: str, *, threads: int = 1, score_threshold: float = 0.3, max_batch: int = 8,
                 gather_s: float = DEFAULT_GATHER_S, workers: int | None = None) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.options: dict[str, Any] = {"threads": threads, "score_threshold": score_threshold,
                                        "max_batch": max_batch, "gather_s": gather_s,
                                        "workers": workers or min(os.cpu_count() or 1, 4)}
        self.model = model
        self.service: _CallerTrackingService | None = None
        self.failure: str | None = None
        self.callers: set[str] = set()
        self._free: list[ServiceClient] = []
        self._lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        try:
            self.service = _CallerTrackingService(self.model, **self.options)
            self.failure = None
            log.info("detector pool: %s loaded in pid %s (max batch %d)", self.model, self.service.pid,
                     self.options["max_batch"])
        except DetectorFailure as e:
            self.failure = e.reason
            log.error("detector pool: %s", e.reason)

    def info(self) -> dict[str, Any]:
        """What a camera's client mirrors (the attributes of a detector), or ``failure`` when the model is down."""
        import ray

        service = self.service
        base: dict[str, Any] = {"node_id": ray.get_runtime_context().get_node_id(), "actor_pid": os.getpid(),
                                "failure": self.failure, "name": self.model}
        if service is None:
            return base
        return {**base, "name": service.name, "sha256": service.sha256, "input_size": service.input_size,
                "nms_iou": service.nms_iou, "spec": service.spec, "pid": service.pid,
                "score_threshold": service.score_threshold}

    def detect(self, image: np.ndarray, threshold: float, deadline_s: float, caller: str) -> tuple[str, Any]:
        """``("ok", Detections)`` or ``("error", reason)``: a failure is an answer (the camera fails over on it),
        not an exception (Ray would wrap it with a traceback and a slower path)."""
        service = self.service
        if service is None:
            return ("error", self.failure or "detector pool is not started")
        client = self._take(service)
        self.callers.add(caller)
        try:
            service.owners[client.id] = caller
            client.deadline_s = deadline_s
            # the remote caller stops waiting at its deadline (plus transport): a request still queued by then is
            # withdrawn as overloaded rather than run for nobody; a hung model is still judged by its own progress
            client.overload_after_s = deadline_s
            return ("ok", client.detect(image, threshold))
        except DetectorFailure as e:
            return ("error", e.reason)
        finally:
            self._give(service, client)

    def _take(self, service: DetectorService) -> ServiceClient:
        with self._lock:
            return self._free.pop() if self._free else service.client()

    def _give(self, service: DetectorService, client: ServiceClient) -> None:
        with self._lock:
            if service is self.service:
                self._free.append(client)
                return
        client.close()  # a client of a service that was replaced

    def ensure_running(self) -> str | None:
        """Make sure the model serves (a camera's failover restart loop asks): None when it does, else why not."""
        with self._lock:
            service = self.service
            if service is None:
                self._start()
                return self.failure
        try:
            service.ensure_running()
            return None
        except DetectorFailure as e:
            return e.reason

    def stats(self) -> dict[str, Any]:
        """Batching figures for ``trustcam cluster status`` and the tests: ``calls`` model batches, ``requests``
        detections asked, ``max_batch`` the largest batch, ``mixed_calls`` batches with several callers, ``late``
        requests answered after their caller's deadline (queued on a busy node), ``overloaded`` those that gave up."""
        service = self.service
        base = {"model": self.model, "failure": self.failure, "max_batch_allowed": self.options["max_batch"],
                "clients": len(self._free), "callers": len(self.callers)}
        if service is None:
            return {**base, "calls": 0, "requests": 0, "max_batch": 0, "mean_batch": 0.0, "mixed_calls": 0,
                    "restarts": 0, "late": 0, "overloaded": 0, "alive": False}
        s = service.stats
        return {**base, "calls": s.batches, "requests": s.requests, "max_batch": s.largest,
                "mean_batch": s.requests / s.batches if s.batches else 0.0, "mixed_calls": service.mixed_batches,
                "restarts": s.restarts, "late": s.late, "overloaded": s.overloaded, "alive": service.alive(),
                "pid": service.pid}

    def close(self) -> None:
        """Stop the model process (before the actor is killed: a SIGKILLed actor leaves its child to the init)."""
        with self._lock:
            service, self.service, free = self.service, None, self._free
            self._free = []
            self.failure = "detector pool closed"
        for client in free:
            client.close()
        if service is not None:
            service.close()


def node_pool(settings: Settings, *, max_batch: int = 8, gather_s: float = DEFAULT_GATHER_S,
              name: str | None = None) -> Any:
    """The handle of this node's pool (created if there is none yet): call from a Ray actor or driver.

    ``get_if_exists`` settles the race of two cameras creating it at once (one creates, the other gets it);
    ``NodeAffinitySchedulingStrategy(soft=False)`` keeps it on this node (a pool elsewhere would ship every frame
    over the network); ``num_cpus=0`` so it never takes a CPU slot a camera needs. ``name`` is for benchmarks
    that compare pools side by side."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = ray.get_runtime_context().get_node_id()
    cfg = settings.detector
    remote = ray.remote(DetectorPool)
    return remote.options(
        name=name or pool_name(node_id), namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
        max_restarts=-1, max_concurrency=MAX_CONCURRENCY, num_cpus=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote(cfg.model, threads=cfg.threads, score_threshold=cfg.score_threshold, max_batch=max_batch,
             gather_s=gather_s)


_caller_ids = itertools.count(1)


class PoolClient:
    """One camera's primary detector on its node's pool: the attributes and failures of a
    :class:`~trustcam.vision.detectors.failover.ProcessDetector` (``detect``, ``restart``, ``close``, ``deadline_s``,
    ``calls``, ``name``, ``sha256``, ``input_size``, ``nms_iou``, ``spec``, ``pid``), so a
    :class:`FailoverDetector` uses it as it uses a ``ServiceClient``.

    The pool enforces ``deadline_s`` on the model (killing a hung model process); this side waits
    ``deadline_s + transport_s`` for Ray's answer, so a pool that is itself gone (actor dead, restarting) is a
    :class:`DetectorFailure` in time too. ``reconnect`` (default: :func:`node_pool` again) gives :meth:`restart`
    a handle to a pool that was restarted or recreated."""

    def __init__(self, handle: Any, *, deadline_s: float = 1.0, score_threshold: float | None = None,
                 transport_s: float = TRANSPORT_S, reconnect: Callable[[], Any] | None = None,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.handle = handle
        self.deadline_s = deadline_s
        self.transport_s = transport_s
        self.start_timeout_s = start_timeout_s
        self.calls = 0
        self.caller = f"{socket.gethostname()}:{os.getpid()}:{next(_caller_ids)}"
        self._reconnect = reconnect
        self._info: dict[str, Any] = {}
        self._alive = False
        self._refresh(self.start_timeout_s)
        self.score_threshold: float = (score_threshold if score_threshold is not None
                                       else float(self._info.get("score_threshold", 0.3)))

    def _refresh(self, timeout_s: float) -> None:
        """Mirror the pool's model attributes; raise :class:`DetectorFailure` when the pool cannot serve."""
        import ray

        try:
            info = dict(ray.get(self.handle.info.remote(), timeout=timeout_s))
        except Exception as e:  # timeout, actor dead or still being restarted: all mean "no pool now"
            self._alive = False
            raise DetectorFailure(f"{self._info.get('name', 'detector pool')}: detector pool unreachable "
                                  f"({type(e).__name__}: {e})") from None
        self._info = info
        self._alive = info.get("failure") is None
        if not self._alive:
            raise DetectorFailure(f"{info['name']}: {info['failure']}")

    @property
    def name(self) -> str:
        return str(self._info.get("name", "detector-pool"))

    @property
    def sha256(self) -> str:
        return str(self._info.get("sha256", ""))

    @property
    def input_size(self) -> int:
        return int(self._info.get("input_size", 0))

    @property
    def nms_iou(self) -> float:
        return float(self._info.get("nms_iou", 0.45))

    @property
    def spec(self) -> Any:
        return self._info.get("spec")

    @property
    def pid(self) -> int | None:
        return self._info.get("pid")

    @property
    def node_id(self) -> str | None:
        return self._info.get("node_id")

    def alive(self) -> bool:
        """Whether the last exchange with the pool succeeded (no round trip: cheap enough for status lines)."""
        return self._alive

    def detect(self, image: np.ndarray, score_threshold: float | None = None) -> Detections:
        """Detect in the node's pool; raise :class:`DetectorFailure` on a model crash or hang, a dead pool, or
        no answer within ``deadline_s + transport_s``."""
        import ray
        from ray.exceptions import GetTimeoutError

        threshold = self.score_threshold if score_threshold is None else score_threshold
        ref = self.handle.detect.remote(image, threshold, self.deadline_s, self.caller)
        try:
            kind, payload = ray.get(ref, timeout=self.deadline_s + self.transport_s)
        except GetTimeoutError:
            self._alive = False
            try:
                ray.cancel(ref)
            except Exception as e:  # cancelling is best effort: the pool's own deadline ends the call anyway
                log.debug("could not cancel a late detector pool call: %s", e)
            raise DetectorFailure(f"{self.name}: detector pool did not answer within "
                                  f"{self.deadline_s + self.transport_s:g}s") from None
        except Exception as e:  # the actor died or is being restarted (RayActorError, ActorUnavailableError...)
            self._alive = False
            raise DetectorFailure(f"{self.name}: detector pool failed ({type(e).__name__}: {e})") from None
        if kind != "ok":
            raise DetectorFailure(f"{self.name}: {payload}")
        self._alive = True
        self.calls += 1
        return payload  # type: ignore[no-any-return]

    def restart(self) -> None:
        """Make sure the pool serves again (the failover's restart loop calls this, with backoff): a fresh
        handle when there is a ``reconnect`` (the pool may have been recreated), then the model restarted."""
        import ray

        if self._reconnect is not None:
            try:
                self.handle = self._reconnect()
            except Exception as e:
                raise DetectorFailure(f"{self.name}: cannot reach or create the detector pool ({e})") from None
        try:
            reason = ray.get(self.handle.ensure_running.remote(), timeout=self.start_timeout_s)
        except Exception as e:
            raise DetectorFailure(f"{self.name}: detector pool unreachable ({type(e).__name__}: {e})") from None
        if reason is not None:
            raise DetectorFailure(f"{self.name}: {reason}")
        self._refresh(self.start_timeout_s)

    def close(self) -> None:
        """Nothing to release here: the pool belongs to the node, not to this camera."""
        self._alive = False


class PoolDetectors:
    """A camera actor's detectors: the node's pool for the primary and the backups in-process. A drop-in for the
    :class:`~trustcam.vision.detectors.service.SharedDetectors` of ``build_shared_detectors`` (``for_camera``,
    ``close``), for ``Service``/``CameraWorker`` under ``trustcam cluster``."""

    def __init__(self, settings: Settings, *, handle: Any = None,
                 load: Callable[[str], DetectorLike] | None = None) -> None:
        cfg = settings.detector
        self.settings = settings
        self.deadline_s = cfg.call_deadline_s
        self.handle = handle if handle is not None else node_pool(settings)
        if load is None:
            from trustcam.vision.detectors.onnx_models import load_detector

            def load(name: str) -> DetectorLike:
                return load_detector(name, threads=cfg.threads, score_threshold=cfg.score_threshold)

        self.backups = [load(name) for name in dict.fromkeys(cfg.failover) if name != cfg.model]

    def client(self) -> PoolClient:
        """A camera's client of the pool, which finds the node's pool again by name when it restarts."""
        client = PoolClient(self.handle, deadline_s=self.deadline_s,
                            score_threshold=self.settings.detector.score_threshold,
                            reconnect=lambda: node_pool(self.settings))
        if client.name != self.settings.detector.model:
            raise DetectorFailure(f"the node's detector pool runs {client.name}, not {self.settings.detector.model}:"
                                  " every node's cameras share one model; stop the pool (trustcam.cluster."
                                  "detector_pool.stop_pools) or restart the node after changing detector.model")
        return client

    def for_camera(self, on_change: Callable[[CoverageChange], None] | None = None,
                   **failover_options: float) -> FailoverDetector:
        return FailoverDetector(self.client(), [DetectorView(b) for b in self.backups],  # type: ignore[list-item]
                                on_change=on_change, **failover_options)

    def close(self) -> None:
        """Nothing to stop: the pool outlives this camera (the node's other cameras use it), and the in-process
        backups hold no process or file."""


def pool_stats(timeout_s: float = 10.0) -> dict[str, dict[str, Any]]:
    """Each live node's pool statistics by node id (``trustcam cluster status``: detector batch sizes); a node
    without a pool, or whose pool does not answer in time, is left out."""
    import ray

    found = {}
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        try:
            handle = ray.get_actor(pool_name(node["NodeID"]), namespace=NAMESPACE)
            found[node["NodeID"]] = dict(ray.get(handle.stats.remote(), timeout=timeout_s))
        except Exception as e:  # no pool there (no camera yet), or it is restarting
            log.debug("no detector pool stats from node %s: %s", node["NodeID"], e)
    return found


def stop_pools(timeout_s: float = 10.0) -> int:
    """Stop every node's pool (the head's clean shutdown: detached actors outlive the driver). Returns how many."""
    import ray

    stopped = 0
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry.get("namespace") != NAMESPACE or not entry["name"].startswith(POOL_PREFIX):
            continue
        try:
            handle = ray.get_actor(entry["name"], namespace=NAMESPACE)
        except ValueError:
            continue
        try:
            ray.get(handle.close.remote(), timeout=timeout_s)
        except Exception as e:  # dead or hung: killed below all the same
            log.warning("detector pool %s did not close cleanly: %s", entry["name"], e)
        ray.kill(handle, no_restart=True)
        stopped += 1
    return stopped
