"""MQTT over TLS with a login, against a real Mosquitto with its own CA (certificates made here with cryptography):
delivery, a wrong password (clear error, nothing lost, delivered once fixed), an untrusted certificate, and the
password file's permission check."""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from alerts_infra import MOSQUITTO, Broker, wait_until
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion

from support import free_port
from trustcam.alerts.dispatcher import AlertDispatcher, build_sinks
from trustcam.alerts.model import Alert, Severity
from trustcam.alerts.mqtt import PASSWORD_ENV, MqttSink
from trustcam.bus import Bus
from trustcam.config import ConfigError
from trustcam.config.schema import Settings
from trustcam.storage.database import open_database

CLI = [sys.executable, "-m", "trustcam.cli"]
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
USER, PASSWORD = "trustcam", "correct horse battery staple"


# --- certificates -----------------------------------------------------------------------------------------------
def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make_ca(directory: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_server_cert(directory: Path, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate) -> tuple[Path,
                                                                                                             Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return cert_path, key_path


# --- a TLS + password Mosquitto ---------------------------------------------------------------------------------
@dataclass
class TlsBroker:
    broker: Broker
    ca: Path  # the CA that signed the broker's certificate
    other_ca: Path  # a CA that did not
    alt_port: int  # the same TLS listener on 127.0.0.2, an address the certificate does not name

    @property
    def port(self) -> int:
        return self.broker.port


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    root = tmp_path_factory.mktemp("mosquitto-tls")
    ca_key, ca_cert, ca = make_ca(root, "trustcam-test-ca")
    _, _, other_ca = make_ca(root, "some-other-ca")
    cert, key = make_server_cert(root, ca_key, ca_cert)
    passwd = root / "passwd"
    subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(passwd), USER, PASSWORD], check=True, capture_output=True)
    passwd.chmod(0o600)
    broker = Broker(root)  # its free port and start/stop; the config is ours
    alt_port = free_port()
    tls = f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
    broker.config.write_text(
        f"listener {broker.port} 127.0.0.1\n{tls}listener {alt_port} 127.0.0.2\n{tls}"
        f"allow_anonymous false\npassword_file {passwd}\nuser {getpass.getuser()}\npersistence false\n")
    broker.start()
    assert broker.process is not None and broker.process.poll() is None, f"{MOSQUITTO} did not start"
    yield TlsBroker(broker, ca, other_ca, alt_port)
    broker.stop()


class TlsSubscriber:
    """A paho client on the TLS listener (trusting the test CA, logged in), subscribed to ``trustcam/#``."""

    def __init__(self, tls_broker: TlsBroker, client_id: str) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.tls_set(ca_certs=str(tls_broker.ca))
        self.client.username_pw_set(USER, PASSWORD)
        self.client.on_connect = lambda c, *_: c.subscribe("trustcam/+/rule", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", tls_broker.port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(5), "the TLS test subscriber could not subscribe"

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(msg)

    def ids(self) -> list[str]:
        with self._lock:
            seen: list[str] = []
            for m in self.messages:
                if (i := json.loads(m.payload)["id"]) not in seen:
                    seen.append(i)
            return seen

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def tls_subscriber(tls_broker: TlsBroker, request: pytest.FixtureRequest) -> Iterator[TlsSubscriber]:
    s = TlsSubscriber(tls_broker, f"sub-{request.node.name[:40]}")
    yield s
    s.close()


def password_file(tmp_path: Path, password: str, mode: int = 0o600) -> Path:
    path = tmp_path / f"mqtt-{len(list(tmp_path.glob('mqtt-*.password')))}.password"
    path.write_text(password + "\n")
    path.chmod(mode)
    return path


def mqtt_config(tmp_path: Path, tls_broker: TlsBroker, client_id: str, **overrides: object) -> dict:
    return {"enabled": True, "host": "127.0.0.1", "port": tls_broker.port, "tls": True, "ca_file": str(tls_broker.ca),
            "username": USER, "password_file": str(password_file(tmp_path, PASSWORD)), "client_id": client_id,
            "discovery_prefix": None, **overrides}


def settings(tmp_path: Path, mqtt_section: dict) -> Settings:
    return Settings.model_validate({"data_dir": str(tmp_path / "data"),
                                    "cameras": {"office": {"source": "unused.mp4"}},
                                    "alerts": {"mqtt": mqtt_section}})


def raise_alerts(bus: Bus, n: int) -> list[str]:
    ids = []
    for i in range(n):
        alert = Alert(kind="rule", severity=Severity.high, camera="office", message=f"tls alert {i}")
        ids.append(alert.id)
        bus.publish(alert)
    return ids


@pytest.fixture(autouse=True)
def _no_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)


