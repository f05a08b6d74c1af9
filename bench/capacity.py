"""Measured capacity: how many live cameras one box analyses in real time, per resolution and scene.

    python bench/capacity.py [--cases 1080p-quiet 720p-busy] [--counts 1 2 4 6 8 10 12] [--seconds 40]
                             [--warmup 15] [--detect-fps 5] [--cache DIR] [--src DIR]

``docs/performance.md`` used to *derive* cameras per box from CPU per frame; this runs them. Per case (720p or
1080p; quiet = the car clip, a parking lot with few objects; busy = the person clip, somebody walking in most
frames) and camera count N it starts N ffmpeg servers, each playing its own copy of the looping clip at native
speed as an MPEG-TS HTTP stream on loopback (``-re -stream_loop -1 -c copy -listen 1``: a live camera, not a
file), then one ``trustcam run`` with N cameras on those URLs (default settings: the node's detector service,
failover backup, tamper, drift and canary on; recording off; the web server on a loopback port, which
serves ``/metrics``). After every camera analysed its first frame and ``--warmup`` seconds more, it reads
``/metrics`` every 2 s for ``--seconds`` and measures:

- dropped: frames the live queue dropped because analysis fell behind (``trustcam_frames_dropped``, over the
  window, all cameras) over the frames handed to analysis (``trustcam_frames``). Not frames minus analysed: up to
  3 frames per camera are in flight at any moment, which read as drops at the end of a window;
- lag: how far the newest received frame is behind the live edge (``trustcam_ingest_lag_seconds``, largest seen;
  it grows when decoding cannot keep up); the analysis queue holds at most one second of frames
  (detect.fps, at least 2) and drops the oldest, so analysis adds at most ~1 s to it, or drops frames;
- received: decoded frames / (window x the clip's fps), and reconnects (must be 0);
- CPU: the ``trustcam run`` process and its children (detector processes), cores busy (/proc); RSS and PSS of
  that tree (PSS shares the pages the processes have in common fairly, so it is the figure that adds up);
- other load: CPU the rest of the machine used meanwhile (other work on a shared box; the ffmpeg servers only
  copy packets and are counted apart).

Real time is lost when dropped > 1 %, lag > 1 s or a camera reconnected. N goes up through ``--counts`` until
real time is lost; when the step was larger than one camera the counts in between are bisected. Prints one JSON
line per run on stderr, then per case the largest N that keeps real time, CPU and memory per additional camera
(least-squares slope over the runs) next to the goals. Last line: ``max_cameras_1080p_quiet=N`` (or the first
case's). Clips are built once with ffmpeg into ``--cache`` (default ``var/bench/capacity``). Every child process
is stopped on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyotp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_tree import TICKS, cpu_s, memory_mib, tree
from web_login_flood import DATA, _free_port, signed_in_admin

ROOT = Path(__file__).resolve().parents[1]
GOAL_CAMERAS = 8  # issue 15: >= 8 cameras at 1080p, quiet scene, detection at 5 fps, on this 2-core machine
GOAL_RSS_MIB = 80.0  # issue 15: <= 80 MiB more per additional camera
MAX_DROPPED = 0.01
MAX_LAG_S = 1.0
KEYFRAME_S = 2.0
# scene -> (sample video, seconds kept or None for all, what the case is called)
SCENES: dict[str, tuple[str, float | None]] = {
    "quiet": ("car-detection.mp4", None),  # parking lot, few objects, 12.5 fps, 30 s
    "busy": ("one-by-one-person-detection.mp4", 60.0),  # people walking in most frames, 10 fps (139 s, cut)
}
SIZES: dict[str, tuple[int, int]] = {"720p": (1280, 720), "1080p": (1920, 1080)}
CASES = [f"{r}-{s}" for r in SIZES for s in SCENES]


@dataclass(frozen=True)
class Clip:
    case: str
    path: Path
    fps: float


@dataclass
class Run:
    """One measured run: N cameras of one case."""

    case: str
    cameras: int
    seconds: float = 0.0
    sampled: int = 0
    analysed: int = 0
    lost: int = 0
    received: int = 0
    expected: float = 0.0
    lag_s: float = 0.0
    reconnects: int = 0
    cpu_cores: float = 0.0
    rss_mib: float = 0.0
    pss_mib: float = 0.0
    other_cores: float = 0.0
    loadavg: float = 0.0
    error: str | None = None
    per_camera: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def dropped(self) -> float:
        return self.lost / self.sampled if self.sampled else 1.0

    @property
    def real_time(self) -> bool:
        return (self.error is None and self.dropped <= MAX_DROPPED and self.lag_s <= MAX_LAG_S
                and self.reconnects == 0)

    def summary(self) -> dict[str, object]:
        return {"case": self.case, "cameras": self.cameras, "real_time": self.real_time,
                "dropped_pct": round(100 * self.dropped, 2), "lag_s": round(self.lag_s, 2),
                "received_pct": round(100 * self.received / self.expected, 1) if self.expected else None,
                "reconnects": self.reconnects, "cpu_cores": round(self.cpu_cores, 2),
                "rss_mib": round(self.rss_mib), "pss_mib": round(self.pss_mib),
                "other_cores": round(self.other_cores, 2), "loadavg_1m": self.loadavg,
                "seconds": round(self.seconds, 1), "error": self.error, "per_camera": self.per_camera}


# --------------------------------------------------------------------------------------------------- clips


def build_clips(cache: Path, cases: list[str]) -> dict[str, Clip]:
    """The sample videos scaled to 720p/1080p H.264, a keyframe every 2 s like a camera; built once."""
    cache.mkdir(parents=True, exist_ok=True)
    clips = {}
    for case in cases:
        resolution, scene = case.split("-")
        name, keep_s = SCENES[scene]
        source = DATA / "videos" / name
        if not source.is_file():
            sys.exit(f"{source}: sample video not found; set TRUSTCAM_DATA_DIR to the shared data folder")
        fps = _fps(source)
        path = cache / f"{case}.mp4"
        if not path.is_file():
            w, h = SIZES[resolution]
            gop = str(round(KEYFRAME_S * fps))
            tmp = path.with_name(f".{path.name}.part.mp4")
            cut = ["-t", f"{keep_s:g}"] if keep_s else []
            start = time.perf_counter()
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), *cut, "-an", "-vf",
                            f"scale={w}:{h}", "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", gop,
                            "-keyint_min", gop, "-sc_threshold", "0", "-pix_fmt", "yuv420p", str(tmp)], check=True)
            tmp.replace(path)
            print(f"built {path} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        clips[case] = Clip(case, path, fps)
    return clips


def _fps(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=r_frame_rate", "-of", "csv=p=0", str(path)], check=True, capture_output=True,
                         text=True).stdout.strip()
    num, _, den = out.partition("/")
    return float(num) / float(den or 1)


# ----------------------------------------------------------------------------------------------- processes


class Children:
    """Every process the bench starts, each in its own process group, so that the detector processes of
    ``trustcam run`` are stopped with it; :meth:`stop_all` runs on exit, Ctrl-C and SIGTERM."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, env=env)
        self.processes.append(process)
        return process

    def stop_all(self, grace_s: float = 20.0) -> None:
        """Newest first (``trustcam run`` before its cameras, so that it does not see them go): SIGTERM (it
        finishes open events), then SIGKILL to whatever is left of the group (its detector processes)."""
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # leftovers of the group (detector children)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        self.processes.clear()








