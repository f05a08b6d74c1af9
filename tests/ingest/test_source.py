"""Decoding the real sample videos: sampling to the analysis rate, frame images and sizes; bad sources give one
clear SourceError that names the source (credentials hidden) and the problem."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from trustcam.ingest.frame import Frame
from trustcam.ingest.source import SourceError, VideoSource, ffmpeg_options, redact, source_kind

PERSON_FRAMES = 1394  # 139.4 s at 10 fps
CAR_FRAMES = 377  # 30.16 s at 12.5 fps


def open_error(url: str, **kwargs: object) -> str:
    with pytest.raises(SourceError) as info:
        next(VideoSource(url, **kwargs).frames())  # type: ignore[arg-type]
    return str(info.value)


def test_person_video_sampled_at_5_fps_matches_its_duration(person_video: Path) -> None:
    source = VideoSource(str(person_video), fps=5)
    times, indexes = [], []
    first: Frame | None = None
    for frame in source.frames():
        times.append(frame.time)
        indexes.append(frame.index)
        if first is None:
            first = frame
    assert source.report.decoded == PERSON_FRAMES
    assert source.report.kept == len(times) == PERSON_FRAMES // 2 == 697
    assert source.report.errors == []
    assert indexes == list(range(697))
    assert times[0] == 0.0 and times[-1] == pytest.approx(139.2)
    assert np.allclose(np.diff(times), 0.2, atol=1e-6)
    assert source.native_size == (768, 432) and source.stream_fps == pytest.approx(10.0)
    assert first is not None and first.size == first.native_size == (768, 432)


def test_frame_images_have_the_right_shapes_and_content(person_video: Path) -> None:
    frames = VideoSource(str(person_video), fps=1).frames()
    for _ in range(10):  # a frame 9 s in: the first person is in view
        frame = next(frames)
    frames.close()
    assert frame.time == pytest.approx(9.0)
    bgr = frame.bgr
    assert bgr.shape == (432, 768, 3) and bgr.dtype == np.uint8
    assert frame.bgr is bgr  # converted once
    assert frame.gray(120).shape == (120, 213)  # aspect ratio kept
    # The grey image comes from the luma plane (with its row padding removed): it must match the colour image.
    luma = frame.gray(432)
    assert luma.shape == (432, 768) and luma.dtype == np.uint8
    # Luma is "video range" (16..235), grey from BGR is full range (0..255).
    reference = 16 + cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(float) * 219 / 255
    assert np.abs(luma - reference).mean() < 2
    assert luma.std() > 10  # a real picture, not a flat plane


def test_size_resizes_frames_for_analysis(car_video: Path) -> None:
    full = VideoSource(str(car_video), fps=5).frames()
    small = VideoSource(str(car_video), fps=5, size=(320, 180)).frames()
    for _ in range(20):
        big_frame, small_frame = next(full), next(small)
    full.close()
    small.close()
    assert small_frame.time == big_frame.time
    assert (small_frame.width, small_frame.height) == (320, 180) and small_frame.native_size == (768, 432)
    assert small_frame.bgr.shape == (180, 320, 3)
    expected = cv2.resize(big_frame.bgr, (320, 180), interpolation=cv2.INTER_AREA)
    assert np.abs(small_frame.bgr.astype(int) - expected.astype(int)).mean() < 6
    assert small_frame.gray(90).shape == (90, 160)


def test_car_video_12_5_fps_sampled_to_5_fps(car_video: Path) -> None:
    source = VideoSource(str(car_video), fps=5)
    times = [frame.time for frame in source.frames()]
    assert source.report.decoded == CAR_FRAMES
    assert len(times) == pytest.approx(30.16 * 5, abs=2)
    gaps = np.diff(times)
    assert gaps.min() >= 0.16 - 1e-6 and gaps.max() <= 0.24 + 1e-6  # frames are 0.08 s apart
    assert gaps.mean() == pytest.approx(0.2, abs=0.005)


def test_no_fps_keeps_every_frame(car_video: Path) -> None:
    source = VideoSource(str(car_video), fps=None)
    assert sum(1 for _ in source.frames()) == CAR_FRAMES == source.report.kept


def test_frame_from_an_image() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 100:] = 255
    frame = Frame.from_image(image, index=3, time=1.5)
    assert frame.bgr is image and (frame.width, frame.height) == (200, 100) and frame.index == 3
    gray = frame.gray(50)
    assert gray.shape == (50, 100) and gray[:, :40].max() == 0 and gray[:, 60:].min() == 255
    resized = Frame(image, 0, 0.0, size=(100, 50))
    assert resized.bgr.shape == (50, 100, 3)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    message = open_error(str(missing))
    assert str(missing) in message and "not found" in message


def test_folder_is_not_a_video(tmp_path: Path) -> None:
    message = open_error(str(tmp_path))
    assert str(tmp_path) in message and "folder" in message


# seeded: some random byte strings happen to parse as an audio stream (MPEG sync words), a different error
@pytest.mark.parametrize("content", [b"this is a text file, not a video\n" * 200, random.Random(7).randbytes(200_000)],
                         ids=["text", "random-bytes"])
def test_non_video_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    message = open_error(str(path))
    assert str(path) in message and "not a readable video" in message


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command to make an audio file")
def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "sound.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=1",
                    str(path)], check=True, timeout=60)
    message = open_error(str(path))
    assert str(path) in message and "no video stream" in message


@pytest.mark.parametrize(("url", "shown"), [
    ("rtsp://u:secret@h/x", "rtsp://u:***@h/x"),
    ("rtsp://admin:p@ss:w0rd@10.0.0.2:554/stream1", "rtsp://admin:***@10.0.0.2:554/stream1"),
    ("http://viewer:secret@cam.local:8080/video.ts?x=1", "http://viewer:***@cam.local:8080/video.ts?x=1"),
    ("rtsp://10.0.0.2:554/stream1", "rtsp://10.0.0.2:554/stream1"),
    ("rtsp://user@10.0.0.2/stream1", "rtsp://user@10.0.0.2/stream1"),
    ("/videos/a:b@c.mp4", "/videos/a:b@c.mp4"),
])
def test_redact_hides_passwords(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(("url", "kind"), [
    ("rtsp://cam/stream", "rtsp"),
    ("RTSPS://cam/stream", "rtsp"),
    ("http://cam/video.mjpg", "http"),
    ("https://cam/live.ts", "http"),
    ("/dev/video0", "usb"),
    ("/dev/video12", "usb"),
    ("/dev/videos.mp4", "file"),
    ("clips/front.mp4", "file"),
    ("/data/front door.mkv", "file"),
])
def test_source_kind(url: str, kind: str) -> None:
    assert source_kind(url) == kind


def test_ffmpeg_options_bound_every_network_wait() -> None:
    http = ffmpeg_options("http://cam/live.ts", 2.5)
    assert http["rw_timeout"] == "2500000" and http["reconnect"] == "0"  # microseconds
    rtsp = ffmpeg_options("rtsp://cam/stream", 10, rtsp_transport="udp")
    assert rtsp["timeout"] == "10000000" and rtsp["rtsp_transport"] == "udp"
    assert ffmpeg_options("clip.mp4", 10) == {}


def test_other_url_schemes_are_not_reported_as_missing_files() -> None:
    message = open_error("rtmp://127.0.0.1:1/live/cam", timeout_s=2)
    assert "file not found" not in message and "rtmp://127.0.0.1:1/live/cam" in message


def test_unsampled_b_frames_are_not_decoded_and_sampling_is_unchanged(person_video: Path) -> None:
    """``skip_unsampled`` (what live cameras use) leaves the non-reference frames that sampling drops undecoded,
    and keeps exactly the frames (times and pictures) a full decode keeps."""
    full = VideoSource(str(person_video), fps=5)
    kept = [(f.time, f._source.pts, f.gray(90).copy()) for f in full.frames()]
    lean = VideoSource(str(person_video), fps=5, threads=1, skip_unsampled=True)
    lean_kept = [(f.time, f._source.pts, f.gray(90).copy()) for f in lean.frames()]
    assert [k[:2] for k in lean_kept] == [k[:2] for k in kept] and len(kept) == 697
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(kept, lean_kept, strict=True))  # references intact
    assert full.report.decoded == full.report.packets == lean.report.packets == PERSON_FRAMES
    assert lean.report.decoded < 0.7 * PERSON_FRAMES  # the clip's B-frames between sampled frames were skipped
    assert lean.report.errors == []


def test_every_frame_is_decoded_without_sampling(person_video: Path) -> None:
    source = VideoSource(str(person_video), fps=None, threads=1, skip_unsampled=True)
    assert sum(1 for _ in source.frames()) == source.report.decoded == PERSON_FRAMES
