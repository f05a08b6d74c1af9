"""Many machines on one: a real Ray cluster (a head and two worker nodes, each started by `trustcam cluster` as its
own `ray start` process group with its own camera slots) and a real PostgreSQL. Four looping clips are served live
over HTTP by ffmpeg on the loopback and recorded into the vault; one worker node is SIGKILLed with every process it
runs, and its cameras must resume on the other node (new lease token, frames analysed, new events) with no event
stored twice, a health alert naming the lost node, and the vault and audit chains verifying afterwards. The head's
web API shows every camera's events and the node each camera runs on.

Ray's node-death detection is made quicker through its documented environment settings (health check every second,
dead after 10 misses) so the measurement is the lease TTL plus Ray's reaction, not Ray's default 30 s patience.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from support import free_port, wait_until
from trustcam.alerts.outbox import OutboxRow
from trustcam.storage.database import open_database
from trustcam.storage.leases import LEASES
from trustcam.storage.schema import EventRow, SegmentRow
from web.web_helpers import bearer, bootstrap

CLI = [sys.executable, "-m", "trustcam.cli"]
CAMERAS = ("a", "b", "c", "d")
LEASE_TTL_S = 6.0
RESUME_LIMIT_S = 60.0
RAY_ENV = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "10",
           "RAY_health_check_initial_delay_ms": "1000"}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 1.0) -> Any:
    """:func:`support.wait_until` polling once a second by default: most predicates here run a CLI or a query."""
    return wait_until(predicate, timeout, what, every)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _ray_pids(temp_dir: Path) -> list[int]:
    """The Ray processes of this test's cluster (their command lines name its temp dir) and their children (the
    actor processes, whose titles Ray rewrites): only what this test started, never every Ray on the machine."""
    own = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(temp_dir).encode() in (entry / "cmdline").read_bytes():
                    own.append(int(entry.name))
            except OSError:
                continue
    return sorted({*own, *(child for pid in own for child in _children(pid))})


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Cluster:
    config: Path
    port: int
    temp_dir: Path
    logs: Path
    env: dict[str, str]
    engine: Engine
    head: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        out = (self.logs / f"{name}.log").open("wb")
        return subprocess.Popen([*CLI, "-v", "cluster", *args], stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                start_new_session=True)

    def join_worker(self, name: str, tries: int = 3) -> None:
        """A worker node offering 4 camera slots (room for every camera once the other node dies), started once the
        previous one has joined: raylets starting at the same moment on one machine can pick the same free port and
        one dies (bind: address in use); a node that fails to start is started again."""
        for attempt in range(tries):
            log = self.logs / f"{name}-{attempt}.log"
            process = self.spawn(log.stem, "worker", "--address", self.address, "--cameras", "4", "--num-cpus", "1")
            self.workers.append(process)
            wait_for(lambda p=process, f=log: p.poll() is not None  # type: ignore[misc]
                     or "Ray runtime started" in f.read_text(errors="replace"), 180, f"{name} to join")
            if process.poll() is None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # what the failed start left of its node
        pytest.fail(f"{name} did not join the cluster in {tries} tries:\n{self.log_text()}")

    def status(self) -> dict[str, Any] | None:
        done = subprocess.run([*CLI, "cluster", "status", "--address", self.address, "--config", str(self.config),
                               "--json"], capture_output=True, text=True, env=self.env, timeout=180)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def leases(self) -> dict[str, tuple[str | None, int]]:
        with Session(self.engine) as session:
            rows = session.execute(select(LEASES.c.camera, LEASES.c.holder, LEASES.c.token)).all()
        return {r.camera: (r.holder, int(r.token)) for r in rows}

    def events(self) -> list[EventRow]:
        with Session(self.engine) as session:
            return list(session.scalars(select(EventRow)))

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.logs.iterdir()))


class LiveClips:
    """Each clip served live over HTTP on the loopback by ``ffmpeg -re -stream_loop -1 … -listen 1``, as an IP camera
    would: one client at a time, and a fresh server once that client goes (a camera moving to another node
    reconnects to it)."""

    def __init__(self, clips: dict[str, Path], log: Path) -> None:
        self.urls = {name: f"http://127.0.0.1:{free_port()}/live.ts" for name in clips}
        self.clips, self.log = clips, log
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        with self.log.open("ab") as log:
            while not self._stop.is_set():
                for name, clip in self.clips.items():
                    process = self.processes.get(name)
                    if process is None or process.poll() is not None:
                        self.processes[name] = subprocess.Popen(
                            ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(clip),
                             "-c", "copy", "-f", "mpegts", "-listen", "1", self.urls[name]],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
                self._stop.wait(0.2)

    def __enter__(self) -> LiveClips:
        if shutil.which("ffmpeg") is None:
            pytest.fail("the ffmpeg command is missing: make setup installs it")
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for process in self.processes.values():
            process.kill()
            process.wait(10)


@pytest.fixture
def cluster(postgres_url: str, person_video: Path, installed_models: None, tmp_path: Path) -> Iterator[Cluster]:
    clips = dict.fromkeys(CAMERAS, person_video)  # people walk through every 20 s or so: events come quickly
    with LiveClips(clips, tmp_path / "ffmpeg.log") as live:
        cameras = {name: {"source": live.urls[name], "detect": {"fps": 2}, "objects": {"track": ["person"]},
                          "record": {"enabled": True, "mode": "continuous", "segment_s": 4}} for name in CAMERAS}
        config = tmp_path / "cluster.yaml"
        config.write_text(yaml.safe_dump({
            "data_dir": str(tmp_path / "data"), "database_url": postgres_url, "detector": {"failover": []},
            "server": {"host": "127.0.0.1", "port": free_port()},
            "vault": {"root": str(tmp_path / "recordings"), "key_file": str(tmp_path / "keys" / "vault.kek"),
                      "signing_key_file": str(tmp_path / "keys" / "signing.key"), "checkpoint_every": 3},
            "cluster": {"lease_ttl_s": LEASE_TTL_S, "node_check_s": 1.0},
            "cameras": cameras}))
        temp_dir = Path(tempfile.mkdtemp(prefix="tc-ray-"))  # short: Ray's unix socket paths stay under 107 bytes
        logs = tmp_path / "logs"
        logs.mkdir()
        engine = open_database(postgres_url)  # migrates the database before any node starts
        made = Cluster(config, free_port(), temp_dir, logs, {**os.environ, **RAY_ENV}, engine)
        try:
            yield made
        finally:
            if made.head is not None and made.head.poll() is None:  # a clean stop first: cameras end, leases go
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(made.head.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    made.head.wait(60)
            for process in [p for p in (made.head, *made.workers) if p is not None]:
                with contextlib.suppress(ProcessLookupError):  # workers drain 30 s on SIGTERM: nothing left to keep
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
            _kill(_ray_pids(temp_dir))  # what a killed head left behind: the Ray head's own process group
            engine.dispose()
            shutil.rmtree(temp_dir, ignore_errors=True)


def _placed(cluster: Cluster) -> dict[str, Any] | None:
    """The status report once every camera runs (on a worker node, analysing frames), else None."""
    report = cluster.status()
    if report is None:
        return None
    actors = [c["actor"] for c in report["cameras"].values()]
    return report if all(a is not None and a["frames"] > 0 for a in actors) else None


def _overlapping(events: list[EventRow]) -> list[tuple[str, str]]:
    """Pairs of events of one camera, label and track whose time spans overlap: one object recorded twice."""
    by_track: dict[tuple[str, str, int], list[EventRow]] = {}
    for event in events:
        by_track.setdefault((event.camera, event.label, event.track_id), []).append(event)
    pairs = []
    for group in by_track.values():
        group.sort(key=lambda e: e.start)
        pairs += [(a.id, b.id) for a, b in itertools.pairwise(group) if b.start < a.end]
    return pairs


def _settings_of(cluster: Cluster) -> dict[str, Any]:
    return dict(yaml.safe_load(cluster.config.read_text()))


def _web(cluster: Cluster) -> tuple[str, str]:
    """The head's web API base URL and an admin API token (first start: the setup token the head wrote)."""
    settings = _settings_of(cluster)
    base = f"https://127.0.0.1:{settings['server']['port']}"
    token_file = Path(settings["data_dir"]) / "setup-token"
    wait_for(token_file.exists, 120, "the head's web server (setup token)")
    return base, bootstrap(base, _trust(settings), token_file.read_text().strip())["admin"]


