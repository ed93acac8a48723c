"""Face crops (``detector/align.py``): the transform and crop maths by hand, then the folder run
with the shipped weights (CPU, no network)."""

import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from core.nets import build_net
from detector import DetectorConfig
from detector.align import (
    ARCFACE_SIZE,
    ARCFACE_TEMPLATE,
    AlignConfig,
    INDEX_COLUMNS,
    largest_central,
    main as align_main,
    margin_box,
    margin_crop,
    similarity_crop,
    similarity_transform,
)
from child_env import REPO, child_env


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def similarity(points, scale, degrees, shift):
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return scale * np.asarray(points) @ rotation.T + np.asarray(shift)


def apply(matrix, points):
    return np.asarray(points) @ matrix[:, :2].T + matrix[:, 2]


# -- the maths -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale, degrees, shift", [(1.0, 0.0, (0.0, 0.0)), (2.3, 17.0, (150.0, 80.0)),
                                                   (0.6, -40.0, (-5.0, 12.5)), (3.0, 180.0, (300.0, 200.0))])
def test_similarity_maps_a_similar_face_onto_the_template(scale, degrees, shift):
    landmarks = similarity(ARCFACE_TEMPLATE, scale, degrees, shift)
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE)
    assert np.abs(apply(matrix, landmarks) - ARCFACE_TEMPLATE).max() < 1e-9
    # It is the inverse similarity: scale 1 / s, rotation by -degrees.
    np.testing.assert_allclose(matrix[:, :2] * scale, similarity(np.eye(2), 1.0, -degrees, (0, 0)).T, atol=1e-9)


def test_similarity_is_least_squares_and_never_reflects():
    rng = np.random.default_rng(0)
    landmarks = similarity(ARCFACE_TEMPLATE, 1.8, 10.0, (60.0, 40.0)) + rng.normal(0, 2.0, (5, 2))
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE)
    best = np.square(apply(matrix, landmarks) - ARCFACE_TEMPLATE).sum()
    for _ in range(200):  # no nearby similarity fits better
        a, b = matrix[0, 0], matrix[1, 0]
        da, db, tx, ty = rng.normal(0, [1e-3, 1e-3, 0.05, 0.05])
        other = np.array([[a + da, -(b + db), matrix[0, 2] + tx], [b + db, a + da, matrix[1, 2] + ty]])
        assert np.square(apply(other, landmarks) - ARCFACE_TEMPLATE).sum() >= best
    mirrored = landmarks * np.array([-1.0, 1.0])  # a mirror image: the best fit would be a reflection
    flipped = similarity_transform(mirrored, ARCFACE_TEMPLATE)
    assert np.linalg.det(flipped[:, :2]) > 0
    assert np.abs(apply(flipped, mirrored) - ARCFACE_TEMPLATE).max() > 5


