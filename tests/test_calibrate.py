"""A threshold with a known FAR (issue #32 item 4): ``evaluation.calibrate`` and its consumers.

The choice is checked exactly on hand-made distances (ties, failed pairs, a target no threshold
meets); the record written on a tiny embedder trained on the demo identities (tensors bit-identical,
digests updated, loadable), in a stand-in for the shipped folder too; ``compare`` and ``identify``
reading it, printing its source, and ``--threshold`` winning; and one run end to end: train, score
fold 2 with eval-lfw, calibrate on its pairs.csv, compare with the calibrated embedder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from core.weights import load_weights, pack_weights, read_sums
from evaluation import calibrate as calibrate_module
from evaluation.calibrate import (CalibrateConfig, keep_pairs, rates_at, read_distances, tensors_sha256,
                                  threshold_at_far, threshold_best_accuracy)
from evaluation.calibrate import cli as calibrate_cli
from evaluation.calibrate import main as calibrate_main
from evaluation.lfw import LfwEvalConfig
from evaluation.lfw import main as lfw_main
from recognition import embedder as embedder_module
from recognition.compare import CompareConfig
from recognition.compare import main as compare_main
from recognition.embedder import load_embedder
from recognition.threshold import UNCALIBRATED_THRESHOLD, resolve_threshold, threshold_lines
from test_recognition import fold2, people, trained  # noqa: F401  (the tiny embedder on the demo identities)

# Four matched pairs and ten mismatched ones (a tie at 0.7), by hand.
MATCHED = [0.2, 0.4, 0.6, 1.0]
MISMATCHED = [0.5, 0.7, 0.7, 0.9, 1.5, 2.0, 2.5, 3.0, 3.5, 3.8]


def hand(matched=MATCHED, mismatched=MISMATCHED):
    dist = np.array([*matched, *mismatched], float)
    same = np.array([True] * len(matched) + [False] * len(mismatched))
    return dist, same, np.isnan(dist)


# -- the choice ------------------------------------------------------------------------------------


@pytest.mark.parametrize("far, threshold, reached, tar", [
    (0.05, 0.5, 0.0, 0.5),   # k = 0: the smallest mismatched distance; nothing below it is mismatched
    (0.1, 0.7, 0.1, 0.75),   # k = 1: 0.5 accepted, the two at 0.7 not (strictly below)
    (0.2, 0.7, 0.1, 0.75),   # k = 2 lands on the tie: above 0.7 both would be accepted (FAR 0.3), so 0.7
    (0.3, 0.9, 0.3, 0.75),
    (0.35, 0.9, 0.3, 0.75),  # floor(3.5) = 3
    (0.5, 2.0, 0.5, 1.0),
])
def test_the_largest_threshold_at_or_below_the_target_far(far, threshold, reached, tar):
    choice = threshold_at_far(*hand(), far)
    assert (choice.threshold, choice.far, choice.tar) == (threshold, reached, tar)
    assert choice.matched == 4 and choice.mismatched == 10 and choice.false_accepts == round(reached * 10)
    # the largest: a hair above it the FAR exceeds the target
    above = threshold_at_far(*hand(), far).threshold + 1e-9
    assert np.mean(np.array(MISMATCHED) < above) > far


def test_a_threshold_checked_on_other_pairs_chooses_nothing():
    dist, same, _ = hand(matched=[0.2, np.nan, 0.6, 1.0], mismatched=[*MISMATCHED, np.nan])
    checked = rates_at(dist, same, np.isnan(dist), 0.7)  # 0.5 and the failed mismatched pair accepted; 0.2, 0.6
    assert (checked.threshold, checked.far, checked.tar, checked.false_accepts) == (0.7, 2 / 11, 0.5, 2)
    assert checked.accuracy == (2 + 9) / 15


def test_a_far_that_is_a_whole_number_of_pairs_is_met_exactly():
    # 0.29 * 100 is 28.999999999999996 in floating point: still 29 false accepts allowed, not 28
    mismatched = list(np.linspace(0.1, 3.9, 100))
    choice = threshold_at_far(*hand(mismatched=mismatched), 0.29)
    assert choice.false_accepts == 29 and choice.threshold == mismatched[29] and choice.far == 0.29


def test_failed_pairs_are_errors_at_every_threshold():
    dist, same, _ = hand(matched=[0.2, np.nan, 0.6, 1.0], mismatched=[*MISMATCHED, np.nan])
    failed = np.isnan(dist)
    choice = threshold_at_far(dist, same, failed, 0.1)  # 11 mismatched: one false accept allowed, the failed one
    assert choice.threshold == 0.5 and choice.far == 1 / 11 and choice.tar == 0.25  # the failed matched pair rejected
    with pytest.raises(ValueError, match=r"no threshold gives FAR <= 0.05: 1 of the 11 mismatched pairs have a face "
                                         r"not found .* \(FAR >= 0.09091\)"):
        threshold_at_far(dist, same, failed, 0.05)


def test_a_target_no_threshold_in_range_meets_is_refused():
    with pytest.raises(ValueError, match=r"no threshold in \(0, 4\) gives FAR <= 0.1: 2 of the 10 mismatched pairs"):
        threshold_at_far(*hand(mismatched=[0.0] * 5 + [1.0] * 5), 0.1)  # identical images: distance 0
    with pytest.raises(ValueError, match="a threshold needs both"):
        threshold_at_far(*hand(mismatched=[]), 0.1)


def test_best_accuracy_is_the_first_of_equals_on_the_grid():
    # accuracy 12/14 for any threshold in (0.4, 0.5] and in (0.6, 0.7]: 0.41 is the first grid point of the two
    choice = threshold_best_accuracy(*hand(matched=[0.2, 0.4, 0.6, 3.0]))
    assert choice.threshold == pytest.approx(0.41) and choice.accuracy == pytest.approx(12 / 14)
    assert choice.far == 0.0 and choice.tar == 0.5


# -- reading and leaving out -----------------------------------------------------------------------


def write_distances(folder: Path, rows, embedder_file: Path, pairs_file: Path) -> Path:
    """A pairs.csv as eval-lfw writes it, and the results.json beside it naming the embedder."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "pairs.csv").open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["fold", "first", "second", "same", "distance"])
        w.writerows(rows)
    (folder / "results.json").write_text(json.dumps({
        "embedder": str(embedder_file), "embedder_sha256": hashlib.sha256(embedder_file.read_bytes()).hexdigest(),
        "settings": {"pairs": str(pairs_file)}}))
    return folder / "pairs.csv"


