"""Dataset loading on real data: coco128 as YOLO, the same labels as COCO JSON, a MOT sequence cut from a real
video; and every malformed label refused with an error that names the file and line."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from trustcam.assess.datasets import Dataset, DatasetError, GroundTruth, Sample, load_dataset
from trustcam.vision.labels import COCO_LABELS

ORPHANS = ("000000000656.txt", "000000000659.txt")
NEGATIVES = ("images/000000000250.jpg", "images/000000000508.jpg")


@pytest.fixture(scope="module")
def coco128(data_dir: Path) -> Dataset:
    return load_dataset(data_dir / "coco128-train")


# ------------------------------------------------------------------------------------------------ YOLO


def test_coco128_loads_as_yolo(coco128: Dataset, data_dir: Path) -> None:
    assert coco128.format == "yolo"
    assert coco128.root == data_dir / "coco128-train"
    assert len(coco128.samples) == 128, "128 images: 126 with a label file and 2 true negatives"
    assert sum(len(s.truth) > 0 for s in coco128.samples) == 126
    assert sum(s.truth.labels.count("person") for s in coco128.samples) == 254
    assert sorted(s.id for s in coco128.samples if len(s.truth) == 0) == list(NEGATIVES)
    assert sorted(Path(w.split(":")[0]).name for w in coco128.warnings) == list(ORPHANS)
    assert all("no image" in w for w in coco128.warnings)
    assert len({s.id for s in coco128.samples}) == 128
    assert coco128.fps == {} and coco128.sequences == {}
    assert all(label in COCO_LABELS for s in coco128.samples for label in s.truth.labels)
    assert not any(s.truth.ignore.any() for s in coco128.samples)


def test_coco128_boxes_in_pixels(coco128: Dataset) -> None:
    # 000000000036.jpg: one person under an umbrella, label box about (168, 163, 478, 628) in a 481x640 image
    sample = next(s for s in coco128.samples if s.id == "images/000000000036.jpg")
    image = sample.load()
    assert image.dtype == np.uint8 and image.shape == (640, 481, 3)
    person = sample.truth.boxes[list(sample.truth.labels).index("person")]
    np.testing.assert_allclose(person, [168, 163, 478, 628], atol=2)
    assert sample.truth.boxes.dtype == np.float32 and sample.truth.ignore.dtype == bool
    for s in coco128.samples[:20]:
        h, w = s.load().shape[:2]
        assert (s.truth.boxes >= 0).all() and (s.truth.boxes[:, [0, 2]] <= w).all()
        assert (s.truth.boxes[:, [1, 3]] <= h).all()


def _tiny_image(path: Path, width: int = 64, height: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), 127, np.uint8))
    return path


def test_yolo_ultralytics_layout_names_and_aliases(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    for split in ("train", "val"):
        _tiny_image(root / "images" / split / "a.jpg")
        (root / "labels" / split).mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.5 0.5\n\n")
    (root / "labels" / "val" / "a.txt").write_text("2 0.5 0.5 1.0 1.0\n3 0.5 0.5 0.2 0.2\n4 0.5 0.5 0.1 0.1\n")
    (root / "data.yaml").write_text("names: {0: person, 1: motorbike, 2: tvmonitor, 3: unicorn, 4: pottedplant}\n")
    data = load_dataset(root)
    assert data.format == "yolo"
    by_id = {s.id: s for s in data.samples}
    assert list(by_id) == ["images/train/a.jpg", "images/val/a.jpg"]
    assert by_id["images/train/a.jpg"].truth.labels == ("person", "motorcycle")
    assert by_id["images/val/a.jpg"].truth.labels == ("tv", "unicorn", "potted plant")
    np.testing.assert_allclose(by_id["images/train/a.jpg"].truth.boxes, [[16, 12, 48, 36], [0, 0, 32, 24]])
    np.testing.assert_allclose(by_id["images/val/a.jpg"].truth.boxes[0], [0, 0, 64, 48])
    (root / "data.yaml").write_text("names: [person, sofa, aeroplane, diningtable, tvmonitor]\n")
    renamed = load_dataset(root, "yolo").samples
    assert renamed[0].truth.labels == ("person", "couch")
    assert renamed[1].truth.labels == ("airplane", "dining table", "tv")


BAD_YOLO_LINES = [
    ("0 0.5 0.5 0.2", "expected 5 fields"),
    ("0 0.5 0.5 0.2 0.2 0.1", "expected 5 fields"),
    ("0 0.5 abc 0.2 0.2", "not a number"),
    ("80 0.5 0.5 0.2 0.2", "not an index 0..79"),
    ("-1 0.5 0.5 0.2 0.2", "not an index"),
    ("1.5 0.5 0.5 0.2 0.2", "not an index"),
    ("0 1.2 0.5 0.2 0.2", "outside 0..1"),
    ("0 0.5 0.5 0.2 35", "outside 0..1"),
    ("0 0.5 0.5 0 0.2", "not positive"),
    ("0 0.5 0.5 0.2 -0.1", "not positive"),
    ("0 0.5 0.5 nan 0.2", "non-finite"),
]


@pytest.mark.parametrize(("line", "problem"), BAD_YOLO_LINES)
def test_malformed_yolo_line_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    _tiny_image(tmp_path / "images" / "a.jpg")
    label = tmp_path / "labels" / "a.txt"
    label.parent.mkdir()
    label.write_text(f"0 0.5 0.5 0.2 0.2\n{line}\n")
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path)
    assert f"{label}:2: " in str(err.value) and problem in str(err.value)


def test_yolo_tolerates_rounding_just_outside_the_image(tmp_path: Path) -> None:
    _tiny_image(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 1.005 1.0\n")
    np.testing.assert_allclose(load_dataset(tmp_path).samples[0].truth.boxes, [[0, 0, 64, 48]])


def test_unreadable_image_is_a_dataset_error(tmp_path: Path) -> None:
    _tiny_image(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels").mkdir()
    data = load_dataset(tmp_path)
    (tmp_path / "images" / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=re.escape("a.jpg: cannot read")):
        data.samples[0].load()
    with pytest.raises(DatasetError, match=re.escape("a.jpg: cannot read")):
        load_dataset(tmp_path)


def test_labels_that_mirror_no_image_are_refused(tmp_path: Path) -> None:
    _tiny_image(tmp_path / "images" / "train" / "a.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DatasetError, match=re.escape("labels: no label file matches an image")):
        load_dataset(tmp_path)


def test_bad_yaml_names(tmp_path: Path) -> None:
    _tiny_image(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "data.yaml").write_text("names: {0: person, 2: car}\n")
    with pytest.raises(DatasetError, match=re.escape("data.yaml: names: indices must be 0..1")):
        load_dataset(tmp_path)


# ------------------------------------------------------------------------------------------------ COCO


def _write_coco(dataset: Dataset, folder: Path, crowd_sample: str) -> Path:
    """The YOLO dataset as COCO JSON (category ids deliberately not COCO-80 indices), one box a crowd."""
    (folder / "annotations").mkdir(parents=True)
    os.symlink(dataset.root / "images", folder / "images")
    categories = [{"id": 100 + k, "name": name} for k, name in enumerate(COCO_LABELS)]
    images, annotations = [], []
    for i, sample in enumerate(dataset.samples):
        images.append({"id": i + 7, "file_name": sample.path.name, "width": 0, "height": 0})
        for j, (box, label) in enumerate(zip(sample.truth.boxes.tolist(), sample.truth.labels, strict=True)):
            x1, y1, x2, y2 = box
            annotations.append({"id": len(annotations) + 1, "image_id": i + 7,
                                "category_id": 100 + COCO_LABELS.index(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1), "iscrowd": int(sample.id == crowd_sample and j == 0)})
    path = folder / "annotations" / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def test_coco_json_loads_identical_boxes(coco128: Dataset, tmp_path: Path) -> None:
    crowd = "images/000000000036.jpg"
    json_path = _write_coco(coco128, tmp_path / "coco", crowd)
    for data in (load_dataset(tmp_path / "coco"), load_dataset(json_path), load_dataset(json_path, "coco")):
        assert data.format == "coco"
        assert [s.id for s in data.samples] == [s.id for s in coco128.samples]
        for mine, theirs in zip(data.samples, coco128.samples, strict=True):
            assert mine.path.resolve() == theirs.path.resolve()
            assert mine.truth.labels == theirs.truth.labels
            np.testing.assert_allclose(mine.truth.boxes, theirs.truth.boxes, atol=1e-3)
            expected = np.zeros(len(theirs.truth), bool)
            if mine.id == crowd:
                expected[0] = True
            np.testing.assert_array_equal(mine.truth.ignore, expected)


def _coco_case(tmp_path: Path, annotations: list[dict], **extra: object) -> Path:
    _tiny_image(tmp_path / "images" / "a.jpg")
    path = tmp_path / "data.json"
    data = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": annotations,
            "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "aeroplane"}], **extra}
    path.write_text(json.dumps(data))
    return path


def test_coco_aliases_and_ignore_flags(tmp_path: Path) -> None:
    path = _coco_case(tmp_path, [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4]},
                                 {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "ignore": 1}])
    data = load_dataset(tmp_path)  # a folder with one .json
    assert data.root == tmp_path and data.samples[0].id == "images/a.jpg"
    assert data.samples[0].truth.labels == ("airplane", "person")
    np.testing.assert_array_equal(data.samples[0].truth.ignore, [False, True])
    np.testing.assert_allclose(data.samples[0].truth.boxes, [[1, 2, 4, 6], [1, 2, 4, 6]])
    assert load_dataset(path).samples[0].id == "images/a.jpg"


BAD_COCO = [
    ({"id": 7, "image_id": 1, "category_id": 1}, "annotation id 7: missing bbox"),
    ({"id": 7, "image_id": 1, "bbox": [1, 2, 3, 4]}, "annotation id 7: missing category_id"),
    ({"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3]}, "annotation id 7: bbox [1, 2, 3] is not 4"),
    ({"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, "a", 4]}, "annotation id 7: bbox"),
    ({"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, -3, 4]}, "annotation id 7: bbox [1, 2, -3, 4] has"),
    ({"id": 7, "image_id": 1, "category_id": 9, "bbox": [1, 2, 3, 4]}, "annotation id 7: category_id 9 is not"),
    ({"id": 7, "image_id": 5, "category_id": 1, "bbox": [1, 2, 3, 4]}, "annotation id 7: image_id 5 is not"),
    ({"image_id": 1, "category_id": 1}, "annotations[0]: missing bbox"),
]


@pytest.mark.parametrize(("annotation", "problem"), BAD_COCO)
def test_malformed_coco_annotation_names_file_and_id(tmp_path: Path, annotation: dict, problem: str) -> None:
    path = _coco_case(tmp_path, [annotation])
    with pytest.raises(DatasetError) as err:
        load_dataset(path)
    assert str(err.value).startswith(f"{path}: {problem}")


def test_malformed_coco_file(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(DatasetError, match=re.escape("data.json: missing or non-list 'annotations'")):
        load_dataset(path)
    path.write_text("{not json")
    with pytest.raises(DatasetError, match=re.escape("data.json: not a readable JSON")):
        load_dataset(path)
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "nowhere.jpg"}], "annotations": [],
                                "categories": []}))
    with pytest.raises(DatasetError, match=re.escape("none of the 1 images was found")):
        load_dataset(path)


# ------------------------------------------------------------------------------------------------- MOT

# frame, id, x, y, w, h, flag, class, visibility
GT_LINES = [
    *(f"{f},1,100,50,60,150,1,1,1.0" for f in range(1, 6)),  # a pedestrian in every frame
    *(f"{f},2,300,60,50,140,1,7,1.0" for f in range(1, 4)),  # a static person: ignored
    "2,3,500,80,40,120,1,1,0.1",  # barely visible: ignored
    "3,3,505,80,40,120,1,1,0.8",
    "4,4,200,200,40,100,0,1,1.0",  # flag 0: ignored
    "5,5,400,250,120,80,1,3,1.0",  # a car: labelled, ignored
]


@pytest.fixture(scope="module")
def mot_root(person_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sequences cut from the real video: MOT17-style with seqinfo.ini, and MOT15-style without."""
    root = tmp_path_factory.mktemp("mot")
    for name in ("office-17", "office-15"):
        (root / name / "img1").mkdir(parents=True)
        (root / name / "gt").mkdir()
    with av.open(str(person_video)) as container:
        for number, frame in enumerate(container.decode(video=0), start=1):
            image = frame.to_ndarray(format="bgr24")
            cv2.imwrite(str(root / "office-17" / "img1" / f"{number:06d}.jpg"), image)
            cv2.imwrite(str(root / "office-15" / "img1" / f"{number:06d}.png"), image)
            if number == 5:
                break
    (root / "office-17" / "gt" / "gt.txt").write_text("\n".join(GT_LINES) + "\n")
    (root / "office-17" / "seqinfo.ini").write_text(
        "[Sequence]\nname=office-17\nimDir=img1\nframeRate=10\nseqLength=5\nimWidth=768\nimHeight=432\nimExt=.jpg\n")
    (root / "office-15" / "gt" / "gt.txt").write_text(
        "1,1,10,20,30,40,1,-1,-1,-1\n2,1,12,20,30,40,1,-1,-1,-1\n9,1,12,20,30,40,1,-1,-1,-1\n3,2,5,5,10,10\n")
    return root


