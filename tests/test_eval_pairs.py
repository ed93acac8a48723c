"""Verification on any pairs list (evaluation.pairs, annotations.pairs_csv): the CSV's refusals, the
seeded folds on hand-checked cases, the LFW converter, and eval-pairs end to end on the demo people,
where LFW's pairs converted to CSV score exactly as eval-lfw scores them (eval-lfw is a parser in
front of the same scoring)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from annotations.errors import AnnotationError
from annotations.lfw import parse_pairs
from annotations.pair import Pair
from annotations.pairs_csv import PairsCsvConfig, read_pairs_csv
from annotations.pairs_csv import cli as pairs_csv_cli
from annotations.pairs_csv import main as pairs_csv_main
from child_env import REPO, child_env
from core.weights import pack_weights
from evaluation.lfw import LfwEvalConfig
from evaluation.lfw import main as lfw_main
from evaluation.pairs import PairsEvalConfig, cli, main, score, seeded_folds
from recognition.embedder import load_embedder
from test_make_safety import Make
from test_recognition import fold2, people, trained  # noqa: F401  (the session fixtures)


def _csv(tmp_path, text: str, name: str = "pairs.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the reader ---------------------------------------------------------------------------------

def test_a_pairs_csv_reads_as_the_pair_records_lfw_gives(tmp_path):
    path = _csv(tmp_path, "same, first,second ,fold\n"
                          '1,a/1.jpg,a/2.jpg,1\n\n'
                          'False,"b/x,1.jpg",c/./1.jpg,2\n'
                          "TRUE,b/2.jpg,b/3.jpg,2\n"
                          "0,a/../a/3.jpg,c/1.jpg,01\n")
    assert read_pairs_csv(path) == [Pair(0, "a/1.jpg", "a/2.jpg", True, 2), Pair(1, "b/x,1.jpg", "c/1.jpg", False, 4),
                                    Pair(1, "b/2.jpg", "b/3.jpg", True, 5), Pair(0, "a/3.jpg", "c/1.jpg", False, 6)]
    plain = read_pairs_csv(_csv(tmp_path, "first,second,same\na.jpg,b.jpg,1\n", "plain.csv"))
    assert plain == [Pair(None, "a.jpg", "b.jpg", True, 2)]


HEADER = "first,second,same,fold\n"
GOOD = "a/1.jpg,a/2.jpg,1,1\na/1.jpg,b/1.jpg,0,1\nb/1.jpg,b/2.jpg,1,2\nb/2.jpg,a/2.jpg,0,2\n"
BAD = {  # CSV text: (line, the message after "path:line: ")
    "no same column": ("first,second\na.jpg,b.jpg\n", 1, "no column 'same' in the header 'first,second'"),
    "unknown column": ("first,second,same,folds\n", 1, "unknown column 'folds' in the header"),
    "a column twice": ("first,second,same,same\n", 1, "column 'same' twice in the header"),
    "header only": (HEADER, 1, "a header and no pairs"),
    "a field missing": (HEADER + "a/1.jpg,a/2.jpg,1\n", 2, "3 fields where the header names 4"),
    "same is 2": (HEADER + "a/1.jpg,a/2.jpg,2,1\n", 2, "same is '2'; expected 1 (matched) or 0 (mismatched)"),
    "same is yes": (HEADER + GOOD + "a/3.jpg,a/4.jpg,yes,1\n", 6, "same is 'yes'"),
    "empty path": (HEADER + GOOD + ",a/4.jpg,1,1\n", 6, "empty first image path"),
    "absolute path": (HEADER + "/etc/a.jpg,a/2.jpg,1,1\n", 2, "first image '/etc/a.jpg' is not a /-separated path"),
    "backslashes": (HEADER + "a\\1.jpg,a/2.jpg,1,1\n", 2, "first image 'a\\\\1.jpg' is not a /-separated path"),
    "leaves the root": (HEADER + "a/1.jpg,a/../../x.jpg,1,1\n", 2,
                        "second image 'a/../../x.jpg' leaves the images root"),
    "the root itself": (HEADER + "a/..,a/1.jpg,1,1\n", 2, "first image 'a/..' is the images root, not an image"),
    "fold on some rows": (HEADER + GOOD + "a/3.jpg,a/4.jpg,1,\n", 6, "no fold; the fold column must be given on "
                                                                    "every row or left out"),
    "fold 0": (HEADER + "a/1.jpg,a/2.jpg,1,0\n", 2, "fold is '0'; expected a 1-based integer"),
    "fold not a number": (HEADER + "a/1.jpg,a/2.jpg,1,one\n", 2, "fold is 'one'; expected a 1-based integer"),
    "one fold": (HEADER + "a/1.jpg,a/2.jpg,1,3\na/1.jpg,b/1.jpg,0,3\n", 2, "every pair is in fold 3; the protocol "
                                                                           "needs at least two folds"),
    "a fold without a mismatched pair": (HEADER + GOOD + "c/1.jpg,c/2.jpg,1,3\n", 6, "fold 3 has no mismatched pair"),
    "a fold without a matched pair": (HEADER + "c/1.jpg,a/1.jpg,0,3\n" + GOOD, 2, "fold 3 has no matched pair"),
    "a pair twice": (HEADER + GOOD + "a/1.jpg,a/2.jpg,1,2\n", 6, "the pair a/1.jpg, a/2.jpg is listed twice (first "
                                                                 "at line 2); remove one of the two lines"),
    "a pair twice, swapped": (HEADER + GOOD + "b/1.jpg,a/./1.jpg,0,2\n", 6, "the pair b/1.jpg, a/1.jpg is listed twice "
                                                                            "(first at line 3, in the other order)"),
    "an image with itself": (HEADER + GOOD + "a/1.jpg,a/1.jpg,1,2\n", 6, "pairs the image a/1.jpg with itself"),
    "a bad CSV quote": (HEADER + '"a/1.jpg"x,a/2.jpg,1,1\n', 2, "not a CSV row"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_row_is_one_line_naming_the_file_and_line(tmp_path, case):
    text, line, message = BAD[case]
    path = _csv(tmp_path, text)
    with pytest.raises(AnnotationError) as err:
        read_pairs_csv(path)
    assert err.value.line == line and str(err.value).startswith(f"{path}:{line}: {message}")
    assert len(str(err.value).splitlines()) == 1


def test_an_empty_file_and_a_missing_one_name_the_file(tmp_path):
    with pytest.raises(AnnotationError, match=r"pairs.csv: empty; expected a header first,second,same\[,fold\]"):
        read_pairs_csv(_csv(tmp_path, "\n\n"))
    with pytest.raises(AnnotationError, match="absent.csv: no such file"):
        read_pairs_csv(tmp_path / "absent.csv")


# -- the folds made with a seed -------------------------------------------------------------------

def test_seeded_folds_deal_each_kind_round_the_folds():
    # 5 matched, 4 mismatched, 2 folds: the matched take deal positions 0-4 (folds 0 1 0 1 0), the
    # mismatched go on at 5-8 (folds 1 0 1 0): fold 0 holds 3 matched + 2 mismatched, fold 1 2 + 2.
    same = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0], bool)
    folds = seeded_folds(same, 2, seed=0)
    assert [int(np.sum(same & (folds == k))) for k in (0, 1)] == [3, 2]
    assert [int(np.sum(~same & (folds == k))) for k in (0, 1)] == [2, 2]
    # 15 + 15 into 10 folds: 2 matched in folds 0-4, 1 in 5-9; the mismatched start at fold 5, so every
    # fold holds 3 pairs (dealing each kind from fold 0 would give folds of 4 and 2)
    same = np.repeat([True, False], 15)
    folds = seeded_folds(same, 10, seed=3)
    assert np.bincount(folds[same]).tolist() == [2] * 5 + [1] * 5
    assert np.bincount(folds[~same]).tolist() == [1] * 5 + [2] * 5
    assert np.bincount(folds).tolist() == [3] * 10


def test_seeded_folds_are_fixed_by_the_seed():
    same = np.array([1, 0, 1, 0, 1, 0, 1, 0], bool)
    # numpy's default_rng(0) permutes the matched indices [0 2 4 6] to [4 0 2 6], then the mismatched
    # [1 3 5 7] to [7 5 3 1]; dealt round 2 folds: 4->0 0->1 2->0 6->1, then positions 4-7: 7->0 5->1 3->0 1->1
    assert seeded_folds(same, 2, seed=0).tolist() == [1, 1, 0, 0, 0, 1, 1, 0]
    assert seeded_folds(same, 2, seed=0).tolist() == seeded_folds(same.copy(), 2, seed=0).tolist()
    assert any(seeded_folds(same, 2, seed=s).tolist() != [1, 1, 0, 0, 0, 1, 1, 0] for s in (1, 2, 3))
    with pytest.raises(ValueError, match="3 folds each with a matched and a mismatched pair need 3 of each; the pairs "
                                         "hold 4 matched and 2 mismatched"):
        seeded_folds(np.array([1, 1, 1, 1, 0, 0], bool), 3)


# -- the LFW converter ------------------------------------------------------------------------------

def test_lfw_pairs_convert_to_a_csv_that_reads_back_as_the_same_pairs(people, tmp_path, capsys):
    out = tmp_path / "pairs.csv"
    pairs = pairs_csv_main(PairsCsvConfig(lfw=(str(people / "pairs.txt"),), out=str(out)))
    first = "Demo_Person_00/Demo_Person_00_0001.jpg,Demo_Person_00/Demo_Person_00_0002.jpg,1,1"
    assert out.read_text().splitlines()[:2] == ["first,second,same,fold", first]
    strip = [(p.fold, p.first, p.second, p.same) for p in pairs]
    assert [(p.fold, p.first, p.second, p.same) for p in read_pairs_csv(out)] == strip
    assert "48 pairs (24 matched), 2 folds ->" in capsys.readouterr().out
    # View 1's files hold one fold: no fold column (one fold is no k-fold), eval-pairs makes ten
    view1 = _csv(tmp_path, "2\nA\t1\t2\nB\t1\t3\nA\t1\tB\t2\nA\t2\tB\t1\n", "pairsDevTest.txt")
    pairs_csv_main(PairsCsvConfig(lfw=(str(view1),), out=str(tmp_path / "dev.csv")))
    assert (tmp_path / "dev.csv").read_text().splitlines() == [
        "first,second,same", "A/A_0001.jpg,A/A_0002.jpg,1", "B/B_0001.jpg,B/B_0003.jpg,1", "A/A_0001.jpg,B/B_0002.jpg,0",
        "A/A_0002.jpg,B/B_0001.jpg,0"]
    assert pairs_csv_cli(["--lfw", str(view1), "--out", str(view1)]) == 2
    assert capsys.readouterr().err.strip() == (f"python -m annotations.pairs_csv: error: --out {view1} is the pairs "
                                               f"file {view1} of --lfw: it would be replaced; write the CSV elsewhere")
    assert view1.read_text().startswith("2\n")
    bad = _csv(tmp_path, "1\nA\t1\n", "bad.txt")
    assert pairs_csv_cli(["--lfw", str(bad), "--out", str(tmp_path / "bad.csv")]) == 2
    assert capsys.readouterr().err.startswith(f"python -m annotations.pairs_csv: error: {bad}:1: declares 1 fold(s)")
    assert not (tmp_path / "bad.csv").exists()


def test_view1s_two_files_join_into_one_csv_and_a_pair_in_both_is_refused(tmp_path, capsys):
    train = _csv(tmp_path, "2\nA\t1\t2\nB\t1\t3\nA\t1\tB\t2\nA\t2\tB\t1\n", "pairsDevTrain.txt")
    test = _csv(tmp_path, "1\nC\t1\t2\nC\t1\tD\t1\n", "pairsDevTest.txt")
    joined = pairs_csv_main(PairsCsvConfig(lfw=(str(train), str(test)), out=str(tmp_path / "v1.csv")))
    assert [(p.first, p.line) for p in joined] == [("A/A_0001.jpg", 2), ("B/B_0001.jpg", 3), ("A/A_0001.jpg", 4),
                                                   ("A/A_0002.jpg", 5), ("C/C_0001.jpg", 2), ("C/C_0001.jpg", 3)]
    assert (tmp_path / "v1.csv").read_text().splitlines()[0] == "first,second,same"  # one fold: no fold column
    assert [(p.first, p.second, p.same) for p in read_pairs_csv(tmp_path / "v1.csv")] == \
        [(p.first, p.second, p.same) for p in joined]
    assert f"{train} + {test}: 6 pairs (3 matched), no fold column (one fold) ->" in capsys.readouterr().out
    again = _csv(tmp_path, "1\nE\t1\t2\nB\t2\tA\t1\n", "again.txt")  # DevTrain's line 4, the other way round
    assert pairs_csv_cli(["--lfw", str(train), str(again), "--out", str(tmp_path / "bad.csv")]) == 2
    assert capsys.readouterr().err.strip() == (f"python -m annotations.pairs_csv: error: {again}:3: the pair "
                                               f"B/B_0002.jpg, A/A_0001.jpg is listed twice (first at {train}:4, in "
                                               f"the other order); remove one of the two lines")
    view2 = _csv(tmp_path, "2\t1\nA\t1\t2\nA\t1\tB\t1\nC\t1\t2\nC\t1\tD\t1\n", "pairs.txt")
    assert pairs_csv_cli(["--lfw", str(test), str(view2), "--out", str(tmp_path / "bad.csv")]) == 2
    assert capsys.readouterr().err.strip() == (f"python -m annotations.pairs_csv: error: {view2}:2: holds 2 folds "
                                               f"(View 2's pairs.txt; its first pair is here); only one-fold files "
                                               f"(View 1's) are joined: convert it alone")
    itself = _csv(tmp_path, "1\nE\t1\t1\nE\t1\tF\t1\n", "itself.txt")
    assert pairs_csv_cli(["--lfw", str(itself), "--out", str(tmp_path / "bad.csv")]) == 2
    assert capsys.readouterr().err.strip() == (f"python -m annotations.pairs_csv: error: {itself}:2: pairs the image "
                                               f"E/E_0001.jpg with itself")
    assert not (tmp_path / "bad.csv").exists()
    assert PairsCsvConfig(lfw=str(train), out="x.csv").lfw == (str(train),)
    with pytest.raises(ValueError, match="--lfw names no pairs file"):
        PairsCsvConfig(lfw=(), out="x.csv")


# -- eval-pairs end to end -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stranger(trained, tmp_path_factory) -> Path:
    """The tiny embedder's weights with a record naming other people: eval-lfw scores both demo folds."""
    out = tmp_path_factory.mktemp("stranger")
    record = load_embedder(str(trained)).record
    torch.save(pack_weights(load_embedder(str(trained)).net.state_dict(),
                            {**record, "people": ["Someone_Else"], "lfw_fold_left_out": 10}), out / "embedder.pt")
    return out


