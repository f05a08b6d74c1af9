"""Whole-frame detection on a decoded 1080p frame: the frame is shrunk while still YUV, and finds what the full BGR
conversion finds.

The frames are real footage (the shared person video, people walking in a room) upscaled to 1920x1080 and turned
back into YUV 4:2:0 video frames, as a 1080p camera delivers them.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from trustcam.ingest.frame import Frame
from trustcam.ingest.source import VideoSource
from trustcam.vision.detections import Detections, iou_matrix
from trustcam.vision.detectors import Detector
from trustcam.vision.frame_detector import FrameDetector

FULL_HD = (1920, 1080)
PERSON_FRAMES = (100, 300, 1000, 1300)  # a person in each


@pytest.fixture(scope="module")
def video_frames(person_video: Path) -> list[av.VideoFrame]:
    images = []
    for frame in VideoSource(str(person_video)).frames():
        if frame.index in PERSON_FRAMES:
            images.append(frame.bgr)
        if frame.index >= max(PERSON_FRAMES):
            break
    assert len(images) == len(PERSON_FRAMES), "could not decode the person frames"
    return [av.VideoFrame.from_ndarray(cv2.resize(image, FULL_HD, interpolation=cv2.INTER_LINEAR), format="bgr24")
            .reformat(format="yuv420p") for image in images]


class _Recorder:
    """Records the shape of every image given to the model."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.shapes: list[tuple[int, ...]] = []
        self._detect = detector.detect

    def __call__(self, image: np.ndarray, score_threshold: float | None = None) -> Detections:
        self.shapes.append(image.shape)
        return self._detect(image, score_threshold)


def _same_objects(a: Detections, b: Detections) -> bool:
    if len(a) != len(b):
        return False
    if not len(a):
        return True
    iou = iou_matrix(a.boxes, b.boxes)
    best = iou.argmax(axis=1)
    return bool((iou.max(axis=1) >= 0.9).all() and (a.class_ids == b.class_ids[best]).all())


@pytest.mark.parametrize("fixture", ["yolox", "nanodet"])
def test_whole_frame_is_shrunk_before_conversion_and_finds_the_same(
        fixture: str, video_frames: list[av.VideoFrame], request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch) -> None:
    detector: Detector = request.getfixturevalue(fixture)
    frame_detector = FrameDetector(detector, "auto")
    recorder = _Recorder(detector)
    monkeypatch.setattr(detector, "detect", recorder)
    side = detector.input_size
    letterboxed = (round(FULL_HD[1] * side / FULL_HD[0]), side, 3)
    people = 0
    for av_frame in video_frames:
        reference = recorder(Frame(av_frame, 0, 0.0).bgr)  # the full-frame BGR conversion, letterboxed by the model
        frame = Frame(av_frame, 0, 0.0)
        recorder.shapes.clear()
        found = frame_detector.detect_regions(frame, [(0, 0, *FULL_HD)])
        assert recorder.shapes == [letterboxed], "the model should get the frame already shrunk to its letterbox"
        assert "bgr" not in frame.__dict__, "the whole 1080p frame was converted to BGR"
        people += int((found.class_ids == 0).sum())
        keep = lambda d: d.select(np.flatnonzero(d.scores >= 0.4))  # noqa: E731 (borderline scores may move)
        assert _same_objects(keep(reference), keep(found)), (reference.to_json(), found.to_json())
        assert (found.boxes[:, 2] <= FULL_HD[0]).all() and (found.boxes[:, 3] <= FULL_HD[1]).all()
    assert people >= len(PERSON_FRAMES) - 1, "the people in the frames were not found"


def test_full_pass_shrinks_the_whole_frame_and_tiles_at_native_size(
        yolox: Detector, video_frames: list[av.VideoFrame], monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder(yolox)
    monkeypatch.setattr(yolox, "detect", recorder)
    frame_detector = FrameDetector(yolox, "auto")
    frame_detector.detect_full(Frame(video_frames[1], 0, 0.0))
    tiles = len(frame_detector.full_frame_regions(*FULL_HD)) - 1
    assert recorder.shapes[0] == (234, 416, 3)
    assert recorder.shapes[1:] == [(416, 416, 3)] * tiles


def test_small_frames_and_images_keep_the_model_letterbox(yolox: Detector, video_frames: list[av.VideoFrame],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder(yolox)
    monkeypatch.setattr(yolox, "detect", recorder)
    frame_detector = FrameDetector(yolox, "auto")
    small = video_frames[0].reformat(width=768, height=432)  # shrinks < 2x into the model: pixels as they are
    frame_detector.detect_regions(Frame(small, 0, 0.0), [(0, 0, 768, 432)])
    image = Frame(video_frames[0], 0, 0.0).bgr  # a still image: the model's own letterbox, as `trustcam detect`
    frame_detector.detect_full(image)
    assert recorder.shapes[0] == (432, 768, 3)
    assert recorder.shapes[1] == (1080, 1920, 3)
