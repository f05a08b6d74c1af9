"""Alerts leave trustcam here: one model, one dispatcher, sinks (log, MQTT, webhooks) behind a persisted outbox."""
