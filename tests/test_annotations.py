"""Tests of the annotation parsers and writers, the stats command and the demo data builder.

Run with ``pytest -q tests/test_annotations.py`` (``-m "not slow"`` skips the real-data test).
Exact counts of the ``tiny_wider`` fixture (conftest: 5 train images, seed 0, edge cases on)
follow from the demo builder's random stream; if the builder changes, update them here.
"""

from __future__ import annotations

import pickle
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotations.errors import AnnotationError
from annotations.landmarks import (
    LANDMARK_COLUMNS,
    format_facepoint_line,
    landmark_holdout_mask,
    load_landmarks,
    parse_celeba,
    parse_facepoint,
    write_facepoint,
)
from annotations.stats import StatsConfig, main as stats_main
from annotations.wider import WIDER_ATTRIBUTES, parse_wider, write_wider_txt
from annotations.wider_mat import SETTINGS, GtImage, load_ground_truth, write_ground_truth
from core.cli import parse_config
from demo.data import DemoConfig, build_demo_dataset

FACE_COLUMNS = ["image", "image_index", "x1", "y1", "w", "h", *WIDER_ATTRIBUTES]
ZEROS = "0 0 0 0 0 0 0 0 0 0"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def assert_error_at(err: AnnotationError, path: Path, line: int | None) -> None:
    assert err.path == str(path)
    assert err.line == line
    prefix = f"{path}:{line}:" if line is not None else f"{path}:"
    assert str(err).startswith(prefix), str(err)


def assert_refused_at(parse: Callable[[], object], path: Path, line: int | None, words: str) -> None:
    """``parse()`` raises an AnnotationError naming ``path`` and ``line`` whose message holds ``words``."""
    with pytest.raises(AnnotationError) as caught:
        parse()
    assert_error_at(caught.value, path, line)
    assert words in str(caught.value)


# ---------------------------------------------------------------- AnnotationError


def test_annotation_error_str_and_pickle():
    err = AnnotationError("a/b.txt", 7, "bad count")
    assert str(err) == "a/b.txt:7: bad count"
    assert isinstance(err, ValueError)
    assert (err.path, err.line, err.message) == ("a/b.txt", 7, "bad count")
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.line == 7
    assert str(AnnotationError(Path("x.txt"), None, "no such file")) == "x.txt: no such file"


# ---------------------------------------------------------------- WIDER: the tiny fixture


def test_tiny_wider_with_images_exact_counts(tiny_wider):
    ann = parse_wider(tiny_wider.train_txt, tiny_wider.train_images)

    assert list(ann.faces.columns) == FACE_COLUMNS
    assert list(ann.all_boxes.columns) == FACE_COLUMNS + ["drop_reason"]
    assert list(ann.images.columns) == ["image", "image_index", "num_faces", "width", "height", "exists"]
    assert len(ann.all_boxes) == 11
    assert len(ann.faces) == 9
    assert ann.dropped == {"degenerate": 1, "invalid": 1, "outside_image": 0, "mostly_outside_image": 0}
    assert ann.clipped == 1
    assert ann.source == str(tiny_wider.train_txt)

    images = ann.images
    assert images["image"].tolist() == [
        "0--Demo/0_Demo_demo_0.jpg",
        "0--Demo/0_Demo_demo_1.jpg",
        "1--Demo/1_Demo_demo_2.jpg",
        "1--Demo/1_Demo_demo_3.jpg",
        "2--Demo/2_Demo_demo_4.jpg",
    ]
    assert images["image_index"].tolist() == [0, 1, 2, 3, 4]
    assert images["num_faces"].tolist() == [3, 1, 2, 3, 0]  # the last one is the 0-face image
    assert images["exists"].all()
    assert (images["width"] == 320).all() and (images["height"] == 240).all()

    # The face hanging off the left border (x1 = -23, w = 71 in the file) is cut to the image.
    first = ann.faces.iloc[0]
    assert (first["x1"], first["y1"], first["w"], first["h"]) == (0, 114, 71 - 23, 77)
    dropped = ann.all_boxes[ann.all_boxes["drop_reason"] != ""]
    assert dropped["drop_reason"].tolist() == ["invalid", "degenerate"]
    assert dropped["invalid"].tolist() == [1, 0]
    assert (dropped["w"] == 0).tolist() == [False, True]
    for column in FACE_COLUMNS[1:]:
        assert ann.faces[column].dtype == np.int64, column
    assert ann.faces["image_index"].tolist() == [0, 0, 0, 1, 2, 2, 3, 3, 3]