def hand_rows(prefix="P"):
    rows = [[1, f"{prefix}{k}/{prefix}{k}_0001.jpg", f"{prefix}{k}/{prefix}{k}_0002.jpg", 1, f"{d:.6f}"]
            for k, d in enumerate(MATCHED)]
    rows += [[1, f"{prefix}{k}/{prefix}{k}_0001.jpg", f"Q{k}/Q{k}_0001.jpg", 0, f"{d:.6f}"] for k, d in enumerate(MISMATCHED)]
    return rows


def test_a_bad_distances_file_is_one_line_naming_the_line(tmp_path):
    bad = tmp_path / "pairs.csv"
    bad.write_text("fold,first,second,same,distance\n1,a/a_1.jpg,b/b_1.jpg,1,0.5\n1,a/a_1.jpg,c/c_1.jpg,yes,0.5\n")
    with pytest.raises(ValueError, match=rf"{bad}:3: expected 'fold,first,second,same \(0/1\)"):
        read_distances(bad)
    bad.write_text("first,second,same\n")
    with pytest.raises(ValueError, match=rf"{bad}:1: expected the header fold,first,second,same,distance"):
        read_distances(bad)
    bad.write_text("fold,first,second,same,distance\n1,a/a_1.jpg,b/b_1.jpg,0,\n")
    assert np.isnan(read_distances(bad).dist).all()  # an empty distance: a face not found


def test_pairs_naming_a_left_out_person_are_dropped(tmp_path):
    csv_file = write_distances(tmp_path, hand_rows(), tmp_path / "pairs.csv", tmp_path / "pairs.csv")
    kept, dropped = keep_pairs(read_distances(csv_file), {"P0", "Q9"})
    assert dropped == 3 and len(kept.same) == 11  # P0's matched and mismatched pair, Q9's
    assert not any(n.startswith(("P0/", "Q9/")) for n in kept.first + kept.second)


