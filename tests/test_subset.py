"""annotations.subset (the share of WIDER images of a data-scaling run) and make's WIDER_FRACTION."""

import subprocess
import sys

import numpy as np
import pytest

from annotations.subset import SubsetConfig, main, subset_mask
from annotations.wider import format_wider_txt, parse_wider
from lmdb_builders.manifest import load_manifest
from child_env import REPO


def test_mask_keeps_the_rounded_share_and_smaller_shares_inside_larger_ones():
    paths = [f"{i % 7}--Event/img_{i}.jpg" for i in range(40)]
    quarter, half, full = (subset_mask(paths, f) for f in (0.25, 0.5, 1.0))
    assert (quarter.sum(), half.sum(), full.sum()) == (10, 20, 40)
    assert not (quarter & ~half).any()  # the quarter is half of the half
    assert subset_mask(paths[::-1], 0.25)[::-1].tolist() == quarter.tolist()  # decided by path, not position
    assert subset_mask(paths, 0.01).sum() == 0 and subset_mask([], 0.5).size == 0


def test_mask_is_the_first_paths_in_sha256_order():
    # sha256 of b"a", b"b", b"c" start 0xca, 0x3e, 0x2e: the order is c, b, a.
    assert subset_mask(["a", "b", "c"], 1 / 3).tolist() == [False, False, True]
    assert subset_mask(["a", "b", "c"], 2 / 3).tolist() == [False, True, True]


def test_subset_file_holds_the_kept_images_exactly_as_written(tmp_path):
    boxes = {f"0--Parade/{i}.jpg": np.array([[i, 2, 30, 40, 1, 0, 0, int(i == 3), 1, 0]] * (i % 3)) for i in range(12)}
    full = tmp_path / "full.txt"
    full.write_text(format_wider_txt(boxes.items()))
    summary = main(SubsetConfig(wider_txt=full, fraction=0.5, out=tmp_path / "half.txt"))
    kept = [p for p, k in zip(boxes, subset_mask(list(boxes), 0.5)) if k]
    assert summary == {"images": 6, "of": 12, "faces": sum(len(boxes[p]) for p in kept)}
    assert (tmp_path / "half.txt").read_text() == format_wider_txt((p, boxes[p]) for p in kept)
    whole = parse_wider(full).all_boxes
    assert parse_wider(tmp_path / "half.txt").all_boxes.drop(columns="image_index").reset_index(drop=True).equals(
        whole[whole.image.isin(kept)].drop(columns="image_index").reset_index(drop=True))


@pytest.mark.parametrize("fraction", ["0", "1.5", "-0.5"])
def test_fraction_outside_0_1_is_one_line_error(tmp_path, fraction):
    run = subprocess.run([sys.executable, "-m", "annotations.subset", "--wider-txt", "x.txt", "--fraction", fraction,
                          "--out", str(tmp_path / "o.txt")], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2 and "--fraction must be in (0, 1]" in run.stderr
    assert not (tmp_path / "o.txt").exists()


def test_make_builds_read_the_subset_and_a_new_fraction_is_a_new_build(tiny_wider, tmp_path, make_dry_run):
    make = ["make", "-C", str(REPO), "--no-print-directory", f"WIDER={tiny_wider.root}", f"OUT={tmp_path}",
            f"LANDMARKS={tiny_wider.landmarks_txt}", "GEN_FLAGS=--tiny", "WORKERS=1", f"PY={sys.executable}",
            "VENV_STAMP="]
    subprocess.run(make + ["pnet-data", "WIDER_FRACTION=0.5"], check=True, capture_output=True)
    subset = tmp_path / "wider_train_subset.txt"
    images = parse_wider(tiny_wider.train_txt).images.image.tolist()
    assert parse_wider(subset).images.image.tolist() == [p for p, k in zip(images, subset_mask(images, 0.5)) if k]
    assert load_manifest(tmp_path / "pnet")["report"]["wider_images"] == subset_mask(images, 0.5).sum() < len(images)
    assert subprocess.run(make + ["-q", "pnet-data", "WIDER_FRACTION=0.5"]).returncode == 0
    assert subprocess.run(make + ["-q", "pnet-data", "WIDER_FRACTION=0.25"]).returncode == 1
    assert subprocess.run(make + ["-q", "pnet-data"]).returncode == 1  # all images: not what was built
    dry = subprocess.run(make + ["-n", "val-data", "WIDER_FRACTION=0.5"], capture_output=True, text=True).stdout
    assert "subset" not in dry  # the held-out build reads all of WIDER val
    default_out = make_dry_run("pnet-data", "WIDER_FRACTION=0.5")
    assert "--wider-txt build/wider_train_subset.txt" in default_out  # OUT's default, set after the fraction