def _machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy since boot (/proc/stat: all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICKS


# ---------------------------------------------------------------------------------------------- one run


def _config(tmp: Path, ports: list[int], web_port: int, detect_fps: float) -> Path:
    keys = tmp / "keys"
    cameras = {f"cam{i + 1:02d}": {"source": f"http://127.0.0.1:{port}/", "detect": {"fps": detect_fps}}
               for i, port in enumerate(ports)}
    config = tmp / "trustcam.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(tmp / "data"), "cameras": cameras,
        "server": {"host": "127.0.0.1", "port": web_port, "auth_key_file": str(keys / "auth.key")},
        "vault": {"key_file": str(keys / "vault.kek"), "signing_key_file": str(keys / "vault-signing.key")}}))
    return config


def _serve(children: Children, clip: Clip, port: int, log: Path) -> subprocess.Popen[bytes]:
    """A live camera: the clip looped forever at its own frame rate, one MPEG-TS client over HTTP."""
    return children.start(["ffmpeg", "-nostdin", "-v", "error", "-re", "-stream_loop", "-1", "-i", str(clip.path),
                           "-an", "-c", "copy", "-f", "mpegts", "-listen", "1", f"http://127.0.0.1:{port}/"], log)


def _admin(tmp: Path, url: str, process: subprocess.Popen[bytes], log: Path) -> httpx.Client:
    """Wait for the web server, then the first admin, signed in with TOTP enrolled (``/metrics`` is admin only)."""
    import ssl

    cert = tmp / "data" / "tls" / "server.crt"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"trustcam run exited: {log.read_text()[-2000:]}")
        if cert.exists():
            context = ssl.create_default_context(cafile=str(cert))
            with contextlib.suppress(httpx.HTTPError, OSError):
                if httpx.get(f"{url}/api/health", verify=context, timeout=5).status_code == 200:
                    break
        time.sleep(0.5)
    else:
        raise RuntimeError(f"trustcam run did not answer within 180 s: {log.read_text()[-2000:]}")
    admin, login = signed_in_admin(tmp, url, context)
    if login.json().get("mfa_enrolment_required"):  # admins always need TOTP
        csrf = {"X-CSRF-Token": login.json()["csrf_token"]}
        secret = admin.post("/api/me/mfa/enroll", headers=csrf).json()["secret"]
        admin.post("/api/me/mfa/confirm", json={"code": pyotp.TOTP(secret).now()}, headers=csrf).raise_for_status()
    return admin


