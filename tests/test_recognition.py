"""The recognition half end to end on a tiny identity set: build, train, evaluate, use, export.

The set (``demo.identities``) has 12 people of 5 images in 2 folds; the shipped detector aligns
them. Trainings are a few steps of a tiny net: these tests show the stages working and their
contracts (counts, resume, one-line errors), not accuracy.
"""

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

from annotations.lfw import parse_pairs
from child_env import REPO, child_env
from core.weights import pack_weights
from demo.identities import DemoIdentitiesConfig, build
from evaluation.lfw import LfwEvalConfig, check_unseen, score, subfolds
from evaluation.lfw import cli as lfw_cli
from evaluation.lfw import main as lfw_main
from evaluation.lfw_cv import combine
from prepare.identities import IdentityDataConfig
from prepare.identities import cli as identities_cli
from prepare.identities import main as identities_main
from recognition.embedder import embed, load_embedder
from trainers.embed_config import EmbedConfig
from trainers.embed_task import embed_parts
from trainers.train import main as train_main


@pytest.fixture(scope="session")
def people(tmp_path_factory) -> Path:
    return build(DemoIdentitiesConfig(out=str(tmp_path_factory.mktemp("people"))))


@pytest.fixture(scope="session")
def fold2(people) -> tuple[IdentityDataConfig, dict]:
    cfg = IdentityDataConfig(images=str(people / "images"), out=str(people / "build" / "fold-2"),
                             people=str(people / "people.txt"), fold=2, progress=False)
    return cfg, identities_main(cfg)


@pytest.fixture(scope="session")
def trained(fold2, tmp_path_factory) -> Path:
    cfg = EmbedConfig.tiny(fold2[0].out, tmp_path_factory.mktemp("embed"))
    train_main(cfg, embed_parts)
    return Path(cfg.out)


def test_demo_identities_are_reproducible(people, tmp_path):
    again = build(DemoIdentitiesConfig(out=str(tmp_path)))
    for name in ("people.txt", "pairs.txt", "images/Demo_Person_03/Demo_Person_03_0002.jpg"):
        assert (again / name).read_bytes() == (people / name).read_bytes()
    pairs = parse_pairs(people / "pairs.txt")
    assert len(pairs) == 48 and sum(p.same for p in pairs) == 24


def test_build_leaves_out_the_fold_and_counts_every_image(fold2, people):
    cfg, manifest = fold2
    names = [n for n, _ in manifest["identities"]]
    assert names == [f"Demo_Person_{k:02d}" for k in range(0, 12, 2)]  # fold 2 holds the odd ones
    report = manifest["report"]
    assert report["images"] == 30 and report["excluded_people"] == 6
    assert report["faces"] + len(report["no_face"]) + len(report["unreadable"]) == report["images"]
    assert sum(n for _, n in manifest["identities"]) == manifest["num_images"] == report["faces"]
    # identity order: each record's identity follows from the counts
    assert manifest["images"] == sorted(manifest["images"], key=lambda s: (names.index(s.split("/")[0]), s))


def test_rebuild_is_byte_identical_and_reuses_the_aligned_crops(fold2, tmp_path):
    cfg, manifest = fold2
    again = identities_main(replace(cfg, out=str(tmp_path / "again"), aligned=str(Path(cfg.out).parent / "aligned")))
    assert again["report"]["align"]["done_before"] == 30
    assert again["fingerprint"] == manifest["fingerprint"]
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]


def test_min_images_leaves_out_and_reports_small_identities(fold2, tmp_path):
    cfg, manifest = fold2
    five = identities_main(replace(cfg, out=str(tmp_path / "five"), min_images=5,
                                   aligned=str(Path(cfg.out).parent / "aligned")))
    small = [n for n, c in manifest["identities"] if c < 5]
    assert five["report"]["too_few_images"] == small
    assert [n for n, _ in five["identities"]] == [n for n, c in manifest["identities"] if c >= 5]