def _pairs_csv_rows(folder: Path) -> list[dict]:
    return list(csv.DictReader((folder / "pairs.csv").open()))


def test_lfw_pairs_as_csv_score_exactly_as_eval_lfw_scores_them(people, stranger, tmp_path):
    aligned = str(people / "build" / "aligned")
    lfw = lfw_main(LfwEvalConfig(images=str(people / "images"), pairs=str(people / "pairs.txt"),
                                 out=str(tmp_path / "lfw"), embedder=str(stranger), aligned=aligned, progress=False))
    converted = tmp_path / "demo.csv"
    pairs_csv_main(PairsCsvConfig(lfw=(str(people / "pairs.txt"),), out=str(converted)))
    generic = main(PairsEvalConfig(images=str(people / "images"), pairs=str(converted), out=str(tmp_path / "pairs"),
                                   embedder=str(stranger), aligned=aligned, progress=False))
    assert lfw["pairs"] == 48 and lfw["protocol"] == generic["protocol"] == "the pairs file's folds"
    assert generic.keys() == lfw.keys() - {"category"}  # LFW's protocol category is LFW's alone
    assert {k: v for k, v in generic.items() if k != "settings"} == \
        {k: v for k, v in lfw.items() if k not in ("settings", "category")}
    assert (tmp_path / "pairs" / "pairs.csv").read_bytes() == (tmp_path / "lfw" / "pairs.csv").read_bytes()
    assert (tmp_path / "pairs" / "roc.png").is_file()
    assert json.loads((tmp_path / "pairs" / "results.json").read_text())["accuracy_mean"] == lfw["accuracy_mean"]