# -- the record written ----------------------------------------------------------------------------


@pytest.fixture
def calibrated(trained, tmp_path):  # noqa: F811
    """The tiny embedder calibrated at FAR 0.1 on the hand-made distances: (config, results)."""
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("the pairs file the distances came from\n")
    csv_file = write_distances(tmp_path / "scores", hand_rows(), trained / "embedder.pt", pairs)
    cfg = CalibrateConfig(distances=(str(csv_file),), pairs=(str(pairs),), out=str(tmp_path / "cal"),
                          embedder=str(trained), far=0.1)
    return cfg, calibrate_main(cfg)


def test_the_calibrated_file_holds_the_same_tensors_and_the_calibration(trained, calibrated):  # noqa: F811
    cfg, results = calibrated
    out = Path(cfg.out) / "embedder.pt"
    before, after = load_weights(trained / "embedder.pt"), load_weights(out)  # the digest checked on load
    assert before.state.keys() == after.state.keys()
    assert all(torch.equal(before.state[k], after.state[k]) and before.state[k].dtype == after.state[k].dtype
               for k in before.state)
    assert tensors_sha256(before.state) == tensors_sha256(after.state) == after.record["calibration"]["tensors_sha256"]
    cal = after.record["calibration"]
    assert (cal["threshold"], cal["far"], cal["tar"], cal["far_target"], cal["method"]) == (0.7, 0.1, 0.75, 0.1, "far")
    assert cal["pairs"] == list(cfg.pairs) and cal["pairs_sha256"] == [hashlib.sha256(Path(cfg.pairs[0]).read_bytes()).hexdigest()]
    assert cal["distances"][0]["path"] == cfg.distances[0] and cal["pairs_counted"] == 14
    assert {k: v for k, v in after.record.items() if k != "calibration"} == before.record  # the rest unchanged
    assert read_sums(f"{out}.sha256") == {"embedder.pt": hashlib.sha256(out.read_bytes()).hexdigest()}
    assert json.loads((Path(cfg.out) / "embedder.json").read_text()) == after.record
    assert results["embedder_out_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert load_embedder(str(out)).record["calibration"]["threshold"] == 0.7
    # calibrating the calibrated file again replaces the calibration (the distances: its tensors', same as before)
    again = calibrate_main(replace(cfg, embedder=str(out), out=str(Path(cfg.out).parent / "again"), far=0.3))
    assert load_weights(again["embedder_out"]).record["calibration"]["threshold"] == 0.9


def test_distances_of_another_embedder_are_refused(trained, tmp_path):  # noqa: F811
    weights = load_weights(trained / "embedder.pt")
    state = dict(weights.state)
    key = next(k for k in state if k.endswith(".bias"))
    state[key] = state[key] + 0.01
    other = tmp_path / "other.pt"
    torch.save(pack_weights(state, weights.record), other)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("x\n")
    csv_file = write_distances(tmp_path / "scores", hand_rows(), other, pairs)
    cfg = CalibrateConfig(distances=(str(csv_file),), pairs=(str(pairs),), out=str(tmp_path / "cal"),
                          embedder=str(trained), far=0.1)
    with pytest.raises(ValueError, match="whose tensors are not .*: its threshold would be another net's"):
        calibrate_main(cfg)
    # the same tensors in a file without a record (how the shipped embedder's View 1 pairs were scored) are its own
    torch.save(load_weights(trained / "embedder.pt").state, other)
    csv_file = write_distances(tmp_path / "scores", hand_rows(), other, pairs)
    assert calibrate_main(cfg)["calibration"]["threshold"] == 0.7
    with pytest.raises(ValueError, match="scored from the pairs file .* not from --pairs"):
        calibrate_main(replace(cfg, pairs=(str(tmp_path / "scores" / "pairs.csv"),), out=str(tmp_path / "cal2")))
    (tmp_path / "scores" / "results.json").unlink()
    with pytest.raises(ValueError, match="does not say which embedder measured the distances"):
        calibrate_main(replace(cfg, out=str(tmp_path / "cal3")))


def test_an_embedder_without_a_record_is_refused(trained, tmp_path):  # noqa: F811
    plain = tmp_path / "plain.pt"
    torch.save(load_weights(trained / "embedder.pt").state, plain)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("x\n")
    csv_file = write_distances(tmp_path / "scores", hand_rows(), plain, pairs)
    with pytest.raises(ValueError, match="carries no training record"):
        calibrate_main(CalibrateConfig(distances=(str(csv_file),), pairs=(str(pairs),), out=str(tmp_path / "cal"),
                                       embedder=str(plain)))


@pytest.fixture
def shipped_folder(trained, tmp_path, monkeypatch):  # noqa: F811
    """A stand-in for weights/: the tiny embedder as embedder.pt, listed in SHA256SUMS with another net."""
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(trained / "embedder.pt", folder / "embedder.pt")
    shutil.copy(trained / "embedder.json", folder / "embedder.json")
    digest = hashlib.sha256((folder / "embedder.pt").read_bytes()).hexdigest()
    (folder / "SHA256SUMS").write_text(f"{'a' * 64}  pnet.pt\n{digest}  embedder.pt\n")
    import core.weights

    for module, name in ((core.weights, "SHIPPED_WEIGHTS_DIR"), (calibrate_module, "SHIPPED_WEIGHTS_DIR"),
                         (embedder_module, "SHIPPED_DIR")):
        monkeypatch.setattr(module, name, folder)
    return folder


def test_overwrite_shipped_rewrites_the_shipped_file_its_sums_line_and_json(shipped_folder, tmp_path, capsys):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("x\n")
    csv_file = write_distances(tmp_path / "scores", hand_rows(), shipped_folder / "embedder.pt", pairs)
    cfg = CalibrateConfig(distances=(str(csv_file),), pairs=(str(pairs),), out=str(tmp_path / "cal"), far=0.1)
    with pytest.raises(ValueError, match="--out .* is in the committed weights folder .* pass --overwrite-shipped"):
        calibrate_main(replace(cfg, out=str(shipped_folder / "cal")))
    old = hashlib.sha256((shipped_folder / "embedder.pt").read_bytes()).hexdigest()
    results = calibrate_main(replace(cfg, overwrite_shipped=True))
    assert capsys.readouterr().out.startswith("threshold 0.7 (calibrated at FAR 0.1 on pairs.txt, FAR 0.1, TAR 0.75): "
                                              "14 of 14 pairs counted (4 matched, 10 mismatched, 0 with a face not found")
    new = hashlib.sha256((shipped_folder / "embedder.pt").read_bytes()).hexdigest()
    assert new != old and results["embedder_in_sha256"] == old and results["embedder_out_sha256"] == new
    assert read_sums(shipped_folder / "SHA256SUMS") == {"pnet.pt": "a" * 64, "embedder.pt": new}
    assert not (tmp_path / "cal" / "embedder.pt").exists() and not (shipped_folder / "embedder.pt.sha256").exists()
    record = load_embedder("shipped").record
    assert record["calibration"]["threshold"] == 0.7
    assert json.loads((shipped_folder / "embedder.json").read_text()) == record


def test_overwrite_shipped_needs_the_shipped_embedder(trained, shipped_folder, tmp_path):  # noqa: F811
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("x\n")
    csv_file = write_distances(tmp_path / "scores", hand_rows(), trained / "embedder.pt", pairs)
    with pytest.raises(ValueError, match="calibrate --embedder shipped with it"):
        calibrate_main(CalibrateConfig(distances=(str(csv_file),), pairs=(str(pairs),), out=str(tmp_path / "cal"),
                                       embedder=str(trained), overwrite_shipped=True))


def test_bad_options_are_one_line(tmp_path, capsys):
    args = ["--distances", "a.csv", "--pairs", "p.txt", "--out", str(tmp_path / "o")]
    for extra, message in ((["--far", "0"], "--far must be between 0 and 1, got 0.0"),
                           (["--leave-out-fold", "3"], "--leave-out-fold needs --people, the people list that says who is in which fold")):
        with pytest.raises(SystemExit) as stop:
            calibrate_cli([*args, *extra])
        assert stop.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1].endswith(message)
    assert calibrate_cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["python -m evaluation.calibrate: error: a.csv does not exist"]