def test_bad_fold_is_one_line(people, tmp_path, capsys):
    args = ["--images", str(people / "images"), "--out", str(tmp_path / "x"), "--people", str(people / "people.txt"),
            "--no-progress"]
    assert identities_cli([*args, "--fold", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["python -m prepare.identities: error: fold 3 is not in the people list (it has folds 1 to 2)"]
    with pytest.raises(SystemExit) as stop:
        identities_cli([*args, "--fold", "0"])
    assert stop.value.code == 2 and "--fold is 1-based" in capsys.readouterr().err


def test_people_list_naming_a_person_twice_is_one_line(people, tmp_path, capsys):
    bad = tmp_path / "people.txt"
    lines = (people / "people.txt").read_text().splitlines()
    lines[3] = lines[2]  # fold 1's second person is its first again
    bad.write_text("\n".join(lines) + "\n")
    assert identities_cli(["--images", str(people / "images"), "--out", str(tmp_path / "x"), "--people", str(bad),
                           "--fold", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("person Demo_Person_00 is listed twice (first at line 3); remove one of the two lines")
    assert f"{bad}:4:" in err


def test_training_writes_weights_and_logs(trained):
    assert (trained / "embedder.pt").is_file() and (trained / "loss_curve.png").is_file()
    rows = list(csv.DictReader((trained / "log.csv").open()))
    assert len(rows) == 2 and {"train_loss", "val_acc", "val_auc", "samples_per_s"} <= rows[0].keys()
    embedder = load_embedder(str(trained))
    crops = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    vectors = embed(embedder, crops, flip=True)
    assert vectors.shape == (3, 16) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert np.allclose(embed(embedder, crops[:1]), embed(embedder, [crops[0]]))


@pytest.mark.parametrize("loss", ["triplet", "arcface"])
def test_resume_ends_with_exactly_the_weights_of_an_uninterrupted_run(fold2, tmp_path, loss):
    cfg = EmbedConfig.tiny(fold2[0].out, tmp_path / "whole", loss=loss, epochs=3)
    whole = train_main(cfg, embed_parts).state_dict
    part = replace(cfg, out=str(tmp_path / "part"), stop_after_epochs=1)
    assert train_main(part, embed_parts).weights_path is None
    resumed = train_main(replace(part, stop_after_epochs=None, resume=True), embed_parts).state_dict
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_eval_lfw_scores_the_fold_and_pairs_csv_recomputes_it(trained, people, tmp_path, capsys):
    cfg = LfwEvalConfig(images=str(people / "images"), pairs=str(people / "pairs.txt"), out=str(tmp_path / "eval"),
                        embedder=str(trained), fold=2, progress=False)
    results = lfw_main(cfg)
    assert results["pairs"] == 24 and results["protocol"].startswith("10 sub-folds")
    assert results["category"] == "unrestricted, no outside data"
    assert "LFW fold 2 (unrestricted, no outside data): 24 pairs" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "eval" / "pairs.csv").open()))
    assert len(rows) == 24 and {r["fold"] for r in rows} == {"2"}
    dist = np.array([float(r["distance"]) if r["distance"] else np.nan for r in rows])
    same = np.array([r["same"] == "1" for r in rows])
    again = score(dist, same, np.isnan(dist), subfolds(same), cfg.far)
    assert again["accuracy_mean"] == results["accuracy_mean"] and again["auc"] == results["auc"]
    assert results["failed_pairs"] == int(np.isnan(dist).sum())
    assert (tmp_path / "eval" / "roc.png").is_file()


def test_a_pairs_file_naming_a_missing_image_is_one_line(trained, people, tmp_path, capsys):
    pairs = tmp_path / "pairs.txt"
    text = (people / "pairs.txt").read_text().splitlines()
    text[25] = "Nobody_Here\t1\t2"  # fold 2's first pair
    pairs.write_text("\n".join(text) + "\n")
    code = lfw_cli(["--images", str(people / "images"), "--pairs", str(pairs), "--out", str(tmp_path / "e"),
                    "--embedder", str(trained), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"{pairs}:26: Nobody_Here/Nobody_Here_0001.jpg is not in" in err[0]
    assert not (tmp_path / "e" / "results.json").exists()
    cfg = LfwEvalConfig(images=str(people / "images"), pairs=str(pairs), out=str(tmp_path / "e"), embedder=str(trained),
                        fold=2, allow_missing=True, aligned=str(people / "build" / "aligned"), progress=False)
    results = lfw_main(cfg)  # with --allow-missing the pair is an error, and named
    assert results["missing_images"] == ["Nobody_Here/Nobody_Here_0001.jpg", "Nobody_Here/Nobody_Here_0002.jpg"]
    assert results["failed_pairs"] >= 1


def test_failed_pairs_count_as_errors():
    same = np.array([True, True, False, False])
    dist = np.array([0.1, np.nan, 3.0, 3.5])
    figures = score(dist, same, np.isnan(dist), np.array([0, 1, 0, 1]), 1e-3)
    # fold 1 = (failed matched, 3.5 mismatched): its best threshold is the grid's first, 0, where fold 0's matched
    # 0.1 is rejected (0.5); fold 0's best is 0.11, where fold 1's failed pair is rejected (0.5). Dropping the
    # failed pair instead would score fold 1 at 1.0.
    assert figures["fold_accuracy"] == [0.5, 0.5] and figures["fold_threshold"] == pytest.approx([0.0, 0.11])


def test_cross_validation_combines_one_result_per_fold():
    results = [{"fold": k, "accuracy_mean": a, "val_mean": v, "far_mean": 0.001, "far_target": 0.001, "auc": 0.9,
                "eer": 0.1, "pairs": 600, "failed_pairs": f} for k, a, v, f in ((1, 0.8, 0.1, 2), (2, 0.9, 0.3, 1))]
    combined = combine(results)
    assert combined["accuracy_mean"] == pytest.approx(0.85) and combined["accuracy_std"] == pytest.approx(0.05)
    assert combined["val_mean"] == pytest.approx(0.2) and combined["failed_pairs"] == 3
    with pytest.raises(ValueError, match="each a different one"):
        combine(results[:1] * 2)


def test_compare_prints_a_symmetric_matrix_and_skips_an_image_without_a_face(trained, people, tmp_path, capsys):
    from recognition.compare import CompareConfig
    from recognition.compare import main as compare_main

    blank = tmp_path / "blank.png"
    import cv2
    cv2.imwrite(str(blank), np.full((80, 80, 3), 127, np.uint8))
    images = [str(people / "images/Demo_Person_00/Demo_Person_00_0001.jpg"),
              str(people / "images/Demo_Person_00/Demo_Person_00_0002.jpg"), str(blank),
              str(people / "images/Demo_Person_02/Demo_Person_02_0001.jpg")]
    matrix = compare_main(CompareConfig(images=tuple(images), embedder=str(trained)))
    assert matrix.shape == (3, 3) and np.allclose(matrix, matrix.T) and np.allclose(np.diag(matrix), 0, atol=1e-6)
    assert f"skipped: {blank}: no face found" in capsys.readouterr().err


def test_export_embedder_matches_torch(trained, tmp_path):
    from recognition.export_embedder import EmbedExportConfig
    from recognition.export_embedder import main as export_main

    described = export_main(EmbedExportConfig(out=str(tmp_path), embedder=str(trained)))
    assert described["max_difference_to_torch"] < 1e-4
    written = json.loads((tmp_path / "embedder.json").read_text())
    assert (tmp_path / "embedder.onnx").is_file() and written["output"]
    assert written["record"] == json.loads(json.dumps(load_embedder(str(trained)).record)) and written["threshold"] is None
    shipped = export_main(EmbedExportConfig(out=str(tmp_path / "shipped"), embedder="shipped"))
    calibration = load_embedder("shipped").record["calibration"]
    assert shipped["threshold"] == calibration["threshold"] and shipped["record"]["calibration"] == calibration
    # a plain state dict (no record): exported, with no threshold and an empty record
    from core.weights import load_weights

    torch.save(load_weights(str(trained / "embedder.pt")).state, tmp_path / "plain.pt")
    plain = export_main(EmbedExportConfig(out=str(tmp_path / "plain"), embedder=str(tmp_path / "plain.pt")))
    assert plain["threshold"] is None and plain["record"] == {} and (tmp_path / "plain" / "embedder.json").is_file()


def test_a_corrupt_embedder_is_one_line(tmp_path):
    from core.weights import WeightsError

    bad = tmp_path / "embedder.pt"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(WeightsError, match=str(bad)):
        load_embedder(str(tmp_path))
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match="not the weights of an embedder"):
        load_embedder(str(bad))


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    (tmp_path / "slow_start.py").write_text("raise KeyboardInterrupt  # as if Ctrl-C came while torch was importing\n")
    done = subprocess.run([sys.executable, "-m", "core.launch", "slow_start", "--x"], capture_output=True, text=True,
                          env=child_env(PYTHONPATH=f"{REPO}:{tmp_path}"), cwd=REPO)
    assert done.returncode == 130
    assert done.stderr.strip() == "slow_start: interrupted; every file it wrote is whole (rerun to continue)"


def test_launcher_keeps_the_module_exit_code_and_arguments(tmp_path):
    (tmp_path / "echo_args.py").write_text("import sys\nprint(sys.argv[1:])\nsys.exit(3)\n")
    done = subprocess.run([sys.executable, "-m", "core.launch", "echo_args", "a", "--b"], capture_output=True,
                          text=True, env=child_env(PYTHONPATH=f"{REPO}:{tmp_path}"), cwd=REPO)
    assert done.returncode == 3 and done.stdout.strip() == "['a', '--b']"


@pytest.mark.parametrize("variable", ["WIDER", "LFW_IMAGES", "OUT"])
def test_a_path_with_a_space_stops_make_in_one_line(variable):
    done = subprocess.run(["make", "-C", str(REPO), "-n", "pnet-data", f"{variable}=/tmp/sp ace/x"], capture_output=True,
                          text=True)
    assert done.returncode == 2
    assert f'{variable}="/tmp/sp ace/x" has a space' in done.stderr and "Circular" not in done.stderr


def test_cv_lfw_is_ten_real_file_targets(make_dry_run):
    commands = make_dry_run("cv-lfw", "LFW_IMAGES=/lfw", "PEOPLE=p.txt", "PAIRS=q.txt", "-o", "p.txt", "-o", "q.txt")
    for k in range(1, 11):
        assert f"--out build/recog/fold-{k} " in commands and f"--fold {k} " in commands
        assert f"--out build/cv-lfw/fold-{k} --embedder build/train/embed-fold-{k}/embedder.pt" in commands
    assert "evaluation.lfw_cv --out build/cv-lfw/results.json --folds" in commands


DDP_EMBED_SCRIPT = """
import os, sys, torch
from trainers.embed_config import EmbedConfig
from trainers.embed_task import embed_parts
from trainers.train import main
torch.set_num_threads(1)
cfg = EmbedConfig.tiny(sys.argv[1], sys.argv[2], loss=sys.argv[3], epochs=1, batches_per_epoch=3)
result = main(cfg, embed_parts)
torch.save(result.state_dict, os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.pt"))
"""


@pytest.mark.parametrize("loss", ["arcface", "triplet"])
def test_ddp_with_two_gloo_processes_trains_the_embedder_identically_on_both_ranks(fold2, tmp_path, loss):
    script = tmp_path / "ddp_embed.py"
    script.write_text(DDP_EMBED_SCRIPT)
    out = tmp_path / "ddp"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), fold2[0].out, str(out), loss], cwd=REPO, env=child_env(GLOO_SOCKET_IFNAME="lo"),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # parameters are all-reduced; BatchNorm's running statistics are each rank's own (DDP broadcasts rank 0's
    # at every forward, and the last forward updates them locally), so only the parameters must agree
    params = [k for k in r0 if "running_" not in k and "num_batches" not in k]
    assert all(torch.equal(r0[k], r1[k]) for k in params)
    packed = torch.load(out / "embedder.pt", weights_only=True)  # the state dict with its training record
    assert torch.equal(packed["model"]["stem.0.weight"], r0["stem.0.weight"])


