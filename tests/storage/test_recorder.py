"""Recording from the camera's own packets, on the real sample video (H.264 768x432, 12.5 fps, a keyframe every
60 frames = 4.8 s, 377 frames): segments are remuxed without re-encoding, start on keyframes, decode; modes keep
exactly the footage around events or motion (with pre/post capture); reconnects start new segments; and a real
``trustcam run`` stores encrypted, chained segments in the vault."""

from __future__ import annotations

import io
import itertools
import logging
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import av
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from support import free_port
from trustcam.bus import Bus
from trustcam.config.schema import RecordConfig, VaultConfig
from trustcam.events.model import Event, EventEnded, EventStarted
from trustcam.ingest.source import VideoSource
from trustcam.ingest.stream import Backoff, LiveStream
from trustcam.storage import recorder as recorder_module
from trustcam.storage.database import open_database
from trustcam.storage.recorder import Recorder
from trustcam.storage.schema import SegmentRow
from trustcam.storage.vault import Vault

CAR_FRAMES = 377
GOP_S = 4.8  # measured with ffprobe: keyframes at 0, 4.8, ... 28.8 s
CAR_END = 30.16
CLI = [sys.executable, "-m", "trustcam.cli"]


@dataclass
class Stored:
    data: bytes
    start: float
    end: float
    has_motion: bool
    labels: list[str]


def vault_config(tmp_path: Path) -> VaultConfig:
    return VaultConfig(root=tmp_path / "rec", key_file=tmp_path / "keys" / "kek",
                       signing_key_file=tmp_path / "keys" / "sign")


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault(vault_config(tmp_path), open_database(f"sqlite:///{tmp_path / 'trustcam.db'}"))


def stored(vault: Vault, camera: str = "road") -> list[Stored]:
    """What the vault holds for ``camera``, in chain order, decrypted."""
    with Session(vault.engine) as session:
        rows = list(session.scalars(select(SegmentRow).where(SegmentRow.camera == camera).order_by(SegmentRow.seq)))
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    return [Stored(vault.read_segment(r), r.start, r.end, bool(r.has_motion), list(r.labels)) for r in rows]


@dataclass
class Decoded:
    frames: int
    first_is_key: bool
    duration: float
    codec: str
    size: tuple[int, int]
    extradata: bytes | None
    packets: list[bytes]


def decode(data: bytes) -> Decoded:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        info = (ctx.name, (ctx.width, ctx.height), ctx.extradata)
        packets = [bytes(p) for p in container.demux(stream) if p.size]
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        tb = stream.time_base
        last = frames[-1]
        duration = float((last.pts + (last.duration or 0)) * tb) - float(frames[0].pts * tb)
    return Decoded(len(frames), frames[0].key_frame, duration, info[0], info[1], info[2], packets)


