"""Data that parses but means something else (issue #30, rule 9), and a WIDER box of 1e30 (rule 10),
injected: landmark lists in another layout, faces whose five points cannot be a face's, one image
listed under two spellings of its path, one image file under two identities.

Faces that fail are dropped and counted, by reason, in the manifest and the console; a list where
most faces fail, a doubled image and an absurd number are one line naming the file (and line).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from annotations.errors import AnnotationError
from annotations.identities import read_identity_folder
from annotations.landmarks import DROP_REASONS, load_landmarks, parse_facepoint
from annotations.wider import parse_wider_text
from child_env import REPO, child_env

# A real face of the shared list (lfw_5590\Aaron_Eckhart_0001.jpg): box x1 x2 y1 y2, five x y points.
BOX = "84 161 92 169"
POINTS = [106.25, 107.75, 146.75, 112.25, 125.25, 142.75, 105.25, 157.75, 139.75, 161.75]


def facepoint_line(name: str, points, box: str = BOX) -> str:
    return f"{name} {box} " + " ".join(f"{v:.2f}" for v in points)


def shifted(k: int) -> list[float]:
    """The face's points moved a little, so that no two faces are the same."""
    return [v + (k % 3) * 0.5 for v in POINTS]


LAYOUTS = {
    "x1..x5 y1..y5": lambda p: p[0::2] + p[1::2],
    "(y, x) pairs": lambda p: [p[i ^ 1] for i in range(10)],
    "one point five times": lambda p: p[:2] * 5,
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_landmark_list_in_another_layout_is_refused_naming_the_layout(tmp_path, layout):
    lines = [facepoint_line(f"f\\{k}.jpg", LAYOUTS[layout](shifted(k))) for k in range(8)]
    lines[2] = facepoint_line("f\\2.jpg", shifted(2))  # a few faces that happen to pass change nothing
    path = tmp_path / "list.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError) as err:
        parse_facepoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}:1: 7 of 8 faces (") and "\n" not in message, message
    assert "fail the 5-point checks" in message
    assert (layout in message) if layout != "one point five times" else "one point five times" in message


def test_faces_whose_points_cannot_be_a_face_are_dropped_each_under_its_reason(tmp_path):
    good = [facepoint_line(f"g{k}.jpg", shifted(k)) for k in range(5)]
    same = facepoint_line("same.jpg", POINTS[:2] * 5)
    two_equal = facepoint_line("two.jpg", POINTS[:2] * 2 + POINTS[4:])  # both eyes at one point
    upside_down = facepoint_line("flip.jpg", [v if i % 2 == 0 else 261 - v for i, v in enumerate(POINTS)])
    path = tmp_path / "list.txt"
    path.write_text("\n".join([*good, same, two_equal, upside_down]) + "\n")
    lm = parse_facepoint(path)
    assert lm.faces["image"].tolist() == [f"g{k}.jpg" for k in range(5)]
    assert lm.dropped == {"degenerate": 0, "landmarks_outside_box": 0, "points_not_distinct": 2,
                          "eyes_below_mouth": 1}
    assert set(lm.dropped) == set(DROP_REASONS)


def test_the_shared_and_the_demo_landmark_lists_keep_every_face(shared_data, tiny_wider):
    lm = load_landmarks(shared_data / "landmarks" / "trainImageList.txt")
    assert len(lm.faces) == 7650 and not any(lm.dropped.values()), lm.dropped
    demo = load_landmarks(tiny_wider.landmarks_txt)
    assert not any(demo.dropped.values()), demo.dropped


def run_generate(*args):
    return subprocess.run([sys.executable, "-m", "prepare.generate", *map(str, args)], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=300)


def small_fixture(tiny_wider, dest: Path) -> tuple[Path, Path, Path]:
    shutil.copytree(tiny_wider.root, dest)
    return (dest / tiny_wider.train_txt.relative_to(tiny_wider.root),
            dest / tiny_wider.train_images.relative_to(tiny_wider.root),
            dest / tiny_wider.landmarks_txt.relative_to(tiny_wider.root))


def test_dropped_landmark_faces_are_counted_in_the_console_summary(tiny_wider, tmp_path):
    txt, images, marks = small_fixture(tiny_wider, tmp_path / "data")
    lines = marks.read_text().splitlines()
    name, *values = lines[0].split()
    box, points = values[:4], values[4:]
    lines[0] = " ".join([name, *box, *points[:2] * 5])  # five times the left eye
    marks.write_text("\n".join(lines) + "\n")
    proc = run_generate("--wider-txt", txt, "--wider-images", images, "--landmarks", marks, "--out",
                        tmp_path / "out", "--net-size", "12", "--workers", "1", "--tiny")
    assert proc.returncode == 0, proc.stderr
    assert "  landmarks annotations: dropped 1 unusable, 1 points_not_distinct" in proc.stdout.splitlines(), proc.stdout
    assert any(line.startswith("  wider annotations: dropped ") for line in proc.stdout.splitlines())


def test_a_wider_image_listed_under_two_spellings_is_one_line(tmp_path):
    for first, second in (("./0--a/1.jpg", "0--a/1.jpg"), ("0--a//1.jpg", "0--a/./1.jpg"),
                          ("0--a\\1.jpg", "0--a/1.jpg")):
        path = tmp_path / "gt.txt"
        path.write_text(f"{first}\n1\n1 2 3 4 0 0 0 0 0 0\n0--a/2.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n"
                        f"{second}\n1\n5 6 7 8 0 0 0 0 0 0\n")
        with pytest.raises(AnnotationError) as err:
            parse_wider_text(path)
        assert str(err.value) == (f"{path}:7: image 0--a/1.jpg is listed twice (first at line 1); remove one of the "
                                  "two lines")


def test_a_landmark_image_listed_under_two_spellings_is_one_line(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("\n".join([facepoint_line("lfw\\a.jpg", POINTS), facepoint_line("b.jpg", POINTS),
                               facepoint_line("./lfw//a.jpg", POINTS)]) + "\n")
    with pytest.raises(AnnotationError) as err:
        parse_facepoint(path)
    assert str(err.value) == f"{path}:3: image lfw/a.jpg is listed twice (first at line 1); remove one of the two lines"


def test_one_image_under_two_identities_is_left_out_of_both_and_listed(tmp_path):
    rng = np.random.default_rng(0)
    photo, other = rng.bytes(500), rng.bytes(500)  # same size, other bytes: not the same image
    for rel, data in (("Ann/1.jpg", photo), ("Ann/2.jpg", other), ("Bob/1.jpg", other[:-1] + b"x"),
                      ("Bob/2.jpg", rng.bytes(300)), ("Cid/x.jpg", photo), ("Cid/y.jpg", rng.bytes(200))):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    folder = read_identity_folder(tmp_path)
    assert folder.ambiguous == ("Ann/1.jpg", "Cid/x.jpg")
    assert [r for _, r in folder.images] == ["Ann/2.jpg", "Bob/1.jpg", "Bob/2.jpg", "Cid/y.jpg"]
    assert folder.without({"Bob"}).ambiguous == folder.ambiguous
    (tmp_path / "Cid" / "x.jpg").unlink()
    (tmp_path / "Ann" / "3.jpg").write_bytes(photo)  # twice in one identity: one label, kept
    folder = read_identity_folder(tmp_path)
    assert folder.ambiguous == () and folder.counts() == [3, 2, 1]


@pytest.mark.parametrize("value", ["1e30", "99999999999999999999", "-2000000"])
def test_an_absurd_wider_box_value_is_one_line_naming_its_line(tmp_path, value):
    path = tmp_path / "gt.txt"
    path.write_text(f"0--a/1.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n{value} 2 3 4 0 0 0 0 0 0\n")
    with pytest.raises(AnnotationError) as err:
        parse_wider_text(path)
    assert str(err.value).startswith(f"{path}:4: field x1 is {value}, beyond any image"), str(err.value)


def test_a_wider_box_of_1e30_stops_the_build_in_one_line(tiny_wider, tmp_path):
    txt, images, marks = small_fixture(tiny_wider, tmp_path / "data")
    lines = txt.read_text().splitlines()
    lines[2] = "1e30 " + lines[2].split(maxsplit=1)[1]
    txt.write_text("\n".join(lines) + "\n")
    proc = run_generate("--wider-txt", txt, "--wider-images", images, "--landmarks", marks, "--out", tmp_path / "out",
                        "--net-size", "12", "--workers", "1", "--tiny")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.strip() and "px samples:" not in line]  # progress bar
    assert len(err) == 1 and f"{txt}:3: field x1 is 1e30, beyond any image" in err[0], proc.stderr


def test_a_landmark_list_of_y_x_pairs_stops_the_build_in_one_line(tiny_wider, tmp_path):
    txt, images, marks = small_fixture(tiny_wider, tmp_path / "data")
    swapped = []
    for line in marks.read_text().splitlines():
        name, *values = line.split()
        swapped.append(" ".join([name, *values[:4], *(values[4:][i ^ 1] for i in range(10))]))
    marks.write_text("\n".join(swapped) + "\n")
    proc = run_generate("--wider-txt", txt, "--wider-images", images, "--landmarks", marks, "--out", tmp_path / "out",
                        "--net-size", "12", "--workers", "1", "--tiny")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.strip() and "px samples:" not in line]
    assert len(err) == 1 and f"{marks}:1: " in err[0] and "read as (y, x) pairs they pass" in err[0], proc.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()