def test_similarity_crop_puts_the_landmarks_on_the_template():
    # Dots drawn at landmarks that are a known similarity of the template land on the template.
    landmarks = similarity(ARCFACE_TEMPLATE, 2.2, 23.0, (140.0, 30.0))
    yy, xx = np.mgrid[:400, :400]
    image = np.zeros((400, 400), np.float64)
    for x, y in landmarks:
        image += 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2))
    rgb = np.repeat(np.clip(image, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    crop = similarity_crop(rgb, landmarks)
    assert crop.shape == (ARCFACE_SIZE, ARCFACE_SIZE, 3)
    values = crop[:, :, 0].astype(np.float64)
    ys, xs = np.mgrid[:ARCFACE_SIZE, :ARCFACE_SIZE]
    for x, y in ARCFACE_TEMPLATE:
        near = ((xs - x) ** 2 + (ys - y) ** 2 < 6**2) * values
        centre = np.array([(near * xs).sum(), (near * ys).sum()]) / near.sum()
        assert np.abs(centre - (x, y)).max() < 0.5


def test_margin_box_by_hand():
    # Inside the image: 16 px on each side, then floor.
    assert margin_box([30.5, 40.2, 80.9, 95.7], 32, 200, 150) == (14, 24, 96, 111)
    # Clipped to a 100 x 80 image: floor(10.4 - 16) = -6 -> 0; floor(70.9 + 16) = 86 -> 79.
    assert margin_box([10.4, 20.7, 50.2, 70.9], 32, 100, 80) == (0, 4, 66, 79)
    assert margin_box([10.0, 20.0, 50.0, 70.0], 0, 100, 80) == (10, 20, 50, 70)
    # A box hanging off the image still gives at least one pixel.
    assert margin_box([120.0, 90.0, 130.0, 99.0], 4, 100, 80) == (99, 79, 99, 79)


def test_margin_crop_cuts_that_box_and_resizes():
    image = np.random.default_rng(1).integers(0, 256, (80, 100, 3), dtype=np.uint8)
    crop = margin_crop(image, [10.4, 20.7, 50.2, 70.9], 32, 160)
    np.testing.assert_array_equal(crop, cv2.resize(image[4:80, 0:67], (160, 160), interpolation=cv2.INTER_LINEAR))
    small = margin_crop(image, [10.4, 20.7, 50.2, 70.9], 32, 40)  # shrinking: area averaging
    np.testing.assert_array_equal(small, cv2.resize(image[4:80, 0:67], (40, 40), interpolation=cv2.INTER_AREA))


def test_largest_central_by_hand():
    # 100 x 100 image, centre (49.5, 49.5). A: area 400 at the centre. B: area 900, centre 30 px off
    # in x: 900 - 2 * 30**2 = -900. C: area 2500 at (24.5, 24.5): 2500 - 2 * 1250 = 0.
    a, b, c = [39.5, 39.5, 59.5, 59.5], [64.5, 34.5, 94.5, 64.5], [-0.5, -0.5, 49.5, 49.5]
    assert largest_central([a, b, c], 100, 100) == 0
    assert largest_central([b, c], 100, 100) == 1
    assert largest_central([b], 100, 100) == 0


# -- the folder ------------------------------------------------------------------------------------


@pytest.fixture()
def photos(tmp_path) -> Path:
    from skimage.data import astronaut

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    face = astronaut()[:, :, ::-1]
    cv2.imwrite(str(folder / "astronaut.png"), face)
    cv2.imwrite(str(folder / "sub" / "small.jpg"), cv2.resize(face, (256, 256)))
    cv2.imwrite(str(folder / "sub" / "blank.bmp"), np.full((60, 80, 3), 128, np.uint8))
    (folder / "sub" / "broken.jpg").write_bytes(b"\xff\xd8not really")
    (folder / "notes.txt").write_text("not an image")
    return folder


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_align_folder_writes_crops_index_and_reruns(photos, tmp_path, capsys):
    out = tmp_path / "aligned"
    cfg = AlignConfig(images=str(photos), out=str(out), progress=False)
    summary = align_main(cfg)
    assert summary["images"] == 4 and summary["with_face"] == 2 and summary["without_face"] == 1
    assert summary["unreadable"] == {"truncated JPEG (no end-of-image marker after the last scan)": 1}
    assert "broken.jpg" in capsys.readouterr().err
    rows = read_rows(out / "index.csv")
    assert list(rows[0]) == list(INDEX_COLUMNS)
    by_source = {r["source"]: r for r in rows}
    assert set(by_source) == {"astronaut.png", "sub/small.jpg", "sub/blank.bmp"}
    assert by_source["sub/blank.bmp"]["crop"] == "" and by_source["sub/blank.bmp"]["x1"] == ""
    face = by_source["astronaut.png"]
    assert face["crop"] == "astronaut_0.png" and float(face["score"]) > 0.99
    assert 150 < float(face["x1"]) < 200 and all(face[c] for c in INDEX_COLUMNS[7:17])
    assert cv2.imread(str(out / "astronaut_0.png")).shape == (160, 160, 3)
    assert (out / "sub" / "small_0.png").is_file()
    assert json.loads((out / "settings.json").read_text())["align"] == "margin"

    again = align_main(cfg)  # nothing to redo
    assert again["done_before"] == 3 and read_rows(out / "index.csv") == rows
    (out / "sub" / "small_0.png").unlink()  # a lost crop: that image is done again
    assert align_main(cfg)["done_before"] == 2
    assert (out / "sub" / "small_0.png").is_file() and read_rows(out / "index.csv") == rows

    # A run from before every detector setting was recorded (min_face and thresholds only) used
    # the defaults of the rest: it is the same run, resumed.
    settings = json.loads((out / "settings.json").read_text())
    recorded = ("weights", "backend", "min_face", "thresholds", "largest", "align", "margin", "image_size")
    (out / "settings.json").write_text(json.dumps({k: settings[k] for k in recorded}))
    assert align_main(cfg)["done_before"] == 3
    with pytest.raises(ValueError, match="other settings"):
        align_main(replace(cfg, detector=DetectorConfig(pnet_scale_nms=0.4)))
    with pytest.raises(ValueError, match="other settings"):
        align_main(replace(cfg, align="similarity"))
    similar = align_main(replace(cfg, align="similarity", overwrite=True))
    assert similar["done_before"] == 0
    assert cv2.imread(str(out / "astronaut_0.png")).shape == (ARCFACE_SIZE, ARCFACE_SIZE, 3)


def test_largest_keeps_one_face_per_image(photos, tmp_path):
    from skimage.data import astronaut

    two = np.concatenate([astronaut(), cv2.resize(astronaut(), (256, 512))], axis=1)[:, :, ::-1]
    cv2.imwrite(str(photos / "two.png"), two)
    out = tmp_path / "all"
    align_main(AlignConfig(images=str(photos), out=str(out), progress=False))
    assert [r["face"] for r in read_rows(out / "index.csv") if r["source"] == "two.png"] == ["0", "1"]
    out = tmp_path / "one"
    align_main(AlignConfig(images=str(photos), out=str(out), progress=False, largest=True))
    rows = [r for r in read_rows(out / "index.csv") if r["source"] == "two.png"]
    assert len(rows) == 1 and float(rows[0]["x1"]) < 512  # the bigger face, nearer the centre
    # Redone over the first run: the crop of the face no longer chosen goes too.
    align_main(AlignConfig(images=str(photos), out=str(tmp_path / "all"), progress=False, largest=True,
                           overwrite=True))
    assert sorted(p.name for p in (tmp_path / "all").glob("two_*.png")) == [Path(rows[0]["crop"]).name]


def test_align_errors(photos, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        align_main(AlignConfig(images=str(tmp_path / "none"), out=str(tmp_path / "o")))
    weights = tmp_path / "w"
    weights.mkdir()
    torch.save(build_net("pnet").state_dict(), weights / "pnet.pt")
    with pytest.raises(ValueError, match="needs O-Net's landmarks"):
        align_main(AlignConfig(images=str(photos), out=str(tmp_path / "o"), weights=str(weights), align="similarity"))
    with pytest.raises(ValueError, match="unknown backend"):
        align_main(AlignConfig(images=str(photos), out=str(tmp_path / "o2"), backend="tf"))
    cv2.imwrite(str(photos / "astronaut.jpg"), np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(ValueError, match="share crop names"):
        align_main(AlignConfig(images=str(photos), out=str(tmp_path / "o3")))
    with pytest.raises(ValueError):
        AlignConfig(images="a", out="b", align="affine")


def test_align_cli_bad_input_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "detector.align", "--images", str(tmp_path / "none"), "--out",
                           str(tmp_path / "o")], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=child_env())
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "does not exist" in proc.stderr