def test_a_csv_without_folds_is_scored_over_ten_seeded_folds_that_pairs_csv_records(people, trained, tmp_path):
    text = "first,second,same\n" + "".join(f"{p.first},{p.second},{int(p.same)}\n"
                                           for p in parse_pairs(people / "pairs.txt"))
    cfg = PairsEvalConfig(images=str(people / "images"), pairs=str(_csv(tmp_path, text)), out=str(tmp_path / "e"),
                          embedder=str(trained), aligned=str(people / "build" / "aligned"), seed=5, progress=False)
    results = main(cfg)
    # no people check: the embedder learnt fold 1's people, and results.json says so instead of refusing
    assert results["embedder_training"]["lfw_fold_left_out"] == 2 and results["embedder_training"]["people"] == 6
    assert results["protocol"] == "10 folds made with seed 5" and len(results["fold_accuracy"]) == 10
    rows = _pairs_csv_rows(tmp_path / "e")
    same = np.array([r["same"] == "1" for r in rows])
    folds = np.array([int(r["fold"]) - 1 for r in rows])
    assert folds.tolist() == seeded_folds(same, 10, 5).tolist()
    dist = np.array([float(r["distance"]) if r["distance"] else np.nan for r in rows])
    again = score(dist, same, np.isnan(dist), folds, cfg.far)
    assert again["fold_accuracy"] == results["fold_accuracy"] and again["auc"] == results["auc"]
    rerun = main(replace(cfg, out=str(tmp_path / "again")))
    assert (tmp_path / "again" / "pairs.csv").read_bytes() == (tmp_path / "e" / "pairs.csv").read_bytes()
    assert rerun["accuracy_mean"] == results["accuracy_mean"]
    other = main(replace(cfg, out=str(tmp_path / "seed6"), seed=6))
    assert [r["fold"] for r in _pairs_csv_rows(tmp_path / "seed6")] != [r["fold"] for r in rows]
    assert other["protocol"] == "10 folds made with seed 6"


