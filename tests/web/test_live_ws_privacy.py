"""Live video over WebSocket sends the camera's packets as they are: with privacy masks on the camera, only users
with the ``unmasked`` permission get it; everyone else falls back to the masked MJPEG stream."""

from __future__ import annotations

from trustcam.config.schema import CameraConfig
from trustcam.security.roles import Role
from trustcam.web.auth import Principal
from trustcam.web.routers.live_ws import raw_video_allowed

MASK = [[[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]]


def _principal(role: Role, unmasked: bool) -> Principal:
    return Principal(1, "u", role, None, "session", "s1", unmasked=unmasked)


def test_raw_video_only_without_masks_or_with_the_permission() -> None:
    masked = CameraConfig.model_validate({"source": "rtsp://cam/1", "privacy_masks": MASK})
    plain = CameraConfig.model_validate({"source": "rtsp://cam/1"})
    for role in (Role.viewer, Role.operator, Role.admin):  # privacy first: the role alone does not unmask
        assert not raw_video_allowed(_principal(role, False), masked)
        assert raw_video_allowed(_principal(role, True), masked)
        assert raw_video_allowed(_principal(role, False), plain)