def test_tiny_wider_without_images_keeps_file_coordinates(tiny_wider):
    ann = parse_wider(tiny_wider.train_txt)
    assert len(ann.faces) == 9
    assert ann.clipped == 0
    assert ann.dropped == {"degenerate": 1, "invalid": 1, "outside_image": 0, "mostly_outside_image": 0}
    assert (ann.images["width"] == -1).all() and (ann.images["height"] == -1).all()
    assert ann.images["exists"].all()
    assert ann.faces.iloc[0][["x1", "w"]].tolist() == [-23, 71]


def test_val_split_has_no_edge_cases(tiny_wider):
    ann = parse_wider(tiny_wider.val_txt, tiny_wider.val_images)
    assert len(ann.images) == 2
    assert ann.dropped == {"degenerate": 0, "invalid": 0, "outside_image": 0, "mostly_outside_image": 0}
    assert ann.clipped == 0
    assert (ann.images["num_faces"] >= 1).all()


# ---------------------------------------------------------------- WIDER: small hand-written files


def test_zero_face_image_with_and_without_placeholder_line(tmp_path):
    with_line = write(tmp_path / "with.txt", f"a/1.jpg\n0\n{ZEROS}\na/2.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n")
    without = write(tmp_path / "without.txt", "a/1.jpg\n0\na/2.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n\n\n")
    for path in (with_line, without):
        ann = parse_wider(path)
        assert ann.images["image"].tolist() == ["a/1.jpg", "a/2.jpg"]
        assert ann.images["num_faces"].tolist() == [0, 1]
        assert ann.faces[["image", "image_index", "x1", "y1", "w", "h"]].values.tolist() == [["a/2.jpg", 1, 1, 2, 3, 4]]


def test_count_one_with_zeros_line_is_a_degenerate_box(tmp_path):
    # The real train file writes one of its empty images this way (37_Soccer_soccer_ball_37_281).
    ann = parse_wider(write(tmp_path / "gt.txt", f"a/1.jpg\n1\n{ZEROS}\n"))
    assert len(ann.faces) == 0 and len(ann.all_boxes) == 1
    assert ann.dropped["degenerate"] == 1
    assert ann.images["num_faces"].tolist() == [0]


def test_drop_order_negative_width_and_float_integers(tmp_path):
    text = "a/1.jpg\n3\n5 5 -2 10 0 0 0 1 0 0\n5 5 10 10 0 0 0 1 0 0\n5.0 5 10.0 10 2 0 0 0 0 0\n"
    ann = parse_wider(write(tmp_path / "gt.txt", text))
    # A box both degenerate and invalid counts once, as degenerate.
    assert ann.all_boxes["drop_reason"].tolist() == ["degenerate", "invalid", ""]
    assert ann.faces[["x1", "y1", "w", "h", "blur"]].values.tolist() == [[5, 5, 10, 10, 2]]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        pytest.param("a/1.jpg\nthree\n", 2, "face count", id="non-integer count"),
        pytest.param("a/1.jpg\n-1\n", 2, "negative", id="negative count"),
        pytest.param(f"a/1.jpg\n2\n{ZEROS}\n1 2 3 4\n", 4, "4 fields", id="short box line"),
        pytest.param("a/1.jpg\n1\n1 2 three 4 0 0 0 0 0 0\n", 3, "field w", id="non-numeric field"),
        pytest.param("a/1.jpg\n1\n1 2 3.5 4 0 0 0 0 0 0\n", 3, "field w", id="fractional field"),
        pytest.param(
            f"a/1.jpg\n1\n{ZEROS}\na/2.jpg\n3\n1 2 3 4 0 0 0 0 0 0\n", 5, "ends after 1 box line", id="truncated file"
        ),
        pytest.param("a/1.jpg\n", 1, "face count", id="file ends after a path"),
        pytest.param(f"a/1.jpg\n1\n{ZEROS}\n17\n", 4, "image path", id="numeric image line"),
        pytest.param(
            "a/1.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n5 6 7 8 0 0 0 0 0 0\n", 4, "count is too small", id="count too small"
        ),
        pytest.param("a/1.jpg\n0\n1 2 3 4 0 0 0 0 0 0\n", 3, "is 0 but a box line", id="box after a 0 count"),
        pytest.param("\n\nsome words here\n", 3, "image path", id="not a path"),
    ],
)
def test_malformed_wider_file_names_file_and_line(tmp_path, text, line, words):
    path = write(tmp_path / "bad_bbx_gt.txt", text)
    assert_refused_at(lambda: parse_wider(path), path, line, words)


