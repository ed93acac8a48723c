"""The whole cascade through the Makefile, as ``make demo`` runs it, on a tiny built-in data set:
demo data -> stats -> pnet-data -> train-pnet -> rnet-data -> train-rnet -> onet-data ->
train-onet -> val-data -> roc -> eval-wider -> detect, then the make dependencies between stages."""

import json
import os
import re
import subprocess
import sys

import pytest

from child_env import REPO
TINY_TRAIN = "--epochs 1 --batches-per-epoch 4 --batch-size 64 --no-progress"
# Nets trained for 4 batches find no face at the detector's thresholds, and a mined build without a
# single detection is refused; low mining thresholds give the next stage something to learn from.
TINY_GEN = "--tiny --mine-thresholds 0.3 0.3 0.3"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    # The photo and the second evaluation use the shipped weights, as `make demo` does: the tiny nets
    # trained here find no face, and a test over no faces checks nothing.
    make = ["make", "-C", str(REPO), "--no-print-directory", f"PY={sys.executable}", "VENV_STAMP=", f"DEMO={out}",
            "DEMO_DATA_FLAGS=--train 6 --val 3 --landmarks 24", f"DEMO_TRAIN_FLAGS={TINY_TRAIN}",
            f"DEMO_GEN_FLAGS={TINY_GEN}"]
    done = subprocess.run(make + ["demo"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, make, done.stdout


def test_every_stage_leaves_its_output(demo):
    out, _, _ = demo
    for build in ("pnet", "rnet", "onet", "val"):
        assert (out / build / "manifest.json").exists(), build
    for net in ("pnet", "rnet", "onet"):
        assert (out / "weights" / f"{net}.pt").exists()
        assert (out / "train" / net / "log.csv").read_text().count("\n") == 2  # header + 1 epoch
    assert json.loads((out / "rnet" / "manifest.json").read_text())["mined_with"] == ["pnet"]
    assert json.loads((out / "onet" / "manifest.json").read_text())["mined_with"] == ["pnet", "rnet"]
    stages = [s["stage"] for s in json.loads((out / "roc" / "summary.json").read_text())]
    assert stages == ["pnet", "rnet", "onet"]
    assert (out / "roc" / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "stats" / "face_sizes.png").exists()


def test_eval_wider_prints_the_three_aps_and_writes_the_submission_files(demo):
    out, _, stdout = demo
    assert re.search(r"^easy \d\.\d{3} medium \d\.\d{3} hard \d\.\d{3}$", stdout, re.M)
    results = json.loads((out / "eval" / "results.json").read_text())
    assert set(results["ap"]) == {"easy", "medium", "hard"}
    predictions = sorted((out / "eval").glob("*--Demo/*.txt"))
    assert len(predictions) == 3
    shipped = json.loads((out / "eval-shipped" / "results.json").read_text())
    assert shipped["images_evaluated"] == 3 and shipped["config"]["weights"] == "shipped"
    lines = predictions[0].read_text().splitlines()
    assert lines[0] == predictions[0].stem and int(lines[1]) == len(lines) - 2


def test_detect_writes_json_and_an_annotated_image(demo):
    out, _, stdout = demo
    faces = json.loads((out / "detect" / "astronaut.json").read_text())["faces"]
    assert len(faces) == 1  # the astronaut's face, found by the shipped weights
    for face in faces:
        assert len(face["box"]) == 4 and 0.9 <= face["score"] <= 1 and len(face["landmarks"]) == 5
    assert (out / "detect" / "astronaut.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert f"{out}/roc/roc.png" in stdout


def test_stages_are_up_to_date_until_an_earlier_net_changes(demo):
    out, make, _ = demo
    stage_vars = [f"WIDER={out}/wider", f"LANDMARKS={out}/wider/landmarks/trainImageList.txt", f"OUT={out}",
                  f"GEN_FLAGS={TINY_GEN}", f"TRAIN_FLAGS={TINY_TRAIN}"]
    assert subprocess.run(make + stage_vars + ["-q", "roc"]).returncode == 0
    pnet = out / "weights" / "pnet.pt"
    newest = max(p.stat().st_mtime for p in out.rglob("*") if p.is_file())
    os.utime(pnet, (newest + 10, newest + 10))  # touched only: the same content, so nothing to redo
    assert subprocess.run(make + stage_vars + ["-q", "rnet-data"]).returncode == 0
    kept = pnet.read_bytes()
    try:
        pnet.write_bytes(kept + b"\0")  # P-Net retrained after everything else was made
        os.utime(pnet, (1e9, 1e9))  # whatever its mtime
        assert subprocess.run(make + stage_vars + ["-q", "rnet-data"]).returncode == 1
        assert subprocess.run(make + stage_vars + ["-q", "onet-data"]).returncode == 1
        assert subprocess.run(make + stage_vars + ["-q", "val-data"]).returncode == 0
    finally:
        pnet.write_bytes(kept)
