"""`trustcam assess --defence second-opinion`: the second opinion measured like the attack, with real models.

PGD really runs against yolox-nano (a few steps on a few coco128 images), the attacked images really go through
both models, and the clean clip really goes through the camera pipeline with the second opinion on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from trustcam.assess import adversarial as adv
from trustcam.assess.datasets import load_dataset
from trustcam.assess.defence import DefenceError, defended
from trustcam.assess.report import write_report
from trustcam.assess.runner import Assessment, AssessOptions, Assessor
from trustcam.config import Settings
from trustcam.config.schema import CameraConfig, ObjectsConfig
from trustcam.vision.detections import Detections
from trustcam.vision.detectors import Detector
from trustcam.vision.labels import COCO_LABELS

CLI = [sys.executable, "-m", "trustcam.cli"]
PERSON = COCO_LABELS.index("person")
CLIP_SECONDS = 40.0  # one-by-one-person-detection.mp4: two people walk in and out in the first 40 s

needs_torch = pytest.mark.skipif(
    not adv.torch_available(), reason="torch/onnx2torch not installed: pip install 'trustcam[adversarial]'"
)


def camera() -> CameraConfig:
    return CameraConfig(source="x", detect={"fps": 5}, objects={"track": ["person"]})


@pytest.fixture(scope="module")
def assessed(data_dir: Path, person_video: Path, yolox: Detector) -> Assessment:
    options = AssessOptions(attacks=("pgd", "patch"), eps=(8.0,), pgd_steps=4, attack_images=6, patch_steps=8,
                            labels=("person",), bootstrap=100, max_images=16, seed=0, defences=("second-opinion",),
                            clean_clips=(str(person_video),), clean_clip_seconds=CLIP_SECONDS)
    dataset = load_dataset(data_dir / "coco128-train")
    return Assessor(dataset, Settings(), camera(), yolox, options).assess()


def section(assessment: Assessment) -> dict[str, Any]:
    return assessment.metrics["defences"]["second_opinion"]


@needs_torch
@pytest.mark.slow
def test_pgd_hides_people_from_the_primary_but_not_from_the_defence(assessed: Assessment) -> None:
    d = section(assessed)
    assert d["model"] == "nanodet-m-320" and d["primary"] == "yolox-nano" and "sampled share" in d["assumes"]
    clean, pgd = d["image_sets"]["clean"], d["image_sets"]["pgd_eps_8"]
    # the same figures the attack section reports for the primary alone
    assert clean["without"]["recall"] == pytest.approx(assessed.metrics["attacks"]["pgd"]["clean_recall"], abs=1e-4)
    assert pgd["without"]["recall"] == pytest.approx(assessed.metrics["attacks"]["pgd"]["recall"], abs=1e-4)
    assert clean["without"]["recall"] >= 0.3
    assert pgd["without"]["recall"] <= 0.3 * clean["without"]["recall"]  # the attack works on the primary
    assert pgd["with"]["recall"] > pgd["without"]["recall"] + 0.15  # ... and the second opinion recovers people
    assert clean["with"]["recall"] >= clean["without"]["recall"]  # a union never loses a primary detection
    for row in d["image_sets"].values():
        for side in ("without", "with"):
            lo, hi = row[side]["recall_ci"]
            assert lo <= row[side]["recall"] <= hi
    assert pgd["with"]["ratio_to_clean"] == pytest.approx(pgd["with"]["recall"] / clean["without"]["recall"], abs=1e-3)
    goal = d["goals"]["pgd"]
    assert goal["set"] == "pgd_eps_8" and goal["target_ratio"] == 0.8
    assert goal["met"] == (goal["ratio_with"] >= 0.8)
    assert set(d["image_sets"]) == {"clean", "pgd_eps_8", "patch_clean", "patch", "random_patch"}
    assert d["goals"]["patch"]["set"] == "patch"
    cost = d["precision_cost"]
    assert cost["images"] == 16
    assert cost["with"]["fp"] >= cost["without"]["fp"] and cost["with"]["tp"] >= cost["without"]["tp"]


@needs_torch
@pytest.mark.slow
def test_clean_clip_raises_no_evasion_alert(assessed: Assessment) -> None:
    fa = section(assessed)["false_alarms"]
    assert fa["source"] == "--clean-clips"
    clip = fa["clips"][0]
    assert clip["clip"] == "one-by-one-person-detection.mp4"
    assert clip["seconds"] == pytest.approx(CLIP_SECONDS, abs=0.5) and clip["analysed"] >= 190  # 5 fps
    assert clip["events"] >= 1  # the people who walk in are events: the pipeline really ran
    assert clip["second_opinion_checks"] > 0  # ... with the second model looking
    assert fa["evasion_alerts"] == 0 and clip["alerts"] == []
    assert fa["evasion_alerts_per_hour"] == 0.0
    assert fa["hours"] == pytest.approx(CLIP_SECONDS / 3600, rel=0.02)
    assert section(assessed)["goals"]["false_alarms"] == {"target": 0, "evasion_alerts": 0, "met": True}


@needs_torch
@pytest.mark.slow
def test_json_and_report_carry_the_defences_section(assessed: Assessment, tmp_path: Path) -> None:
    metrics_path, report_path = write_report(assessed, tmp_path)
    saved = json.loads(metrics_path.read_text())
    assert saved["defences"]["second_opinion"]["image_sets"]["pgd_eps_8"]["with"]["recall"] is not None
    page = report_path.read_text()
    assert "<h2>Defences</h2>" in page
    assert "person recall without" in page and "with second opinion" in page and "evasion_suspected" in page
    assert "PGD L∞ ε=8, 4 steps" in page


def test_union_adds_what_only_the_second_model_saw_at_the_operating_point() -> None:
    objects = ObjectsConfig(track=["person"])  # person min_score 0.3
    primary = Detections(np.array([[0, 0, 100, 200], [300, 0, 400, 200]], np.float32),
                         np.array([0.9, 0.1], np.float32), np.array([PERSON, PERSON]))
    secondary = Detections(np.array([[4, 4, 104, 204], [302, 2, 402, 202], [500, 0, 600, 200]], np.float32),
                           np.array([0.8, 0.7, 0.2], np.float32), np.array([PERSON, PERSON, PERSON]))
    union = defended(primary, secondary, objects)
    # the confirmed person is not doubled; the one the primary scored 0.1 (below min_score, so missed at run time)
    # comes from the second model; the second model's own low score is left out
    assert union.boxes.tolist() == [[0, 0, 100, 200], [300, 0, 400, 200], [302, 2, 402, 202]]
    assert union.scores.tolist() == pytest.approx([0.9, 0.1, 0.7])


def mot_sequence(person_video: Path, data_dir: Path, root: Path, frames: int = 20, fps: int = 10) -> Path:
    """A real person (a labelled coco128 photo) walking across the sample video's empty room, as MOTChallenge."""
    from trustcam.ingest.source import VideoSource

    room = next(VideoSource(str(person_video)).frames()).bgr.copy()
    photo = cv2.imread(str(data_dir / "coco128-train" / "images" / "000000000036.jpg"))
    h, w = photo.shape[:2]
    cx, cy, bw, bh = 0.671279 * w, 0.617945 * h, 0.645759 * w, 0.726859 * h  # its labelled person
    person = photo[int(cy - bh / 2): int(cy + bh / 2), int(cx - bw / 2): int(cx + bw / 2)]
    person = cv2.resize(person, None, fx=300 / person.shape[0], fy=300 / person.shape[0])
    ph, pw = person.shape[:2]
    (root / "img1").mkdir(parents=True)
    (root / "gt").mkdir()
    lines = []
    for frame in range(1, frames + 1):
        image = room.copy()
        x, y = 20 + (frame - 1) * 8, 432 - ph - 10
        image[y: y + ph, x: x + pw] = person
        cv2.imwrite(str(root / "img1" / f"{frame:06d}.jpg"), image)
        lines.append(f"{frame},1,{x},{y},{pw},{ph},1,1,1.0")
    (root / "gt" / "gt.txt").write_text("\n".join(lines) + "\n")
    (root / "seqinfo.ini").write_text(f"[Sequence]\nname={root.name}\nframeRate={fps}\nseqLength={frames}\n"
                                      "imWidth=768\nimHeight=432\nimDir=img1\nimExt=.jpg\n")
    return root