def source_packets(video: Path) -> tuple[list[bytes], list[float], bytes | None]:
    """The file's own packets, keyframe times and H.264 extradata."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        packets, keys = [], []
        for p in container.demux(stream):
            if p.size:
                packets.append(bytes(p))
                if p.is_keyframe:
                    keys.append(float(p.pts * p.time_base))
        return packets, keys, stream.codec_context.extradata


def record_file(video: Path, recorder: Recorder, on_frame: object = None) -> VideoSource:
    """Decode the whole file through one real VideoSource with the recorder tapping its packets."""
    source = VideoSource(str(video), packet_tap=recorder.on_packet, connection_tap=recorder.on_connection)
    for frame in source.frames():
        if on_frame is not None:
            on_frame(frame.time)  # type: ignore[operator]
    recorder.close()
    return source


def config(mode: str, segment_s: float = 5.0, pre: float = 0.0, post: float = 0.0) -> RecordConfig:
    return RecordConfig(enabled=True, mode=mode, segment_s=segment_s, pre_capture_s=pre, post_capture_s=post)


def test_continuous_segments_are_remuxed_not_reencoded(car_video: Path, vault: Vault) -> None:
    recorder = Recorder("road", config("continuous", segment_s=5), vault, clock=None)
    started = time.perf_counter()
    source = record_file(car_video, recorder)
    took = time.perf_counter() - started
    assert source.report.decoded == CAR_FRAMES and source.tap_errors == 0

    packets, keys, extradata = source_packets(car_video)
    assert keys == pytest.approx([i * GOP_S for i in range(7)])
    segments = stored(vault)
    # cut at the keyframe nearest to 5 s: six 4.8 s segments and the 1.36 s left at the end of the file
    assert [s.start for s in segments] == pytest.approx(keys)
    assert [s.end for s in segments] == pytest.approx([*keys[1:], CAR_END])
    decoded = [decode(s.data) for s in segments]
    assert sum(d.frames for d in decoded) == CAR_FRAMES
    assert [d.frames for d in decoded] == [60] * 6 + [17]
    assert [d.duration for d in decoded] == pytest.approx([GOP_S] * 6 + [CAR_END - 6 * GOP_S], abs=0.01)
    for d in decoded:
        assert d.first_is_key
        # no re-encoding: same codec parameters, and the very same compressed packets in the same order
        assert (d.codec, d.size, d.extradata) == ("h264", (768, 432), extradata)
    assert decoded[0].packets[0] == packets[0]
    assert [p for d in decoded for p in d.packets] == packets
    assert recorder.stats.segments == recorder.stats.stored == 7 and recorder.stats.dropped == 0
    assert not any(s.has_motion or s.labels for s in segments)
    assert vault.verify_chain("road", deep=True) == []
    files = sorted((vault.root / "road").rglob("*"))
    assert [f.suffix for f in files if f.is_file()] == [".seg"] * 7  # encrypted; no plaintext video on disk
    assert all(b"ftyp" not in f.read_bytes() for f in files if f.is_file())
    logging.getLogger(__name__).info("decode + record 30 s: %.3fs", took)


def car_event(start: float, end: float, camera: str = "road") -> Event:
    return Event(id=f"{camera}-{start}", camera=camera, label="car", track_id=1, start=start, end=end,
                 best_score=0.9, best_box=(0, 0, 10, 10), best_time=start)


def test_events_mode_stores_only_the_footage_around_an_event(car_video: Path, vault: Vault) -> None:
    bus = Bus()
    recorder = Recorder("road", config("events", segment_s=5, pre=3, post=2), vault, bus, clock=None)
    event, other = car_event(11.0, 15.5), car_event(24.0, 27.0, camera="gate")
    published: set[str] = set()

    def on_frame(t: float) -> None:  # published as late as the pipeline would: confirmed 1 s in, lost 1 s after
        for what, at, message in [("start", 12.0, EventStarted(event)), ("end", 16.5, EventEnded(event)),
                                  ("other", 25.0, EventStarted(other)), ("other-end", 28.0, EventEnded(other))]:
            if t >= at and what not in published:
                published.add(what)
                bus.publish(message)

    record_file(car_video, recorder, on_frame)
    assert len(published) == 4
    # the event with its pre/post capture spans 8 s .. 17.5 s: the segments 4.8-9.6 (pre-capture, set aside
    # before the event was reported), 9.6-14.4 and 14.4-19.2; nothing else, and not the other camera's event
    segments = stored(vault)
    assert [t for s in segments for t in (s.start, s.end)] == pytest.approx([4.8, 9.6, 9.6, 14.4, 14.4, 19.2])
    assert [s.labels for s in segments] == [[], ["car"], ["car"]]
    assert sum(decode(s.data).frames for s in segments) == 180
    assert recorder.stats.stored == 3 and recorder.stats.dropped == 4


def test_motion_mode_stores_motion_with_pre_and_post_capture(car_video: Path, vault: Vault) -> None:
    recorder = Recorder("road", config("motion", segment_s=5, pre=2, post=2), vault, clock=None)

    def on_frame(t: float) -> None:
        recorder.on_frame_result(t, 1.0 <= t < 1.5 or 20.0 <= t < 20.5)

    record_file(car_video, recorder, on_frame)
    # motion at 1.0-1.5 s wants -1..3.5 s; at 20.0-20.5 s wants 18..22.5 s (pre-capture reaches into 14.4-19.2)
    segments = stored(vault)
    assert [s.start for s in segments] == pytest.approx([0.0, 14.4, 19.2])
    assert [s.has_motion for s in segments] == [True, False, True]
    assert all(decode(s.data).first_is_key for s in segments)
    assert recorder.stats.dropped == 4


def test_a_new_connection_starts_a_new_segment(car_video: Path, vault: Vault) -> None:
    recorder = Recorder("road", config("continuous", segment_s=10), vault, clock=None)
    stream = LiveStream(str(car_video), fps=None, size=None, backoff=Backoff(base_s=0.02, cap_s=0.05),
                        packet_tap=recorder.on_packet, connection_tap=recorder.on_connection)
    frames = stream.frames()
    for frame in frames:  # the file ends and is opened again: a second connection whose timestamps restart
        if stream.stats.connects == 2 and frame.time >= 12.0:
            break
    recorder.close()  # stops in the middle of the second connection's second segment
    frames.close()
    segments = stored(vault)
    # GOP 4.8 s, target 10 s: cut every second keyframe (9.6 s); the end of the file closes the first pass
    assert [s.start for s in segments] == pytest.approx([0.0, 9.6, 19.2, 28.8, 0.0, 9.6])
    assert [s.end for s in segments][:5] == pytest.approx([9.6, 19.2, 28.8, CAR_END, 9.6])
    assert 12.0 <= segments[-1].end < 14.4
    decoded = [decode(s.data) for s in segments]
    assert all(d.first_is_key for d in decoded)
    assert sum(d.frames for d in decoded[:4]) == CAR_FRAMES
    assert decoded[4].frames == 120 and 30 <= decoded[5].frames < 60


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command (stream server)")
def test_live_stream_segments_are_wall_clock_and_closed_when_the_stream_stops(car_video: Path, vault: Vault,
                                                                               tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/live.ts"  # MPEG-TS over HTTP at real speed: timestamps start at 1.4 s
    with (tmp_path / "ffmpeg.log").open("wb") as log:
        server = subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-i", str(car_video), "-c",
                                   "copy", "-f", "mpegts", "-listen", "1", url], stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=log)
    recorder = Recorder("road", config("continuous", segment_s=5), vault)  # wall clock
    stream = LiveStream(url, fps=5, size=None, timeout_s=2, backoff=Backoff(base_s=0.1, cap_s=0.2),
                        packet_tap=recorder.on_packet, connection_tap=recorder.on_connection)
    seen: list[float] = []
    reader = threading.Thread(target=lambda: seen.extend(f.time for f in stream.frames()), daemon=True)
    started = time.time()
    try:
        reader.start()
        deadline = time.monotonic() + 20
        while not stream.stats.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(7)  # about 7 s of video, then the camera dies in the middle of the second segment
        server.kill()
        killed = time.time()
        server.wait(timeout=10)
        while stream.stats.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        recorder_settled = time.monotonic() + 5
        while recorder.stats.stored < 2 and time.monotonic() < recorder_settled:
            time.sleep(0.05)
        # the stream stopped mid-segment: that segment was closed and stored without waiting for close()
        assert recorder.stats.stored == 2
    finally:
        stream.stop()
        server.kill()
        reader.join(timeout=5)
        recorder.close()
    segments = stored(vault)
    assert len(segments) == 2
    first, second = segments
    assert started <= first.start < killed and second.end <= killed + 0.5
    assert first.end - first.start == pytest.approx(GOP_S, abs=0.01) and second.start == pytest.approx(first.end)
    # times agree with the frame times the pipeline sees (wall clock at decoding) to within a second; the first
    # frames are decoded only after the stream was probed, the recorder times them by their arrival
    assert first.start < seen[0] and second.end == pytest.approx(seen[-1], abs=1.0)
    decoded = [decode(s.data) for s in segments]
    assert decoded[0].frames == 60 and 0 < decoded[1].frames < 60 and all(d.first_is_key for d in decoded)
    packets, _, _ = source_packets(car_video)
    # the same H.264 slices: the stream server's MPEG-TS framing only added access-unit delimiters and parameter
    # sets in front of them (the MP4 muxer stores them length-prefixed, as the source file does)
    assert len(decoded[0].packets) == 60
    assert all(mine.endswith(theirs) for mine, theirs in zip(decoded[0].packets, packets, strict=False))


def test_a_database_outage_delays_segments_and_loses_none(car_video: Path, vault: Vault,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The database goes away (a PostgreSQL URL nothing listens on: connections refused) while the recorder cuts
    segments, and comes back (the vault's real SQLite file) 2 s later: every segment is stored once, in order, in
    one unbroken chain; none is counted as failed."""
    back = vault.engine
    vault.engine = create_engine(f"postgresql+psycopg://trustcam@127.0.0.1:{free_port()}/trustcam",
                                 connect_args={"connect_timeout": 2})
    recorder = Recorder("road", config("continuous", segment_s=5), vault, clock=None)
    timer = threading.Timer(2.0, lambda: setattr(vault, "engine", back))  # the server is back
    timer.start()
    try:
        with caplog.at_level(logging.INFO, logger="trustcam.storage.recorder"):
            record_file(car_video, recorder)  # close() waits for the writer
    finally:
        timer.cancel()
    segments = stored(vault)  # seq 1..n without a gap
    assert [s.start for s in segments] == pytest.approx([i * GOP_S for i in range(7)])
    assert recorder.stats.stored == 7 and recorder.stats.failed == 0 and recorder.stats.retries >= 2
    assert "database unreachable while storing the segment 0.0-4.8" in caplog.text
    assert len(list((vault.root / "road").rglob("*.seg"))) == 7, "a failed attempt leaves no orphan file"
    assert vault.verify_chain(deep=True) == []