def test_mot_sequence_flags_and_fps(mot_root: Path) -> None:
    data = load_dataset(mot_root / "office-17")
    assert data.format == "mot" and data.fps == {"office-17": 10.0} and data.warnings == ()
    assert [s.id for s in data.samples] == [f"office-17/{f:06d}" for f in range(1, 6)]
    assert [s.frame for s in data.sequences["office-17"]] == [1, 2, 3, 4, 5]
    frames = {s.frame: s for s in data.samples}
    assert frames[1].load().shape == (432, 768, 3) and frames[1].sequence == "office-17"

    def rows(sample: Sample) -> dict[int, tuple[str, bool]]:
        t = sample.truth
        return {int(i): (label, bool(ig)) for i, label, ig in zip(t.ids, t.labels, t.ignore, strict=True)}

    assert rows(frames[1]) == {1: ("person", False), 2: ("person", True)}
    assert rows(frames[2]) == {1: ("person", False), 2: ("person", True), 3: ("person", True)}
    assert rows(frames[3]) == {1: ("person", False), 2: ("person", True), 3: ("person", False)}
    assert rows(frames[4]) == {1: ("person", False), 4: ("person", True)}
    assert rows(frames[5]) == {1: ("person", False), 5: ("car", True)}
    np.testing.assert_allclose(frames[1].truth.boxes[0], [100, 50, 160, 200])
    assert frames[1].truth.ids.dtype == np.int64
    # a lower visibility floor keeps the barely visible pedestrian
    low = load_dataset(mot_root / "office-17", min_visibility=0.05)
    assert rows(next(s for s in low.samples if s.frame == 2))[3] == ("person", False)


