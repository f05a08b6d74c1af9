"""What the web layer needs from the running system, in one object (``request.app.state.ctx``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from trustcam.bus import Bus
    from trustcam.config.schema import Settings
    from trustcam.monitor.status import RecentAlerts, StatusBoard
    from trustcam.service import Service
    from trustcam.storage.vault import Vault
    from trustcam.web.live import LiveHub


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    bus: Bus
    config_path: Path | None = None  # the YAML file `trustcam run` was started with (config API edits it)
    service: Service | None = None  # None: the API without live cameras (some tests, `trustcam serve`-like use)
    vault: Vault | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. "metrics": trustcam.monitor.metrics.Metrics
    live: LiveHub | None = None  # latest analysed frame per camera (None: no live view)
    status: StatusBoard | None = None  # per camera state, fps and active conditions
    alerts: RecentAlerts | None = None  # recent alerts published on the bus

    def __post_init__(self) -> None:
        from trustcam.monitor.status import RecentAlerts, StatusBoard
        from trustcam.web.live import LiveHub

        cameras = {name: cam for name, cam in self.settings.cameras.items() if cam.enabled}
        streams = {w.camera_name: w.stream.stats for w in self.service.workers} if self.service else {}
        if self.status is None:
            self.status = StatusBoard(self.bus, list(cameras), streams)
        if self.alerts is None:
            self.alerts = RecentAlerts(self.bus)
        if self.live is None:
            self.live = LiveHub(cameras)

    @classmethod
    def for_service(cls, service: Service, config_path: Path | None) -> AppContext:
        """The context of `trustcam run`: camera workers feed the live view; vault and metrics come along."""
        ctx = cls(settings=service.settings, engine=service.engine, bus=service.bus, config_path=config_path,
                  service=service, vault=service.vault)
        metrics = getattr(service, "metrics", None)
        if metrics is not None:
            ctx.extras["metrics"] = metrics
        for worker in service.workers:
            worker.on_result = ctx.live.publish  # type: ignore[union-attr]
        return ctx


def get_ctx(request: Request) -> AppContext:
    """FastAPI dependency: the running system's context."""
    return request.app.state.ctx  # type: ignore[no-any-return]


Ctx = Annotated[AppContext, Depends(get_ctx)]
