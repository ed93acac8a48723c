"""The Makefile as a hostile user meets it: values are never shell or make code, and make follows contents.

Every recipe runs with ``PY`` set to ``tests/fake_stage.py`` (each stage's argv recorded, its target
file written in milliseconds), so that what make runs and what each command receives is checked
without torch. Rule 1 of docs/reliability.md: a path or list holding quotes, backquotes, ``$(``,
``&`` or ``;`` reaches its command as one argument or is refused in one line, and nothing runs that
the user did not ask for. Rule 4: an input changed in content, a folder's listing or a setting
reruns what it affects whatever the mtimes, and a copied build folder is up to date.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from child_env import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
MAKE_INPUTS = REPO / "core" / "make_inputs.py"


class Make:
    """make in the repo with the fake stages; ``calls()`` are the stages' argv since the last reset."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.log = tmp / "stages.jsonl"
        self.py = tmp / "fake-python"
        self.py.write_text(f"#!/bin/sh\nexec {sys.executable} {REPO / 'tests' / 'fake_stage.py'} \"$@\"\n")
        self.py.chmod(0o755)

    def __call__(self, *args, env_extra=None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("OUT", "MAKEFLAGS", "MFLAGS")}
        env.update(FAKE_STAGE_LOG=str(self.log), **(env_extra or {}))
        return subprocess.run(["make", "-C", str(REPO), "--no-print-directory", f"PY={self.py}", "VENV_STAMP=",
                               *map(str, args)], capture_output=True, text=True, env=env)

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def reset(self) -> None:
        self.log.unlink(missing_ok=True)


@pytest.fixture
def make(tmp_path):
    return Make(tmp_path)


def data_tree(root: Path) -> dict[str, Path]:
    """The inputs of every detector and recognition target, as files the fake stages never read."""
    files = {"WIDER_TXT": root / "train.txt", "LANDMARKS": root / "landmarks.txt", "VAL_TXT": root / "val.txt",
             "PEOPLE": root / "people.txt", "PAIRS": root / "pairs.txt"}
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")
    folders = {"WIDER_IMAGES": root / "images", "VAL_IMAGES": root / "val_images", "LFW_IMAGES": root / "lfw",
               "GT": root / "gt"}
    for path in folders.values():
        (path / "a").mkdir(parents=True, exist_ok=True)
        (path / "a" / "a_0001.jpg").write_bytes(b"jpeg")
    return {**files, **folders, "IDENTITIES": folders["LFW_IMAGES"]}


def assign(values: dict) -> list[str]:
    return [f"{k}={v}" for k, v in values.items()]


