"""Live streams against a real local stream server (ffmpeg serving MPEG-TS over HTTP on 127.0.0.1): the stream
survives the server going away and coming back, detects a silent server within ``timeout_s``, and stops
promptly; plus the backoff that spaces reconnects."""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support import free_port
from trustcam.ingest.source import SourceError, VideoSource
from trustcam.ingest.stream import Backoff, LiveStream

TIMEOUT_S = 2.0

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command (stream server)")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``condition`` held; fails the test after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


class StreamServer:
    """``ffmpeg -listen 1``: serves the video, looped at real speed, to one HTTP client, then exits."""

    def __init__(self, video: Path, port: int, log: Path) -> None:
        self.video = video
        self.url = f"http://127.0.0.1:{port}/live.ts"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(self.video),
                 "-c", "copy", "-f", "mpegts", "-listen", "1", self.url],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # SIGKILL also ends a stopped (SIGSTOP) process
            self.process.wait(timeout=10)


@pytest.fixture
def server(person_video: Path, tmp_path: Path) -> Iterator[StreamServer]:
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs the ffmpeg command (stream server)")
    srv = StreamServer(person_video, free_port(), tmp_path / "ffmpeg.log")
    try:
        yield srv
    finally:
        srv.kill()


class Consumer:
    """Reads a LiveStream in a thread, as a camera worker does, keeping what it saw (not the frames)."""

    def __init__(self, stream: LiveStream) -> None:
        self.stream = stream
        self.seen: list[tuple[int, float, tuple[int, ...]]] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="consumer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for frame in self.stream.frames():
                self.seen.append((frame.index, frame.time, frame.bgr.shape))
        except BaseException as exc:
            self.errors.append(exc)

    def stop(self) -> float:
        """Stop the stream; seconds until the reading thread ended."""
        start = time.monotonic()
        self.stream.stop()
        self.thread.join(timeout=TIMEOUT_S + 3)
        assert not self.thread.is_alive(), "LiveStream.stop() did not end the reading thread"
        return time.monotonic() - start


@pytest.fixture
def consumers() -> Iterator[list[Consumer]]:
    made: list[Consumer] = []
    try:
        yield made
    finally:
        for consumer in made:
            consumer.stream.stop()
            consumer.thread.join(timeout=TIMEOUT_S + 3)


def live(url: str, consumers: list[Consumer]) -> Consumer:
    stream = LiveStream(url, fps=5, size=None, timeout_s=TIMEOUT_S,
                        backoff=Backoff(base_s=0.2, cap_s=1.0, rng=random.Random(7)))
    consumers.append(Consumer(stream))
    return consumers[-1]


def test_stream_reconnects_after_the_server_comes_back(server: StreamServer, consumers: list[Consumer]) -> None:
    server.start()
    consumer = live(server.url, consumers)
    stats = consumer.stream.stats
    wait_until(lambda: stats.frames >= 5, 20, "the first frames")
    assert stats.connected and stats.connects == 1 and stats.stalls == 0
    retries = stats.reconnects  # the server may not have been listening yet on the first try

    server.kill()
    lost = wait_until(lambda: not stats.connected, TIMEOUT_S + 1, "the stream to notice the server is gone")
    assert lost < TIMEOUT_S
    wait_until(lambda: stats.reconnects >= retries + 3, 10, "reconnect attempts")
    assert not stats.connected and stats.connects == 1 and stats.stalls == 1
    assert stats.last_error is not None and server.url in stats.last_error
    assert "connection refused" in stats.last_error.lower()
    assert consumer.thread.is_alive() and not consumer.errors
    frames_before = stats.frames

    server.start()  # same port; nothing else is restarted
    back = wait_until(lambda: stats.connects >= 2, 15, "the stream to reconnect")
    wait_until(lambda: stats.frames >= frames_before + 5, 10, "frames after reconnecting")
    assert stats.connected and stats.reconnects >= retries + 3
    assert back < 5  # retries are at most cap_s=1 s apart, connecting takes ~1.5 s

    took = consumer.stop()
    assert took < TIMEOUT_S and not consumer.errors
    indexes = [index for index, _, _ in consumer.seen]
    times = [t for _, t, _ in consumer.seen]
    assert indexes == list(range(len(indexes)))  # numbering goes on across the reconnect
    assert times == sorted(times)  # wall-clock times
    assert {shape for _, _, shape in consumer.seen} == {(432, 768, 3)}
    assert not stats.connected


def test_silent_server_is_detected_within_the_timeout(server: StreamServer, consumers: list[Consumer]) -> None:
    server.start()
    consumer = live(server.url, consumers)
    stats = consumer.stream.stats
    wait_until(lambda: stats.frames >= 3, 20, "the first frames")
    server.signal(signal.SIGSTOP)  # the server hangs: connection open, no data (a frozen camera)
    try:
        silent = wait_until(lambda: not stats.connected, TIMEOUT_S + 2, "the read to time out")
        assert TIMEOUT_S - 0.5 < silent < TIMEOUT_S + 1
        assert stats.last_error is not None and f"no data for {TIMEOUT_S:g}s" in stats.last_error
        assert consumer.thread.is_alive() and not consumer.errors
    finally:
        server.signal(signal.SIGCONT)
    consumer.stop()