def test_a_database_still_away_at_stop_gets_close_retry_s_then_the_rest_is_lost_counted(
        car_video: Path, vault: Vault, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopping never hangs on a database that does not come back: after CLOSE_RETRY_S the waiting segments are
    counted as failed and logged, without another attempt each."""
    monkeypatch.setattr(recorder_module, "CLOSE_RETRY_S", 0.5)
    vault.engine = create_engine(f"postgresql+psycopg://trustcam@127.0.0.1:{free_port()}/trustcam",
                                 connect_args={"connect_timeout": 2})
    recorder = Recorder("road", config("continuous", segment_s=5), vault, clock=None)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="trustcam.storage.recorder"):
        record_file(car_video, recorder)
    took = time.monotonic() - started
    assert recorder.stats.stored == 0 and recorder.stats.failed == 7, recorder.stats
    assert took < 10, f"stopping took {took:.1f} s"
    assert caplog.text.count("NOT STORED: the database was still unreachable at stop") == 6
    assert not list((vault.root / "road").rglob("*.seg")), "no orphan file"


def test_a_failing_tap_never_stops_analysis(car_video: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def broken(packet: av.Packet, stream: av.video.stream.VideoStream) -> None:
        calls.append(packet.size)
        raise RuntimeError("vault on fire")

    source = VideoSource(str(car_video), packet_tap=broken)
    with caplog.at_level(logging.ERROR):
        frames = sum(1 for _ in source.frames())
    assert frames == CAR_FRAMES and len(calls) == CAR_FRAMES and source.tap_errors == CAR_FRAMES
    assert sum("packet tap failed" in r.getMessage() for r in caplog.records) == 1  # logged once, not 377 times


def test_trustcam_run_records_into_the_vault(car_video: Path, installed_models: None, tmp_path: Path,
                                            run_then_sigterm) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"data_dir: {tmp_path / 'data'}\nserver: {{enabled: false}}\n"
        f"vault: {{root: {tmp_path / 'rec'}, key_file: {tmp_path / 'keys' / 'kek'}, "
        f"signing_key_file: {tmp_path / 'keys' / 'sign'}}}\n"
        "cameras:\n"
        "  road:\n"
        f"    source: {car_video}\n"
        "    objects: {track: [car]}\n"
        "    record: {enabled: true, mode: continuous, segment_s: 4}\n"
    )
    started = time.time()
    returncode, stderr = run_then_sigterm(cfg, 14)
    assert returncode == 0, stderr
    db = tmp_path / "data" / "trustcam.db"
    with sqlite3.connect(db) as connection:
        rows = connection.execute("select id, camera, seq, start, end, path from segments order by seq").fetchall()
    # the file plays at real speed for ~10 s after start-up: 4.8 s segments (the keyframe nearest to 4 s), the
    # last one closed by SIGTERM
    assert len(rows) >= 2, stderr
    assert [r[2] for r in rows] == list(range(1, len(rows) + 1)) and {r[1] for r in rows} == {"road"}
    assert started < rows[0][3] and rows[-1][4] < time.time()
    for previous, row in itertools.pairwise(rows):
        assert row[3] == pytest.approx(previous[4], abs=0.5)  # consecutive in time
    vault = Vault(vault_config(tmp_path), open_database(f"sqlite:///{db}"))
    total = 0
    for sid, _, _, start, end, path in rows:
        assert (tmp_path / "rec" / path).is_file()
        assert b"ftyp" not in (tmp_path / "rec" / path).read_bytes()[:64]  # encrypted on disk
        decoded = decode(vault.read_segment(sid))
        assert decoded.first_is_key and decoded.codec == "h264"
        assert decoded.duration == pytest.approx(end - start, abs=0.1)
        total += decoded.frames
    assert rows[0][4] - rows[0][3] == pytest.approx(GOP_S, abs=0.01) and total >= 100
    assert "recording continuous" in stderr
