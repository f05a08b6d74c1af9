"""MQTT sink with Home Assistant conventions: availability + LWT, retained discovery, QoS ≥ 1 alerts.

It is also a checkpoint witness: every :class:`WitnessEntry` on the bus is published retained (QoS 1) to
``<prefix>/witness/audit`` or ``<prefix>/witness/footage/<camera>``, so the broker keeps the newest signed head of
each chain outside trustcam's database.

An alert counts as delivered only after the broker's PUBACK. While the broker is unreachable paho keeps the
in-flight message and resends it on reconnect; the dispatcher waits for that same message (no duplicate) and
sends nothing newer meanwhile, so alerts arrive in the order they were raised.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import ssl
import threading
import time
from collections import deque
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from trustcam.alerts.model import Alert
from trustcam.alerts.secrets import read_secret_file
from trustcam.alerts.sink import DeliveryError, Sink
from trustcam.bus import Bus
from trustcam.config import ConfigError
from trustcam.config.schema import CameraConfig, MqttConfig
from trustcam.storage.witness import WitnessEntry, entry_json, witness_topic

log = logging.getLogger(__name__)
PASSWORD_ENV = "TRUSTCAM_MQTT_PASSWORD"
PUBACK_TIMEOUT_S = 5.0
OFF_DELAY_S = 30  # Home Assistant turns a rule (motion/person) sensor off this long after the last alert
AUTH_REFUSALS = {"Bad user name or password", "Not authorized"}


def alert_topic(prefix: str, alert: Alert) -> str:
    return f"{prefix}/{alert.camera or 'system'}/{alert.kind}"


def alert_payload(alert: Alert) -> bytes:
    """The alert's JSON plus ``state`` (ON, or OFF when the condition cleared) for Home Assistant templates."""
    return json.dumps({**alert.to_json(), "state": "OFF" if alert.cleared else "ON"}, separators=(",", ":")).encode()


def discovery_messages(config: MqttConfig, cameras: dict[str, CameraConfig]) -> list[tuple[str, dict[str, Any]]]:
    """(topic, config) for every Home Assistant entity: per camera motion, each tracked label, tamper, health,
    AI coverage; plus one "last alert" sensor."""
    if config.discovery_prefix is None:
        return []
    p, d = config.topic_prefix, config.discovery_prefix
    availability = {"availability_topic": f"{p}/availability", "payload_available": "online",
                    "payload_not_available": "offline"}
    out: list[tuple[str, dict[str, Any]]] = []

    def binary(camera: str, key: str, name: str, topic: str, template: str, device_class: str,
               **extra: Any) -> None:
        uid = f"trustcam_{camera}_{key}"
        out.append((f"{d}/binary_sensor/{uid}/config", {
            "name": name, "unique_id": uid, "object_id": uid, "state_topic": topic, "value_template": template,
            "payload_on": "ON", "payload_off": "OFF", "device_class": device_class,
            "json_attributes_topic": topic,
            "device": {"identifiers": [f"trustcam_{camera}"], "name": f"trustcam {camera}",
                       "manufacturer": "trustcam", "model": "camera"},
            **availability, **extra}))

    for camera, cam in cameras.items():
        rule_topic = f"{p}/{camera}/rule"
        binary(camera, "motion", "Rule alert", rule_topic, "ON", "motion", off_delay=OFF_DELAY_S)
        for label in cam.objects.track:
            binary(camera, label, label.capitalize(), rule_topic,
                   f"{{{{ 'ON' if value_json.data.label == '{label}' else '' }}}}", "occupancy",
                   off_delay=OFF_DELAY_S)
        state = "{{ value_json.state }}"
        binary(camera, "tamper", "Tamper", f"{p}/{camera}/tamper", state, "tamper")
        binary(camera, "health", "Camera problem (offline, stalled)", f"{p}/{camera}/health", state, "problem")
        binary(camera, "coverage", "AI coverage problem", f"{p}/{camera}/coverage", state, "problem")
    out.append((f"{d}/sensor/trustcam_last_alert/config", {
        "name": "Last alert", "unique_id": "trustcam_last_alert", "object_id": "trustcam_last_alert",
        "state_topic": f"{p}/last_alert", "value_template": "{{ value_json.message[:250] }}",
        "json_attributes_topic": f"{p}/last_alert", "icon": "mdi:alarm-light",
        "device": {"identifiers": [f"trustcam_{config.client_id}"], "name": "trustcam", "manufacturer": "trustcam"},
        **availability}))
    return out