def _trust(settings: dict[str, Any]) -> ssl.SSLContext:
    """Trust exactly the head's self-signed certificate (made at its first start)."""
    return ssl.create_default_context(cafile=str(Path(settings["data_dir"]) / "tls" / "server.crt"))


def _grid_nodes(cluster: Cluster, base: str, token: str) -> dict[str, str | None]:
    answer = httpx.get(f"{base}/api/cameras/grid", headers=bearer(token), timeout=30,
                       verify=_trust(_settings_of(cluster)))
    answer.raise_for_status()
    return {c["name"]: c["node"] for c in answer.json()["cameras"]}


def _placed_in_grid(cluster: Cluster, base: str, token: str) -> dict[str, str | None] | None:
    """The grid's camera -> node once every camera shows a node (an actor that answered), else None."""
    nodes = _grid_nodes(cluster, base, token)
    return nodes if all(nodes.values()) else None


def _api_event_cameras(cluster: Cluster, base: str, token: str) -> set[str]:
    answer = httpx.get(f"{base}/api/events", params={"limit": 500}, headers=bearer(token), timeout=30,
                       verify=_trust(_settings_of(cluster)))
    answer.raise_for_status()
    return {e["camera"] for e in answer.json()["events"]}


def _node_lost_alerts(cluster: Cluster) -> list[OutboxRow]:
    with Session(cluster.engine) as session:
        rows = session.scalars(select(OutboxRow).where(OutboxRow.kind == "health")).all()
    return [r for r in rows if (r.alert.get("data") or {}).get("condition") == "node_lost"]


