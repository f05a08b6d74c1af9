"""Real infrastructure for the alert tests: a Mosquitto broker, a paho subscriber, an HTTP webhook receiver.

A uniquely named module (not conftest) so that tests can import the helpers without clashing with other
folders' conftest modules; the fixtures are re-exported by this folder's conftest.
"""

from __future__ import annotations

import getpass
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from support import free_port, wait_until

MOSQUITTO = "/usr/sbin/mosquitto"


class Broker:
    """A real mosquitto on a free port; persistence on, so a restart keeps sessions (like a real deployment)."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
                               f"persistence true\npersistence_location {root}/\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)

        def accepting() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_until(accepting, 10, "mosquitto to listen")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float

    def json(self) -> dict:
        return json.loads(self.payload)


class Subscriber:
    """A paho client subscribed to ``#`` (QoS 1, persistent session so nothing is missed across a broker restart)."""

    def __init__(self, port: int, client_id: str = "test-subscriber") -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_connect = lambda c, *_: c.subscribe("#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, msg.payload, bool(msg.retain), time.time()))

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if mqtt.topic_matches_sub(topic, m.topic)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(broker: Broker) -> Iterator[Subscriber]:
    s = Subscriber(broker.port)
    yield s
    s.close()


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    """A real HTTP webhook receiver on a fixed port that can be down (port closed), up, or failing (status)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.status = 200
        self.requests: list[Request] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append(Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                                              time.time()))
                self.send_response(outer.status)
                self.end_headers()
                self.wfile.write(b"ok" if outer.status < 300 else b"receiver error")

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def of_type(self, kind: str) -> list[Request]:
        return [r for r in self.requests if json.loads(r.body).get("type") == kind]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()
