"""Live view cost and latency: MSE over WebSocket vs MJPEG, 1 and 8 viewers in Chromium, against a real `trustcam run`.

    python bench/live.py [--seconds 15] [--viewers 1 8]

Starts the server (one file camera, the person clip played at its own speed, analysed at 2 fps) in a subprocess on
a loopback port, signs an admin in, then for each mode and viewer count opens that many Chromium pages on the live
view (``#/live/bench`` plays MSE, ``#/live/bench?mode=mjpeg`` the MJPEG stream) and measures for ``--seconds``:

- server CPU: the ``trustcam run`` process's CPU time per second (/proc/PID/stat), minus the same with no viewer
  (the cameras' analysis), divided by the number of viewers;
- MSE glass-to-glass latency p50/p95: from the moment the server received a frame's packet from the camera
  (``clock`` stamps on the socket) to the presentation of that frame in the page (``requestVideoFrameCallback``
  metadata, same machine clock). MJPEG pictures carry no timestamp the page can read, so MJPEG has no latency figure.

Prints one JSON object. Chromium runs on the same machine: with 8 pages it competes with the server for the CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pyotp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from web_login_flood import DATA, PASSWORD, _start, signed_in_admin

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _cpu_rate(pid: int, seconds: float) -> float:
    start_cpu, start = _cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    return (_cpu_s(pid) - start_cpu) / (time.monotonic() - start)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _measure(browser: object, url: str, cookie: str, pid: int, mode: str, viewers: int, seconds: float
             ) -> dict[str, object]:
    suffix = "?mode=mjpeg" if mode == "mjpeg" else ""
    contexts, pages = [], []
    try:
        for _ in range(viewers):  # a context each: one browser profile opens at most 6 connections to a server
            context = browser.new_context(ignore_https_errors=True)  # type: ignore[attr-defined]
            context.add_cookies([{"name": "trustcam_session", "value": cookie, "url": url}])
            contexts.append(context)
            page = context.new_page()
            page.goto(f"{url}/#/live/bench{suffix}", wait_until="commit")  # an MJPEG page never finishes loading
            pages.append(page)
        time.sleep(6)  # first keyframe, players settle at the live edge
        if os.environ.get("BENCH_SHOT"):
            pages[0].screenshot(path=os.environ["BENCH_SHOT"])
        for page in pages:
            page.evaluate("() => { if (window.trustcamLive) window.trustcamLive.latencies = []; }")
        cpu = _cpu_rate(pid, seconds)
        latencies: list[float] = []
        frames = 0
        for page in pages:
            stats = page.evaluate("() => window.trustcamLive || null") if mode == "mse" else None
            if stats:
                latencies += stats["latencies"]
                frames += stats["frames"]
        return {"mode": mode, "viewers": viewers, "server_cpu_s_per_s": round(cpu, 4), "frames_shown": frames,
                "latency_p50_s": _round(_percentile(latencies, 0.5)),
                "latency_p95_s": _round(_percentile(latencies, 0.95)), "latency_samples": len(latencies)}
    finally:
        for context in contexts:
            context.close()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def bench(seconds: float, viewer_counts: list[int], video: Path) -> dict[str, object]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        process, url, context = _start(tmp, video)
        try:
            admin, login = signed_in_admin(tmp, url, context)
            csrf = login.json()["csrf_token"]
            if login.json().get("mfa_enrolment_required"):  # admins always need TOTP
                secret = admin.post("/api/me/mfa/enroll", headers={"X-CSRF-Token": csrf}).json()["secret"]
                admin.post("/api/me/mfa/confirm", json={"code": pyotp.TOTP(secret).now()},
                           headers={"X-CSRF-Token": csrf}).raise_for_status()
            admin.post("/api/users", json={"username": "watcher", "password": PASSWORD, "role": "viewer"},
                       headers={"X-CSRF-Token": csrf}).raise_for_status()
            watcher = httpx.Client(base_url=url, verify=context, timeout=60)  # a viewer: no MFA enrolment page
            watcher.post("/api/auth/login", json={"username": "watcher", "password": PASSWORD}).raise_for_status()
            cookie = watcher.cookies.get("trustcam_session")
            assert cookie, "no session cookie after login"
            time.sleep(3)
            idle = _cpu_rate(process.pid, seconds)
            runs = []
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                    "--no-sandbox", "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required"])
                try:
                    for mode in ("mse", "mjpeg"):
                        for viewers in viewer_counts:
                            run = _measure(browser, url, cookie, process.pid, mode, viewers, seconds)
                            run["server_cpu_per_viewer_s_per_s"] = round(
                                (float(run["server_cpu_s_per_s"]) - idle) / viewers, 4)  # type: ignore[arg-type]
                            runs.append(run)
                            print(json.dumps(run), file=sys.stderr)
                finally:
                    browser.close()
            return {"seconds": seconds, "server_cpu_idle_s_per_s": round(idle, 4), "runs": runs}
        finally:
            process.terminate()
            process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--viewers", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    print(json.dumps(bench(args.seconds, args.viewers, DATA / "videos" / "one-by-one-person-detection.mp4")))


if __name__ == "__main__":
    main()