def scrape(admin: httpx.Client) -> dict[str, dict[str, float]]:
    """``/metrics`` as {metric: {camera: value}} for the per-camera series."""
    answer = admin.get("/metrics")
    answer.raise_for_status()
    out: dict[str, dict[str, float]] = {}
    for line in answer.text.splitlines():
        if line.startswith("#") or 'camera="' not in line:
            continue
        name, _, rest = line.partition("{")
        camera = rest.split('camera="', 1)[1].split('"', 1)[0]
        out.setdefault(name, {})[camera] = float(line.rsplit(" ", 1)[1])
    return out


def _wait_analysing(admin: httpx.Client, cameras: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        analysed = scrape(admin).get("trustcam_frames_analysed_total", {})
        if len(analysed) == cameras and all(v > 0 for v in analysed.values()):
            return
        time.sleep(1)
    raise RuntimeError(f"not every camera analysed a frame within {timeout_s:g} s")


def _delta(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], name: str) -> dict[str, float]:
    return {cam: v - before.get(name, {}).get(cam, 0.0) for cam, v in after.get(name, {}).items()}


def measure(clip: Clip, cameras: int, seconds: float, warmup: float, detect_fps: float, keep: Path | None,
            src: Path | None = None) -> Run:
    """One run; ``src``: run ``trustcam run`` from that source tree instead (e.g. ``git archive HEAD src | tar -x
    -C /tmp/base``), so that a change is compared with its baseline under the same load on a shared box."""
    run = Run(clip.case, cameras)
    children = Children()
    with tempfile.TemporaryDirectory(prefix="trustcam-capacity-") as name:
        tmp = Path(name)
        try:
            ports = [_free_port() for _ in range(cameras)]
            servers = [_serve(children, clip, port, tmp / "ffmpeg.log") for port in ports]
            web_port = _free_port()
            log = tmp / "server.log"
            process = children.start([sys.executable, "-m", "trustcam.cli", "run", "--config",
                                      str(_config(tmp, ports, web_port, detect_fps))], log,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1",
                                          **({"PYTHONPATH": str(src)} if src is not None else {})})
            admin = _admin(tmp, f"https://127.0.0.1:{web_port}", process, log)
            _wait_analysing(admin, cameras, 60 + 10 * cameras)
            time.sleep(warmup)
            _window(run, admin, process.pid, [s.pid for s in servers], clip, seconds)
            if process.poll() is not None:
                run.error = "trustcam run exited during the measurement"
        except (RuntimeError, httpx.HTTPError) as exc:
            run.error = str(exc)[-500:]
        finally:
            children.stop_all()
            if keep is not None and (tmp / "server.log").exists():
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"{clip.case}-{cameras}.log").write_bytes((tmp / "server.log").read_bytes())
    return run


