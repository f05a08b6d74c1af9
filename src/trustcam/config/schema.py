"""The one configuration schema: every key, its type, default and meaning.

Field descriptions double as documentation (``trustcam config schema`` prints them). Unknown keys are
rejected with a suggestion, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trustcam.security.roles import ALWAYS_MFA, Role
from trustcam.vision.labels import COCO_LABELS

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors that name the closest valid key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = set(cls.model_fields)
            for key in data:
                if key not in known:
                    close = difflib.get_close_matches(str(key), sorted(known), n=1)
                    hint = f"did you mean '{close[0]}'? " if close else ""
                    raise ValueError(
                        f"unknown key '{key}'; {hint}valid keys here: {', '.join(sorted(known))}"
                    )
        return data


def _check_labels(labels: list[str] | None) -> list[str] | None:
    if labels is None:
        return None
    for label in labels:
        if label not in COCO_LABELS:
            close = difflib.get_close_matches(label, COCO_LABELS, n=3)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise ValueError(f"unknown object label '{label}'{hint}; use COCO labels such as person, car, truck")
    return labels


def _check_point(point: list[float] | tuple[float, ...], what: str) -> tuple[float, float]:
    if len(point) != 2:
        raise ValueError(f"{what}: each point is [x, y], got {list(point)}")
    x, y = float(point[0]), float(point[1])
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise ValueError(
            f"{what}: point {list(point)} is outside the frame; coordinates are fractions of the frame "
            "width and height, between 0 and 1 (e.g. [0.5, 0.25])"
        )
    return (x, y)


def _check_polygon(points: list[list[float]]) -> tuple[tuple[float, float], ...]:
    if len(points) < 3:
        raise ValueError(
            f"polygon needs ≥ 3 points, got {len(points)}; give [[x, y], ...] as fractions of the frame (0..1)"
        )
    return tuple(_check_point(p, "polygon") for p in points)


Polygon = tuple[tuple[float, float], ...]


class ThreatLevel(StrEnum):
    """How urgent a rule hit is; an event takes the highest level of the rules it triggered."""

    none = "none"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"

    @property
    def rank(self) -> int:
        return list(ThreatLevel).index(self)


class DetectConfig(StrictModel):
    fps: float = Field(5.0, gt=0, le=60, description="Frames per second analysed; others are decoded and skipped.")
    width: int | None = Field(
        None, ge=64, le=7680, description="Width frames are scaled to for analysis (default: the stream's)."
    )
    height: int | None = Field(
        None, ge=64, le=4320, description="Height frames are scaled to for analysis (default: the stream's)."
    )
    stationary_recheck_s: float = Field(
        10.0, gt=0, description="A still object is re-detected this often; between checks it is kept, not re-run."
    )
    empty_motion_recheck_s: float = Field(
        1.0, ge=0, le=10,
        description="Motion that stays in the same place and held no object (swaying plants, a wobbling mount) "
        "is re-examined at most this often; motion that moves or grows is examined at once (0 = every frame).",
    )
    full_frame_every_s: float = Field(
        30.0, ge=0, description="Run a full-frame (tiled) detection this often to find still objects (0 = never)."
    )

    @model_validator(mode="after")
    def _both_or_neither(self) -> DetectConfig:
        if (self.width is None) != (self.height is None):
            raise ValueError("give both width and height, or neither (to keep the stream's size)")
        return self


class MotionConfig(StrictModel):
    threshold: int = Field(25, ge=1, le=255, description="Grey-level change that counts as a moving pixel.")
    min_area: float = Field(
        0.0005, ge=0, le=1, description="Smallest moving blob kept, as a fraction of the frame area."
    )
    frame_height: int = Field(180, ge=60, le=1080, description="Motion runs on a grey frame scaled to this height.")
    alpha: float = Field(0.02, gt=0, le=1, description="How fast the background model follows the scene.")
    global_change: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Fraction of the frame changing at once that means a relight, IR switch or tamper: "
        "the background is recalibrated and the change is reported, not treated as motion.",
    )
    mask: list[Polygon] = Field(
        default_factory=list, description="Polygons (fractions of the frame) where motion is ignored."
    )

    @field_validator("mask", mode="before")
    @classmethod
    def _polygons(cls, value: Any) -> Any:
        return [_check_polygon(p) for p in value] if isinstance(value, list) else value


class ObjectFilter(StrictModel):
    min_score: float = Field(0.3, ge=0, le=1, description="Detections below this score are ignored for this label.")
    threshold: float = Field(
        0.6, ge=0, le=1, description="Median score a tracked object needs before it becomes an event."
    )
    min_area: float = Field(0.0, ge=0, le=1, description="Smallest box kept, as a fraction of the frame area.")
    max_area: float = Field(1.0, gt=0, le=1, description="Largest box kept, as a fraction of the frame area.")

    @model_validator(mode="after")
    def _area_order(self) -> ObjectFilter:
        if self.min_area >= self.max_area:
            raise ValueError(f"min_area ({self.min_area}) must be below max_area ({self.max_area})")
        return self


class ObjectsConfig(StrictModel):
    track: list[str] = Field(
        default_factory=lambda: ["person", "car"], min_length=1, description="Labels that are tracked."
    )
    filters: dict[str, ObjectFilter] = Field(default_factory=dict, description="Per-label score and size filters.")
    mask: list[Polygon] = Field(
        default_factory=list,
        description="Polygons where an object whose feet (bottom-centre) fall is dropped (e.g. a poster).",
    )

    @field_validator("track")
    @classmethod
    def _known_labels(cls, value: list[str] | None) -> list[str] | None:
        return _check_labels(value)

    @field_validator("filters")
    @classmethod
    def _filter_labels(cls, value: dict[str, ObjectFilter]) -> dict[str, ObjectFilter]:
        _check_labels(list(value))
        return value

    @field_validator("mask", mode="before")
    @classmethod
    def _polygons(cls, value: Any) -> Any:
        return [_check_polygon(p) for p in value] if isinstance(value, list) else value

    def filter_for(self, label: str) -> ObjectFilter:
        return self.filters.get(label) or ObjectFilter()


class ZoneConfig(StrictModel):
    coordinates: Polygon = Field(description="Polygon [[x, y], ...] as fractions of the frame (0..1).")
    objects: list[str] | None = Field(None, description="Labels that count in this zone (default: all tracked).")
    high_security: bool = Field(
        False, description="The second model (`detector.second_opinion`, which must be enabled) checks every region "
        "with motion in this zone on every analysed frame, not only a sample: an evasion attack on the primary model "
        "is caught sooner here, at one more model call on each frame with motion in the zone.",
    )

    @field_validator("coordinates", mode="before")
    @classmethod
    def _polygon(cls, value: Any) -> Any:
        return _check_polygon(value) if isinstance(value, list) else value

    @field_validator("objects")
    @classmethod
    def _known_labels(cls, value: list[str] | None) -> list[str] | None:
        return _check_labels(value)


class _RuleBase(StrictModel):
    name: str = Field(pattern=NAME_PATTERN, description="Unique rule name, used in events and alerts.")
    threat: ThreatLevel = Field(ThreatLevel.medium, description="Threat level of a hit.")
    objects: list[str] | None = Field(None, description="Labels the rule applies to (default: all tracked).")

    @field_validator("objects")
    @classmethod
    def _known_labels(cls, value: list[str] | None) -> list[str] | None:
        return _check_labels(value)


class EnterZoneRule(_RuleBase):
    type: Literal["enter_zone"]
    zone: str = Field(description="Name of a zone of this camera.")


class LoiterRule(_RuleBase):
    type: Literal["loiter"]
    zone: str = Field(description="Name of a zone of this camera.")
    seconds: float = Field(gt=0, description="Continuous time in the zone that counts as loitering.")


class CrossLineRule(_RuleBase):
    type: Literal["cross_line"]
    line: tuple[tuple[float, float], tuple[float, float]] = Field(
        description="Two points [[x1, y1], [x2, y2]] (fractions of the frame)."
    )
    direction: Literal["any", "left_to_right", "right_to_left"] = Field(
        "any", description="Crossing direction, as seen standing on the first point looking at the second."
    )

    @field_validator("line", mode="before")
    @classmethod
    def _line(cls, value: Any) -> Any:
        if isinstance(value, list):
            if len(value) != 2:
                raise ValueError(f"a line needs exactly 2 points [[x1, y1], [x2, y2]], got {len(value)}")
            a, b = (_check_point(p, "line") for p in value)
            if a == b:
                raise ValueError("the two points of a line must differ")
            return (a, b)
        return value


Rule = Annotated[EnterZoneRule | LoiterRule | CrossLineRule, Field(discriminator="type")]


class RetentionConfig(StrictModel):
    footage_without_events_h: float = Field(
        24.0, gt=0, description="Segments that overlap no event are deleted (crypto-shredded) after this many hours."
    )
    event_days: dict[str, float] = Field(
        default_factory=lambda: {"default": 30.0},
        description="Days footage overlapping an event is kept, per label ('default' for the others).",
    )

    @field_validator("event_days")
    @classmethod
    def _labels_and_days(cls, value: dict[str, float]) -> dict[str, float]:
        _check_labels([k for k in value if k != "default"])
        bad = {k: v for k, v in value.items() if v <= 0}
        if bad:
            raise ValueError(f"retention days must be positive, got {bad}")
        return value

    def days_for(self, labels: list[str]) -> float:
        """The longest retention of any label present (footage of a person and a car keeps the longer)."""
        default = self.event_days.get("default", 30.0)
        return max((self.event_days.get(label, default) for label in labels), default=default)


class RecordConfig(StrictModel):
    enabled: bool = Field(False, description="Record this camera's stream into the evidence vault.")
    mode: Literal["continuous", "motion", "events"] = Field(
        "events", description="Keep every segment, segments with motion, or segments around events."
    )
    segment_s: float = Field(10.0, ge=2, le=300, description="Target segment length (cut at the next keyframe).")
    pre_capture_s: float = Field(5.0, ge=0, le=120, description="Footage kept before motion or an event starts.")
    post_capture_s: float = Field(5.0, ge=0, le=600, description="Footage kept after motion or an event ends.")
    retention: RetentionConfig | None = Field(None, description="Overrides the vault's retention for this camera.")


class TamperConfig(StrictModel):
    enabled: bool = Field(True, description="Detect covered, defocused, moved, blinded, frozen or looped video.")
    confirm_s: float = Field(3.0, gt=0, le=120, description="A tamper condition must last this long to alert.")


class DriftConfig(StrictModel):
    enabled: bool = Field(True, description="Compare image statistics, scores and detection rates with a baseline.")
    learn_s: float = Field(
        86400.0, gt=0, description="Seconds of footage learned as the baseline after the first start (kept in "
        "<data_dir>/drift/<camera>.json; delete it to learn again)."
    )
    window_s: float = Field(600.0, gt=0, description="Recent footage compared with the baseline.")
    check_every_s: float = Field(60.0, gt=0, description="How often the comparison runs.")
    min_samples: int = Field(200, ge=10, description="Analysed frames needed on each side before testing.")


class CanaryConfig(StrictModel):
    enabled: bool = Field(
        True, description="Periodically composite a real person into a copy of the current frame (never recorded) "
        "and check that it is detected and its test alert delivered end to end; a miss raises an alert."
    )
    every_s: float = Field(300.0, ge=5, description="Seconds between canary probes.")
    deadline_s: float = Field(10.0, gt=0, le=300, description="Detection + delivery must finish within this.")


class FacesConfig(StrictModel):
    """Face recognition for one camera: off unless enabled, and then nothing leaves the camera unless configured."""

    enabled: bool = Field(
        False, description="Detect and recognise faces of tracked people on this camera. Off: no face is detected, "
        "embedded or stored for it.",
    )
    zones: list[str] | None = Field(
        None, description="Only faces of people inside these zones of this camera (default: the whole frame).",
    )
    target_fmr: float = Field(
        1e-3, gt=0, lt=1, description="Target false-match rate; the match threshold is the one `trustcam faces "
        "calibrate --target-fmr` measured for it (not a fixed distance).",
    )
    publish_identity: bool = Field(
        False, description="Put the recognised identity (sub_label, distance, margin) in MQTT and webhook payloads.",
    )


class CameraSecondOpinion(StrictModel):
    """Per-camera changes to `detector.second_opinion` (the model stays the one loaded for all cameras)."""

    enabled: bool | None = Field(None, description="On or off for this camera (default: `detector.second_opinion`).")
    sample_share: float | None = Field(None, ge=0, le=1, description="Share of analysed frames checked whole.")
    sample_tiles: bool | None = Field(None, description="Check sampled frames tile by tile.")
    persist_frames: int | None = Field(None, ge=1, le=1000, description="Frames of unexplained motion before a check.")
    disagreement_frames: int | None = Field(
        None, ge=1, le=1000, description="Frames an object only the second model sees lasts before `evasion_suspected`."
    )


class CameraConfig(StrictModel):
    source: str = Field(
        description="rtsp://…, http(s)://…, a video file path, or /dev/videoN (USB/V4L2)."
    )
    enabled: bool = Field(True, description="A disabled camera is not opened.")
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport; TCP survives packet loss.")
    timeout_s: float = Field(10.0, gt=0, le=300, description="A connect or read with no data for this long fails.")
    site: str | None = Field(
        None, pattern=NAME_PATTERN, max_length=63,
        description="`trustcam cluster`: run this camera only on worker nodes started with --site <this> (the "
        "machines that can reach it); it moves only among them. None: any worker.")
    detect: DetectConfig = Field(default_factory=DetectConfig, description="Analysis rate and size.")
    motion: MotionConfig = Field(default_factory=MotionConfig, description="Motion detection (the detector's gate).")
    objects: ObjectsConfig = Field(default_factory=ObjectsConfig, description="What is tracked and filtered.")
    zones: dict[str, ZoneConfig] = Field(default_factory=dict, description="Named polygons used by rules.")
    rules: list[Rule] = Field(default_factory=list, description="Zone entry, loitering and line-crossing rules.")
    record: RecordConfig = Field(default_factory=RecordConfig, description="Recording into the evidence vault.")
    tamper: TamperConfig = Field(default_factory=TamperConfig, description="Camera tamper detection.")
    drift: DriftConfig = Field(default_factory=DriftConfig, description="Drift of the scene and of the detector.")
    canary: CanaryConfig = Field(default_factory=CanaryConfig, description="End-to-end self-test.")
    on_detector_failure: Literal["fail_open", "fail_closed"] = Field(
        "fail_open",
        description="When no detector is left (AI blind): fail_open raises an alert for any motion; fail_closed "
        "only raises the AI-blind alert.",
    )
    faces: FacesConfig = Field(default_factory=FacesConfig, description="Face recognition (off by default).")
    second_opinion: CameraSecondOpinion = Field(
        default_factory=CameraSecondOpinion,
        description="This camera's changes to `detector.second_opinion` (e.g. `{enabled: true}` on the entrance only).",
    )
    privacy_masks: list[Polygon] = Field(
        default_factory=list,
        description="Polygons [[x, y], ...] (fractions of the frame, 0..1) blacked out in live view, snapshots and "
        "clips for every user without the `unmasked` permission (e.g. a neighbour's window); such users cannot "
        "export evidence of this camera. The vault keeps the original footage and detection still sees it.",
    )

    def switched_by_detector(self) -> CameraConfig:
        """This camera with its own second-opinion on/off removed, so that `detector.second_opinion.enabled` decides
        (assess measures with and without the defence whatever the camera says)."""
        return self.model_copy(update={"second_opinion": self.second_opinion.model_copy(update={"enabled": None})})

    @field_validator("privacy_masks", mode="before")
    @classmethod
    def _privacy_polygons(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        checked = []
        for number, polygon in enumerate(value, 1):
            if not isinstance(polygon, list) or not all(isinstance(p, list | tuple) for p in polygon):
                raise ValueError(f"privacy mask {number} must be a polygon [[x, y], ...], got {polygon!r}; "
                                 "privacy_masks is a list of polygons: [[[x, y], [x, y], [x, y]], ...]")
            try:
                checked.append(_check_polygon(polygon))
            except ValueError as exc:
                raise ValueError(f"privacy mask {number}: {exc}") from None
        return checked

    @field_validator("zones")
    @classmethod
    def _zone_names(cls, value: dict[str, ZoneConfig]) -> dict[str, ZoneConfig]:
        for name in value:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"zone name '{name}' must be lower-case letters, digits, '_' or '-'")
        return value

    @model_validator(mode="after")
    def _rules_reference_zones(self) -> CameraConfig:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"rule name '{rule.name}' is used twice; give each rule its own name")
            seen.add(rule.name)
            zone = getattr(rule, "zone", None)
            if zone is not None and zone not in self.zones:
                known = ", ".join(sorted(self.zones)) or "none defined"
                raise ValueError(f"rule '{rule.name}' names zone '{zone}', which does not exist (zones: {known})")
        for zone in self.faces.zones or ():
            if zone not in self.zones:
                known = ", ".join(sorted(self.zones)) or "none defined"
                raise ValueError(f"faces.zones names zone '{zone}', which does not exist (zones: {known})")
        return self


class SecondOpinionConfig(StrictModel):
    """A second, architecturally different model that looks where the primary may have been fooled (evasion)."""

    enabled: bool = Field(
        False, description="Run the second model on a sample of frames, where motion persists with no primary "
        "detection and on motion in `high_security` zones; objects only it sees become events (`seen_by: "
        "secondary`) and raise `evasion_suspected`."
    )
    model: str = Field("nanodet-m-320", description="Catalog name of the second model (unlike the primary).")
    sample_share: float = Field(
        0.1, ge=0, le=1, description="Share of analysed frames (seeded sample) the second model checks whole."
    )
    sample_tiles: bool = Field(
        False, description="Also check sampled frames tile by tile (as `detector.tiling` says): finds small, distant "
        "objects, at about 7 model calls instead of 1 per sample on a 768x432 frame. Off: the whole frame at the "
        "model's own input size: the defence then adds +10% to +28% CPU on the sample clips (bench/second_opinion.py).",
    )
    persist_frames: int = Field(
        5, ge=1, le=1000,
        description="Motion persisting this many analysed frames with no primary detection is checked by the "
        "second model.",
    )
    disagreement_frames: int = Field(
        5, ge=1, le=1000,
        description="Analysed frames an object only the second model sees must persist before `evasion_suspected`.",
    )


class DetectorConfig(StrictModel):
    model: str = Field("yolox-nano", description="Catalog name of the detector model (`trustcam models list`).")
    failover: list[str] = Field(
        default_factory=lambda: ["nanodet-m-320"],
        description="`trustcam run`: backup models (architecturally different) that take over within a second when "
        "the primary, run in its own process, hangs or crashes. Empty = no failover, primary in-process.",
    )
    call_deadline_s: float = Field(
        0.8, gt=0, le=30, description="A detector call the model has not answered within this counts as hung and "
        "fails over. On the shared detector service the model is judged by its own progress: a call queued behind "
        "other cameras' waits while the model keeps answering (up to 10x this; up to this in a cluster's detector "
        "pool), so a busy node is not taken for hung."
    )
    threads: int = Field(1, ge=1, le=64, description="ONNX Runtime intra-op threads per detector.")
    score_threshold: float = Field(
        0.3, ge=0.01, le=1, description="Lowest score the detector reports (trackers use weak detections too)."
    )
    tiling: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Full-frame detection in overlapping tiles so small distant people are found; 'auto' tiles "
        "when the frame would shrink more than 2x to fit the model.",
    )
    second_opinion: SecondOpinionConfig = Field(
        default_factory=SecondOpinionConfig,
        description="Run-time second opinion against evasion attacks on the primary model (docs/pipeline.md).",
    )

    @model_validator(mode="after")
    def _second_opinion_differs(self) -> DetectorConfig:
        if self.second_opinion.enabled and self.second_opinion.model == self.model:
            raise ValueError(f"detector.second_opinion.model is the primary model ({self.model}): an attack on one "
                             "fools both; name another (`trustcam models list`), e.g. nanodet-m-320")
        return self


class TrackerConfig(StrictModel):
    lost_after_s: float = Field(3.0, gt=0, description="A track not seen for this long ends, and so does its event.")
    min_frames: int = Field(2, ge=1, le=30, description="Consecutive detections before a track gets an ID.")


class AssessConfig(StrictModel):
    target_precision: float = Field(
        0.9, gt=0, le=1, description="`trustcam assess` reports the lowest score threshold reaching this precision."
    )
    promote_margin: float = Field(
        0.02, ge=0, le=1,
        description="`trustcam models promote` refuses a candidate whose AP50 or recall falls by more than this "
        "(absolute) on the clean set, any condition, or (recall) under any backdoor trigger pattern.",
    )
    severities: list[int] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5], min_length=1, description="Corruption severities assessed (1..5)."
    )

    @field_validator("severities")
    @classmethod
    def _severity_range(cls, value: list[int]) -> list[int]:
        bad = [s for s in value if not 1 <= s <= 5]
        if bad:
            raise ValueError(f"severities must be between 1 and 5, got {bad}")
        return sorted(set(value))


class VaultConfig(StrictModel):
    root: Path = Field(Path("var/recordings"), description="Where encrypted segments are stored.")
    mirror: Path | None = Field(
        None, description="Second storage path: segments are copied there, and recording moves there if the "
        "root fails (unmounted, read-only, full)."
    )
    key_file: Path = Field(
        Path("~/.config/trustcam/vault.kek"),
        description="Key-encryption key (32 bytes, created 0600 on first start); must be outside the storage root. "
        "TRUSTCAM_VAULT_KEK (base64) overrides it.",
    )
    signing_key_file: Path = Field(
        Path("~/.config/trustcam/vault-signing.key"),
        description="Ed25519 key that signs hash-chain checkpoints (created 0600 on first start).",
    )
    checkpoint_every: int = Field(6, ge=1, le=10_000, description="Sign the chain head every N segments.")
    checkpoint_every_s: float = Field(
        60.0, ge=1, le=86_400, description="Also sign the chain head once this many seconds of footage have been "
        "recorded since the last checkpoint. With checkpoint_every it bounds what a crash leaves unsigned, and "
        "verification fails where a due checkpoint is missing (checkpoints deleted or history rewritten).",
    )
    witness_file: Path | None = Field(
        None, description="Witness log: every signed checkpoint head (footage and audit) is appended here as one "
        "JSON line, outside the database, so a database rolled back to an older state is detected "
        "(`--witness FILE` of `evidence chain` and `audit verify`). Default: <mirror>/witness.log when a mirror is "
        "configured, else none (checkpoints still go to the service log and, when enabled, to MQTT). Put it where "
        "whoever can write the database cannot rewrite it (another disk, host or user).",
    )
    min_free_mb: float = Field(
        1024.0, ge=1, description="Below this free space, footage is evicted by policy (never held evidence)."
    )
    retention: RetentionConfig = Field(default_factory=RetentionConfig, description="Default retention.")


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class ServerConfig(StrictModel):
    enabled: bool = Field(True, description="`trustcam run` also serves the web UI and the REST API.")
    host: str = Field("0.0.0.0", description="Address to listen on.")
    port: int = Field(8443, ge=1, le=65535, description="The one port (HTTPS unless insecure_http).")
    tls_cert: Path | None = Field(
        None, description="PEM certificate; by default a self-signed one is made in <data_dir>/tls/ at first start."
    )
    tls_key: Path | None = Field(None, description="PEM private key for tls_cert.")
    insecure_http: bool = Field(
        False, description="Serve plain HTTP; refused unless host is a loopback address (use behind a TLS proxy)."
    )
    mfa_required_for: list[Role] = Field(
        default_factory=lambda: sorted(ALWAYS_MFA),
        description="Roles that must enrol TOTP; admin and auditor always must, add operator/viewer by policy.",
    )
    session_idle_minutes: float = Field(30.0, gt=0, le=1440, description="A session unused this long ends.")
    session_max_hours: float = Field(12.0, gt=0, le=720, description="A session ends this long after login.")
    login_max_failures: int = Field(
        5, ge=1, le=100, description="Failed logins for one user name from one client address before that pair is "
        "locked out (the same name from other addresses still works).")
    address_max_failures: int = Field(
        20, ge=1, le=10_000, description="Failed logins from one client address, whatever the user names, before "
        "that address is locked out (stops spraying many names).")
    lockout_minutes: float = Field(
        15.0, gt=0, le=1440, description="How long a first lockout lasts; each further lockout of the same pair or "
        "address within a day lasts twice as long, at most 24 hours.")
    trusted_proxies: list[str] = Field(
        default_factory=list, description="Addresses or CIDRs of reverse proxies in front of the server. Only when "
        "the direct peer is one of them is the client address taken from X-Forwarded-For (the rightmost hop that "
        "is not a trusted proxy); otherwise the header is ignored. Lockout, the audit log and sessions use it.")
    auth_key_file: Path = Field(
        Path("~/.config/trustcam/auth.key"), description="AES key encrypting TOTP secrets in the database (created "
        "0600 on first start). Keep it outside data_dir, with the vault keys: a copy of data_dir must not carry the "
        "key to its own secrets.")
    api_token_max_days: int = Field(90, ge=1, le=3650, description="Longest lifetime of an API token.")
    audit_checkpoint_every_s: float = Field(
        300.0, ge=1, le=86_400, description="Every audit entry is signed (an audit checkpoint) within this many "
        "seconds of being written: `trustcam run` signs the head when it has unsigned entries, and `audit verify` "
        "fails on entries left unsigned longer. Use the same value where the log is verified.",
    )

    @field_validator("mfa_required_for")
    @classmethod
    def _always_mfa(cls, value: list[Role]) -> list[Role]:
        return sorted(set(value) | ALWAYS_MFA)

    @model_validator(mode="after")
    def _http_only_on_loopback(self) -> ServerConfig:
        if self.insecure_http and self.host not in LOOPBACK_HOSTS:
            raise ValueError(f"insecure_http is allowed only on a loopback host ({', '.join(LOOPBACK_HOSTS)}), "
                             f"not '{self.host}'; serve HTTPS (the default) or put a TLS proxy in front")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither (a self-signed pair is then generated)")
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: '{entry}' is not an IP address or CIDR (e.g. 127.0.0.1, "
                                 "10.0.0.0/8, ::1)") from None
        return value


class MqttConfig(StrictModel):
    enabled: bool = Field(False, description="Publish alerts and availability to an MQTT broker.")
    host: str = Field("127.0.0.1", description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual with tls).")
    tls: bool = Field(False, description="Connect with TLS; the broker's certificate must be valid for host and "
                      "signed by ca_file (or, without it, by a CA in the system store).")
    ca_file: Path | None = Field(
        None, description="PEM file of the CA that signed the broker's certificate (a self-hosted broker's own CA); "
        "used with tls instead of the system CA store."
    )
    username: str | None = Field(None, description="Broker user name.")
    password_file: Path | None = Field(
        None, description="File holding the broker password (keep it 0600); TRUSTCAM_MQTT_PASSWORD overrides it."
    )
    client_id: str = Field("trustcam", description="MQTT client id (unique per trustcam instance).")
    topic_prefix: str = Field("trustcam", description="Alerts go to <prefix>/<camera>/<kind>; availability to "
                              "<prefix>/availability.")
    discovery_prefix: str | None = Field(
        "homeassistant", description="Home Assistant discovery prefix; null disables discovery messages."
    )
    qos: int = Field(1, ge=1, le=2, description="Alerts are published with at least QoS 1 (acknowledged).")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive; the broker publishes the LWT after "
                             "1.5x this without contact.")

    @model_validator(mode="after")
    def _ca_needs_tls(self) -> MqttConfig:
        if self.ca_file is not None and not self.tls:
            raise ValueError("alerts.mqtt.ca_file is set but tls is false; set tls: true (ca_file is only used for "
                             "TLS) or remove ca_file")
        return self


class WebhookConfig(StrictModel):
    name: str = Field(pattern=NAME_PATTERN, description="Short name (shown in the dead-letter queue).")
    url: str = Field(pattern=r"^https?://", description="http(s) URL receiving a JSON POST per alert.")
    secret_env: str | None = Field(
        None, description="Environment variable holding the HMAC-SHA256 secret (X-Trustcam-Signature header)."
    )
    secret_file: Path | None = Field(None, description="Or a file holding the secret (keep it 0600).")
    kinds: list[str] | None = Field(None, description="Alert kinds sent (default: all).")
    min_severity: Literal["info", "warning", "high", "critical"] = Field("info", description="Lowest severity sent.")
    timeout_s: float = Field(5.0, gt=0, le=120, description="Per-attempt timeout.")
    max_attempts: int = Field(8, ge=1, le=100, description="Attempts before the alert goes to the dead-letter queue.")
    backoff_s: float = Field(2.0, gt=0, le=3600, description="First retry delay; doubles (with jitter) each attempt.")
    backoff_max_s: float = Field(300.0, gt=0, le=86400, description="Longest delay between attempts.")

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookConfig:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError(f"webhook '{self.name}': give exactly one of secret_env or secret_file (every "
                             "webhook is signed)")
        return self


class AlertsConfig(StrictModel):
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT (Home Assistant conventions).")
    webhooks: list[WebhookConfig] = Field(default_factory=list, description="Signed webhooks.")
    heartbeat_s: float = Field(
        60.0, ge=1, le=86400, description="Every sink gets a heartbeat this often, so a receiver notices silence."
    )


class CameraGroupConfig(StrictModel):
    """Cameras shown together in the web UI's grid (Frigate-style groups); a group only selects, it grants nothing."""

    cameras: list[str] = Field(min_length=1, description="Names of cameras (keys of `cameras`) in this group.")
    order: int = Field(0, ge=-1000, le=1000, description="Position in the group selector (lowest first, then name).")

    @field_validator("cameras")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"camera(s) {', '.join(repeated)} listed more than once; list each camera once")
        return value