def test_eval_lfw_refuses_pairs_of_people_the_embedder_saw(trained, people, tmp_path):
    record = load_embedder(str(trained)).record  # stored in embedder.pt; embedder.json is a copy
    assert record == json.loads((trained / "embedder.json").read_text())
    assert record["lfw_fold_left_out"] == 2 and record["identities"] == 6
    assert record["people"] == [f"Demo_Person_{k:02d}" for k in range(0, 12, 2)]
    cfg = LfwEvalConfig(images=str(people / "images"), pairs=str(people / "pairs.txt"), out=str(tmp_path / "e"),
                        embedder=str(trained), aligned=str(people / "build" / "aligned"), progress=False)
    with pytest.raises(ValueError, match="trained on 6 of these pairs' people .*score it with FOLD=2"):
        lfw_main(cfg)  # all folds: fold 1's people were in its training build
    with pytest.raises(ValueError, match="trained on 6 of these pairs' people"):
        lfw_main(replace(cfg, fold=1))
    # the same weights trained on other people (the shipped embedder on the demo's) score any fold
    other = tmp_path / "other"
    other.mkdir()
    state = load_embedder(str(trained)).net.state_dict()
    torch.save(pack_weights(state, {**record, "people": ["Someone_Else"], "lfw_fold_left_out": 10}),
               other / "embedder.pt")
    assert lfw_main(replace(cfg, embedder=str(other), fold=1))["pairs"] == 24
    # a record from before records named the people: only the fold it left out
    torch.save(pack_weights(state, {"lfw_fold_left_out": 2}), other / "embedder.pt")
    with pytest.raises(ValueError, match="every LFW fold but fold 2 .*score it with FOLD=2"):
        lfw_main(replace(cfg, embedder=str(other), fold=1))


