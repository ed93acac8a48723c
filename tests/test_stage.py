"""core.stage.run_stage: every stage's command line ends a refused run with one line, ``<prog>: error: ...``, exit 2.

In process: what is caught (ValueError, OSError, FolderLockedError and what the stage adds) and what is not (a bug
keeps its traceback), the exit code a main returns, a worker's multi-line message cut to one line. In child processes:
several stages, each given an input it must refuse, answer with exactly one line starting with their own name.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from child_env import REPO, child_env
from core.lock import FolderLockedError
from core.stage import run_stage, stage_cli


@dataclass(frozen=True)
class Toy:
    path: str = "x"
    """Anything."""


class StageOwnError(RuntimeError):
    pass


@pytest.mark.parametrize("err", [ValueError("bad value"), FileNotFoundError("x: no such file"), OSError("disk full"),
                                 FolderLockedError("x is in use"), StageOwnError("own")])
def test_a_known_error_is_one_line_with_the_prefix_and_exit_2(capsys, err):
    def main(cfg):
        raise err

    assert run_stage(Toy, main, prog="python -m toy", argv=[], errors=(StageOwnError,)) == 2
    assert capsys.readouterr().err == f"python -m toy: error: {err}\n"


def test_a_bug_keeps_its_traceback_and_main_gives_the_exit_code(capsys):
    def buggy(cfg):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_stage(Toy, buggy, prog="toy", argv=[])
    assert run_stage(Toy, lambda cfg: 3, prog="toy", argv=[]) == 3
    assert run_stage(Toy, lambda cfg: {"a": 1}, prog="toy", argv=["--path", "y"]) == 0  # a result, not a code
    assert run_stage(None, lambda cfg: 0 if cfg == "parsed" else 1, prog="toy", parse=lambda argv: "parsed") == 0


def test_stage_cli_names_the_program_and_help_after_mains_module(capsys, tmp_path):
    from recognition import identify

    cli = stage_cli(identify.IdentifyConfig, identify.main)
    with pytest.raises(SystemExit):
        cli(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m recognition.identify ")
    assert identify.__doc__.split("\n\n")[0] in out
    (tmp_path / "a.jpg").write_bytes(b"")
    assert cli(["--images", str(tmp_path / "a.jpg"), "--gallery", str(tmp_path / "none"), "--out",
                str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("python -m recognition.identify: error: ")


def test_a_message_of_several_lines_is_cut_to_its_first_or_described(capsys):
    def main(cfg):
        raise ValueError("first\nTraceback (most recent call last):\n  ...")

    assert run_stage(Toy, main, prog="toy", argv=[]) == 2
    assert capsys.readouterr().err == "toy: error: first\n"
    assert run_stage(Toy, main, prog="toy", argv=[], describe=lambda e: "described") == 2
    assert capsys.readouterr().err == "toy: error: described\n"


def test_a_usage_error_has_the_same_prefix(capsys):
    with pytest.raises(SystemExit) as done:
        run_stage(Toy, lambda cfg: 0, prog="python -m toy", argv=["--nope"])
    assert done.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("python -m toy: error: ")


def test_each_stage_refuses_a_bad_input_in_one_line_with_its_name(tmp_path):
    absent = tmp_path / "absent"
    runs = {
        "annotations.stats": ["--wider", absent, "--images", tmp_path, "--out-png", tmp_path / "s.png"],
        "annotations.subset": ["--wider-txt", absent, "--fraction", "0.5", "--out", tmp_path / "s.txt"],
        "prepare.generate": ["--wider-txt", absent, "--wider-images", tmp_path, "--out", tmp_path / "g"],
        "evaluation.lfw_cv": ["--out", tmp_path / "cv.json", "--folds", absent / "results.json"],
        "evaluation.pairs": ["--pairs", absent / "pairs.csv", "--images", absent, "--out", tmp_path / "pairs"],
        "annotations.pairs_csv": ["--lfw", absent / "pairs.txt", "--out", tmp_path / "pairs.csv"],
        "evaluation.roc": ["--val-data", absent, "--weights", "shipped", "--out", tmp_path / "roc"],
        "detector.export": ["--weights", absent, "--out", tmp_path / "export"],
        "recognition.export_embedder": ["--embedder", absent, "--out", tmp_path / "export"],
        "evaluation.calibrate": ["--distances", absent / "pairs.csv", "--pairs", absent, "--out", tmp_path / "calibrate"],
        "trainers.train": ["--net", "pnet", "--data", absent, "--out", tmp_path / "train"],
        "prepare.identity_links": ["--images", absent, "--list", absent / "list.txt", "--out", tmp_path / "links"],
    }
    procs = {module: subprocess.Popen([sys.executable, "-m", "core.launch", module, *map(str, args)], cwd=REPO,
                                      env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for module, args in runs.items()}
    for module, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        lines = err.strip().splitlines()
        assert proc.returncode == 2, (module, err)
        assert len(lines) == 1 and lines[0].startswith(f"python -m {module}: error: "), (module, err)
        assert str(absent) in lines[0], (module, err)