def test_undecodable_bytes_name_the_line(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_bytes(b"a/1.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n\xff\xfe.jpg\n")
    with pytest.raises(AnnotationError) as caught:
        parse_wider(path)
    assert caught.value.line == 4
    assert "UTF-8" in str(caught.value)


def test_image_sizes_clip_outside_and_missing_images(tmp_path):
    images = tmp_path / "images"
    (images / "ev").mkdir(parents=True)
    Image.new("RGB", (50, 40)).save(images / "ev" / "real.jpg")
    (images / "ev" / "broken.jpg").write_bytes(b"not a jpeg")
    text = (
        "ev/real.jpg\n5\n"
        "10 10 20 20 0 0 0 0 0 0\n"  # inside
        "35 25 20 20 0 0 0 0 0 0\n"  # partly outside, 15 x 15 of it inside (56%): clipped to that
        "45 30 10 20 0 0 0 0 0 0\n"  # 5 x 10 of it inside (25%): another box than the face, dropped
        "60 10 5 5 0 0 0 0 0 0\n"  # entirely right of the image
        "-10 -10 10 10 0 0 0 0 0 0\n"  # ends at -1: no overlap
        "ev/missing.jpg\n1\n1 1 5 5 0 0 0 0 0 0\n"
        "ev/broken.jpg\n1\n1 1 5 5 0 0 0 0 0 0\n"
    )
    ann = parse_wider(write(tmp_path / "gt.txt", text), images)
    assert ann.images[["width", "height", "exists"]].values.tolist() == [[50, 40, True], [-1, -1, False], [-1, -1, False]]
    assert ann.dropped == {"degenerate": 0, "invalid": 0, "outside_image": 2, "mostly_outside_image": 1}
    assert ann.clipped == 1
    assert ann.faces[["image_index", "x1", "y1", "w", "h"]].values.tolist() == [
        [0, 10, 10, 20, 20],
        [0, 35, 25, 15, 15],
        [1, 1, 1, 5, 5],  # boxes of unreadable images are kept; the pixel loader reports them
        [2, 1, 1, 5, 5],
    ]
    assert ann.images["num_faces"].tolist() == [2, 1, 1]


def test_wider_writer_round_trips(tmp_path):
    images = [
        ("0--A/a.jpg", [[10, 20, 30, 40, 1, 0, 2, 0, 1, 2], [-5, 3, 12, 14, 0, 1, 0, 0, 0, 0]]),
        ("0--A/b.jpg", []),  # written with the official line of zeros
        ("1--B/c.jpg", [[7, 8, 9, 10, 0, 0, 0, 1, 0, 0], [50, 60, 0, 20, 0, 0, 0, 0, 0, 0]]),  # invalid, degenerate
        ("1--B/d.jpg", np.array([[1, 2, 3, 4]])),  # x1 y1 w h only: attributes 0
    ]
    path = write_wider_txt(tmp_path / "split" / "gt.txt", images)
    assert path.read_text().splitlines()[4:7] == ["0--A/b.jpg", "0", ZEROS]
    ann = parse_wider(path)
    assert ann.images["image"].tolist() == [image for image, _ in images]
    rows = [list(row) + [0] * (10 - len(row)) for _, boxes in images for row in np.asarray(boxes).tolist()]
    assert ann.all_boxes[["x1", "y1", "w", "h", *WIDER_ATTRIBUTES]].to_numpy().tolist() == rows
    assert ann.all_boxes["image"].tolist() == ["0--A/a.jpg"] * 2 + ["1--B/c.jpg"] * 2 + ["1--B/d.jpg"]
    assert ann.dropped == {"degenerate": 1, "invalid": 1, "outside_image": 0, "mostly_outside_image": 0}


def test_wider_writer_refuses_boxes_of_another_width(tmp_path):
    with pytest.raises(ValueError, match="4 or 10 columns"):
        write_wider_txt(tmp_path / "gt.txt", [("a.jpg", [[1, 2, 3, 4, 5]])])


def test_wider_mat_ground_truth_round_trips(tmp_path):
    images = [
        GtImage("0--A", "a", np.array([[1, 2, 30, 40], [50, 60, 10, 12]], float),
                {"easy": np.array([0]), "medium": np.array([0]), "hard": np.array([0, 1])}),
        GtImage("0--A", "b", np.zeros((0, 4)), {s: np.zeros(0, np.int64) for s in SETTINGS}),
        GtImage("1--B", "c", np.array([[5, 6, 7, 8]], float),
                {"easy": np.zeros(0, np.int64), "medium": np.array([0]), "hard": np.array([0])}),
    ]
    back = load_ground_truth(write_ground_truth(tmp_path / "gt", images))
    assert [im.key for im in back] == [im.key for im in images]
    for got, want in zip(back, images):
        np.testing.assert_array_equal(got.boxes, want.boxes)
        assert {s: got.keep[s].tolist() for s in SETTINGS} == {s: want.keep[s].tolist() for s in SETTINGS}


# ---------------------------------------------------------------- landmarks


FACEPOINT_TEXT = (
    "lfw_5590\\Aaron_Eckhart_0001.jpg 27.20 51.84 29.76 54.40 34.32 34.80 47.28 36.24 40.40 46.00 34.00 50.80 45.04 52.08\n"
    "net_7876\\sub\\9998_0_0.jpg 19.20 57.80 19.20 57.80 30.40 31.60 51.40 29.00 42.80 42.00 37.20 51.60 50.00 50.40\n"
    "\n\n"
)


def test_parse_facepoint_exact_values(tmp_path):
    path = write(tmp_path / "trainImageList.txt", FACEPOINT_TEXT)
    lm = parse_facepoint(path)
    faces = lm.faces
    assert list(faces.columns) == ["image", "image_index", "x1", "y1", "x2", "y2", *LANDMARK_COLUMNS]
    assert faces["image"].tolist() == ["lfw_5590/Aaron_Eckhart_0001.jpg", "net_7876/sub/9998_0_0.jpg"]
    assert faces["image_index"].tolist() == [0, 1]
    # The file's x1 x2 y1 y2 becomes x1 y1 x2 y2.
    assert faces.loc[0, ["x1", "y1", "x2", "y2"]].tolist() == [27.20, 29.76, 51.84, 54.40]
    assert faces.loc[0, list(LANDMARK_COLUMNS)].tolist() == [
        34.32, 34.80, 47.28, 36.24, 40.40, 46.00, 34.00, 50.80, 45.04, 52.08
    ]  # fmt: skip
    assert faces.loc[1, ["x1", "y1", "x2", "y2"]].tolist() == [19.20, 19.20, 57.80, 57.80]
    assert lm.dropped == {"degenerate": 0, "landmarks_outside_box": 0, "points_not_distinct": 0, "eyes_below_mouth": 0}
    assert lm.images_root == tmp_path
    assert lm.source == str(path)
    for column in ["x1", "y1", "x2", "y2", *LANDMARK_COLUMNS]:
        assert faces[column].dtype == np.float64


def test_facepoint_drops_degenerate_and_far_landmarks(tmp_path):
    points = "34 35 47 36 40 46 34 50 45 52"
    text = (
        f"a.jpg 27 51 29 54 {points}\n"  # kept
        f"b.jpg 51 27 29 54 {points}\n"  # x2 < x1
        "c.jpg 27 51 29 54 34 35 47 36 40 46 34 50 45 99\n"  # mouth 45 px below a 25 px box
        "d.jpg 27 51 29 54 34 35 47 36 40 46 34 50 45 60\n"  # 6 px below: still plausible
    )
    lm = parse_facepoint(write(tmp_path / "list.txt", text))
    assert lm.faces["image"].tolist() == ["a.jpg", "d.jpg"]
    assert lm.faces["image_index"].tolist() == [0, 3]
    assert lm.dropped == {"degenerate": 1, "landmarks_outside_box": 1, "points_not_distinct": 0, "eyes_below_mouth": 0}


def test_facepoint_writer_round_trips(tmp_path):
    points = np.array([[34.32, 34.8], [47.28, 36.24], [40.4, 46.0], [34.0, 50.8], [45.04, 52.08]])
    faces = [("lfw_5590\\Aaron_Eckhart_0001.jpg", (27.2, 29.76, 51.84, 54.4), points),
             ("demo\\00002.jpg", (3, 4, 40, 41), points / 2 + 1)]
    assert format_facepoint_line(*faces[0]) + "\n" == FACEPOINT_TEXT.splitlines(keepends=True)[0]
    lm = parse_facepoint(write_facepoint(tmp_path / "list.txt", faces))
    assert lm.faces["image"].tolist() == ["lfw_5590/Aaron_Eckhart_0001.jpg", "demo/00002.jpg"]
    np.testing.assert_allclose(lm.faces[["x1", "y1", "x2", "y2"]].to_numpy(), [face[1] for face in faces])
    np.testing.assert_allclose(lm.faces[list(LANDMARK_COLUMNS)].to_numpy(),
                               [face[2].ravel() for face in faces], atol=0.005)  # written to 2 decimals


def test_landmark_holdout_is_fixed_by_position():
    mask = landmark_holdout_mask(1000, 0.05)
    assert mask.dtype == bool and 20 < mask.sum() < 80
    assert np.array_equal(mask, landmark_holdout_mask(1000, 0.05))
    assert np.array_equal(landmark_holdout_mask(400, 0.05), mask[:400])  # a longer list keeps the earlier choices


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        pytest.param("a.jpg 1 2 3\n", 1, "expected 15 fields", id="short line"),
        pytest.param(FACEPOINT_TEXT.strip() + "\nb.jpg 27 51 29 54 34 35 47 36 40 46 34 50 45 x\n", 3, "rmy", id="non-numeric"),
        pytest.param("\na.jpg 27 51 29 54 34 35 47 36 40 46 34 50 45 nan\n", 2, "finite", id="nan"),
    ],
)
def test_malformed_facepoint_names_file_and_line(tmp_path, text, line, words):
    path = write(tmp_path / "list.txt", text)
    assert_refused_at(lambda: parse_facepoint(path), path, line, words)