def _cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args, "--config", str(cluster.config)], capture_output=True, text=True,
                          env=cluster.env, timeout=300)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_dead_nodes_cameras_resume_on_the_other_node(cluster: Cluster) -> None:
    """Head + two workers, four live HTTP cameras recording, two per worker; SIGKILL the node of camera a: within
    60 s new incarnations on the other node hold higher tokens and analyse, new events arrive, the surviving node's
    cameras are untouched, nothing is stored twice, a health alert names the lost node, `cluster status` shows it
    dead, the web API on the head shows every camera's events and nodes, and the vault and audit chains verify."""
    cluster.head = cluster.spawn("head", "head", "--config", str(cluster.config), "--port", str(cluster.port),
                                 "--temp-dir", str(cluster.temp_dir), "--wait-workers", "2")
    wait_for(lambda: cluster.head.poll() is not None or "worker node(s) to join" in cluster.log_text(), 180,
             "the head to start")
    assert cluster.head.poll() is None, cluster.log_text()
    for i in range(2):
        cluster.join_worker(f"worker{i}")
    report = wait_for(lambda: _placed(cluster), 300, "every camera to run on the workers", every=3.0)
    per_node: dict[str, list[str]] = {}
    for camera in CAMERAS:
        per_node.setdefault(report["cameras"][camera]["actor"]["node_id"], []).append(camera)
    assert sorted(len(c) for c in per_node.values()) == [2, 2], report  # spread: two cameras per worker
    wait_for(lambda: {e.camera for e in cluster.events()} == set(CAMERAS), 400,
             "events from every camera in PostgreSQL", every=3.0)

    base, token = _web(cluster)  # one UI for the cluster: the head serves it, reading the shared database
    assert _api_event_cameras(cluster, base, token) == set(CAMERAS)
    nodes = wait_for(lambda: _placed_in_grid(cluster, base, token), 60, "every camera's node in the grid")
    for camera in CAMERAS:
        assert report["cameras"][camera]["actor"]["node_id"][:8] in str(nodes[camera]), nodes
    shot = httpx.get(f"{base}/api/cameras/b/snapshot.jpg", headers=bearer(token), timeout=30,
                     verify=_trust(_settings_of(cluster)))  # drawn and encoded on b's node, served by the head
    assert shot.status_code == 200 and shot.content[:2] == b"\xff\xd8", shot.status_code

    # the node that runs camera "a": the actor's parent is that node's raylet, whose process group is the worker's
    victim = report["cameras"]["a"]["actor"]
    raylet = _parent(victim["pid"])
    node = next(w for w in cluster.workers if w.poll() is None and w.pid == os.getpgid(raylet))
    moving = per_node[victim["node_id"]]
    before = cluster.leases()
    assert all(before[c][0] is not None for c in CAMERAS), before
    doomed = [raylet, *_children(raylet)]
    killed_at = time.time()
    os.killpg(node.pid, signal.SIGKILL)  # the whole node at once: ray start, raylet, agents...
    _kill(doomed)  # ...and the camera actors it ran (each in its own process group)

    def moved() -> bool:
        now = cluster.leases()
        return all(now[c][1] > before[c][1] and now[c][0] != before[c][0] for c in moving)

    wait_for(moved, RESUME_LIMIT_S + 60, "the dead node's cameras to take a new lease", every=0.5)
    resumed_s = time.time() - killed_at
    print(f"cameras {moving} took a new lease {resumed_s:.1f} s after their node was killed")
    assert resumed_s < RESUME_LIMIT_S, cluster.log_text()

    lost = wait_for(lambda: _node_lost_alerts(cluster), 60, "a health alert naming the lost node")
    assert {r.alert["data"]["node_id"] for r in lost} == {victim["node_id"]}
    assert sorted(lost[0].alert["data"]["cameras"]) == sorted(moving)
    wait_for(lambda: any(r.state == "delivered" for r in _node_lost_alerts(cluster)), 60,
             "the head's dispatcher to deliver it")

    after = wait_for(lambda: _placed(cluster), 180, "the moved cameras to analyse again", every=3.0)
    dead = [n for n in after["nodes"] if not n["alive"]]
    assert [n["node_id"] for n in dead] == [victim["node_id"]], after["nodes"]
    for camera in moving:
        assert after["cameras"][camera]["actor"]["node_id"] != victim["node_id"]
        assert after["cameras"][camera]["lease"]["token"] > before[camera][1]
    for camera in set(CAMERAS) - set(moving):  # the other node's cameras were not disturbed
        assert after["cameras"][camera]["actor"]["pid"] == report["cameras"][camera]["actor"]["pid"]
        assert cluster.leases()[camera] == before[camera]
    wait_for(lambda: {e.camera for e in cluster.events() if e.start > killed_at} >= set(moving), 400,
             "new events from the moved cameras", every=3.0)
    nodes = wait_for(lambda: _placed_in_grid(cluster, base, token), 60, "every camera's node in the grid")
    assert all(victim["node_id"][:8] not in str(nodes[c]) for c in moving), nodes
    metrics = httpx.get(f"{base}/metrics", headers=bearer(token), timeout=30, verify=_trust(_settings_of(cluster)))
    metrics.raise_for_status()
    assert f'node="{victim["node_id"]}"}} 0.0' in metrics.text  # trustcam_cluster_node_up of the dead node
    pools = [n["detector_pool"] for n in after["nodes"] if n["alive"] and n["camera_slots"]]
    assert pools and all(p is not None and p["requests"] > 0 for p in pools), pools  # detector calls went to it
    print(f"detector pool of the surviving node: {pools[0]}")

    events = cluster.events()
    assert len({e.id for e in events}) == len(events)
    assert _overlapping(events) == [], "an object was recorded twice"
    text = subprocess.run([*CLI, "cluster", "status", "--address", cluster.address, "--config", str(cluster.config)],
                          capture_output=True, text=True, env=cluster.env, timeout=180).stdout
    assert "DEAD" in text and all(f"camera {c}: on node" in text for c in CAMERAS), text
    assert "lag " in text, text

    # a clean stop of the head stops every camera (last segments stored, leases released); then the chains verify
    cluster.head.send_signal(signal.SIGTERM)
    cluster.head.wait(180)
    with Session(cluster.engine) as session:
        recorded = {c: n for c, n in session.execute(select(SegmentRow.camera, func.count()).group_by(
            SegmentRow.camera))}
    assert set(recorded) == set(CAMERAS), recorded
    chain = _cli(cluster, "evidence", "chain")
    assert chain.returncode == 0, chain.stdout + chain.stderr
    audit = _cli(cluster, "audit", "verify")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    print(f"segments per camera {recorded}; {chain.stdout.strip().splitlines()[-1] if chain.stdout else ''}")


@pytest.mark.parametrize(("change", "message"), [
    ({"database_url": None}, "needs a database every node reaches"),
])
def test_head_refuses_what_a_cluster_cannot_run(tmp_path: Path, person_video: Path, change: dict[str, Any],
                                                message: str) -> None:
    """SQLite (one machine's file) is refused before any Ray process starts, with the fix."""
    camera: dict[str, Any] = {"source": str(person_video)}
    settings: dict[str, Any] = {"data_dir": str(tmp_path / "data"), "cameras": {"a": camera},
                                "database_url": "postgresql://trustcam@127.0.0.1:1/none"}
    if "database_url" in change:
        del settings["database_url"]
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump(settings))
    done = subprocess.run([*CLI, "cluster", "head", "--config", str(config), "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