def test_mot_folder_of_sequences_and_mot15_lines(mot_root: Path) -> None:
    data = load_dataset(mot_root)
    assert data.format == "mot"
    assert list(data.sequences) == ["office-15", "office-17"]
    assert data.fps == {"office-15": 25.0, "office-17": 10.0}, "no seqinfo.ini: 25 fps"
    assert len(data.samples) == 10
    mot15 = data.sequences["office-15"]
    assert mot15[0].path.suffix == ".png"
    assert [(s.truth.labels, s.truth.ignore.tolist()) for s in mot15[:3]] == [
        (("person",), [False]), (("person",), [False]), (("person",), [False])]
    assert len(data.warnings) == 1 and "1 frame(s) have labels but no image" in data.warnings[0]


BAD_MOT = [
    ("1,1,10,20,30", "expected 9 comma-separated fields"),
    ("1,1,10,20,30,40,1,1,1,1,1", "expected 9"),
    ("1,1,10,x,30,40,1,1,1", "not a number"),
    ("0,1,10,20,30,40,1,1,1", "frame 0 is not a 1-based"),
    ("1,1.5,10,20,30,40,1,1,1", "track id 1.5 is not an integer"),
    ("1,2,10,20,0,40,1,1,1", "not positive"),
    ("1,2,10,20,30,40,1,13,1", "class 13 is not a MOTChallenge class"),
    ("1,2,10,20,30,40,1,1,1.7", "visibility 1.7 is outside"),
    ("1,1,10,20,30,40,1,1,1", "track id 1 appears twice in frame 1 (also line 1)"),
]