# --- the tests --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])  # the certificate's IP and DNS names
def test_alerts_are_delivered_over_tls_with_the_password(tmp_path: Path, tls_broker: TlsBroker,
                                                         tls_subscriber: TlsSubscriber, host: str) -> None:
    s = settings(tmp_path, mqtt_config(tmp_path, tls_broker, f"trustcam-tls-ok-{host}", host=host))
    bus = Bus()
    dispatcher = AlertDispatcher(s, open_database(s.resolved_database_url), bus)
    dispatcher.start()
    try:
        ids = raise_alerts(bus, 3)
        wait_until(lambda: len(tls_subscriber.ids()) == 3, 10, "3 alerts over TLS")
        assert tls_subscriber.ids() == ids
        wait_until(lambda: not dispatcher.outbox.rows(state="pending"), 5, "no pending rows")
        assert all(r.state == "delivered" for r in dispatcher.outbox.rows(sink="mqtt"))
    finally:
        dispatcher.stop()


def test_wrong_password_is_a_clear_error_loses_nothing_and_delivers_once_fixed(
        tmp_path: Path, tls_broker: TlsBroker, tls_subscriber: TlsSubscriber, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = mqtt_config(tmp_path, tls_broker, "trustcam-tls-wrong",
                        password_file=str(password_file(tmp_path, "not the password")))
    s = settings(tmp_path, wrong)
    bus = Bus()
    dispatcher = AlertDispatcher(s, open_database(s.resolved_database_url), bus)
    mqtt_sink = next(sink for sink in dispatcher.sinks if isinstance(sink, MqttSink))
    dispatcher.start()
    try:
        ids = raise_alerts(bus, 3)
        wait_until(lambda: mqtt_sink.last_error and "refused" in mqtt_sink.last_error, 10, "the broker's refusal")
        error = mqtt_sink.last_error or ""
        assert f"broker 127.0.0.1:{tls_broker.port} refused the connection" in error, error
        assert "Not authorized" in error or "Bad user name or password" in error, error
        assert f"authentication failed for user '{USER}'" in error and "password_file" in error, error
        assert "Traceback" not in error
        wait_until(lambda: len(dispatcher.outbox.rows(state="delivered", sink="log")) == 3, 5, "the log sink")
        pending = dispatcher.outbox.rows(state="pending", sink="mqtt")
        assert [r.alert.id for r in pending] == ids and all(r.attempts == 0 for r in pending)  # waits, no attempt
        assert not mqtt_sink.ready() and tls_subscriber.ids() == []
    finally:
        dispatcher.stop(drain_s=0.2)
    assert len(dispatcher.outbox.rows(state="pending", sink="mqtt")) == 3  # still on disk after the stop

    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)  # fixed: the environment overrides the (wrong) password file
    fixed = AlertDispatcher(s, open_database(s.resolved_database_url), Bus())
    fixed.start()
    try:
        wait_until(lambda: len(tls_subscriber.ids()) == 3, 10, "the 3 pending alerts after the fix")
        assert tls_subscriber.ids() == ids  # none lost, in order
        wait_until(lambda: not fixed.outbox.rows(state="pending"), 5, "no pending rows")
    finally:
        fixed.stop()


