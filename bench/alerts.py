"""Alert latency benchmark: from the frame that caused a rule alert to its arrival at an MQTT subscriber.

Run ``python bench/alerts.py [--seconds 60]``. It starts a private Mosquitto (``/usr/sbin/mosquitto``) on a free
port, runs :class:`trustcam.service.Service` on the person clip paced like a live camera (a file camera plays
in real time, frames carry wall-clock times), with a zone, a line and a loiter rule and default detector settings,
and subscribes with paho. For every rule alert received it measures

* frame → receive: receive time − ``source_time`` (when the frame was captured): detection, tracking, rules, the
  outbox write, the MQTT worker, the broker and the subscriber;
* alert → receive: receive time − alert ``time`` (when the alert was raised): the delivery path alone;

and prints count, p50, p95 and max of each, plus the dispatcher's own PUBACK latency. It asserts nothing. The last
line is ``frame_to_mqtt_p95_ms=X``, for scripts that track it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from trustcam.alerts.model import AlertDelivered
from trustcam.config.schema import Settings
from trustcam.service import Service
from trustcam.vision import catalog

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = root / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n")
    process = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    sys.exit("mosquitto did not start")


def stats(values: list[float]) -> str:
    if not values:
        return "n=0"
    ms = np.array(values) * 1000
    return (f"n={len(ms)}  p50={np.percentile(ms, 50):7.1f} ms  p95={np.percentile(ms, 95):7.1f} ms  "
            f"max={ms.max():7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of the clip played (live pace)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the log sink would print every alert; figures only
    data = Path(os.environ.get("TRUSTCAM_DATA_DIR", ROOT.parent / "shared" / "data"))
    clip = data / "videos" / "one-by-one-person-detection.mp4"
    for spec in catalog.CATALOG.values():
        catalog.install(spec, allow_download=False)
    with tempfile.TemporaryDirectory() as tmp:
        broker, port = start_broker(Path(tmp))
        received: list[tuple[float, dict]] = []
        subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-subscriber")
        subscriber.on_connect = lambda c, *_: c.subscribe("trustcam/+/rule", qos=1)
        subscriber.on_message = lambda _c, _u, m: received.append((time.time(), json.loads(m.payload)))
        subscriber.connect("127.0.0.1", port)
        subscriber.loop_start()
        settings = Settings.model_validate({
            "data_dir": str(Path(tmp) / "data"),
            "alerts": {"mqtt": {"enabled": True, "port": port, "client_id": "trustcam-bench"}},
            "cameras": {"office": {
                "source": str(clip), "objects": {"track": ["person"]}, "canary": {"enabled": False},
                "zones": {"table": {"coordinates": [[0.40, 0.55], [0.90, 0.55], [0.90, 1.0], [0.40, 1.0]]}},
                "rules": [{"name": "at-table", "type": "enter_zone", "zone": "table", "threat": "high"},
                          {"name": "loitering", "type": "loiter", "zone": "table", "seconds": 8},
                          {"name": "walked-in", "type": "cross_line", "line": [[0.0, 0.9], [1.0, 0.9]]}]}},
        })
        service = Service(settings)
        puback: list[float] = []
        lock = threading.Lock()

        def on_delivered(m: AlertDelivered) -> None:
            if m.sink == "mqtt":
                with lock:
                    puback.append(m.latency_s)

        service.bus.subscribe(AlertDelivered, on_delivered)
        started = time.perf_counter()
        service.start()
        try:
            time.sleep(args.seconds)
        finally:
            service.stop()
            time.sleep(0.5)
            subscriber.loop_stop()
            broker.terminate()
            broker.wait(10)
    frame_to_rx = [rx - a["source_time"] for rx, a in received if a.get("source_time") is not None]
    alert_to_rx = [rx - a["time"] for rx, a in received]
    print(f"{args.seconds:.0f} s of the person clip at live pace ({time.perf_counter() - started:.0f} s wall), "
          f"{len(received)} rule alerts received over MQTT (QoS 1, local Mosquitto)")
    print(f"frame -> MQTT receive:   {stats(frame_to_rx)}")
    print(f"alert -> MQTT receive:   {stats(alert_to_rx)}")
    print(f"frame -> PUBACK (outbox): {stats(puback)}")
    p95 = float(np.percentile(np.array(frame_to_rx) * 1000, 95)) if frame_to_rx else float("nan")
    print(f"frame_to_mqtt_p95_ms={p95:.1f}")


if __name__ == "__main__":
    main()
