"""Start Ray nodes, place the camera actors and report where everything runs.

The Ray processes are started with ``ray start`` (the head and every worker alike, the way Ray documents a manual
cluster), so a node is a set of ordinary processes that an operator or systemd can see, stop and restart; the
``trustcam cluster head`` process is the Ray *driver* that owns the camera actors (they live as long as it does).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trustcam.cluster.actors import CameraActor
from trustcam.config import ConfigError
from trustcam.config.schema import Settings
from trustcam.errors import UserError
from trustcam.storage.database import open_database
from trustcam.storage.leases import LEASES

NAMESPACE = "trustcam"
CAMERA_RESOURCE = "camera"  # a worker offers N of it (``--cameras N``); each camera actor takes 1
STATE_TIMEOUT_S = 10.0


def actor_name(camera: str) -> str:
    return f"camera-{camera}"


def ray_command() -> list[str]:
    """The ``ray`` program of this interpreter's environment (where ``trustcam[cluster]`` installed it)."""
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.exists() else shutil.which("ray")
    if found is None:
        raise UserError("Ray is not installed: pip install 'trustcam[cluster]' (it pins the tested Ray version)")
    return [found]


def check_cluster_settings(settings: Settings) -> list[str]:
    """The enabled cameras, after refusing what a cluster cannot run correctly yet (with the reason and the fix)."""
    url = settings.resolved_database_url
    if not url.startswith("postgresql"):
        raise ConfigError("trustcam cluster needs a database every node reaches: set database_url: "
                          "postgresql://user:password@host:5432/trustcam (SQLite is one machine's file)")
    cameras = [name for name, cam in settings.cameras.items() if cam.enabled]
    if not cameras:
        raise ConfigError("no enabled camera; add one under 'cameras:'")
    return cameras


def absolute_paths(settings: Settings) -> Settings:
    """``settings`` with data_dir and the vault's relative paths made absolute against the head's working folder:
    the actors run in Ray's working folder, and every node must use the same paths (shared storage). ``~`` paths
    (the key files by default) stay as they are: each node's service user has its own home with its copy."""
    vault = settings.vault
    fields = ("root", "mirror", "key_file", "signing_key_file", "witness_file")
    absolute = {name: getattr(vault, name).absolute() for name in fields
                if getattr(vault, name) is not None and not str(getattr(vault, name)).startswith("~")}
    return settings.model_copy(update={"data_dir": settings.data_dir.resolve(),
                                       "vault": vault.model_copy(update=absolute)})


@dataclass(frozen=True)
class RayPorts:
    """The node's Ray ports that a firewall must let through between nodes; None leaves Ray's choice (random for
    the node and object managers, 10002-19999 for worker processes)."""

    node_manager: int | None = None
    object_manager: int | None = None
    min_worker: int | None = None
    max_worker: int | None = None

    def options(self) -> list[str]:
        pairs = (("node-manager-port", self.node_manager), ("object-manager-port", self.object_manager),
                 ("min-worker-port", self.min_worker), ("max-worker-port", self.max_worker))
        return [f"--{name}={value}" for name, value in pairs if value is not None]


def head_command(port: int, num_cpus: int, temp_dir: Path | None, ports: RayPorts = RayPorts()) -> list[str]:
    """``ray start --head`` offering no camera resource: cameras run on the workers, the head runs the driver."""
    command = [*ray_command(), "start", "--head", f"--port={port}", f"--num-cpus={num_cpus}",
               f"--resources={json.dumps({CAMERA_RESOURCE: 0})}", "--include-dashboard=false",
               "--disable-usage-stats", "--block", *ports.options()]
    return command + ([f"--temp-dir={temp_dir}"] if temp_dir is not None else [])


def worker_command(address: str, cameras: int, site: str | None, num_cpus: int,
                   ports: RayPorts = RayPorts()) -> list[str]:
    """``ray start --address`` offering ``cameras`` camera slots (and ``site-<S>``, for placing cameras by site)."""
    resources: dict[str, float] = {CAMERA_RESOURCE: cameras}
    if site:
        resources[f"site-{site}"] = 1000
    return [*ray_command(), "start", f"--address={address}", f"--num-cpus={num_cpus}",
            f"--resources={json.dumps(resources)}", "--disable-usage-stats", "--block", *ports.options()]


