"""make's code prerequisites are each stage's import closure (core/make_deps.py), so no edit is missed.

In a copy of the repository, every stage is made once with the fake stages (tests/fake_stage.py),
then a file deep in each stage's closure (one its module does not import itself) is edited: make
must want that stage again, and nothing when the file is restored. On synthetic trees the closure
is shown to follow imports inside functions, package ``__init__`` files and ``import_module``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from child_env import REPO
from core import make_deps
from test_make_safety import Make, assign, data_tree

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None, reason="needs make, git")

# The target of each stage's rule (with the variables it is made with)
TARGETS = {
    "prepare.generate.unmined": "pnet-data", "prepare.generate": "rnet-data", "trainers.train": "train-pnet",
    "evaluation.roc": "roc", "evaluation.wider_eval": "eval-wider", "evaluation.landmarks": "eval-landmarks",
    "evaluation.stage_recall": "stage-recall", "detector.export": "export", "prepare.identities": "recog-data",
    "trainers.embed": "train-embed", "evaluation.lfw": "eval-lfw", "evaluation.lfw_cv": "cv-lfw",
    "recognition.export_embedder": "export-embedder", "evaluation.pairs": "eval-pairs",
    "annotations.pairs_csv": "pairs-csv", "evaluation.calibrate": "calibrate",
}


def deep_file(stage: str) -> str:
    """A file of the stage's closure that its module does not import directly."""
    module = ".".join(stage.split(".")[:2])
    own = {make_deps.module_file(module).relative_to(REPO).as_posix()}
    direct = {make_deps.module_file(m).relative_to(REPO).as_posix() for m in make_deps.direct_imports(module)}
    candidates = [f for f in make_deps.stage_code(stage) if f not in own | direct and not f.endswith("__init__.py")]
    return candidates[-1]


@pytest.fixture(scope="module")
def built_copy(tmp_path_factory):
    """A copy of the tracked files with every stage made once; (copy, make, arguments)."""
    tmp = tmp_path_factory.mktemp("repo_copy")
    copy = tmp / "repo"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in filter(None, files.split("\0")):
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    for name in ("core/make_deps.py", "core/make_inputs.py"):  # before their first commit, in a fresh checkout
        shutil.copy2(REPO / name, copy / name)
    make = Make(tmp)
    base = data_tree(tmp / "data")
    (tmp / "data" / "pairs.csv").write_text("x\n")
    args = [*assign(base), f"OUT={tmp / 'o'}", "FOLD=1", "CV_FOLDS=1", f"WEIGHTS={tmp / 'o' / 'weights'}",
            f"PAIRS_CSV={tmp / 'data' / 'pairs.csv'}", f"IMAGES_ROOT={base['LFW_IMAGES']}"]
    for target in dict.fromkeys(TARGETS.values()):
        done = make("-C", copy, target, *args)
        assert done.returncode == 0, f"{target}: {done.stderr}"
    return copy, make, args


def assert_an_edit_remakes(built_copy, target: str, name: str) -> None:
    """``target`` is up to date in the built copy, wanted again once the file ``name`` (relative to
    the copy) is edited, and up to date again once it is restored."""
    copy, make, args = built_copy
    assert make("-C", copy, "-q", target, *args).returncode == 0, target
    path = copy / name
    text = path.read_text()
    path.write_text(text + "# an edit\n")
    try:
        assert make("-C", copy, "-q", target, *args).returncode == 1, f"{target} missed an edit of {name}"
    finally:
        path.write_text(text)
    assert make("-C", copy, "-q", target, *args).returncode == 0


@pytest.mark.parametrize("stage", sorted(TARGETS))
def test_an_edit_deep_in_a_stages_imports_remakes_it(built_copy, stage):
    assert_an_edit_remakes(built_copy, TARGETS[stage], deep_file(stage))


@pytest.mark.parametrize("recipe, target", [("data-pnet", "pnet-data"), ("data-rnet", "rnet-data"),
                                            ("pnet", "train-pnet"), ("embedder", "train-embed")])
def test_an_edit_of_a_recipe_file_remakes_what_it_made(built_copy, recipe, target):
    assert_an_edit_remakes(built_copy, target, f"configs/{recipe}.toml")


def test_the_data_builds_digest_the_files_make_watches():
    from prepare import fingerprint

    include = dict(line.split(" := ") for line in make_deps.include_text().splitlines()[1:])
    assert fingerprint.code_files(mined=False) == tuple(include["CODE_prepare.generate.unmined"].split())
    assert set(fingerprint.code_files(mined=True)) == set(include["CODE_prepare.generate"].split())
    assert "lmdb_builders/faces.py" in include["CODE_trainers.embed"] and "core/verification.py" in include[
        "CODE_trainers.embed"]


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_closure_follows_every_kind_of_import_and_leaves_out_what_is_excluded(tmp_path):
    root = write_tree(tmp_path, {
        "core/__init__.py": "from core.a import x\n",
        "core/a.py": "import os\nx = 1\n",
        "core/b.py": "y = 2\n",
        "core/c.py": "z = 3\n",
        "core/unused.py": "",
        "prepare/__init__.py": "",
        "prepare/stage.py": "import numpy\nfrom core import b\n\ndef later():\n    import importlib\n"
                            "    return importlib.import_module('core.c')\n",
        "prepare/mine.py": "from core.unused import nothing\n",
    })
    make_deps.direct_imports.cache_clear()
    assert make_deps.closure("prepare.stage", root=root) == [
        "core/__init__.py", "core/a.py", "core/b.py", "core/c.py", "prepare/__init__.py", "prepare/stage.py"]
    (root / "prepare" / "stage.py").write_text("from prepare import mine\n")
    make_deps.direct_imports.cache_clear()
    assert "core/unused.py" in make_deps.closure("prepare.stage", root=root)
    assert make_deps.closure("prepare.stage", exclude=("prepare.mine",), root=root) == [
        "prepare/__init__.py", "prepare/stage.py"]
    make_deps.direct_imports.cache_clear()


def test_the_include_file_is_remade_when_a_source_changes(tmp_path, built_copy):
    copy, make, args = built_copy
    include = copy / "build" / "make" / "code.mk"
    stage = copy / "evaluation" / "lfw_cv.py"
    text = stage.read_text()
    stage.write_text(text + "from lmdb_builders import faces\n")
    try:
        make("-C", copy, "-n", "help")
        assert "lmdb_builders/faces.py" in next(line for line in include.read_text().splitlines()
                                                if line.startswith("CODE_evaluation.lfw_cv :="))
    finally:
        stage.write_text(text)
    make("-C", copy, "-n", "help")
    assert "lmdb_builders/faces.py" not in next(line for line in include.read_text().splitlines()
                                                if line.startswith("CODE_evaluation.lfw_cv :="))
