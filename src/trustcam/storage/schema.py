"""Database tables (SQLAlchemy 2 declarative). Changes go through an Alembic migration in ``migrations/``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, LargeBinary, String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    camera: Mapped[str] = mapped_column(String(63), index=True)
    label: Mapped[str] = mapped_column(String(32), index=True)
    track_id: Mapped[int] = mapped_column(Integer)
    start: Mapped[float] = mapped_column(Float, index=True)
    end: Mapped[float] = mapped_column(Float)
    best_score: Mapped[float] = mapped_column(Float)
    box: Mapped[list[float]] = mapped_column(JSON)
    zones: Mapped[list[str]] = mapped_column(JSON)
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    threat: Mapped[str] = mapped_column(String(16), index=True)
    snapshot: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    model_name: Mapped[str] = mapped_column(String(64))
    model_sha256: Mapped[str] = mapped_column(String(64))
    held: Mapped[int] = mapped_column(Integer, default=0)  # legal hold on the event's footage
    seen_by: Mapped[str | None] = mapped_column(String(16), nullable=True)  # second opinion: primary/secondary/both
    # face recognition (migration 0011): the identity's name, "unknown face", or "erased" once its person is erased
    sub_label: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    face_distance: Mapped[float | None] = mapped_column(Float, nullable=True)  # to the matched identity
    face_margin: Mapped[float | None] = mapped_column(Float, nullable=True)  # to the next identity

    # The event list's order (newest first, id breaks ties) per filter it is most often asked for: a page is an
    # index walk without a sort, and its total a count over the index alone (migration 0010).
    __table_args__ = (
        Index("ix_events_start_id", text("start DESC"), "id"),
        Index("ix_events_camera_start_id", "camera", text("start DESC"), "id"),
        Index("ix_events_camera_label_start_id", "camera", "label", text("start DESC"), "id"),
    )


class SegmentRow(Base):
    """One recorded segment: encrypted file, its wrapped data key and its link in the camera's hash chain."""

    __tablename__ = "segments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    camera: Mapped[str] = mapped_column(String(63), index=True)
    seq: Mapped[int] = mapped_column(Integer)  # position in the camera's hash chain, from 1
    start: Mapped[float] = mapped_column(Float, index=True)  # wall-clock seconds (epoch)
    end: Mapped[float] = mapped_column(Float, index=True)
    path: Mapped[str] = mapped_column(String(1024))  # encrypted file, relative to the storage root
    size: Mapped[int] = mapped_column(Integer)  # plaintext bytes
    sha256: Mapped[str] = mapped_column(String(64))  # of the plaintext segment (what an export contains)
    prev_hash: Mapped[str] = mapped_column(String(64))
    chain_hash: Mapped[str] = mapped_column(String(64))
    wrapped_key: Mapped[str | None] = mapped_column(String(512), nullable=True)  # None once shredded
    kek_id: Mapped[str] = mapped_column(String(64))
    has_motion: Mapped[int] = mapped_column(Integer, default=0)
    labels: Mapped[list[str]] = mapped_column(JSON, default=list)  # labels of events overlapping it
    held: Mapped[int] = mapped_column(Integer, default=0)  # legal hold: never evicted or expired
    deleted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    deletion_reason: Mapped[str | None] = mapped_column(String(255), nullable=True)


class CheckpointRow(Base):
    """A signed statement of a camera's chain head (Ed25519), so history cannot be rewritten unnoticed."""

    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    camera: Mapped[str] = mapped_column(String(63), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    chain_hash: Mapped[str] = mapped_column(String(64))
    time: Mapped[float] = mapped_column(Float)
    signature: Mapped[str] = mapped_column(String(128))  # hex
    public_key: Mapped[str] = mapped_column(String(64))  # hex, raw Ed25519
    # v2 (migration 0007): the policy in force and the sealed event records, all covered by the signature.
    # ``every`` None marks a v1 checkpoint (signed before the policy was).
    every: Mapped[int | None] = mapped_column(Integer, nullable=True)
    every_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    events: Mapped[list[list[Any]] | None] = mapped_column(JSON, nullable=True)  # [[event id, sha256, record]]


class DeletionRow(Base):
    """Every deletion of footage, whatever its cause (retention, eviction, shredding by a user)."""

    __tablename__ = "deletions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[float] = mapped_column(Float, index=True)
    camera: Mapped[str] = mapped_column(String(63))
    segment_id: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(255))


class FaceIdentityRow(Base):
    """An enrolled person: who enrolled them, on which stated consent, until when. Their templates are encrypted under
    a data key that is *not* in the database (``<data_dir>/faces/keys/<id>.key``), so erasing that file shreds them."""

    __tablename__ = "face_identities"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(128))
    consent: Mapped[str] = mapped_column(String(2000))
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)


class FaceTemplateRow(Base):
    """One enrolled face embedding, AES-GCM encrypted (``nonce ‖ ciphertext ‖ tag``); never stored in clear."""

    __tablename__ = "face_templates"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    identity_id: Mapped[str] = mapped_column(String(32), ForeignKey("face_identities.id", ondelete="CASCADE"),
                                             index=True)
    enrolled_at: Mapped[float] = mapped_column(Float)
    source_sha256: Mapped[str] = mapped_column(String(64))  # of the enrolment image (the image is not kept)
    quality: Mapped[float] = mapped_column(Float)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)


class CameraLeaseRow(Base):
    """Who may write a camera's events and footage, with the fencing token that proves it (``storage/leases.py``).
    Never deleted, so the token only grows; a free camera has ``holder`` NULL (migration 0013)."""

    __tablename__ = "camera_leases"

    camera: Mapped[str] = mapped_column(String(63), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(255), nullable=True)
    token: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)  # epoch seconds