@pytest.mark.parametrize("trust", ["other_ca", "system", "hostname"])
def test_untrusted_server_certificate_is_a_clear_error(tmp_path: Path, tls_broker: TlsBroker, trust: str) -> None:
    overrides: dict[str, object] = {"other_ca": {"ca_file": str(tls_broker.other_ca)}, "system": {"ca_file": None},
                                    "hostname": {"host": "127.0.0.2", "port": tls_broker.alt_port}}[trust]
    s = settings(tmp_path, mqtt_config(tmp_path, tls_broker, f"trustcam-untrusted-{trust}", **overrides))
    dispatcher = AlertDispatcher(s, open_database(s.resolved_database_url), Bus())
    results = dispatcher.send_test(connect_timeout=2)  # what `trustcam alerts test` prints
    assert results["log"] is None
    error = results["mqtt"] or ""
    assert f"broker {s.alerts.mqtt.host}:{s.alerts.mqtt.port}: TLS certificate not trusted" in error, error
    reason = {"other_ca": "self-signed certificate in certificate chain|unable to get local issuer certificate",
              "system": "self-signed certificate in certificate chain|unable to get local issuer certificate",
              "hostname": "IP address mismatch, certificate is not valid for '127.0.0.2'"}[trust]
    assert re.search(rf"not trusted \(({reason})\)", error), error  # OpenSSL's reason, not a bare "verify failed"
    fix = {"other_ca": f"signed by a CA in alerts.mqtt.ca_file ({tls_broker.other_ca})",
           "system": "signed by a CA in the system CA store; set alerts.mqtt.ca_file",
           "hostname": "set alerts.mqtt.host to a name or IP address the certificate lists"}[trust]
    assert fix in error, error
    assert "Traceback" not in error


def test_tls_sink_to_a_plain_listener_explains(tmp_path: Path, tls_broker: TlsBroker, broker: Broker) -> None:
    # trustcam with tls: true against a plain (non-TLS) listener: a handshake error, not a hang or a traceback
    s = settings(tmp_path, mqtt_config(tmp_path, tls_broker, "trustcam-tls-to-plain", port=broker.port))
    sink = MqttSink(s.alerts.mqtt, {})
    sink.start()
    try:
        wait_until(lambda: sink.last_error, 10, "the TLS handshake error")
    finally:
        sink.stop()
    error = sink.last_error or ""
    assert f"broker 127.0.0.1:{broker.port}: TLS handshake failed" in error, error
    assert "plain MQTT listener" in error and not sink.ready()


def write_cli_config(tmp_path: Path, tls_broker: TlsBroker, mqtt_yaml: str) -> Path:
    config = tmp_path / "tls.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\ncameras: {{office: {{source: unused.mp4}}}}\n"
                      f"alerts:\n  mqtt: {{enabled: true, port: {tls_broker.port}, tls: true, {mqtt_yaml}}}\n")
    return config


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=env)


def test_password_file_readable_by_others_is_refused_with_the_fix(tmp_path: Path, tls_broker: TlsBroker) -> None:
    loose = password_file(tmp_path, PASSWORD, mode=0o644)
    s = settings(tmp_path, mqtt_config(tmp_path, tls_broker, "trustcam-loose", password_file=str(loose)))
    with pytest.raises(ConfigError, match=r"readable by group or others \(mode 0644\); run chmod 600"):
        build_sinks(s)
    loose.chmod(0o640)
    with pytest.raises(ConfigError, match=r"alerts\.mqtt\.password_file"):
        build_sinks(s)

    config = write_cli_config(tmp_path, tls_broker, f"ca_file: {tls_broker.ca}, username: {USER}, "
                                                    f"password_file: {loose}")
    result = run_cli("alerts", "test", "--config", str(config))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"chmod 600 {loose}" in output and "Traceback" not in output, output

    loose.chmod(0o600)  # fixed: the same command now delivers over TLS with the login
    result = run_cli("alerts", "test", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mqtt: delivered" in result.stdout


def test_ca_file_mistakes_are_clear_config_errors(tmp_path: Path, tls_broker: TlsBroker) -> None:
    missing = tmp_path / "nope.pem"
    config = write_cli_config(tmp_path, tls_broker, f"ca_file: {missing}")
    result = run_cli("alerts", "test", "--config", str(config))
    output = result.stdout + result.stderr
    assert result.returncode != 0 and f"alerts.mqtt.ca_file: {missing} does not exist" in output, output
    assert "Traceback" not in output

    not_pem = tmp_path / "garbage.pem"
    not_pem.write_text("this is not a certificate\n")
    s = settings(tmp_path, mqtt_config(tmp_path, tls_broker, "trustcam-bad-ca", ca_file=str(not_pem)))
    with pytest.raises(ConfigError, match="is not a readable PEM CA certificate"):
        build_sinks(s)

    with pytest.raises(ValueError, match="ca_file is set but tls is false; set tls: true"):
        settings(tmp_path, mqtt_config(tmp_path, tls_broker, "trustcam-no-tls", tls=False))