CELEBA_BBOX = "3\nimage_id x_1 y_1 width height\n000001.jpg    95  71 226 313\n000002.jpg    72  94 221 306\n000003.jpg   216  59  91 126\n"
CELEBA_LANDMARKS = (
    "3\n"
    "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y\n"
    "000003.jpg 244 104 264 105 263 121 235 134 251 140\n"  # another order than the box list
    "000001.jpg 69 109 106 113 77 142 73 152 108 154\n"
    "000002.jpg 140 95 180 93 174 147 149 192 166 193\n"
)


def test_parse_celeba_joins_on_image_id(tmp_path):
    bbox = write(tmp_path / "list_bbox_celeba.txt", CELEBA_BBOX)
    landmarks = write(tmp_path / "list_landmarks_celeba.txt", CELEBA_LANDMARKS)
    lm = parse_celeba(bbox, landmarks)
    assert lm.images_root == tmp_path
    faces = lm.faces
    assert faces["image"].tolist() == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert faces.loc[0, ["x1", "y1", "x2", "y2"]].tolist() == [95, 71, 95 + 226 - 1, 71 + 313 - 1]
    assert faces.loc[0, list(LANDMARK_COLUMNS)].tolist() == [69, 109, 106, 113, 77, 142, 73, 152, 108, 154]
    assert faces.loc[2, ["lex", "rmy"]].tolist() == [244, 140]
    # 000001's left eye (69) is 26 px left of a 226 px box: within half the box, kept.
    assert lm.dropped == {"degenerate": 0, "landmarks_outside_box": 0, "points_not_distinct": 0, "eyes_below_mouth": 0}

    (tmp_path / "img_celeba").mkdir()
    assert parse_celeba(bbox, landmarks).images_root == tmp_path / "img_celeba"