def test_stop_interrupts_a_blocked_read_within_the_timeout(
    server: StreamServer, consumers: list[Consumer]
) -> None:
    server.start()
    consumer = live(server.url, consumers)
    stats = consumer.stream.stats
    wait_until(lambda: stats.frames >= 3, 20, "the first frames")
    server.signal(signal.SIGSTOP)
    time.sleep(0.3)  # the reader is now blocked waiting for data that will not come
    took = consumer.stop()
    assert took < TIMEOUT_S + 0.5
    assert not consumer.errors and not stats.connected


def test_stop_is_immediate_while_waiting_to_reconnect(consumers: list[Consumer]) -> None:
    url = f"http://127.0.0.1:{free_port()}/live.ts"
    stream = LiveStream(url, fps=5, size=None, timeout_s=TIMEOUT_S, backoff=Backoff(base_s=5, cap_s=30))
    consumer = Consumer(stream)
    consumers.append(consumer)
    wait_until(lambda: stream.stats.reconnects >= 1, 5, "a failed connection")
    assert consumer.stop() < 0.5 and stream.stats.frames == 0 and stream.stats.connects == 0


def test_file_source_plays_again_at_its_end(car_video: Path, consumers: list[Consumer]) -> None:
    stream = LiveStream(str(car_video), fps=5, size=(384, 216), backoff=Backoff(base_s=0.02, cap_s=0.05))
    consumer = Consumer(stream)
    consumers.append(consumer)
    wait_until(lambda: stream.stats.connects >= 2, 20, "the file to be played twice")
    consumer.stop()
    assert stream.stats.last_error is not None and "end of file" in stream.stats.last_error
    assert len(consumer.seen) > 151 and consumer.seen[0][2] == (216, 384, 3)
    assert [i for i, _, _ in consumer.seen] == list(range(len(consumer.seen)))


def test_closed_port_fails_fast_with_a_clear_message() -> None:
    port = free_port()
    for url, shown in [(f"http://127.0.0.1:{port}/live.ts", f"http://127.0.0.1:{port}/live.ts"),
                       (f"rtsp://admin:secret@127.0.0.1:{port}/stream1", f"rtsp://admin:***@127.0.0.1:{port}")]:
        start = time.monotonic()
        with pytest.raises(SourceError) as info:
            next(VideoSource(url, timeout_s=TIMEOUT_S).frames())
        assert time.monotonic() - start < 1.0
        message = str(info.value)
        assert message.startswith(shown) and "connection refused" in message.lower() and "secret" not in message


def test_server_that_never_answers_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (kernel backlog) but never sends a byte
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/live.ts"
        start = time.monotonic()
        with pytest.raises(SourceError) as info:
            next(VideoSource(url, timeout_s=TIMEOUT_S).frames())
        took = time.monotonic() - start
    assert TIMEOUT_S - 0.5 < took < TIMEOUT_S + 1.5
    assert str(info.value).startswith(url) and "no answer within" in str(info.value)


def test_backoff_grows_exponentially_to_the_cap_with_jitter() -> None:
    backoff = Backoff(base_s=0.2, cap_s=1.0, rng=random.Random(42))
    ceilings = [0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    for attempt, ceiling in enumerate(ceilings):
        delays = []
        for _ in range(300):
            backoff.attempt = attempt
            delays.append(backoff.next_delay())
        assert min(delays) >= 0.1 - 1e-9 and max(delays) <= ceiling + 1e-9  # never below base/2
        assert max(delays) > 0.95 * ceiling  # the full range is used...
        assert len(set(delays)) > 250  # ...at random (jitter: cameras don't reconnect in lockstep)
    sequence = Backoff(base_s=0.2, cap_s=1.0, rng=random.Random(42))
    delays = [sequence.next_delay() for _ in range(8)]
    assert sequence.attempt == 8
    assert all(0.1 <= d <= min(1.0, 0.2 * 2**n) for n, d in enumerate(delays))
    again = Backoff(base_s=0.2, cap_s=1.0, rng=random.Random(42))
    assert [again.next_delay() for _ in range(8)] == delays  # seeded: reproducible
    sequence.reset()
    assert sequence.attempt == 0 and sequence.next_delay() <= 0.2


def test_backoff_survives_days_of_retries() -> None:
    backoff = Backoff(base_s=0.5, cap_s=30.0, rng=random.Random(0))
    backoff.attempt = 5000  # a camera unplugged for days: 2**5000 must not overflow
    assert 0.25 <= backoff.next_delay() <= 30.0


@needs_ffmpeg
def test_live_stream_decodes_only_what_sampling_keeps(server: StreamServer, consumers: list[Consumer]) -> None:
    """A live camera gets one decoder thread and leaves the B-frames that sampling drops undecoded (the recorder
    and live video take packets): the analysis still gets frames at detect.fps."""
    server.start()
    consumer = live(server.url, consumers)
    wait_until(lambda: len(consumer.seen) >= 30, 30, "30 frames at 5 fps")
    consumer.stop()
    source = consumer.stream.source
    assert source is not None and source.threads == 1
    times = [t for _, t, _ in consumer.seen[3:]]  # after the connection's first burst
    assert (times[-1] - times[0]) / (len(times) - 1) == pytest.approx(0.2, abs=0.03)
    report = source.report
    assert report.kept >= len(consumer.seen) and report.packets >= 2 * report.kept - 2  # a 10 fps clip at 5 fps
    assert report.decoded < 0.8 * report.packets, (report.decoded, report.packets)