def test_resuming_a_finished_run_writes_its_reports_again(fold2, tmp_path):
    cfg = EmbedConfig.tiny(fold2[0].out, tmp_path / "run", epochs=1)
    first = train_main(cfg, embed_parts).state_dict
    (tmp_path / "run" / "embedder.json").unlink()
    again = train_main(replace(cfg, resume=True), embed_parts).state_dict
    assert json.loads((tmp_path / "run" / "embedder.json").read_text())["lfw_fold_left_out"] == 2
    assert all(torch.equal(first[k], again[k]) for k in first)


@pytest.mark.slow
def test_the_shipped_embedder_refuses_every_lfw_fold_but_the_one_it_never_saw(shared_data):
    shipped = REPO / "weights" / "embedder.pt"
    record = load_embedder("shipped").record
    assert record == json.loads(shipped.with_suffix(".json").read_text())
    assert record["lfw_fold_left_out"] == 10 and len(record["people"]) == record["identities"]
    pairs = parse_pairs(shared_data / "lfw" / "pairs.txt")
    cfg = LfwEvalConfig(images="unused", pairs="unused", out="unused", fold=10)
    check_unseen(shipped, [p for p in pairs if p.fold == 9], cfg)  # fold 10 (0-based 9) passes
    for fold in range(9):
        with pytest.raises(ValueError, match="score it with FOLD=10"):
            check_unseen(shipped, [p for p in pairs if p.fold == fold], replace(cfg, fold=fold + 1))