@pytest.mark.parametrize(
    ("bbox_text", "landmarks_text", "bad_file", "line", "words"),
    [
        pytest.param(CELEBA_BBOX.replace("3\n", "4\n", 1), CELEBA_LANDMARKS, "bbox", 1, "declares 4", id="count"),
        pytest.param(CELEBA_BBOX, CELEBA_LANDMARKS.replace("000002.jpg", "000009.jpg"), "bbox", 4, "000002.jpg", id="missing id"),
        pytest.param(CELEBA_BBOX.replace(" 221 ", " wide "), CELEBA_LANDMARKS, "bbox", 4, "width", id="non-numeric"),
        pytest.param(CELEBA_BBOX, CELEBA_LANDMARKS.replace(" 77 142", " 77"), "landmarks", 4, "11 fields", id="short"),
        pytest.param("x\n", CELEBA_LANDMARKS, "bbox", 1, "number of images", id="no count"),
        pytest.param(CELEBA_BBOX.replace(" width height", ""), CELEBA_LANDMARKS, "bbox", 2, "header", id="header"),
    ],
)
def test_malformed_celeba_names_file_and_line(tmp_path, bbox_text, landmarks_text, bad_file, line, words):
    bbox = write(tmp_path / "list_bbox_celeba.txt", bbox_text)
    landmarks = write(tmp_path / "list_landmarks_celeba.txt", landmarks_text)
    assert_refused_at(lambda: parse_celeba(bbox, landmarks), bbox if bad_file == "bbox" else landmarks, line, words)


