"""Camera health: a camera that is offline, stalled, slow, flapping or lying about time raises an alert.

A surveillance system that silently stops seeing is worse than one that is visibly down, so every way a
stream can go wrong without an error becomes a :class:`HealthAlert`, raised once and followed by a
:class:`HealthCleared` when the condition ends (no alert storms from a camera that stays broken).

:meth:`HealthMonitor.check` reads the :class:`~trustcam.ingest.stream.StreamStats` the reader thread keeps;
:meth:`HealthMonitor.on_frame` looks at each frame's timestamp. ``wall`` is the clock the stats use
(``time.time()`` in :class:`~trustcam.ingest.stream.LiveStream`); tests inject it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from trustcam.ingest.stream import StreamStats

HealthKind = Literal["offline", "stalled", "low_fps", "reconnect_storm", "time_jump", "time_repeat",
                     "pipeline_failed"]


@dataclass(frozen=True)
class HealthAlert:
    """A camera health problem started; ``evidence`` holds the numbers that prove it."""

    camera: str
    kind: HealthKind
    time: float
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthCleared:
    """The problem ``kind`` on ``camera`` has ended."""

    camera: str
    kind: HealthKind
    time: float


HealthEvent = HealthAlert | HealthCleared


class HealthMonitor:
    """Turns one camera's stream stats and frame timestamps into alerts, each raised once until cleared.

    ``low_fps_after_s`` keeps a short dip (a keyframe burst, a busy encoder) from alerting; timestamp alerts
    clear after ``time_ok_after_s`` of well-ordered frames.
    """

    def __init__(
        self,
        camera: str,
        expected_fps: float,
        *,
        offline_after_s: float = 10.0,
        stall_after_s: float = 5.0,
        low_fps_ratio: float = 0.5,
        low_fps_after_s: float = 10.0,
        storm_reconnects: int = 5,
        storm_window_s: float = 60.0,
        jump_factor: float = 5.0,
        time_ok_after_s: float = 5.0,
    ) -> None:
        if expected_fps <= 0:
            raise ValueError(f"expected_fps must be > 0, got {expected_fps}")
        self.camera = camera
        self.expected_fps = expected_fps
        self.offline_after_s = offline_after_s
        self.stall_after_s = stall_after_s
        self.low_fps_ratio = low_fps_ratio
        self.low_fps_after_s = low_fps_after_s
        self.storm_reconnects = storm_reconnects
        self.storm_window_s = storm_window_s
        self.jump_factor = jump_factor
        self.time_ok_after_s = time_ok_after_s
        self.active: dict[HealthKind, HealthAlert] = {}
        self._started: float | None = None
        self._down_since: float | None = None
        self._connected_since: float | None = None
        self._low_since: float | None = None
        self._reconnects_seen: int | None = None
        self._reconnect_walls: deque[float] = deque()
        self._last_frame_time: float | None = None
        self._time_bad_wall: float | None = None

    # ---- helpers
    def _raise(self, kind: HealthKind, wall: float, message: str, **evidence: Any) -> list[HealthEvent]:
        if kind in self.active:
            return []
        alert = HealthAlert(self.camera, kind, wall, message, evidence)
        self.active[kind] = alert
        return [alert]

    def _clear(self, kind: HealthKind, wall: float) -> list[HealthEvent]:
        if self.active.pop(kind, None) is None:
            return []
        return [HealthCleared(self.camera, kind, wall)]

    # ---- frame timestamps
    def on_frame(self, frame_time: float, wall: float) -> list[HealthEvent]:
        """Check one frame's timestamp (seconds) against the previous one; ``wall`` is when it arrived."""
        events: list[HealthEvent] = []
        last, self._last_frame_time = self._last_frame_time, frame_time
        if last is None:
            return events
        delta = frame_time - last
        interval = 1.0 / self.expected_fps
        if delta == 0:
            self._time_bad_wall = wall
            events += self._raise(
                "time_repeat",
                wall,
                f"{self.camera}: frame timestamp {frame_time:.3f}s repeated",
                frame_time=frame_time,
                previous=last,
            )
        elif delta < 0 or delta > self.jump_factor * interval:
            self._time_bad_wall = wall
            direction = "backwards" if delta < 0 else "forwards"
            events += self._raise(
                "time_jump",
                wall,
                f"{self.camera}: frame timestamp jumped {direction} by {abs(delta):.3f}s",
                frame_time=frame_time,
                previous=last,
                delta_s=delta,
                max_gap_s=self.jump_factor * interval,
            )
        elif self._time_bad_wall is not None and wall - self._time_bad_wall >= self.time_ok_after_s:
            self._time_bad_wall = None
            events += self._clear("time_repeat", wall) + self._clear("time_jump", wall)
        return events

    # ---- stream stats
    def check(self, stats: StreamStats, wall: float) -> list[HealthEvent]:
        """Compare the stream's stats with what is expected at ``wall``; call it about once a second."""
        if self._started is None:
            self._started = wall
        events: list[HealthEvent] = []
        events += self._check_storm(stats, wall)
        if not stats.connected:
            self._connected_since = None
            self._low_since = None
            if self._down_since is None:
                self._down_since = wall
            down = wall - self._down_since
            if down > self.offline_after_s:
                never = stats.connects == 0
                message = (
                    f"{self.camera}: never connected in {down:.0f}s"
                    if never
                    else f"{self.camera}: offline for {down:.0f}s"
                )
                events += self._raise(
                    "offline",
                    wall,
                    message,
                    offline_s=down,
                    never_connected=never,
                    last_error=stats.last_error,
                )
            return events
        first_check = self._connected_since is None and self._down_since is None and self._started == wall
        self._down_since = None
        if self._connected_since is None:
            # Already connected when monitoring began: its last frame is as good a start as any.
            last_seen = stats.last_frame_wall
            self._connected_since = last_seen if first_check and last_seen is not None else wall
        events += self._clear("offline", wall)

        last = stats.last_frame_wall
        since = last if last is not None and last >= self._connected_since else self._connected_since
        silent = wall - since
        if silent > self.stall_after_s:
            self._low_since = None
            return events + self._raise(
                "stalled",
                wall,
                f"{self.camera}: connected but no frame for {silent:.1f}s",
                silent_s=silent,
                frames=stats.frames,
            )
        events += self._clear("stalled", wall)

        floor = self.low_fps_ratio * self.expected_fps
        if stats.frames >= 2 and stats.fps < floor:
            if self._low_since is None:
                self._low_since = wall
            if wall - self._low_since > self.low_fps_after_s:
                events += self._raise(
                    "low_fps",
                    wall,
                    f"{self.camera}: {stats.fps:.1f} fps, configured {self.expected_fps:g} fps",
                    fps=stats.fps,
                    expected_fps=self.expected_fps,
                    below_for_s=wall - self._low_since,
                )
        elif stats.fps >= floor:
            self._low_since = None
            events += self._clear("low_fps", wall)
        return events

    def _check_storm(self, stats: StreamStats, wall: float) -> list[HealthEvent]:
        """Count reconnects seen in the window; the storm clears once a whole window passes without one."""
        if self._reconnects_seen is None:
            self._reconnects_seen = stats.reconnects
        new = stats.reconnects - self._reconnects_seen
        self._reconnects_seen = stats.reconnects
        self._reconnect_walls.extend([wall] * max(new, 0))
        while self._reconnect_walls and wall - self._reconnect_walls[0] > self.storm_window_s:
            self._reconnect_walls.popleft()
        count = len(self._reconnect_walls)
        if count > self.storm_reconnects:
            return self._raise(
                "reconnect_storm",
                wall,
                f"{self.camera}: {count} reconnects in {self.storm_window_s:g}s",
                reconnects=count,
                window_s=self.storm_window_s,
                last_error=stats.last_error,
            )
        if count == 0:
            return self._clear("reconnect_storm", wall)
        return []