# -- the consumers ---------------------------------------------------------------------------------


CALIBRATION = {"threshold": 1.12, "method": "far", "far_target": 0.01, "far": 0.0098, "tar": 0.62,
               "pairs": ["/data/pairsDevTrain.txt", "/data/pairsDevTest.txt"]}


def test_the_threshold_comes_from_the_flag_then_the_calibration_then_the_fallback():
    assert resolve_threshold(None, {"calibration": CALIBRATION}) == (
        1.12, "calibrated at FAR 0.01 on pairsDevTrain.txt+pairsDevTest.txt, FAR 0.0098, TAR 0.62")
    assert resolve_threshold(0.9, {"calibration": CALIBRATION}) == (0.9, "--threshold")
    value, source, lines = threshold_lines(None, {"people": []})
    assert value == UNCALIBRATED_THRESHOLD and len(lines) == 2 and "make calibrate" in lines[1]
    assert len(threshold_lines(None, {"calibration": CALIBRATION})[2]) == 1  # no warning once calibrated
    with pytest.raises(ValueError, match=r"calibrated threshold must be in \(0, 4\).*got 4.5"):
        resolve_threshold(None, {"calibration": {**CALIBRATION, "threshold": 4.5}})
    with pytest.raises(ValueError, match=r"--threshold must be in \(0, 4\)"):
        CompareConfig(images=("a", "b"), threshold=0.0)