def test_load_landmarks_dispatch(tmp_path):
    facepoint = write(tmp_path / "trainImageList.txt", FACEPOINT_TEXT)
    assert len(load_landmarks(facepoint).faces) == 2
    celeba = tmp_path / "Anno"
    celeba.mkdir()
    write(celeba / "list_bbox_celeba.txt", CELEBA_BBOX)
    write(celeba / "list_landmarks_celeba.txt", CELEBA_LANDMARKS)
    (tmp_path / "Img" / "img_celeba").mkdir(parents=True)
    lm = load_landmarks(celeba)
    assert len(lm.faces) == 3
    assert lm.images_root == tmp_path / "Img" / "img_celeba"  # the official Anno/ + Img/ layout

    other = tmp_path / "other"
    other.mkdir()
    csv = write(tmp_path / "faces.csv", "a,b\n")
    for path in (other, csv, tmp_path / "nowhere.txt"):
        with pytest.raises(AnnotationError) as caught:
            load_landmarks(path)
        assert_error_at(caught.value, path, None)


def test_demo_landmark_list_parses(tiny_wider):
    lm = load_landmarks(tiny_wider.landmarks_txt)
    assert len(lm.faces) == 8
    assert lm.dropped == {"degenerate": 0, "landmarks_outside_box": 0, "points_not_distinct": 0, "eyes_below_mouth": 0}
    assert "\\" in tiny_wider.landmarks_txt.read_text().splitlines()[0].split()[0]
    assert lm.faces["image"].tolist() == [f"demo_faces/{i:05d}.jpg" for i in range(1, 9)]
    for image in lm.faces["image"]:
        with Image.open(lm.images_root / image) as opened:
            assert opened.size == (80, 80)
    faces = lm.faces
    assert ((faces["x1"] >= 0) & (faces["x2"] <= 79) & (faces["y1"] >= 0) & (faces["y2"] <= 79)).all()
    assert (faces["lex"] < faces["rex"]).all() and (faces["ley"] < faces["ny"]).all()


# ---------------------------------------------------------------- stats


def test_stats_main_prints_and_writes_png(tiny_wider, tmp_path, capsys):
    out_png = tmp_path / "plots" / "sizes.png"
    figures = stats_main(
        StatsConfig(
            wider_txt=tiny_wider.train_txt,
            images_dir=tiny_wider.train_images,
            landmarks=tiny_wider.landmarks_txt,
            out_png=out_png,
        )
    )
    printed = capsys.readouterr().out
    wider = figures["wider"]
    assert wider["images"] == 5
    assert wider["images_with_0_faces"] == 1
    assert wider["missing_or_unreadable_images"] == 0
    assert wider["faces_kept"] == 9 and wider["boxes_in_file"] == 11
    assert wider["faces_per_image_max"] == 3 and wider["faces_per_image_median"] == 2
    assert wider["faces_per_image_mean"] == pytest.approx(9 / 5)
    assert wider["dropped"] == {"degenerate": 1, "invalid": 1, "outside_image": 0, "mostly_outside_image": 0}
    assert wider["clipped"] == 1
    sizes = wider["face_size"]
    assert list(sizes) == ["min", "5%", "25%", "50%", "75%", "95%", "max"]
    assert 20 <= sizes["min"] <= sizes["50%"] <= sizes["max"] <= 120
    assert figures["landmarks"]["faces_kept"] == 8 and figures["landmarks"]["missing_images"] == 0
    for words in ("faces kept", "sqrt(w*h)", "dropped: invalid", "clipped", "landmark list"):
        assert words in printed
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out_png.parent.iterdir()] == ["sizes.png"]  # no temp file left behind


