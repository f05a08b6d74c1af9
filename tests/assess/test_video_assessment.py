"""Assessing video: a MOTChallenge sequence goes through the camera pipeline (motion, tracking, events).

The sequence is built here with exact ground truth: a real person (a labelled COCO photo) walks across a real
empty room (the sample video's first frame), so every box is known by construction.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from trustcam.assess.datasets import load_dataset
from trustcam.assess.runner import AssessOptions, Assessor
from trustcam.config import Settings
from trustcam.config.schema import CameraConfig
from trustcam.ingest.source import VideoSource

FRAMES, FPS = 60, 10


@pytest.fixture(scope="module")
def sequence(person_video: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    room = next(VideoSource(str(person_video)).frames()).bgr.copy()  # 768x432, nobody in the room yet
    photo = cv2.imread(str(data_dir / "coco128-train" / "images" / "000000000036.jpg"))
    h, w = photo.shape[:2]
    cx, cy, bw, bh = 0.671279 * w, 0.617945 * h, 0.645759 * w, 0.726859 * h  # the labelled person
    x1, y1 = int(cx - bw / 2), int(cy - bh / 2)
    person = photo[y1 : y1 + int(bh), x1 : x1 + int(bw)]
    person = cv2.resize(person, None, fx=300 / person.shape[0], fy=300 / person.shape[0])
    ph, pw = person.shape[:2]
    root = tmp_path_factory.mktemp("mot") / "room-01"
    (root / "img1").mkdir(parents=True)
    (root / "gt").mkdir()
    lines = []
    for frame in range(1, FRAMES + 1):
        image = room.copy()
        x, y = 20 + (frame - 1) * 8, 432 - ph - 10
        image[y : y + ph, x : x + pw] = person
        cv2.imwrite(str(root / "img1" / f"{frame:06d}.jpg"), image)
        lines.append(f"{frame},1,{x},{y},{pw},{ph},1,1,1.0")
    (root / "gt" / "gt.txt").write_text("\n".join(lines) + "\n")
    (root / "seqinfo.ini").write_text(f"[Sequence]\nname=room-01\nframeRate={FPS}\nseqLength={FRAMES}\n"
                                      "imWidth=768\nimHeight=432\nimDir=img1\nimExt=.jpg\n")
    return root


def test_video_is_assessed_through_the_camera_pipeline(sequence: Path, yolox) -> None:
    dataset = load_dataset(sequence)
    assert dataset.format == "mot" and dataset.fps["room-01"] == FPS
    camera = CameraConfig(source="x", objects={"track": ["person"]}, detect={"fps": 5})
    metrics = Assessor(dataset, Settings(), camera, yolox, AssessOptions(bootstrap=50)).assess().metrics
    assert metrics["dataset"]["analysed"] == FRAMES // 2  # 10 fps sequence sampled at 5 detect fps
    # the person is tracked under one ID for the whole walk, and raised exactly one event
    assert metrics["tracking"]["id_switches"] == 0
    assert metrics["tracking"]["mota"] > 0.8 and metrics["tracking"]["idf1"] > 0.8, metrics["tracking"]
    assert metrics["events"]["event_recall"] == 1.0 and metrics["events"]["false_alarms"] == 0
    assert metrics["overall"]["recall"] > 0.8
    assert metrics["events"]["hours"] == pytest.approx(FRAMES / FPS / 3600)


def test_conditions_apply_to_video_frames(sequence: Path, yolox) -> None:
    dataset = load_dataset(sequence)
    camera = CameraConfig(source="x", objects={"track": ["person"]})
    options = AssessOptions(conditions=("rain", "low_light"), severities=(5,), bootstrap=0)
    metrics = Assessor(dataset, Settings(), camera, yolox, options).assess().metrics
    worst = min(metrics["conditions"][c]["severities"]["5"]["recall"] for c in ("rain", "low_light"))
    assert worst < metrics["overall"]["recall"] - 0.1
    assert np.isfinite(metrics["mpc"])