# -- rule 1: values are one argument, never code --------------------------------------------
# Each runs `touch CANARY` if a shell or make ever reads it as code (no spaces: ${IFS} is bash's).
HOSTILE = {
    "backquotes": "q`touch${IFS}CANARY`q",
    "dollar-paren": "q$(touch${IFS}CANARY)q",
    "ampersand": "q&touch${IFS}CANARY&q",
    "single-quote": "it's'$(touch${IFS}CANARY)'",
    "double-quote": 'q"$(touch${IFS}CANARY)"q',
}
# The targets that read each variable holding a path or a list, with the inputs that target needs
PATH_TARGETS = {
    "roc": ["OUT", "WIDER_TXT", "WIDER_IMAGES", "LANDMARKS", "VAL_TXT", "VAL_IMAGES", "WEIGHTS_DIR"],
    "eval-wider": ["IMAGES", "GT", "PRED", "WEIGHTS"],
    "eval-landmarks": ["LANDMARK_LIST", "LM_OUT", "WEIGHTS"],
    "stage-recall": ["IMAGES", "GT", "STAGE_OUT"],
    "export": ["EXPORT_OUT", "WEIGHTS"],
    "detect": ["IMG", "DETECT_OUT", "WEIGHTS"],
    "align": ["IMAGES", "ALIGN_OUT"],
    "compare": ["IMAGES", "EMBEDDER"],
    "cv-lfw": ["LFW_IMAGES", "IDENTITIES", "PEOPLE", "PAIRS", "RECOG_OUT", "RECOG_ALIGNED", "CV_OUT", "OUT"],
    "train-embed": ["IDENTITIES", "PEOPLE", "FOLD", "ONLY_PEOPLE", "RECOG_BUILD", "RECOG_ALIGNED", "EMBED_OUT"],
    "eval-lfw": ["LFW_OUT", "EMBEDDER", "LFW_IMAGES", "PAIRS", "RECOG_ALIGNED"],
    "eval-pairs": ["PAIRS_CSV", "IMAGES_ROOT", "EVAL_PAIRS_OUT", "EMBEDDER", "RECOG_ALIGNED"],
    "pairs-csv": ["PAIRS", "PAIRS_CSV_OUT"],
    "export-embedder": ["EMBEDDER", "EXPORT_OUT"],
    "calibrate": ["EMBEDDER", "PAIRS", "PEOPLE", "LFW_IMAGES", "RECOG_ALIGNED", "CALIBRATE_OUT"],
    "stats": ["WIDER_TXT", "WIDER_IMAGES", "LANDMARKS", "OUT"],
}
FLAG_VARS = {
    "roc": ["GEN_FLAGS", "GEN_FLAGS_pnet", "GEN_FLAGS_rnet", "GEN_FLAGS_onet", "GEN_FLAGS_val", "TRAIN_FLAGS",
            "TRAIN_FLAGS_pnet", "TRAIN_FLAGS_rnet", "TRAIN_FLAGS_onet", "SEED", "DEVICE", "WORKERS"],
    "detect": ["MIN_FACE", "DEVICE", "BACKEND"],
    "align": ["ALIGN", "BACKEND"],
    "cv-lfw": ["EMBED_FLAGS", "RECOG_SIZE", "RECOG_ALIGN", "MIN_FACE"],
    "train-embed": ["EMBED_FLAGS", "SEED"],
    "eval-lfw": ["LFW_FLAGS"],
    "eval-pairs": ["EVAL_PAIRS_FLAGS", "SEED"],
    "calibrate": ["LFW_FLAGS", "CALIBRATE_FLAGS", "CALIBRATE_FAR"],
    "compare": ["THRESHOLD"],
}


def hostile_values(target: str, kind: str, tmp: Path, canary: Path) -> dict[str, str]:
    """Each variable of ``target`` set to its own hostile value; inputs exist under those names."""
    text = HOSTILE[kind].replace("CANARY", str(canary))
    values = {}
    for var in PATH_TARGETS.get(target, []):
        path = tmp / "in" / f"{var.lower()}-{text}"
        if var == "FOLD":  # a number: the value the people list is read with
            values[var] = "3"
            continue
        if var in ("WIDER_TXT", "LANDMARKS", "VAL_TXT", "PEOPLE", "PAIRS", "LANDMARK_LIST", "ONLY_PEOPLE", "IMG",
                   "PAIRS_CSV"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x\n")
        elif var in ("WIDER_IMAGES", "VAL_IMAGES", "LFW_IMAGES", "IDENTITIES", "GT", "IMAGES", "IMAGES_ROOT"):
            (path / "a").mkdir(parents=True, exist_ok=True)
            (path / "a" / "a_0001.jpg").write_bytes(b"jpeg")
        elif var in ("WEIGHTS", "EMBEDDER"):
            path.mkdir(parents=True, exist_ok=True)
            for name in ("pnet.pt", "rnet.pt", "onet.pt", "embedder.pt"):
                (path / name).write_bytes(b"w")
        else:  # an output folder
            path = tmp / "out" / f"{var.lower()}-{text}"
        values[var] = str(path)
    for var in FLAG_VARS.get(target, []):
        values[var] = f"--{var.lower()}-{text}"
    return values


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_paths_and_lists_reach_their_command_as_one_argument(make, tmp_path, kind):
    canary = tmp_path / "pwned"
    for target in sorted(PATH_TARGETS):
        values = hostile_values(target, kind, tmp_path, canary)
        base = data_tree(tmp_path / "data")
        inputs = {k: v for k, v in base.items() if k not in values}
        make.reset()
        done = make(target, *assign(inputs), *assign(values), "CV_FOLDS=3", env_extra={"OUT": str(tmp_path / "env-out")})
        assert not canary.exists(), f"{target}: a value ran as code\n{done.stdout}{done.stderr}"
        assert done.returncode == 0, f"{target}:\n{done.stdout}{done.stderr}"
        arguments = [a for call in make.calls() for a in call]
        assert arguments, f"{target} ran no stage"
        for var, value in values.items():
            assert any(value in a for a in arguments), f"{target}: {var}={value!r} did not arrive as one argument"


def test_identity_roots_reach_prepare_identities_each_as_one_argument(make, tmp_path):
    """IDENTITIES is a list: LFW's root and an outside set's, each its own argument after --images."""
    canary = tmp_path / "pwned"
    base = data_tree(tmp_path / "data")
    roots = []
    for kind in ("backquotes", "single-quote"):
        root = tmp_path / "in" / f"root-{HOSTILE[kind].replace('CANARY', str(canary))}"
        (root / "a").mkdir(parents=True, exist_ok=True)
        (root / "a" / "a_0001.jpg").write_bytes(b"jpeg")
        roots.append(str(root))
    for target in ("recog-data", "cv-lfw"):
        make.reset()
        done = make(target, *assign({**base, "IDENTITIES": " ".join(roots)}), f"OUT={tmp_path / target}", "FOLD=2",
                    "CV_FOLDS=2")
        assert done.returncode == 0 and not canary.exists(), done.stderr
        call = next(c for c in make.calls() if c[0] == "prepare.identities")
        start = call.index("--images") + 1
        assert call[start : start + 3] == [*roots, "--out"], target


def test_view1s_pairs_files_reach_pairs_csv_each_as_one_argument(make, tmp_path):
    """PAIRS is a list for pairs-csv (View 1's two files joined): each file its own argument after --lfw."""
    canary = tmp_path / "pwned"
    files = []
    for kind in ("backquotes", "dollar-paren"):
        path = tmp_path / "in" / f"pairs-{HOSTILE[kind].replace('CANARY', str(canary))}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")
        files.append(str(path))
    done = make("pairs-csv", f"PAIRS={' '.join(files)}", f"OUT={tmp_path / 'o'}")
    assert done.returncode == 0 and not canary.exists(), done.stderr
    call = next(c for c in make.calls() if c[0] == "annotations.pairs_csv")
    assert call[call.index("--lfw") + 1 : call.index("--out")] == files