@pytest.mark.parametrize(("line", "problem"), BAD_MOT)
def test_malformed_mot_line_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    _tiny_image(tmp_path / "seq" / "img1" / "000001.jpg")
    gt = tmp_path / "seq" / "gt" / "gt.txt"
    gt.parent.mkdir()
    gt.write_text(f"1,1,10,20,30,40,1,1,1\n{line}\n")
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path)
    assert f"{gt}:2: " in str(err.value) and problem in str(err.value)


def test_mot_bad_seqinfo_and_missing_frames(tmp_path: Path) -> None:
    (tmp_path / "seq" / "gt").mkdir(parents=True)
    (tmp_path / "seq" / "gt" / "gt.txt").write_text("1,1,10,20,30,40,1,1,1\n")
    with pytest.raises(DatasetError, match=re.escape("img1: no frames named 000001.jpg")):
        load_dataset(tmp_path / "seq")
    _tiny_image(tmp_path / "seq" / "img1" / "000001.jpg")
    (tmp_path / "seq" / "seqinfo.ini").write_text("[Sequence]\nframeRate=fast\n")
    with pytest.raises(DatasetError, match=re.escape("seqinfo.ini: frameRate='fast' is not a positive number")):
        load_dataset(tmp_path / "seq")


# ------------------------------------------------------------------------------------------- detection