def mqtt_password(config: MqttConfig) -> str | None:
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if config.password_file is not None:
        return read_secret_file(config.password_file, "alerts.mqtt.password_file")
    return None


def tls_context(config: MqttConfig) -> ssl.SSLContext:
    """Verifies the broker against ``ca_file`` (a self-hosted broker's own CA) or else the system CA store."""
    if config.ca_file is None:
        return ssl.create_default_context()
    path = config.ca_file.expanduser()
    try:
        return ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        raise ConfigError(f"alerts.mqtt.ca_file: {path} does not exist; give the PEM file of the CA that signed the "
                          "broker's certificate") from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"alerts.mqtt.ca_file: {path} is not a readable PEM CA certificate ({exc}); give the CA "
                          "that signed the broker's certificate") from None


def connect_failure(config: MqttConfig, exc: OSError) -> str:
    """Why the TCP/TLS connection failed, in words naming the broker and the fix."""
    broker = f"broker {config.host}:{config.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = str(exc.verify_message).rstrip(".")
        if "mismatch" in reason:  # signed by a trusted CA, but for other names
            return (f"{broker}: TLS certificate not trusted ({reason}); set alerts.mqtt.host to a name or IP address "
                    f"the certificate lists (its subjectAltName), or reissue it for {config.host}")
        trust = f"alerts.mqtt.ca_file ({config.ca_file})" if config.ca_file else "the system CA store"
        return (f"{broker}: TLS certificate not trusted ({reason}); it must be signed by a CA in {trust}; "
                "set alerts.mqtt.ca_file to the PEM certificate of the CA that signed the broker's certificate")
    plain = "; with tls: true this usually means the port is a plain MQTT listener: use the broker's TLS port"
    if isinstance(exc, ssl.SSLError):
        return f"{broker}: TLS handshake failed ({exc.reason or exc}){plain}"
    if config.tls and isinstance(exc, ConnectionResetError):
        return f"{broker}: TLS handshake failed (connection reset by the broker){plain} (usually 8883)"
    return f"cannot connect to {broker}: {exc.strerror or exc}"


class _Client(mqtt.Client):
    """paho's client, telling us *why* a (re)connection failed (paho's on_connect_fail does not say)."""

    on_connect_error: Any = None

    def reconnect(self) -> mqtt.MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:
            if self.on_connect_error is not None:
                self.on_connect_error(exc)
            raise