def _window(run: Run, admin: httpx.Client, pid: int, servers: list[int], clip: Clip, seconds: float) -> None:
    """Scrape every 2 s for ``seconds``; fill ``run`` with the deltas, CPU and memory."""
    run.loadavg = os.getloadavg()[0]
    pids = tree(pid)
    first = scrape(admin)
    cpu0, servers0, busy0, start = cpu_s(pids), cpu_s(servers), _machine_busy_s(), time.monotonic()
    lag: dict[str, float] = {}
    last = first
    while time.monotonic() - start < seconds:
        time.sleep(min(2.0, max(0.0, seconds - (time.monotonic() - start))))
        last = scrape(admin)
        for cam, value in last.get("trustcam_ingest_lag_seconds", {}).items():
            lag[cam] = max(lag.get(cam, 0.0), value)
    pids = tree(pid)
    elapsed = time.monotonic() - start
    cpu = cpu_s(pids) - cpu0
    run.seconds = elapsed
    run.cpu_cores = cpu / elapsed
    run.other_cores = max(0.0, (_machine_busy_s() - busy0 - cpu - (cpu_s(servers) - servers0)) / elapsed)
    run.rss_mib, run.pss_mib = memory_mib(pids)
    sampled = _delta(first, last, "trustcam_frames_total")
    analysed = _delta(first, last, "trustcam_frames_analysed_total")
    received = _delta(first, last, "trustcam_frames_received_total")
    reconnects = _delta(first, last, "trustcam_camera_reconnects_total")
    lost = _delta(first, last, "trustcam_frames_dropped_total")
    run.sampled, run.analysed = round(sum(sampled.values())), round(sum(analysed.values()))
    run.lost = round(sum(lost.values()))
    run.received, run.expected = round(sum(received.values())), run.cameras * elapsed * clip.fps
    run.lag_s = max(lag.values(), default=0.0)
    run.reconnects = round(sum(reconnects.values()))
    run.per_camera = {cam: {"sampled": sampled[cam], "analysed": analysed.get(cam, 0.0), "dropped": lost.get(cam, 0.0),
                            "received": received.get(cam, 0.0), "lag_s": round(lag.get(cam, 0.0), 2)}
                      for cam in sorted(sampled)}


# ------------------------------------------------------------------------------------------------ search


