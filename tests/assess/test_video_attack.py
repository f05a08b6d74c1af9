"""The printed patch worn by people walking through real footage, through the real camera pipeline: it hides them
from the primary model frame by frame, yet with the second opinion their event is still raised, and the clean
footage raises no ``evasion_suspected``.

Small and seeded: the first two people of the sample clip (47 s), a patch trained for 30 steps on 8 frames. About a
minute on one core (gradients through yolox-nano), hence ``slow``; the full figures come from the same function with
the defaults (bench/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trustcam.assess import adversarial as adv
from trustcam.assess import video_attack as va
from trustcam.config import Settings
from trustcam.config.schema import CameraConfig
from trustcam.vision.detectors import Detector

pytestmark = pytest.mark.slow
needs_torch = pytest.mark.skipif(
    not adv.torch_available(), reason="torch/onnx2torch not installed: pip install 'trustcam[adversarial]'"
)
FIRST_TWO_PEOPLE_S = 47.0  # one-by-one-person-detection.mp4: person 1 at 7-19 s, person 2 at 23-45 s


def camera() -> CameraConfig:
    return CameraConfig(source="x", detect={"fps": 5}, objects={"track": ["person"]})


@pytest.fixture(scope="module")
def result(person_video: Path, yolox: Detector, nanodet: Detector) -> dict[str, Any]:
    if not adv.torch_available():
        pytest.skip("torch/onnx2torch not installed: pip install 'trustcam[adversarial]'")
    return va.video_patch_attack([person_video], Settings(), camera(), yolox, nanodet, until_s=FIRST_TWO_PEOPLE_S,
                                 patch_steps=30, patch_lr=0.1, patch_batch=1, train_frames=8, seed=0,
                                 conditions=("patch", "random"))


@needs_torch
def test_the_patch_hides_people_from_the_primary(result: dict[str, Any]) -> None:
    patch, control = result["conditions"]["patch"], result["conditions"]["random"]
    print(json.dumps({c: {"recall": v["primary_recall"], "events": v["no_defence"]["event_rate"],
                          "defended": v["defence"]["event_rate"]} for c, v in result["conditions"].items()}))
    assert result["people"] == 2 and patch["recall_frames"] > 100
    assert control["primary_recall"] >= 0.9  # mere occlusion by a patch this size barely matters
    assert patch["primary_recall"] <= control["primary_recall"] - 0.2  # the optimised patch is an attack


@needs_torch
def test_with_the_second_opinion_the_event_is_still_raised(result: dict[str, Any]) -> None:
    defended = result["conditions"]["patch"]["defence"]
    assert defended["event_rate"] >= va.GOAL_DEFENDED_EVENT_RATE
    assert result["goal"] == {"defended_event_rate_min": 0.9, "defended_event_rate": defended["event_rate"],
                              "met": True}
    low, high = defended["event_rate_ci95"]
    assert 0 < low <= defended["event_rate"] <= high <= 1  # Wilson: wide with two clips, and said so
    assert all(-1 < t < 10 for t in defended["time_to_event_s"]["each"])  # from the person's first clean sighting


@needs_torch
def test_clean_footage_raises_no_evasion_alert(result: dict[str, Any]) -> None:
    clean = result["clean_pass"]
    assert clean["false_evasion_alerts"] == 0 and clean["false_evasion_alerts_per_hour"] == 0.0
    assert clean["clips"][0]["person_events"] == 2 and clean["clips"][0]["second_opinion_checks"] > 0
    # a random patch is no attack on the model either: nothing to suspect
    assert result["conditions"]["random"]["defence"]["evasion_alerts"] == 0


@needs_torch
def test_the_result_goes_into_metrics_json(result: dict[str, Any]) -> None:
    assert json.loads(json.dumps(result)) == result
    assert result["ground_truth"].startswith("pseudo")
    assert result["patch"]["trained"] is True and result["patch"]["steps"] == 30
    assert len(result["per_person"]) == 2
    assert all(p["patch_defended"]["raised"] for p in result["per_person"])


def test_the_report_shows_events_without_and_with_the_defence(result: dict[str, Any]) -> None:
    from trustcam.assess.report import _video_attack_section

    page = "".join(_video_attack_section(result))
    patch = result["conditions"]["patch"]
    assert "Video patch attack" in page and "pseudo" in page
    assert f"{patch['defence']['events']}/{patch['defence']['clips']}" in page
    assert ("met" if result["goal"]["met"] else "NOT met") in page


def test_box_between_analysed_frames_is_interpolated() -> None:
    person = va.PersonTrack(Path("x.mp4"), 1, {1.0: (0, 0, 10, 20), 2.0: (10, 0, 20, 20)})
    assert person.box_at(1.5) == (5.0, 0.0, 15.0, 20.0)
    assert person.box_at(2.0) == (10, 0, 20, 20)
    assert person.box_at(0.5) is None and person.box_at(2.5) is None


def test_bad_arguments_are_refused(person_video: Path, yolox: Detector, nanodet: Detector) -> None:
    with pytest.raises(ValueError, match="unknown condition"):
        va.video_patch_attack([person_video], Settings(), camera(), yolox, nanodet, conditions=("pgd",))
    with pytest.raises(ValueError, match="same model"):
        va.video_patch_attack([person_video], Settings(), camera(), yolox, yolox)
    with pytest.raises(ValueError, match="no person event"):  # nobody walks in during the first 3 s
        va.video_patch_attack([person_video], Settings(), camera(), yolox, nanodet, until_s=3.0)
