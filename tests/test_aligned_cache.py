"""The aligned-crops cache (issue #30, rule 3): a crop is reused only for the same file and the same
detector, alignment and size.

``detector.align``'s folder (shared by ``make recog-data``'s builds and ``make eval-lfw``) records
each source file's SHA-256 and ``device:inode:size:mtime_ns`` in ``index.csv`` and the detector's
weights digests in ``settings.json``: another folder's images under the same relative names are
aligned again, a touched or copied but unchanged file is reused, an edited one is redone, and a
cache of other weights files or settings is refused in one line naming what differs. The shipped
detector runs on ``skimage.data.astronaut()`` (CPU, no network).
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from core.nets import build_net
from core.weights import SHIPPED_WEIGHTS_DIR
from detector.align import INDEX_COLUMNS, SOURCE_COLUMNS, AlignConfig
from detector.align import main as align_main
from prepare.identities import IdentityDataConfig
from prepare.identities import cli as identities_cli
from prepare.identities import main as identities_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _face(variant: int) -> np.ndarray:
    """A BGR photo with one face: the astronaut, shifted and scaled per ``variant``, same size."""
    from skimage.data import astronaut

    image = astronaut()[:, :, ::-1]
    scale = 0.55 + 0.1 * variant
    small = cv2.resize(image, None, fx=scale, fy=scale)
    canvas = np.full((320, 320, 3), 90 + 20 * variant, np.uint8)
    dx, dy = 10 + 15 * variant, 5 + 10 * variant
    h, w = min(small.shape[0], 320 - dy), min(small.shape[1], 320 - dx)
    canvas[dy:dy + h, dx:dx + w] = small[:h, :w]
    return canvas


def _people(root: Path, first_variant: int) -> Path:
    """``root/<person>/<person>_000k.png``: 2 people of 2 images, the faces ``first_variant`` on."""
    for p, person in enumerate(("Ann", "Bob")):
        (root / person).mkdir(parents=True)
        for k in range(2):
            cv2.imwrite(str(root / person / f"{person}_{k + 1:04d}.png"), _face(first_variant + 2 * p + k))
    return root


def _rows(folder: Path) -> dict[str, dict]:
    with (folder / "index.csv").open(newline="") as f:
        return {r["source"]: r for r in csv.DictReader(f)}


def _crops(folder: Path) -> dict[str, bytes]:
    return {s: (folder / r["crop"]).read_bytes() for s, r in _rows(folder).items() if r["crop"]}


def test_a_second_folder_with_the_same_names_is_aligned_again(tmp_path):
    first, second = _people(tmp_path / "first", 0), _people(tmp_path / "second", 1)
    for person in ("Ann", "Bob"):  # the same relative names and sizes, other photos
        for k in (1, 2):
            name = f"{person}/{person}_{k:04d}.png"
            assert (first / name).stat().st_size != 0 and (first / name).read_bytes() != (second / name).read_bytes()
    shared = tmp_path / "aligned"
    cfg = IdentityDataConfig(images=str(first), out=str(tmp_path / "build-first"), aligned=str(shared),
                             progress=False)
    built = identities_main(cfg)
    assert built["report"]["faces"] == 4 and built["report"]["align"]["done_before"] == 0
    again = identities_main(replace(cfg, images=str(second), out=str(tmp_path / "build-second")))
    assert again["report"]["align"]["done_before"] == 0 and again["report"]["faces"] == 4
    fresh = identities_main(replace(cfg, images=str(second), out=str(tmp_path / "build-fresh"),
                                    aligned=str(tmp_path / "aligned-fresh")))
    assert _crops(shared) == _crops(tmp_path / "aligned-fresh")  # the second folder's own crops
    assert again["fingerprint"] == fresh["fingerprint"] != built["fingerprint"]
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in fresh["shards"]]
    # ... and once aligned, its crops are reused.
    assert identities_main(replace(cfg, images=str(second), out=str(tmp_path / "b3")))["report"]["align"][
        "done_before"] == 4


def test_a_touched_or_copied_file_is_reused_and_an_edited_one_redone(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), _face(0))
    cfg = AlignConfig(images=str(images), out=str(tmp_path / "aligned"), progress=False)
    assert align_main(cfg)["with_face"] == 1
    row = _rows(Path(cfg.out))["a.png"]
    assert set(SOURCE_COLUMNS) <= set(row) and len(row["source_sha256"]) == 64
    st = (images / "a.png").stat()
    os.utime(images / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched
    assert align_main(cfg)["done_before"] == 1
    assert _rows(Path(cfg.out))["a.png"]["source_stat"] != row["source_stat"]  # the new stat is kept
    moved = tmp_path / "copy"
    shutil.copytree(images, moved)  # another inode, the same bytes
    assert align_main(replace(cfg, images=str(moved)))["done_before"] == 1
    data = bytearray((images / "a.png").read_bytes())
    cv2.imwrite(str(images / "a.png"), _face(1))  # edited
    assert align_main(cfg)["done_before"] == 0
    assert bytes(data) != (images / "a.png").read_bytes()


def test_an_index_that_records_no_source_identity_is_redone(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), _face(0))
    cfg = AlignConfig(images=str(images), out=str(tmp_path / "aligned"), progress=False)
    align_main(cfg)
    rows = list(_rows(Path(cfg.out)).values())
    old = [c for c in INDEX_COLUMNS if c not in SOURCE_COLUMNS]  # an index from before the identity columns
    with (Path(cfg.out) / "index.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=old, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    assert align_main(cfg)["done_before"] == 0
    assert align_main(cfg)["done_before"] == 1


def test_a_cache_of_other_weights_files_or_settings_is_refused_naming_what_differs(tmp_path, capsys):
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("pnet.pt", "rnet.pt", "onet.pt"):
        shutil.copy(SHIPPED_WEIGHTS_DIR / name, weights / name)
    people = _people(tmp_path / "people", 0)
    aligned = tmp_path / "aligned"
    cfg = IdentityDataConfig(images=str(people), out=str(tmp_path / "build"), aligned=str(aligned),
                             weights=str(weights), progress=False)
    identities_main(cfg)
    argv = ["--images", str(people), "--out", str(tmp_path / "b2"), "--aligned", str(aligned), "--weights",
            str(weights), "--no-progress"]
    assert identities_cli([*argv, "--image-size", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{aligned} holds crops made with other settings" in err
    assert "image_size 64 there, 32 here" in err
    assert identities_cli([*argv, "--align", "margin"]) == 2
    assert "align 'similarity' there, 'margin' here" in capsys.readouterr().err
    torch.manual_seed(1)
    torch.save(build_net("onet").state_dict(), weights / "onet.pt")  # retrained into the same folder
    assert identities_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "other weights files" in err and "onet.pt differ" in err
    assert "pnet.pt" not in err.split("other weights files")[1]
    redone = align_main(replace(cfg.align_config(), overwrite=True))  # make align's --overwrite redoes them
    assert redone["done_before"] == 0
    assert identities_cli(argv) == 0