def search(clip: Clip, counts: list[int], measure_n: Callable[[Clip, int], Run], at_least: int = 3) -> list[Run]:
    """Up through ``counts`` until real time is lost (the first ``at_least`` counts always, so that CPU and memory
    per camera have points), then bisect between the largest count whose runs up to it all kept real time and the
    first count that lost it."""
    runs: dict[int, Run] = {}

    def at(n: int) -> Run:
        if n not in runs:
            runs[n] = measure_n(clip, n)
            print(json.dumps(runs[n].summary()), file=sys.stderr, flush=True)
        return runs[n]

    ordered = sorted(set(counts))
    for i, n in enumerate(ordered):
        if not at(n).real_time and i + 1 >= at_least:
            break
    good, bad = _bounds(runs)
    while bad is not None and bad - good > 1:
        at((good + bad) // 2)
        good, bad = _bounds(runs)
    return [runs[n] for n in sorted(runs)]


def _bounds(runs: dict[int, Run]) -> tuple[int, int | None]:
    """(largest N with every run up to it in real time, smallest N that lost it)."""
    bad = min((n for n, r in runs.items() if not r.real_time), default=None)
    good = max((n for n in runs if bad is None or n < bad), default=0)
    return good, bad


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def case_summary(case: str, runs: list[Run]) -> dict[str, object]:
    best, lost = _bounds({r.cameras: r for r in runs})
    measured = [r for r in runs if r.error is None]
    unsaturated = [r for r in measured if r.cpu_cores + r.other_cores < 0.9 * (os.cpu_count() or 1)]
    cpu = _slope([(r.cameras, r.cpu_cores) for r in (unsaturated if len(unsaturated) >= 2 else measured)])
    rss = _slope([(r.cameras, r.rss_mib) for r in measured])
    pss = _slope([(r.cameras, r.pss_mib) for r in measured])
    return {"case": case, "max_cameras": best, "lost_at": lost,
            "cpu_pct_per_camera": None if cpu is None else round(100 * cpu, 1),
            "rss_mib_per_camera": None if rss is None else round(rss, 1),
            "pss_mib_per_camera": None if pss is None else round(pss, 1)}


def _table(summaries: list[dict[str, object]]) -> str:
    def show(value: object) -> str:
        return "-" if value is None else str(value)

    lines = ["| case | largest N in real time | lost at N | CPU % of a core per camera | RSS MiB per camera | "
             "PSS MiB per camera |", "|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s['case']} | {s['max_cameras']} | {show(s['lost_at'])} | {show(s['cpu_pct_per_camera'])} "
                     f"| {show(s['rss_mib_per_camera'])} | {show(s['pss_mib_per_camera'])} |")
    return "\n".join(lines)


def _machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


@contextlib.contextmanager
def _interrupts() -> Iterator[None]:
    """SIGTERM ends the bench like Ctrl-C, so that the ``finally`` blocks stop the children."""
    def handler(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[2:]))
    parser.add_argument("--cases", nargs="+", choices=CASES, default=["1080p-quiet"],
                        help="resolution-scene cases to measure (default: 1080p-quiet)")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 6, 8, 10, 12, 16],
                        help="camera counts tried in increasing order until real time is lost (then bisected)")
    parser.add_argument("--seconds", type=float, default=40.0, help="measurement window per run")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds after every camera analysed a frame")
    parser.add_argument("--detect-fps", type=float, default=5.0, help="cameras' detect.fps")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "bench" / "capacity", help="built clips")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy each run's trustcam log here")
    parser.add_argument("--src", type=Path, default=None,
                        help="run trustcam from this source tree (its src/ folder), to measure a baseline")
    args = parser.parse_args()
    clips = build_clips(args.cache, args.cases)
    print(f"machine: {_machine()}; load average at start {os.getloadavg()}", file=sys.stderr)
    summaries = []
    with _interrupts():
        for case in args.cases:
            runs = search(clips[case], args.counts, lambda clip, n: measure(
                clip, n, args.seconds, args.warmup, args.detect_fps, args.keep_logs, args.src))
            summaries.append(case_summary(case, runs))
    print(f"load average at end {os.getloadavg()}", file=sys.stderr)
    print(_table(summaries))
    print(f"goals: >= {GOAL_CAMERAS} cameras at 1080p-quiet with detection at 5 fps; <= {GOAL_RSS_MIB:g} MiB RSS "
          "per additional camera")
    for s in summaries:
        print(json.dumps(s))
    first = next((s for s in summaries if s["case"] == "1080p-quiet"), summaries[0])
    print(f"max_cameras_{str(first['case']).replace('-', '_')}={first['max_cameras']}")


if __name__ == "__main__":
    main()
