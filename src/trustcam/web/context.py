"""What the web layer needs from the running system, in one object (``request.app.state.ctx``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from trustcam.bus import Bus
    from trustcam.config.schema import Settings
    from trustcam.service import Service
    from trustcam.storage.vault import Vault


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    bus: Bus
    config_path: Path | None = None  # the YAML file `trustcam run` was started with (config API edits it)
    service: Service | None = None  # None: the API without live cameras (some tests, `trustcam serve`-like use)
    vault: Vault | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. "metrics": trustcam.monitor.metrics.Metrics