# ---------------------------------------------------------------- demo data


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_data_is_deterministic(tmp_path):
    kwargs = dict(num_train_images=3, num_val_images=1, num_landmark_faces=3, with_edge_cases=True)
    first = file_bytes(build_demo_dataset(DemoConfig(tmp_path / "a", seed=0, **kwargs)).root)
    second = file_bytes(build_demo_dataset(DemoConfig(tmp_path / "b", seed=0, **kwargs)).root)
    other = file_bytes(build_demo_dataset(DemoConfig(tmp_path / "c", seed=1, **kwargs)).root)
    assert first == second
    assert "wider_face_split/wider_face_train_bbx_gt.txt" in first
    assert "landmarks/trainImageList.txt" in first
    assert "WIDER_train/images/0--Demo/0_Demo_demo_0.jpg" in first
    assert sorted(first) == sorted(other)
    assert all(first[name] != other[name] for name in first)


def test_demo_command_line_takes_its_defaults_from_the_config(tmp_path):
    assert parse_config(DemoConfig, ["--out", str(tmp_path)]) == DemoConfig(out_dir=tmp_path)
    given = parse_config(DemoConfig, ["--out", str(tmp_path), "--train", "6", "--val", "3", "--landmarks", "24",
                                      "--width", "200", "--height", "160", "--edge-cases"])
    assert given == DemoConfig(tmp_path, 6, 3, 24, image_width=200, image_height=160, with_edge_cases=True)
    with pytest.raises(SystemExit):
        parse_config(DemoConfig, ["--out", str(tmp_path), "--train", "-1"])


def test_demo_layout_matches_official_wider(tiny_wider):
    root = tiny_wider.root
    assert tiny_wider.train_images == root / "WIDER_train" / "images"
    assert tiny_wider.val_images == root / "WIDER_val" / "images"
    assert tiny_wider.train_txt == root / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    assert tiny_wider.val_txt == root / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    assert tiny_wider.landmarks_txt == root / "landmarks" / "trainImageList.txt"
    lines = tiny_wider.train_txt.read_text().splitlines()
    assert lines[-3:] == ["2--Demo/2_Demo_demo_4.jpg", "0", ZEROS]


# ---------------------------------------------------------------- the network guard (conftest)


def test_network_is_refused():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(RuntimeError, match="network"):
            sock.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed


# ---------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_shared_data_totals(shared_data):
    wider_dir = shared_data / "wider"
    txt = wider_dir / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    landmark_list = shared_data / "landmarks" / "trainImageList.txt"
    if not txt.is_file() or not landmark_list.is_file():
        pytest.skip("the shared WIDER train list or landmark list is absent")

    ann = parse_wider(txt, wider_dir / "WIDER_train" / "images")
    assert len(ann.images) == 1430
    assert len(ann.all_boxes) == 19756
    assert ann.dropped == {"degenerate": 7, "invalid": 333, "outside_image": 0, "mostly_outside_image": 0}
    assert len(ann.faces) == 19756 - 7 - 333
    assert ann.clipped == 0
    assert ann.images["exists"].all()
    assert ann.images["num_faces"].sum() == len(ann.faces)
    # The one image left without faces is written "1" + a line of zeros in the file.
    assert ann.images.loc[ann.images["num_faces"] == 0, "image"].tolist() == ["37--Soccer/37_Soccer_soccer_ball_37_281.jpg"]

    lm = load_landmarks(landmark_list)
    assert len(lm.faces) == 7650
    assert lm.dropped == {"degenerate": 0, "landmarks_outside_box": 0, "points_not_distinct": 0, "eyes_below_mouth": 0}
    assert lm.faces["image"].str.split("/").str[0].value_counts().to_dict() == {"lfw_5590": 4151, "net_7876": 3499}
    first = lm.faces.iloc[0]
    assert first["image"] == "lfw_5590/Aaron_Eckhart_0001.jpg"
    assert (lm.images_root / first["image"]).is_file()