class ClusterConfig(StrictModel):
    lease_ttl_s: float = Field(
        15.0, ge=3.0, le=300.0,
        description="`trustcam cluster`: a camera's lease lasts this long unless renewed (every third of it). A dead "
        "or partitioned node's cameras move after at most this plus Ray's node-death detection; shorter moves "
        "sooner but a database pause longer than this stops cameras (they fence themselves off).")
    detector_pool: bool = Field(
        True, description="One detector pool per node (a Ray actor with the model in one process) shared by the "
        "node's camera processes, which batches their calls; false: a model process per camera (more memory, no "
        "cross-camera batching, ~10 ms less per call on an idle CPU).")
    node_check_s: float = Field(
        2.0, gt=0.0, le=60.0,
        description="How often the head looks at the Ray nodes and the camera actors (health alert naming a lost "
        "node, the web UI's camera states).")


class Settings(StrictModel):
    data_dir: Path = Field(
        Path("var"), description="Database and snapshots live here (relative to the working directory)."
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/trustcam.db."
    )
    database_buffer: int = Field(
        10_000, ge=1, le=1_000_000, description="While the database is unreachable (a PostgreSQL restart), up to "
        "this many event writes and as many alert writes wait in memory and are stored in order once it is back; "
        "beyond it the oldest are dropped, logged and reported by a health alert (docs/scale.md)."
    )
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="Object detector (all cameras).")
    tracker: TrackerConfig = Field(default_factory=TrackerConfig, description="Multi-object tracking.")
    assess: AssessConfig = Field(default_factory=AssessConfig, description="Accuracy assessment and model updates.")
    vault: VaultConfig = Field(default_factory=VaultConfig, description="Encrypted, tamper-evident recordings.")
    server: ServerConfig = Field(default_factory=ServerConfig, description="HTTPS server: web UI and REST API.")
    alerts: AlertsConfig = Field(default_factory=AlertsConfig, description="Where alerts are delivered.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig,
                                   description="Many machines (`trustcam cluster`): camera leases and node checks.")
    cameras: dict[str, CameraConfig] = Field(default_factory=dict, description="Cameras by name.")
    camera_groups: dict[str, CameraGroupConfig] = Field(
        default_factory=dict, description="Named groups of cameras for the web UI's camera grid (e.g. outside: "
        "{cameras: [front, yard], order: 1}); a user sees a group only with the cameras granted to them.",
    )

    @field_validator("cameras")
    @classmethod
    def _camera_names(cls, value: dict[str, CameraConfig]) -> dict[str, CameraConfig]:
        for name in value:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"camera name '{name}' must be lower-case letters, digits, '_' or '-'")
        return value

    @field_validator("camera_groups")
    @classmethod
    def _group_names(cls, value: dict[str, CameraGroupConfig]) -> dict[str, CameraGroupConfig]:
        for name in value:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"camera group name '{name}' must be lower-case letters, digits, '_' or '-'")
        return value

    @model_validator(mode="after")
    def _groups_name_known_cameras(self) -> Settings:
        """A typo in a group would silently hide a camera from the grid; name it and the cameras that exist."""
        known = sorted(self.cameras)
        for group, config in self.camera_groups.items():
            for camera in config.cameras:
                if camera not in self.cameras:
                    close = difflib.get_close_matches(camera, known, n=1)
                    hint = f"did you mean '{close[0]}'? " if close else ""
                    raise ValueError(f"camera_groups.{group}.cameras lists camera '{camera}', which does not exist; "
                                     f"{hint}known cameras: {', '.join(known) or 'none defined'} (fix the name or "
                                     "add the camera under cameras)")
        return self

    @model_validator(mode="after")
    def _high_security_needs_second_opinion(self) -> Settings:
        """A high_security zone is a protection the user asked for: refuse a config in which it would never run."""
        for camera, config in self.cameras.items():
            if self.second_opinion_for(config).enabled:
                continue
            for zone, zone_config in config.zones.items():
                if zone_config.high_security:
                    raise ValueError(f"cameras.{camera}.zones.{zone}.high_security needs the second model, but the "
                                     "second opinion is off for this camera, so nothing would check the zone; set "
                                     "detector.second_opinion.enabled: true (or cameras."
                                     f"{camera}.second_opinion.enabled: true, or remove high_security)")
        return self

    @model_validator(mode="after")
    def _camera_second_opinion_differs(self) -> Settings:
        """A camera that turns the second opinion on alone must not get the primary model twice either."""
        opinion = self.detector.second_opinion
        if self.second_opinion_anywhere and opinion.model == self.detector.model:
            raise ValueError(f"detector.second_opinion.model is the primary model ({self.detector.model}), and a "
                             "camera turns the second opinion on: an attack on one fools both; name another "
                             "(`trustcam models list`), e.g. nanodet-m-320")
        return self

    def second_opinion_for(self, camera: CameraConfig) -> SecondOpinionConfig:
        """``detector.second_opinion`` with ``camera``'s own changes applied."""
        changes = camera.second_opinion.model_dump(exclude_none=True)
        return self.detector.second_opinion.model_copy(update=changes) if changes else self.detector.second_opinion

    @property
    def second_opinion_anywhere(self) -> bool:
        """Whether any enabled camera runs the second opinion (then its model is loaded once for all)."""
        return any(self.second_opinion_for(c).enabled for c in self.cameras.values() if c.enabled)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'trustcam.db'}"