def test_unknown_layout_lists_the_expected_ones(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path)
    assert str(tmp_path) in str(err.value)
    for layout in ("YOLO: a folder with images/ and labels/", "COCO: a .json file", "MOTChallenge: a sequence"):
        assert layout in str(err.value)
    with pytest.raises(DatasetError, match=re.escape("no such file or folder")):
        load_dataset(tmp_path / "missing")
    with pytest.raises(DatasetError, match=re.escape("unknown dataset format 'voc'")):
        load_dataset(tmp_path, "voc")
    with pytest.raises(DatasetError, match=re.escape("images/ is missing")):
        load_dataset(tmp_path, "yolo")


def test_format_detection(tmp_path: Path, mot_root: Path) -> None:
    yolo = tmp_path / "yolo"
    _tiny_image(yolo / "images" / "a.jpg")
    (yolo / "labels").mkdir()
    assert load_dataset(yolo).format == "yolo"
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    shutil.copytree(yolo / "images", coco / "images")
    (coco / "annotations" / "x.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [], "categories": []}))
    data = load_dataset(coco)
    assert data.format == "coco" and len(data.samples[0].truth) == 0
    assert load_dataset(mot_root / "office-15").format == "mot"


def test_ground_truth_empty() -> None:
    empty = GroundTruth.empty()
    assert len(empty) == 0 and empty.boxes.shape == (0, 4) and empty.ignore.shape == (0,)