def start_process(command: Sequence[str]) -> subprocess.Popen[bytes]:
    """A Ray node in its own process group, so that stopping it stops its raylet and helpers too."""
    return subprocess.Popen(list(command), start_new_session=True)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM the node's process group (``ray start --block`` stops its processes), SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout_s)
            if sig == signal.SIGTERM:
                os.killpg(process.pid, signal.SIGKILL)  # its helpers, if any outlived it
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def connect(address: str, timeout_s: float = 120.0) -> None:
    """Join the cluster at ``address`` as a driver, retrying while the head is still starting."""
    import ray

    deadline = time.monotonic() + timeout_s
    host, _, port = address.rpartition(":")
    while not _listening(host or "127.0.0.1", int(port) if port.isdigit() else 6379):
        if time.monotonic() > deadline:  # ray.init itself would wait ~30 s per try and print Ray's own retries
            raise UserError(f"nothing answers at {address}: start the head there with trustcam cluster head, check "
                            "the address (HOST:PORT, --port of the head) and that the port is open between the "
                            "machines")
        time.sleep(1.0)
    while True:
        try:
            ray.init(address=address, namespace=NAMESPACE, logging_level="WARNING", log_to_driver=False)
            return
        except (ConnectionError, RuntimeError) as exc:
            if time.monotonic() > deadline:
                raise UserError(f"cannot reach the Ray head at {address} ({exc}); start it with trustcam cluster "
                                "head, check the address and that the port is open between the machines") from None
            time.sleep(1.0)


