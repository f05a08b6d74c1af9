"""Configuration: one YAML file, one pydantic schema."""

from trustcam.config.loader import ConfigError, load_settings, parse_settings
from trustcam.config.schema import CameraConfig, Settings, ThreatLevel

__all__ = ["CameraConfig", "ConfigError", "Settings", "ThreatLevel", "load_settings", "parse_settings"]