class MqttSink(Sink):
    """Connects in the background (paho's own thread, reconnecting with backoff) and publishes alerts."""

    name = "mqtt"

    def __init__(self, config: MqttConfig, cameras: dict[str, CameraConfig], bus: Bus | None = None) -> None:
        self.config = config
        self.cameras = cameras
        self.prefix = config.topic_prefix
        self.client = _Client(CallbackAPIVersion.VERSION2, client_id=config.client_id)
        if config.username is not None:
            self.client.username_pw_set(config.username, mqtt_password(config))
        if config.tls:
            self.client.tls_set_context(tls_context(config))
        self.client.on_connect_error = self._on_connect_error
        self.client.will_set(f"{self.prefix}/availability", "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self._connected = threading.Event()
        self._acks = threading.Condition(threading.RLock())
        self._waiting: set[int] = set()
        self._acked: set[int] = set()
        self._early: deque[int] = deque(maxlen=256)  # recent PUBACKs of mids nobody waited for (yet)
        self._stopping = False
        self._inflight: dict[str, int] = {}  # alert id -> mid of the message paho is (re)sending
        self.last_error: str | None = None
        self._witnessed: dict[str, str] = {}  # topic -> newest witness payload, published again on (re)connect
        if bus is not None:
            bus.subscribe(WitnessEntry, self.witness)

    # --- connection ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._stopping = False
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        self._stopping = True
        if self._connected.is_set():  # a clean stop says so itself; the LWT is only for crashes
            info = self.client.publish(f"{self.prefix}/availability", "offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):  # lost the connection meanwhile: the LWT says it
                info.wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()

    def ready(self) -> bool:
        return self._connected.is_set()

    def wait_ready(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def _on_connect(self, client: mqtt.Client, _userdata: object, _flags: object, reason: Any,
                    _properties: object) -> None:
        if reason.is_failure:
            error = f"broker {self.config.host}:{self.config.port} refused the connection: {reason}"
            if str(reason) in AUTH_REFUSALS:
                error += (f" (authentication failed for user {self.config.username!r}; check alerts.mqtt.username "
                          f"and the password in alerts.mqtt.password_file or {PASSWORD_ENV})"
                          if self.config.username is not None else
                          " (the broker requires a login; set alerts.mqtt.username and password_file)")
            if error != self.last_error:  # paho retries with backoff: say it once per distinct problem
                log.warning("mqtt: %s", error)
            self.last_error = error
            return
        for topic, payload in discovery_messages(self.config, self.cameras):
            client.publish(topic, json.dumps(payload), qos=1, retain=True)
        client.publish(f"{self.prefix}/availability", "online", qos=1, retain=True)
        for topic, payload in list(self._witnessed.items()):  # checkpoints signed while the broker was away
            client.publish(topic, payload, qos=1, retain=True)
        self.last_error = None
        self._connected.set()
        log.info("mqtt: connected to %s:%s", self.config.host, self.config.port)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: object, _flags: object, reason: Any,
                       _properties: object) -> None:
        if self._connected.is_set() and not self._stopping:
            log.warning("mqtt: disconnected from %s:%s (%s); reconnecting", self.config.host, self.config.port,
                        reason)
        if self._connected.is_set():  # after a refused CONNECT keep the refusal's reason
            self.last_error = f"disconnected ({reason})"
        self._connected.clear()

    def _on_connect_error(self, exc: OSError) -> None:
        error = connect_failure(self.config, exc)
        if error != self.last_error:  # paho retries with backoff: say it once per distinct problem
            log.warning("mqtt: %s", error)
        self.last_error = error

    def _on_publish(self, _client: mqtt.Client, _userdata: object, mid: int, _reason: object,
                    _properties: object) -> None:
        with self._acks:
            if mid in self._waiting:
                self._acked.add(mid)
                self._acks.notify_all()
            else:
                self._early.append(mid)

    # --- delivery -----------------------------------------------------------------------------------------
    def deliver(self, alert: Alert) -> None:
        mid = self._inflight.get(alert.id)
        if mid is None:
            if not self._connected.is_set():
                raise DeliveryError(f"broker {self.config.host}:{self.config.port} not connected"
                                    f"{f' ({self.last_error})' if self.last_error else ''}", counts=False)
            # never hold self._acks while calling paho: its network thread holds paho's locks when it calls
            # _on_publish, which takes self._acks (lock-order inversion = deadlock)
            info = self.client.publish(alert_topic(self.prefix, alert), alert_payload(alert), qos=self.config.qos)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                raise DeliveryError("paho's outgoing queue is full", counts=False)
            mid = info.mid
            with self._acks:
                self._waiting.add(mid)
                if mid in self._early:  # the PUBACK beat us here
                    self._acked.add(mid)
            self._inflight[alert.id] = mid
        deadline = time.monotonic() + PUBACK_TIMEOUT_S
        with self._acks:
            while mid not in self._acked:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeliveryError(f"no PUBACK from {self.config.host}:{self.config.port} within "
                                        f"{PUBACK_TIMEOUT_S:.0f}s; paho resends it on reconnect", counts=False)
                self._acks.wait(left)
            self._acked.discard(mid)
            self._waiting.discard(mid)
        del self._inflight[alert.id]
        self.client.publish(f"{self.prefix}/last_alert", alert_payload(alert), qos=0, retain=True)

    def witness(self, entry: WitnessEntry) -> None:
        """Publish a checkpoint head retained; never blocks or raises (the camera or login thread calls it). While
        the broker is unreachable the newest head per topic waits here and goes out on reconnect."""
        topic, payload = witness_topic(self.prefix, entry), entry_json(entry)
        self._witnessed[topic] = payload
        if not self._connected.is_set():
            log.info("mqtt: broker not connected; witness %s is published when it is", topic)
            return
        info = self.client.publish(topic, payload, qos=1, retain=True)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: resent on reconnect
            log.warning("mqtt: witness %s not published (%s); it is sent again on reconnect", topic,
                        mqtt.error_string(info.rc))

    def heartbeat(self, payload: dict[str, Any]) -> None:
        if self._connected.is_set():  # not queued: a missing heartbeat is the signal
            self.client.publish(f"{self.prefix}/heartbeat", json.dumps(payload), qos=0, retain=False)