def test_test_workers_must_be_a_number_and_a_make_function_in_it_never_runs(make, tmp_path):
    canary = tmp_path / "pwned"
    for given in ({"env_extra": {"TEST_WORKERS": f"$(shell touch {canary})2"}}, {}):
        args = () if given else (f"TEST_WORKERS=2;touch {canary}",)
        done = make("-n", "test", *args, **given)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and "is not a number of test processes" in lines[0], done.stderr
        assert not canary.exists()
    assert make("-n", "test", "TEST_WORKERS=auto").returncode == 0


def test_a_make_function_in_a_value_is_text_on_the_command_line_and_in_the_environment(make, tmp_path):
    canary = tmp_path / "pwned"
    base = data_tree(tmp_path / "data")
    flags = f"--epochs=$(shell touch {canary})"
    done = make("cv-lfw", *assign(base), f"OUT={tmp_path / 'o'}", "CV_FOLDS=1", f"EMBED_FLAGS={flags}")
    assert done.returncode == 0, done.stderr
    done = make("-n", "pnet-data", *assign(base), env_extra={"OUT": f"{tmp_path}/$(shell touch {canary})"})
    assert not canary.exists()
    embed = [call for call in make.calls() if call[0] == "trainers.embed"]
    assert embed and embed[0][-3:] == ["--epochs=$(shell", "touch", f"{canary})"]


# Characters make itself cannot have in a file name, with a line break and a space
MAKE_SYNTAX = [";", ":", "|", "=", "%", "#", "*", "?", "[", "\\", "\n", " "]
PATH_VARS = ["DATA", "WIDER", "WIDER_TXT", "WIDER_IMAGES", "LANDMARKS", "OUT", "VAL_TXT", "VAL_IMAGES", "WEIGHTS_DIR",
             "GT", "PRED", "IMG", "DETECT_OUT", "EXPORT_OUT", "ALIGN_OUT", "LM_OUT", "LANDMARK_LIST", "STAGE_OUT", "DEMO",
             "LFW", "LFW_IMAGES", "PEOPLE", "PAIRS", "IDENTITIES", "ONLY_PEOPLE", "RECOG_OUT", "RECOG_ALIGNED",
             "RECOG_BUILD", "EMBED_OUT", "EMBEDDER", "LFW_OUT", "CV_OUT", "PAIRS_CSV", "IMAGES_ROOT", "EVAL_PAIRS_OUT",
             "PAIRS_CSV_OUT", "CALIBRATE_OUT"]