def _listening(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at host:port (the head's GCS port), within a second."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def camera_nodes() -> int:
    """How many live nodes offer camera slots now."""
    import ray

    return sum(1 for n in ray.nodes() if n["Alive"] and n.get("Resources", {}).get(CAMERA_RESOURCE, 0) > 0)


def wait_for_workers(count: int, stop: threading.Event) -> bool:
    """Wait until ``count`` worker nodes have joined (False if stopped first): actors are placed as soon as slots
    exist, so without this the first worker to join would be given every camera."""
    while camera_nodes() < count:
        if stop.wait(1.0):
            return False
    return True


@dataclass
class Placement:
    camera: str
    handle: Any  # ray.actor.ActorHandle


def camera_resources(settings: Settings, camera: str) -> dict[str, float]:
    """What a camera's actor asks of a node: a camera slot, and its site's resource when the camera names a site
    (offered only by workers started with ``--site``), so Ray places it, and restarts it, only where it is reachable."""
    site = settings.cameras[camera].site
    return {CAMERA_RESOURCE: 1, **({f"site-{site}": 1} if site else {})}


def place_cameras(settings: Settings, cameras: Sequence[str], lease_ttl_s: float) -> list[Placement]:
    """One restartable actor per camera, spread over the nodes that offer a camera slot. ``max_restarts=-1``: when
    a node dies Ray starts the actor again where a slot is free; the lease decides which copy records."""
    import ray

    remote = ray.remote(CameraActor)
    placed = []
    for camera in cameras:
        handle = remote.options(name=actor_name(camera), namespace=NAMESPACE, get_if_exists=True,
                                max_restarts=-1, max_task_retries=-1, num_cpus=0,
                                resources=camera_resources(settings, camera), scheduling_strategy="SPREAD",
                                ).remote(settings, camera, lease_ttl_s)
        placed.append(Placement(camera, handle))
    return placed


def stop_cameras(placed: Sequence[Placement], timeout_s: float = 30.0) -> None:
    """Stop each camera cleanly (events finished, lease released), then end the actors for good."""
    import ray

    pending = [p.handle.stop.remote() for p in placed]
    ray.wait(pending, num_returns=len(pending), timeout=timeout_s)
    for p in placed:
        ray.kill(p.handle, no_restart=True)


def lease_rows(settings: Settings) -> dict[str, dict[str, Any]]:
    """Each camera's lease row (holder, token, expiry), expired or not: what the database says, for status."""
    engine = open_database(settings.resolved_database_url)
    try:
        with Session(engine) as session:
            rows = session.execute(select(LEASES.c.camera, LEASES.c.holder, LEASES.c.token,
                                          LEASES.c.expires_at)).all()
    finally:
        engine.dispose()
    return {r.camera: {"holder": r.holder, "token": int(r.token), "expires_at": float(r.expires_at)} for r in rows}


def camera_states(cameras: Sequence[str], timeout_s: float = STATE_TIMEOUT_S) -> dict[str, dict[str, Any] | None]:
    """Each camera actor's own report, asked of all at once; None for a camera whose actor is not running now (not
    placed, being restarted after its node died, or too slow to answer within ``timeout_s``)."""
    import ray

    pending = {}
    for camera in cameras:
        try:
            pending[camera] = ray.get_actor(actor_name(camera), namespace=NAMESPACE).state.remote()
        except ValueError:  # no such actor (not placed yet, or killed for good)
            continue
    if pending:
        ray.wait(list(pending.values()), num_returns=len(pending), timeout=timeout_s)
    states: dict[str, dict[str, Any] | None] = dict.fromkeys(cameras)
    for camera, ref in pending.items():
        try:
            states[camera] = dict(ray.get(ref, timeout=0))
        except Exception:  # dead, restarting or too slow: all mean "not running now" for a status line
            ray.cancel(ref)
    return states


def status(settings: Settings) -> dict[str, Any]:
    """Nodes (alive or dead, camera slots), where each camera actor runs, and its lease in the database."""
    import ray

    nodes = [{"node_id": n["NodeID"], "alive": bool(n["Alive"]), "address": n.get("NodeManagerAddress"),
              "camera_slots": n.get("Resources", {}).get(CAMERA_RESOURCE, 0)} for n in ray.nodes()]
    from trustcam.cluster.detector_pool import pool_stats

    pools = pool_stats(timeout_s=STATE_TIMEOUT_S)
    for node in nodes:
        node["detector_pool"] = pools.get(node["node_id"])
    leases = lease_rows(settings)
    states = camera_states([name for name, cam in settings.cameras.items() if cam.enabled])
    cameras = {name: {"actor": state, "lease": leases.get(name)} for name, state in states.items()}
    return {"nodes": nodes, "cameras": cameras}


def status_lines(report: dict[str, Any], now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    lines = []
    for n in report["nodes"]:
        lines.append(f"node {n['node_id'][:12]} {'alive' if n['alive'] else 'DEAD'} at {n['address']}, "
                     f"{n['camera_slots']:g} camera slot(s){_pool(n.get('detector_pool'))}")
    for name, c in report["cameras"].items():
        actor, lease = c["actor"], c["lease"]
        where = (f"on node {actor['node_id'][:12]} (pid {actor['pid']}), {actor['frames']} frames, "
                 f"{_lag(actor)}, {actor['detector']['calls']} detector calls" if actor
                 else "not running (starting or being restarted)")
        if lease is None or lease["holder"] is None:
            held = "lease free"
        else:
            left = lease["expires_at"] - now
            held = f"lease token {lease['token']} held by {lease['holder']} ({'expires' if left >= 0 else 'expired'}" \
                   f" {abs(left):.0f} s {'from now' if left >= 0 else 'ago'})"
        lines.append(f"camera {name}: {where}; {held}")
    return lines


def _lag(actor: dict[str, Any]) -> str:
    """How old the newest analysed frame was when the actor answered (real time: under a second or two)."""
    lag = actor.get("lag_s")
    return "no frame analysed yet" if lag is None else f"lag {lag:.1f} s"


def _pool(pool: dict[str, Any] | None) -> str:
    """The node's detector pool: how many model calls, how many camera requests they carried, batch sizes."""
    if not pool:
        return ""
    return (f"; detector pool {pool['model']}: {pool['calls']} model calls for {pool['requests']} requests from "
            f"{pool['callers']} camera(s), batch {pool['mean_batch']:.2f} mean, {pool['max_batch']} largest, "
            f"{pool['mixed_calls']} shared by several cameras")
