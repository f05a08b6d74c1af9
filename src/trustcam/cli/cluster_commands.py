"""``trustcam cluster``: run the cameras of one config on several machines with Ray (head, worker, status)."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from trustcam.cli.common import say, user_errors
from trustcam.config import load_settings

cluster_app = typer.Typer(help="Many machines: a Ray head places one actor per camera on the worker nodes.",
                          no_args_is_help=True)
log = logging.getLogger("trustcam.cluster")
STATUS_EVERY_S = 60.0

NodeManagerPort = Annotated[int | None, typer.Option(help="Ray node manager (raylet) port, for a firewall rule "
                                                           "(default: random).")]
ObjectManagerPort = Annotated[int | None, typer.Option(help="Ray object manager port (default: random).")]
MinWorkerPort = Annotated[int | None, typer.Option(help="Lowest port of the node's Ray worker processes (camera "
                                                        "actors); default 10002.")]
MaxWorkerPort = Annotated[int | None, typer.Option(help="Highest port of the node's Ray worker processes; default "
                                                        "19999.")]
ConfigArg = Annotated[Path, typer.Option("--config", "-c", help="YAML configuration file (database_url: "
                                                                "postgresql://…, shared by every node).")]


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")


@cluster_app.command("head")
def head(
    config: ConfigArg,
    port: Annotated[int, typer.Option(help="Ray head port the workers join (--address HEAD:PORT).")] = 6379,
    lease_ttl: Annotated[float | None, typer.Option(help="Camera lease TTL (s), overriding cluster.lease_ttl_s: a "
                                                         "dead node's cameras move after at most this plus Ray's "
                                                         "node-death detection.")] = None,
    web: Annotated[bool, typer.Option(help="Serve the web UI and API for every camera of the cluster (server.* "
                                           "settings; --no-web: API-less head).")] = True,
    num_cpus: Annotated[int, typer.Option(help="CPUs the head offers Ray (it hosts no camera).")] = 1,
    temp_dir: Annotated[Path | None, typer.Option(help="Ray's temporary folder (default /tmp/ray).")] = None,
    wait_workers: Annotated[int, typer.Option(help="Place the cameras once this many worker nodes have joined "
                                                   "(spreads them; else the first worker gets them all).")] = 0,
    node_manager_port: NodeManagerPort = None,
    object_manager_port: ObjectManagerPort = None,
    min_worker_port: MinWorkerPort = None,
    max_worker_port: MaxWorkerPort = None,
) -> None:
    """Start the Ray head and run one camera actor per enabled camera on the workers until Ctrl-C or SIGTERM; the
    head also delivers every camera's alerts, raises a health alert when a node is lost, and serves the web UI."""
    from trustcam.cluster import control
    from trustcam.cluster.detector_pool import stop_pools
    from trustcam.cluster.head import ClusterHead

    with user_errors():
        settings = load_settings(config)
        cameras = control.check_cluster_settings(settings)
        settings = control.absolute_paths(settings)  # the same on every node
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        ports = control.RayPorts(node_manager_port, object_manager_port, min_worker_port, max_worker_port)
        node = control.start_process(control.head_command(port, num_cpus, temp_dir, ports))
        try:
            control.connect(f"127.0.0.1:{port}")
            if wait_workers:
                say(f"waiting for {wait_workers} worker node(s) to join: trustcam cluster worker --address "
                    f"{os.uname().nodename}:{port}")
            if not control.wait_for_workers(wait_workers, stop):
                return
            cluster_head = ClusterHead(settings, cameras, config.resolve())  # creates the vault keys once
            try:
                cluster_head.start(web=web, say=say)  # before any camera: a port in use stops nothing half-started
                placed = control.place_cameras(settings, cameras, lease_ttl or settings.cluster.lease_ttl_s)
                say(f"running {len(placed)} camera(s) on the cluster at port {port}; workers join with: "
                    f"trustcam cluster worker --address {os.uname().nodename}:{port}")
                while not stop.wait(STATUS_EVERY_S):
                    for line in control.status_lines(control.status(settings)):
                        log.info(line)
                say("stopping: finishing open events and releasing the camera leases")
                control.stop_cameras(placed)
                stop_pools()  # detached (they outlive any one camera), so stopped explicitly
            finally:
                cluster_head.stop()  # after the cameras: their last alerts are in the outbox for its dispatcher
        finally:
            _shutdown_ray()
            control.stop_process(node)


def _shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


@cluster_app.command("worker")
def worker(
    address: Annotated[str, typer.Option(help="The head's HOST:PORT.")],
    cameras: Annotated[int, typer.Option(help="How many cameras this node may run.")] = 4,
    site: Annotated[str | None, typer.Option(help="Site label: the node also offers the resource site-<S>.")] = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs offered to Ray (default: all of this machine's).")] = None,
    node_manager_port: NodeManagerPort = None,
    object_manager_port: ObjectManagerPort = None,
    min_worker_port: MinWorkerPort = None,
    max_worker_port: MaxWorkerPort = None,
) -> None:
    """Join the cluster as a worker node offering ``--cameras`` camera slots; runs until stopped (Ctrl-C, SIGTERM)."""
    from trustcam.cluster import control

    with user_errors():
        ports = control.RayPorts(node_manager_port, object_manager_port, min_worker_port, max_worker_port)
        command = control.worker_command(address, cameras, site, num_cpus or os.cpu_count() or 1, ports)
        say(f"joining {address} with {cameras} camera slot(s)")
        os.execv(command[0], command)  # this process becomes the Ray node: signals and exit status are Ray's


@cluster_app.command("status")
def status(
    address: Annotated[str, typer.Option(help="The head's HOST:PORT.")],
    config: ConfigArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Nodes (alive or dead), which node runs each camera, and each camera's lease holder and token."""
    from trustcam.cluster import control

    with user_errors():
        settings = load_settings(config)
        control.connect(address, timeout_s=30.0)
        try:
            report = control.status(settings)
        finally:
            _shutdown_ray()
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            for line in control.status_lines(report):
                typer.echo(line)