def demo_images(people):  # noqa: F811
    return tuple(str(people / f"images/Demo_Person_0{k}/Demo_Person_0{k}_0001.jpg") for k in (0, 1))


def test_compare_prints_the_calibrated_threshold_and_the_flag_wins(calibrated, people, capsys):  # noqa: F811
    cfg, results = calibrated
    capsys.readouterr()
    compare_main(CompareConfig(images=demo_images(people), embedder=results["embedder_out"]))
    out = capsys.readouterr()
    assert out.out.splitlines()[0] == "threshold 0.7 (calibrated at FAR 0.1 on pairs.txt, FAR 0.1, TAR 0.75)"
    assert "make calibrate" not in out.err
    compare_main(CompareConfig(images=demo_images(people), embedder=results["embedder_out"], threshold=0.5))
    assert capsys.readouterr().out.splitlines()[0] == "threshold 0.5 (--threshold)"


def test_compare_with_an_uncalibrated_embedder_warns(trained, people, capsys):  # noqa: F811
    compare_main(CompareConfig(images=demo_images(people), embedder=str(trained)))
    out = capsys.readouterr()
    assert out.out.splitlines()[0].startswith("threshold 1.35 (not calibrated: ")
    assert "warning: the embedder carries no calibrated threshold" in out.err and "make calibrate" in out.err


# -- end to end --------------------------------------------------------------------------------------


def test_score_calibrate_and_compare_end_to_end(trained, people, tmp_path, capsys):  # noqa: F811
    scores = tmp_path / "scores"
    lfw_main(LfwEvalConfig(images=str(people / "images"), pairs=str(people / "pairs.txt"), out=str(scores),
                           embedder=str(trained), fold=2, aligned=str(people / "build" / "aligned"), progress=False))
    cfg = CalibrateConfig(distances=(str(scores / "pairs.csv"),), pairs=(str(people / "pairs.txt"),),
                          out=str(tmp_path / "cal"), embedder=str(trained), far=0.25, people=str(people / "people.txt"),
                          leave_out_fold=0)
    results = calibrate_main(cfg)
    rows = list(csv.DictReader((scores / "pairs.csv").open()))
    dist = np.array([float(r["distance"]) if r["distance"] else np.nan for r in rows])
    same = np.array([r["same"] == "1" for r in rows])
    expected = threshold_at_far(dist, same, np.isnan(dist), 0.25)
    cal = results["calibration"]
    assert cal["threshold"] == expected.threshold and cal["far"] <= 0.25 and cal["pairs_counted"] == 24
    assert cal["pairs_of_learnt_people"] == 0 and cal["left_out"] is None  # fold 2: people it never saw
    capsys.readouterr()
    compare_main(CompareConfig(images=demo_images(people), embedder=results["embedder_out"]))
    assert capsys.readouterr().out.splitlines()[0].startswith(f"threshold {expected.threshold:g} (calibrated at FAR "
                                                              f"0.25 on pairs.txt, ")
    # by default the fold the embedder left out (2) is left out: every pair, so no threshold
    with pytest.raises(ValueError, match="a threshold needs both"):
        calibrate_main(replace(cfg, leave_out_fold=None, out=str(tmp_path / "cal2")))


