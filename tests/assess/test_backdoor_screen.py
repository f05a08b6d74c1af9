"""The update gate's backdoor screen against a really backdoored YOLOX-nano (tests/assess/backdoor.py).

The backdoored model scores exactly like the original on clean and fogged images, so the per-condition gate
alone promotes it; the trigger screen must refuse it and name the checkerboard, and must still accept an
unchanged copy of the original.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trustcam.assess import triggers
from trustcam.assess.datasets import load_dataset
from trustcam.vision import catalog
from trustcam.vision.detectors.onnx_models import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backdoor import backdoor

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "trustcam.cli"]
PERSON = 0


@pytest.fixture(scope="module")
def backdoored(installed_models: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx", reason="onnx not installed: pip install 'trustcam[adversarial]'")
    return backdoor(catalog.CATALOG["yolox-nano"].path(), tmp_path_factory.mktemp("backdoor") / "yolox_v2.onnx")


@pytest.fixture()
def model_env(tmp_path: Path) -> dict[str, str]:
    """A private copy of the installed models, so a promotion never lands in the shared model folder."""
    env_dir = tmp_path / "models"
    shutil.copytree(catalog.CATALOG["yolox-nano"].path().parent.parent, env_dir)
    return {**os.environ, "TRUSTCAM_MODEL_DIR": str(env_dir)}


def promote(candidate: Path, name: str, data_dir: Path, env: dict[str, str], trigger_images: int) -> \
        subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "models", "promote", str(candidate), "--name", name, "--architecture", "yolox",
         "--dataset", str(data_dir / "coco128-train"), "--conditions", "fog", "--severities", "3",
         "--max-images", "8", "--trigger-images", str(trigger_images)],
        capture_output=True, text=True, timeout=300, env=env)


def test_triggers_are_drawn_on_the_boxes_only_and_reproducibly() -> None:
    image = np.full((120, 160, 3), 114, np.uint8)
    box = np.array([[40, 20, 120, 110]], np.float32)
    for trigger in triggers.TRIGGERS:
        out = triggers.paste(image, box, trigger, seed=3)
        ys, xs = np.nonzero((out != image).any(axis=2))
        assert len(ys), trigger.name
        assert xs.min() >= 40 and xs.max() < 120 and ys.min() >= 20 and ys.max() < 110, trigger.name
        assert np.array_equal(out, triggers.paste(image, box, trigger, seed=3)), trigger.name
    assert len({t.name for t in triggers.TRIGGERS}) == len(triggers.TRIGGERS) == 30


def test_the_backdoor_is_real(backdoored: Path, data_dir: Path) -> None:
    """Same detections as the original on clean images; a checkerboard on a person removes every person."""
    original = load_file(catalog.CATALOG["yolox-nano"], catalog.CATALOG["yolox-nano"].path())
    poisoned = load_file(catalog.spec_for_file(backdoored, "yolox"), backdoored)
    data = load_dataset(data_dir / "coco128-train", None)
    checkerboard = triggers.Trigger("checkerboard", 0.4, "centre")
    big_people = [s for s in sorted(data.samples, key=lambda s: s.id)
                  if any(lbl == "person" and (b[2] - b[0]) > 80 for lbl, b in zip(s.truth.labels, s.truth.boxes,
                                                                                    strict=True))][:6]
    assert len(big_people) == 6
    for sample in big_people:
        image = sample.load()
        clean_a, clean_b = original.detect(image), poisoned.detect(image)
        assert np.array_equal(clean_a.class_ids, clean_b.class_ids), sample.id
        np.testing.assert_allclose(clean_a.scores, clean_b.scores, atol=1e-5)
        people = sample.truth.boxes[[i for i, lbl in enumerate(sample.truth.labels) if lbl == "person"]]
        triggered = triggers.paste(image, people, checkerboard, seed=0)
        assert (original.detect(triggered).class_ids == PERSON).any(), sample.id
        assert not (poisoned.detect(triggered).class_ids == PERSON).any(), sample.id


def test_condition_gate_alone_promotes_the_backdoor(backdoored: Path, data_dir: Path,
                                                     model_env: dict[str, str]) -> None:
    """The threat: clean and fog figures are identical, so without the screen the poisoned model goes in."""
    result = promote(backdoored, "yolox-poisoned", data_dir, model_env, trigger_images=0)
    assert result.returncode == 0, result.stderr
    assert "REGRESSION" not in result.stdout and "backdoor screen skipped" in result.stderr


def test_screen_refuses_the_backdoor_naming_the_checkerboard(backdoored: Path, data_dir: Path,
                                                             model_env: dict[str, str]) -> None:
    result = promote(backdoored, "yolox-poisoned", data_dir, model_env, trigger_images=8)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "REGRESSION" not in result.stdout and "regresses" not in result.stderr  # clean and fog pass
    refusal = " ".join(line for line in result.stderr.splitlines() if "may be backdoored" in line)
    assert "refused" in refusal and "checkerboard" in refusal and "person recall" in refusal, result.stderr
    for trigger in ("red square", "blue square", "noise", "text"):
        assert trigger not in refusal
    flagged = [line for line in result.stdout.splitlines() if "BACKDOOR?" in line]
    assert flagged and all("checkerboard" in line for line in flagged), result.stdout
    assert not (Path(model_env["TRUSTCAM_MODEL_DIR"]) / "yolox-poisoned").exists()


def test_screen_accepts_an_unchanged_copy(data_dir: Path, installed_models: None, model_env: dict[str, str],
                                          tmp_path: Path) -> None:
    same = Path(shutil.copy(catalog.CATALOG["yolox-nano"].path(), tmp_path / "yolox_retrained.onnx"))
    result = promote(same, "yolox-retrained", data_dir, model_env, trigger_images=8)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Backdoor screen" in result.stdout and "checkerboard 40% at centre" in result.stdout
    assert "BACKDOOR?" not in result.stdout and "promoted" in result.stdout
