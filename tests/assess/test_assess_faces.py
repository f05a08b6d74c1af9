"""`trustcam assess --faces` on real LFW photos (faces-id), and the arithmetic behind its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from trustcam.assess.faces import (
    _measure,
    _scores,
    _tar_at,
    _weights,
    calibrated_threshold,
    small_face,
    split_people,
)
from trustcam.cli import app
from trustcam.storage.faces import save_calibration
from trustcam.vision import catalog
from trustcam.vision.faces import YUNET, identity_set

CLI = [sys.executable, "-m", "trustcam.cli"]
PEOPLE = 28  # the held-out split measures 14: 3276 impostor pairs, enough for FMR 1e-2 (30 errors), not 1e-3


@pytest.fixture(scope="module")
def faces_id(data_dir: Path) -> Path:
    return data_dir / "faces-id"


@pytest.fixture(scope="module")
def run(faces_id: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """One seeded CLI run: 28 people, small_faces and jpeg at severity 5, a camera asking for FMR 1e-2."""
    catalog.install(catalog.ASSETS[YUNET], allow_download=False)
    tmp = tmp_path_factory.mktemp("assess-faces")
    config = tmp / "config.yaml"
    config.write_text(f"data_dir: {tmp / 'data'}\nserver: {{enabled: false}}\n"
                      "cameras:\n  door:\n    source: door.mp4\n    faces: {enabled: true, target_fmr: 0.01}\n")
    out = tmp / "out"
    result = subprocess.run(
        [*CLI, "assess", "--faces", str(faces_id), "--identities", str(PEOPLE), "--conditions", "small_faces,jpeg",
         "--severities", "5", "--bootstrap", "100", "--config", str(config), "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stderr and "Traceback" not in result.stderr
    return json.loads((out / "metrics.json").read_text())["faces"], out


def test_clean_figures_are_sane_with_intervals(run: tuple[dict, Path]) -> None:
    f, _ = run
    c = f["clean"]
    assert f["threshold"]["target_fmr"] == 0.01  # the camera's faces.target_fmr
    assert f["threshold"]["source"] == "held-out split"
    assert f["measured"]["people"] + f["threshold"]["calibration"]["identities"] == PEOPLE  # no person on both sides
    tar = c["tar_at_fmr"]["0.01"]
    assert tar["supported"] and 0 < tar["tar"] <= 1 and tar["fmr"] <= 0.01
    assert tar["ci"][0] <= tar["tar"] <= tar["ci"][1]
    assert c["tar_at_fmr"]["0.001"]["tar"] is None and not c["tar_at_fmr"]["0.001"]["supported"]
    assert "impostor pairs" in c["tar_at_fmr"]["0.001"]["note"]
    assert c["rank1"] >= 0.9 and c["failure_to_acquire"] == 0.0
    for key in ("rank1", "fnmr", "fmr"):
        lo, hi = c["ci"][key]
        assert 0 <= lo <= c[key] <= hi <= 1, key
    assert c["genuine_pairs"] == 14 * 15 and c["impostor_pairs"] == 84 * 83 // 2 - 14 * 15
    assert c["probes"] == 14 * 5  # first image of each person enrolled, the other five probe


def test_degraded_probes_lower_recognition(run: tuple[dict, Path]) -> None:
    f, _ = run
    clean = f["clean"]
    small = f["conditions"]["small_faces"]["severities"]["5"]
    assert small["median_face_px"] is None or small["median_face_px"] <= 20  # the faces really were shrunk
    assert small["rank1"] < clean["rank1"] - 0.1
    jpeg = f["conditions"]["jpeg"]["severities"]["5"]
    assert jpeg["rank1"] < clean["rank1"] or jpeg["tar_at_fmr"]["0.01"]["tar"] < clean["tar_at_fmr"]["0.01"]["tar"]
    assert set(f["conditions"]) == {"small_faces", "jpeg"}


def test_groups_and_their_gap(run: tuple[dict, Path]) -> None:
    f, out = run
    g = f["groups"]
    assert set(g["groups"]) == {"female", "male"}
    fnmr = [r["fnmr"] for r in g["groups"].values()]
    assert g["gaps"]["fnmr"]["gap"] == pytest.approx(max(fnmr) - min(fnmr))
    assert sum(r["people"] for r in g["groups"].values()) == f["measured"]["people"]
    page = (out / "report.html").read_text()
    assert "<h2>Faces</h2>" in page and "Largest gap between groups" in page and "small_faces" in page


def test_figures_match_a_hand_computation() -> None:
    """Three people, two photos each, on a line, so every figure can be counted by hand."""
    v = np.zeros((6, 128))
    v[:, 0] = [0.0, 0.3, 1.0, 2.1, 3.0, 3.2]  # person 0: 0.0 and 0.3; person 1: 1.0 and 2.1; person 2: 3.0 and 3.2
    ident = np.array([0, 0, 1, 1, 2, 2])
    gallery = np.array([True, False, True, False, True, False])  # the first photo of each person is enrolled
    s = _scores(v, ident, gallery, 3)
    w = np.array([[1.0, 1.0, 1.0], [2.0, 1.0, 0.0]])  # each person once; one resample: person 0 twice, 2 left out
    m = _measure(s, 0.5, w, np.full(6, 100.0))
    assert m["genuine_pairs"] == 3 and m["impostor_pairs"] == 12
    assert m["fnmr"] == pytest.approx(1 / 3)  # genuine 0.3, 1.1, 0.2: person 1's pair is over 0.5
    assert m["fmr"] == 0.0  # the closest impostor pair is 0.3 to 1.0 = 0.7
    assert m["rank1"] == pytest.approx(2 / 3)  # probe 2.1 is nearer person 2's 3.0 (0.9) than its own 1.0 (1.1)
    assert m["ci"]["rank1"] == pytest.approx([2 / 3, 2 / 3])  # weights 2 (right) and 1 (wrong)
    assert m["ci"]["fnmr"] == pytest.approx([1 / 3, 1 / 3])  # weights 2 (match) and 1 (non-match)
    # 12 impostor pairs, FMR 1/12: the closest (0.7) may match, the next (0.9) not: threshold 0.8, TAR 2/3
    tar, threshold, reached = _tar_at(s, 1 / 12, w[0])
    assert (tar, threshold, reached) == pytest.approx((2 / 3, 0.8, 1 / 12))
    assert not m["tar_at_fmr"]["0.01"]["supported"] and m["tar_at_fmr"]["0.01"]["tar"] is None


def test_missing_face_counts_as_an_error() -> None:
    v = np.zeros((4, 128))
    v[:, 0] = [0.0, 0.1, 5.0, np.nan]
    s = _scores(v, np.array([0, 0, 1, 1]), np.array([True, False, True, False]), 2)
    m = _measure(s, 0.5, _weights(2, 0, 0), np.array([1.0, 1.0, 1.0, np.nan]))
    assert m["failure_to_acquire"] == 0.5 and m["rank1"] == 0.5 and m["fnmr"] == 0.5 and m["fmr"] == 0.0


def test_bootstrap_resamples_people_not_pairs() -> None:
    w = _weights(5, 200, 1)
    assert w.shape == (201, 5) and (w[0] == 1).all()
    assert (w[1:].sum(axis=1) == 5).all()  # each draw picks five people, some twice


def test_threshold_comes_from_another_datasets_calibration_only(faces_id: Path, tmp_path: Path) -> None:
    threshold, why = calibrated_threshold(tmp_path, 1e-3, faces_id)
    assert threshold is None and "no calibration" in why
    record = {"target_fmr": 1e-3, "threshold": 0.55, "fmr": 1e-3, "fnmr": 0.1, "supported": True}
    save_calibration(tmp_path, {**record, "dataset": str(tmp_path / "site-faces")})
    threshold, _ = calibrated_threshold(tmp_path, 1e-3, faces_id)
    assert threshold is not None and threshold.value == 0.55 and threshold.source == "calibration"
    save_calibration(tmp_path, {**record, "dataset": str(faces_id)})
    threshold, why = calibrated_threshold(tmp_path, 1e-3, faces_id / "lfw_original_150")  # same photos, other crop
    assert threshold is None and "the assessed dataset" in why


def test_split_is_disjoint_and_balanced_per_group(faces_id: Path) -> None:
    images = identity_set(faces_id)
    calibration, measured = split_people(images, seed=0)
    a, b = {i.identity for i in calibration}, {i.identity for i in measured}
    assert not a & b and len(a) == 62 and len(b) == 64  # 63 women and 63 men: 31 + 31 calibrate, 32 + 32 measured
    assert sum(i.group == "female" for i in calibration) == 31 * 6
    assert split_people(images, seed=0) == (calibration, measured)


def test_small_face_keeps_the_frame_and_shrinks_the_face() -> None:
    image = np.full((250, 250, 3), 200, np.uint8)
    image[70:180, 70:180] = 20  # a 110 px "face"
    out = small_face(image, 22, 110.0)
    assert out.shape == image.shape
    assert int((out[:, :, 0] < 100).sum()) == pytest.approx(22 * 22, rel=0.25)


def test_cli_refuses_what_it_cannot_measure(faces_id: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    neither = runner.invoke(app, ["assess", "--out", str(tmp_path)])
    assert neither.exit_code == 2 and "--faces" in neither.output
    attacks = runner.invoke(app, ["assess", "--faces", str(faces_id), "--attacks", "pgd", "--out", str(tmp_path)])
    assert attacks.exit_code == 2 and "--dataset" in attacks.output
    unknown = runner.invoke(app, ["assess", "--faces", str(faces_id), "--conditions", "tiny", "--out", str(tmp_path)])
    assert unknown.exit_code == 1 and "small_faces" in unknown.output