@pytest.mark.parametrize("var", PATH_VARS)
def test_a_path_make_cannot_name_is_refused_in_one_line_naming_the_variable(make, tmp_path, var):
    canary = tmp_path / "pwned"
    for char in (MAKE_SYNTAX if var in ("OUT", "IMG", "EMBEDDER") else [";", "\n", "#"]):
        done = make("-n", "help", f"{var}=/tmp/a{char}touch${{IFS}}{canary}{char}b")
        assert done.returncode == 2, (var, char, done.stdout)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{var}=" in lines[0], (var, char, done.stderr)
        assert not canary.exists()


def test_a_line_break_in_a_flags_value_is_refused_in_one_line(make, tmp_path):
    done = make("-n", "pnet-data", "GEN_FLAGS=--tiny\ntouch /tmp/x")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert 'GEN_FLAGS="--tiny\\ntouch /tmp/x" has a line break' in done.stderr


def test_make_never_trains_into_the_committed_weights(make, tmp_path):
    for spelling in ("weights", f"{REPO}/weights", "weights/", "./weights"):
        done = make("-n", "rnet-data", f"WEIGHTS_DIR={spelling}")
        assert done.returncode == 2 and "committed weights' folder" in done.stderr, spelling
        assert len(done.stderr.strip().splitlines()) == 1


def test_the_demo_passes_its_folder_to_every_stage_as_one_argument(make, tmp_path):
    canary = tmp_path / "pwned"
    demo = tmp_path / HOSTILE["single-quote"].replace("CANARY", str(canary))
    done = make("demo", f"DEMO={demo}")
    assert not canary.exists()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    modules = [call[0] for call in make.calls()]
    assert {"prepare.generate", "trainers.train", "evaluation.roc", "detector.detect", "trainers.embed",
            "evaluation.lfw", "recognition.compare"} <= set(modules)
    assert all(any(str(demo) in a for a in call) for call in make.calls() if call[0] != "recognition.compare")
    assert f"demo done (everything under {demo}):" in done.stdout


# -- rule 4: contents, not mtimes -------------------------------------------------------------
def old(path: Path, seconds: float = 1e9) -> None:
    """Give ``path`` an mtime long before anything make wrote."""
    os.utime(path, (seconds, seconds))


def modules_run(make: Make) -> list[str]:
    return [call[0] for call in make.calls()]


def test_an_annotation_edited_and_given_an_older_mtime_rebuilds(make, tmp_path):
    base = data_tree(tmp_path / "data")
    args = [*assign(base), f"OUT={tmp_path / 'o'}"]
    assert make("pnet-data", *args).returncode == 0
    assert make("-q", "pnet-data", *args).returncode == 0
    base["WIDER_TXT"].write_text("y\n")  # same size, other content, an mtime older than the build
    old(base["WIDER_TXT"])
    assert make("-q", "pnet-data", *args).returncode == 1
    make.reset()
    assert make("pnet-data", *args).returncode == 0 and modules_run(make) == ["prepare.generate"]
    assert make("-q", "pnet-data", *args).returncode == 0


def test_a_person_added_inside_an_identity_folder_rebuilds_and_retrains(make, tmp_path):
    base = data_tree(tmp_path / "data")
    args = [*assign(base), f"OUT={tmp_path / 'o'}", "FOLD=2"]
    assert make("train-embed", *args).returncode == 0
    assert make("-q", "train-embed", *args).returncode == 0
    added = base["IDENTITIES"] / "a" / "a_0002.jpg"  # inside a person's folder: the root's mtime stays
    added.write_bytes(b"jpeg")
    old(added)
    old(added.parent)
    assert make("-q", "recog-data", *args).returncode == 1
    make.reset()
    assert make("train-embed", *args).returncode == 0
    assert modules_run(make) == ["prepare.identities", "trainers.embed"]


@pytest.mark.parametrize("change", ["EMBED_FLAGS=--epochs 2", "WEIGHTS=original:/w", "MIN_FACE=30", "RECOG_SIZE=96"])
def test_cv_lfw_is_redone_after_a_change_of_recipe_or_detector(make, tmp_path, change):
    base = data_tree(tmp_path / "data")
    args = [*assign(base), f"OUT={tmp_path / 'o'}", "CV_FOLDS=1 2"]
    assert make("cv-lfw", *args).returncode == 0
    assert make("-q", "cv-lfw", *args).returncode == 0
    assert make("-q", "cv-lfw", *args, change).returncode == 1