def test_eval_pairs_refusals_are_one_line(people, trained, tmp_path, capsys):
    images = people / "images"
    bad = _csv(tmp_path, "first,second,same\nDemo_Person_00/Demo_Person_00_0001.jpg,../x.jpg,1\n")
    args = ["--images", str(images), "--out", str(tmp_path / "e"), "--embedder", str(trained), "--no-progress"]
    assert cli(["--pairs", str(bad), *args]) == 2
    assert capsys.readouterr().err.strip() == (f"python -m evaluation.pairs: error: {bad}:2: second image '../x.jpg' "
                                               f"leaves the images root")
    rows = [f"{p.first},{p.second},{int(p.same)},{p.fold + 1}\n" for p in parse_pairs(people / "pairs.txt")]
    rows[3] = "Demo_Person_00/Demo_Person_00_0001.jpg,Nobody/N_1.jpg,1,1\n"
    absent = _csv(tmp_path, "first,second,same,fold\n" + "".join(rows), "a.csv")
    assert cli(["--pairs", str(absent), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{absent}:5: Nobody/N_1.jpg is not in {images}" in err[0]
    few = _csv(tmp_path, "first,second,same\nDemo_Person_00/Demo_Person_00_0001.jpg,"
                         "Demo_Person_00/Demo_Person_00_0002.jpg,1\n", "few.csv")
    assert cli(["--pairs", str(few), *args]) == 2
    assert capsys.readouterr().err.startswith(f"python -m evaluation.pairs: error: {few}: 10 folds each with a matched "
                                              f"and a mismatched pair need 10 of each; the pairs hold 1 matched and 0 ")
    with pytest.raises(SystemExit):
        cli(["--pairs", str(few), *args, "--num-folds", "1"])
    assert "--num-folds must be at least 2" in capsys.readouterr().err
    assert not (tmp_path / "e" / "results.json").exists()


# -- make -------------------------------------------------------------------------------------------

def test_make_eval_pairs_runs_the_stage_and_asks_for_its_inputs(make_dry_run, tmp_path):
    dry = make_dry_run("eval-pairs", "PAIRS_CSV=b/cfp.csv", "IMAGES_ROOT=/cfp", "-o", "b/cfp.csv")
    commands = " ".join(dry.split())  # continuation lines joined with their tabs
    assert ("evaluation.pairs --pairs b/cfp.csv --images /cfp --out build/eval-pairs/cfp-shipped --embedder shipped "
            "--aligned build/recog/aligned --seed 0 ") in commands
    commands = make_dry_run("pairs-csv", "PAIRS=/lfw/pairsDevTest.txt", "-o", "/lfw/pairsDevTest.txt")
    assert "annotations.pairs_csv --lfw /lfw/pairsDevTest.txt --out build/pairs-csv/pairsDevTest.csv" in commands
    view1 = ("PAIRS=/lfw/pairsDevTrain.txt /lfw/pairsDevTest.txt", "-o", "/lfw/pairsDevTrain.txt", "-o",
             "/lfw/pairsDevTest.txt")
    assert ("annotations.pairs_csv --lfw /lfw/pairsDevTrain.txt /lfw/pairsDevTest.txt --out "
            "build/pairs-csv/pairsDevTrain+pairsDevTest.csv") in make_dry_run("pairs-csv", *view1)
    make = Make(tmp_path)
    assert make("-n", "calibrate", view1[0], "PAIRS_CSV=v1.csv", "IMAGES_ROOT=/lfw", "-o", "v1.csv").returncode == 0
    settings = make_dry_run("pairs-csv", *view1)
    assert "pairs=/lfw/pairsDevTrain.txt /lfw/pairsDevTest.txt' > build/pairs-csv/.pairsDevTrain+pairsDevTest.csv" \
        ".make-settings" in settings  # another list under the same PAIRS_CSV_OUT makes the CSV again
    for target in ("eval-lfw", "calibrate", "cv-lfw"):  # the readers of one LFW pairs file
        done = make("-n", target, view1[0])
        assert done.returncode == 2 and done.stderr.strip().endswith(
            'PAIRS="/lfw/pairsDevTrain.txt /lfw/pairsDevTest.txt" names several files, which only pairs-csv joins (make '
            'pairs-csv PAIRS="/lfw/pairsDevTrain.txt /lfw/pairsDevTest.txt", then PAIRS_CSV=build/pairs-csv/'
            'pairsDevTrain+pairsDevTest.csv IMAGES_ROOT=<images>).  Stop.'), (target, done.stderr)
    done = make("eval-pairs", f"OUT={tmp_path / 'o'}")
    assert done.returncode == 2 and done.stderr.startswith("usage: make eval-pairs PAIRS_CSV=pairs.csv IMAGES_ROOT=")
    assert make.calls() == []


@pytest.mark.slow
def test_lfw_view1_converts_and_reads_back(shared_data, tmp_path):
    for name, count in (("pairsDevTrain.txt", 2200), ("pairsDevTest.txt", 1000), ("pairs.txt", 6000)):
        out = tmp_path / name.replace(".txt", ".csv")
        done = subprocess.run([sys.executable, "-m", "annotations.pairs_csv", "--lfw", str(shared_data / "lfw" / name),
                               "--out", str(out)], cwd=REPO, env=child_env(), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        pairs = read_pairs_csv(out)
        assert len(pairs) == count and (pairs[0].fold is None) == (name != "pairs.txt")