@pytest.mark.slow
def test_mot_dataset_sequences_are_the_default_clean_footage(person_video: Path, data_dir: Path, yolox: Detector,
                                                             tmp_path: Path) -> None:
    dataset = load_dataset(mot_sequence(person_video, data_dir, tmp_path / "room-01"))
    options = AssessOptions(defences=("second-opinion",), bootstrap=20)
    d = Assessor(dataset, Settings(), camera(), yolox, options).assess().metrics["defences"]["second_opinion"]
    fa = d["false_alarms"]
    assert fa["source"] == "dataset sequences" and [c["clip"] for c in fa["clips"]] == ["room-01"]
    clip = fa["clips"][0]
    assert clip["analysed"] == 10 and clip["seconds"] == pytest.approx(2.0)  # 20 frames at 10 fps, 5 analysed/s
    assert clip["events"] == 1 and clip["evasion_alerts"] == 0 and clip["second_opinion_checks"] > 0
    assert d["precision_cost"]["images"] == 20 and d["precision_cost"]["with"]["recall"] >= 0.9


def test_second_opinion_must_be_another_model(data_dir: Path, nanodet: Detector) -> None:
    dataset = load_dataset(data_dir / "coco128-train")
    with pytest.raises(DefenceError, match="is the primary model"):
        Assessor(dataset, Settings(), camera(), nanodet, AssessOptions(defences=("second-opinion",), max_images=2))


def test_cli_without_clips_or_attacks_says_what_is_missing(data_dir: Path, installed_models: None,
                                                           tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "assess", "--dataset", str(data_dir / "coco128-train"), "--labels", "person", "--max-images", "8",
         "--bootstrap", "0", "--defence", "second-opinion", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    d = json.loads((tmp_path / "metrics.json").read_text())["defences"]["second_opinion"]
    assert d["image_sets"] == {} and d["precision_cost"]["images"] == 8
    assert d["false_alarms"]["source"] is None and "--clean-clips" in d["false_alarms"]["note"]
    assert d["goals"]["false_alarms"]["met"] is None
    assert "defence second opinion (nanodet-m-320" in result.stderr and "no clean footage" in result.stderr
    assert "<h2>Defences</h2>" in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize(("extra", "message"), [
    (["--defence", "firewall"], "choose from second-opinion"),
    (["--clean-clips", "{video}"], "add --defence second-opinion"),
])
def test_cli_refuses_bad_defence_options(data_dir: Path, person_video: Path, tmp_path: Path, extra: list[str],
                                         message: str) -> None:
    args = [a.replace("{video}", str(person_video)) for a in extra]
    result = subprocess.run([*CLI, "assess", "--dataset", str(data_dir / "coco128-train"), *args,
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "200"})  # the error box on one line
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_attack_clips_need_the_defence(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from trustcam.cli import app

    clip = tmp_path / "walk.mp4"
    clip.write_bytes(b"not used: refused before it is read")
    result = CliRunner().invoke(app, ["assess", "--dataset", str(tmp_path), "--attack-clips", str(clip),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "add --defence second-opinion" in result.output