def test_a_train_embed_of_one_fold_with_other_flags_makes_cv_lfw_retrain_that_fold(make, tmp_path):
    base = data_tree(tmp_path / "data")
    args = [*assign(base), f"OUT={tmp_path / 'o'}", "CV_FOLDS=1 2"]
    assert make("cv-lfw", *args).returncode == 0
    for k in (1, 2):  # made by pattern rules only, yet kept: make deletes "intermediate" files
        assert (tmp_path / "o" / "train" / f"embed-fold-{k}" / "embedder.pt").is_file()
        assert (tmp_path / "o" / "recog" / f"fold-{k}" / "manifest.json").is_file()
    assert make("train-embed", *args, "FOLD=1", "EMBED_FLAGS=--epochs 2").returncode == 0
    make.reset()
    assert make("cv-lfw", *args).returncode == 0
    trained = [call[call.index("--data") + 1] for call in make.calls() if call[0] == "trainers.embed"]
    assert [Path(t).name for t in trained] == ["fold-1"]
    assert "--epochs" not in make.calls()[0]


def test_a_copied_build_folder_is_up_to_date_and_settles(make, tmp_path):
    base = data_tree(tmp_path / "data")
    first, copy = tmp_path / "o", tmp_path / "copy"
    assert make("train-pnet", *assign(base), f"OUT={first}").returncode == 0
    shutil.copytree(first, copy, copy_function=shutil.copy)  # new mtimes, in the order copied
    old(copy / "pnet" / "manifest.json")  # the worst order: the build older than its settings
    old(copy / "weights" / "pnet.pt")
    make.reset()
    assert make("-q", "train-pnet", *assign(base), f"OUT={copy}").returncode == 0
    assert make("train-pnet", *assign(base), f"OUT={copy}").returncode == 0 and make.calls() == []


# -- core/make_inputs.py ----------------------------------------------------------------------
def stamp_check(*targets) -> list[str]:
    done = subprocess.run([sys.executable, str(MAKE_INPUTS), "check", *map(str, targets)], capture_output=True,
                          text=True, check=True)
    return done.stdout.split()


def test_a_folders_listing_counts_its_nested_files_and_nothing_else(tmp_path):
    images, target = tmp_path / "images", tmp_path / "out" / "manifest.json"
    (images / "p").mkdir(parents=True)
    (images / "p" / "1.jpg").write_bytes(b"a")
    target.parent.mkdir()
    target.write_text("m")
    subprocess.run([sys.executable, str(MAKE_INPUTS), "write", str(target), str(images), "FORCE"], check=True)
    assert stamp_check(target) == []
    os.utime(images / "p", (1, 1))  # a folder's own mtime is no content
    assert stamp_check(target) == []
    (images / "p" / "2.jpg").write_bytes(b"b")
    assert stamp_check(target) == [str(target)]


def test_a_stamp_follows_its_tree_when_copied_and_touches_an_older_target(tmp_path):
    tree = tmp_path / "a"
    (tree / "in").mkdir(parents=True)
    (tree / "in" / "x.txt").write_text("x")
    (tree / "out").mkdir()
    (tree / "out" / "t").write_text("t")
    subprocess.run([sys.executable, str(MAKE_INPUTS), "write", str(tree / "out" / "t"), str(tree / "in" / "x.txt")],
                   check=True)
    copy = tmp_path / "b"
    shutil.copytree(tree, copy)
    (tree / "in" / "x.txt").write_text("changed")  # the original's input: not the copy's
    old(copy / "out" / "t")
    assert stamp_check(copy / "out" / "t") == []
    assert (copy / "out" / "t").stat().st_mtime >= (copy / "in" / "x.txt").stat().st_mtime
    assert stamp_check(tree / "out" / "t") == [str(tree / "out" / "t")]


@pytest.mark.parametrize("var", ["CV_FOLDS", "FOLD"])
def test_fold_numbers_that_are_not_numbers_are_refused_before_they_name_a_rule(make, tmp_path, var):
    # CV_FOLDS becomes part of rule lines, where a `;` would start a recipe of the user's text.
    canary = tmp_path / "pwned"
    base = data_tree(tmp_path / "data")
    done = make("cv-lfw", *assign(base), f"OUT={tmp_path / 'o'}", f"{var}=1;touch${{IFS}}{canary};")
    assert not canary.exists()
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert f"{var}=" in done.stderr and "not a list of fold numbers" in done.stderr
