"""Fixtures of the alert tests (real Mosquitto, paho subscriber, HTTP receiver): see alerts_infra."""

from alerts_infra import broker, receiver, subscriber

__all__ = ["broker", "receiver", "subscriber"]
