"""Damaged copies of a real video: what comes before the damage is still decoded and analysed, and the damage
is reported clearly (in the decode report, and as one ``error:`` line from ``trustcam analyze``)."""

from __future__ import annotations

import itertools
import random
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from trustcam.ingest.source import SourceError, VideoSource

CLI = [sys.executable, "-m", "trustcam.cli"]
TOTAL_FRAMES = 1394  # the person video: 139.4 s at 10 fps
DURATION = 139.4


def top_level_boxes(path: Path) -> list[str]:
    """The MP4 file's top-level box types in file order (ftyp, moov, mdat, ...)."""
    boxes = []
    with path.open("rb") as f:
        size_total = path.stat().st_size
        offset = 0
        while offset + 8 <= size_total:
            f.seek(offset)
            size, kind = struct.unpack(">I4s", f.read(8))
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0]
            elif size == 0:
                size = size_total - offset
            boxes.append(kind.decode("latin-1"))
            offset += size
    return boxes


def index_first(video: Path, out_dir: Path) -> Path:
    """``video`` if its index (moov) comes before the media data (mdat), else a remuxed copy where it does."""
    boxes = top_level_boxes(video)
    if boxes.index("moov") < boxes.index("mdat"):
        return video
    out = out_dir / f"{video.stem}-faststart.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(video), "-c", "copy",
                    "-movflags", "+faststart", str(out)], check=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def faststart_video(person_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The person video with its index before the media data, as cameras and web exports write it: a
    truncated copy of a file with the index at the end cannot be opened at all (see below)."""
    return index_first(person_video, tmp_path_factory.mktemp("faststart"))


@pytest.fixture(scope="module")
def truncated_video(faststart_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 40% of the file's bytes: an interrupted copy or download."""
    data = faststart_video.read_bytes()
    out = tmp_path_factory.mktemp("damaged") / "truncated.mp4"
    out.write_bytes(data[: int(len(data) * 0.4)])
    return out


@pytest.fixture(scope="module")
def garbage_video(faststart_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 KiB of random bytes written over the middle of the file (a bad disk sector, a broken transfer)."""
    data = bytearray(faststart_video.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 65536] = random.Random(1234).randbytes(65536)
    out = tmp_path_factory.mktemp("damaged") / "garbage.mp4"
    out.write_bytes(bytes(data))
    return out


def decode(path: Path) -> tuple[VideoSource, list[float]]:
    source = VideoSource(str(path), fps=5)
    return source, [frame.time for frame in source.frames()]


def test_truncated_file_decodes_up_to_the_cut_and_says_it_was_cut(truncated_video: Path) -> None:
    source, times = decode(truncated_video)
    report = source.report
    # 40% of the bytes hold ~40% of the video: everything before the cut is decoded.
    assert report.decoded > 0.3 * TOTAL_FRAMES
    assert 0.3 * DURATION < times[-1] < 0.5 * DURATION
    assert times == sorted(times) and len(times) == pytest.approx(times[-1] * 5 + 1, abs=1)
    # ... and the cut is the first problem reported, with where the video stops and how long it should be.
    assert report.errors, "a truncated file must not look complete"
    first = report.errors[0]
    assert first.startswith("truncated:") and "cut short" in first
    stop, total = map(float, re.findall(r"(\d+\.\d)s", first)[:2])
    assert stop == pytest.approx(times[-1], abs=1.0) and total == pytest.approx(DURATION)


def test_garbage_in_the_middle_is_skipped_and_reported_once(garbage_video: Path) -> None:
    source, times = decode(garbage_video)
    report = source.report
    assert len(report.errors) == 1, report.errors
    problem = report.errors[0]
    assert problem.startswith("undecodable data from")
    start, end = map(float, re.findall(r"(\d+\.\d+)s", problem)[:2])
    assert 0.4 * DURATION < start <= end < 0.6 * DURATION and "packets lost" in problem
    # Frames before the damage are all there, and decoding picks up again after it, to the end.
    before = [t for t in times if t < start]
    assert len(before) == pytest.approx(start * 5, abs=2)
    assert times[-1] == pytest.approx(139.2, abs=0.2)
    assert report.decoded > 0.9 * TOTAL_FRAMES
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < (end - start) + 2  # one hole, about as long as the damage


def test_file_cut_inside_its_index_cannot_be_opened(faststart_video: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart_video.read_bytes()[:10_000])  # the index (moov) is ~25 KB
    with pytest.raises(SourceError) as info:
        next(VideoSource(str(cut)).frames())
    message = str(info.value)
    assert str(cut) in message and "not a readable video" in message and "truncated" in message


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command")
def test_index_at_the_end_is_moved_first_and_truncating_it_loses_everything(
    person_video: Path, tmp_path: Path
) -> None:
    at_end = tmp_path / "index_at_end.mp4"  # ffmpeg's default: the index is written last
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(person_video), "-c", "copy", "-an",
                    "-t", "10", str(at_end)], check=True, timeout=120)
    boxes = top_level_boxes(at_end)
    assert boxes.index("mdat") < boxes.index("moov")
    # Cut short, such a file has no index: nothing can be decoded, and the error says so.
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(at_end.read_bytes()[: at_end.stat().st_size // 2])
    with pytest.raises(SourceError, match="not a readable video"):
        next(VideoSource(str(cut)).frames())
    # Moved first (what the fixtures above do), the index survives truncation.
    moved = index_first(at_end, tmp_path)
    assert moved != at_end and top_level_boxes(moved).index("moov") < top_level_boxes(moved).index("mdat")
    half = tmp_path / "half.mp4"
    half.write_bytes(moved.read_bytes()[: moved.stat().st_size // 2])
    source, times = decode(half)
    assert 3 < times[-1] < 7 and source.report.errors[0].startswith("truncated:")


def test_cli_analyze_truncated_file_reports_damage_and_keeps_events(
    truncated_video: Path, installed_models: None, tmp_path: Path
) -> None:
    result = subprocess.run([*CLI, "analyze", str(truncated_video), "--snapshots", str(tmp_path / "snaps")],
                            capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    # One line, not wrapped: the file, that it is damaged, and how, all on it.
    assert str(truncated_video) in errors[0] and "damaged" in errors[0] and "truncated" in errors[0]
    assert errors[0] == result.stderr.strip().splitlines()[-1]
    # Events found before the damage are printed: a person walks in at ~7 s.
    events = [line for line in result.stdout.splitlines() if line.strip()]
    assert events, result.stdout
    starts = [float(line.split("s-")[0]) for line in events]
    assert all("person" in line for line in events)
    assert starts[0] == pytest.approx(7.0, abs=1.5)
    assert max(starts) < 0.5 * DURATION