def test_cluster_keeps_its_linkage_threshold_and_names_the_calibrated_one():
    from recognition.cluster import ClusterConfig, linkage_line

    cfg = ClusterConfig(images="photos", out="out")
    assert linkage_line(cfg, {"calibration": CALIBRATION}) == (
        "agglomerative threshold 0.85 (the default, chosen on LFW View 1 for clustering's F1); the embedder's pair "
        "threshold 1.12 (calibrated at FAR 0.01 on pairsDevTrain.txt+pairsDevTest.txt, FAR 0.0098, TAR 0.62) is another "
        "quantity")
    assert linkage_line(replace(cfg, threshold=1.12), None).startswith("agglomerative threshold 1.12 (--threshold); the "
                                                                        "embedder carries no calibrated pair threshold")
    with pytest.raises(ValueError, match=r"--threshold must be in \(0, 4\)"):
        ClusterConfig(images="photos", out="out", threshold=4.0)


# -- make ------------------------------------------------------------------------------------------


def test_make_calibrate_scores_the_pairs_then_calibrates_apart_from_them(make_dry_run, tmp_path):
    pairs, people = tmp_path / "pairsDevTest.txt", tmp_path / "people.txt"
    pairs.write_text("1\n")
    people.write_text("1\n")
    given = (f"PAIRS={pairs}", f"PEOPLE={people}")
    lines = [" ".join(line.split()) for line in make_dry_run("calibrate", "EMBEDDER=run/e.pt", *given).splitlines()]
    scores = "build/calibrate/run_e.pt-pairsDevTest-scores"
    score = next(k for k, line in enumerate(lines) if "evaluation.lfw " in line)
    calibrate = next(k for k, line in enumerate(lines) if "evaluation.calibrate " in line)
    assert score < calibrate and f"--pairs {pairs} --out {scores} --embedder run/e.pt" in lines[score]
    assert "--fold" not in lines[score]  # all the pairs; the left-out fold's people go by name, in calibrate
    assert (f"evaluation.calibrate --distances {scores}/pairs.csv --pairs {pairs} --embedder run/e.pt "
            f"--out build/calibrate/run_e.pt-pairsDevTest --people {people} --far 0.01") in lines[calibrate]
    lines = make_dry_run("calibrate", *given, "CALIBRATE_FAR=0.001", "CALIBRATE_FLAGS=--best-accuracy").splitlines()
    assert any("--far 0.001 --best-accuracy" in line for line in lines)
    # a pairs CSV (make pairs-csv's, or any benchmark's) is scored by eval-pairs under IMAGES_ROOT
    (tmp_path / "root").mkdir()
    lines = [" ".join(line.split()) for line in make_dry_run("calibrate", f"PAIRS_CSV={tmp_path / 'v1.csv'}", f"PEOPLE={people}",
                                                             f"IMAGES_ROOT={tmp_path / 'root'}", "-o", str(tmp_path / "v1.csv")).splitlines()]
    scores = "build/calibrate/shipped-v1-scores"
    assert any(f"evaluation.pairs --pairs {tmp_path / 'v1.csv'} --images {tmp_path / 'root'} --out {scores}" in line
               for line in lines)
    assert any(f"evaluation.calibrate --distances {scores}/pairs.csv --pairs {tmp_path / 'v1.csv'} " in line for line in lines)


@pytest.mark.parametrize("target", ["compare", "cluster"])
def test_make_threshold_reaches_compare_and_cluster(make_dry_run, target):
    lines = make_dry_run(target, "IMAGES=photos", "THRESHOLD=1.1").splitlines()
    assert any(f"recognition.{target} " in line and "--threshold 1.1" in line for line in lines)
    assert not any("--threshold" in line for line in make_dry_run(target, "IMAGES=photos").splitlines())
