"""The gaps of issue #30's first pass, injected (rules 2, 3 and 8).

* An image too large for ``--min-face`` (its first pyramid level above ``MAX_PYRAMID_PIXELS``, made
  small here so that tiny images reach it) in the multi-image stages: align and mining skip it and
  list it with the smallest ``--min-face`` it allows; the evaluations refuse it before any work, in
  one line naming it, rather than drop it from their figures.
* A ``manifest.json`` / ``results.json`` / ``summary.json`` that the stage did not write (garbage,
  another stage's, a user's) is refused in one line naming it, and a rerun over the stage's own
  still works.
* The folder of a landmark list's images and ``--init``'s weights file are inputs; the benchmarks'
  ``--threads 0`` / ``-1`` is a usage error naming the option.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

import detector.cascade
from child_env import REPO, child_env
from stage_errors import one_line_error as _one_line_error, usage_error as _usage_error
from core.nets import build_net
from core.outputs import OutputError
from detector import DetectorConfig
from lmdb_builders.schema import SCHEMA_VERSION

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BOUND = 10_000  # MAX_PYRAMID_PIXELS in these tests: a 48x64 image at --min-face 6 needs 12,513
PATCH_BOUND = f"import detector.cascade\ndetector.cascade.MAX_PYRAMID_PIXELS = {BOUND}\n"


def _cli(module: str, *args, patch: str = "", timeout: int = 240) -> subprocess.CompletedProcess:
    """``python -m module args`` in a child process, after running ``patch``."""
    code = patch + textwrap.dedent(f"""
        import runpy, sys
        sys.argv = [{module!r}] + sys.argv[1:]
        runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
    """)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)






def _nets(folder: Path, names=("pnet", "rnet", "onet")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name in names:
        torch.save(build_net(name).state_dict(), folder / f"{name}.pt")
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Random nets: what they find does not matter here."""
    return _nets(tmp_path_factory.mktemp("weights"))


@pytest.fixture
def small_bound(monkeypatch):
    monkeypatch.setattr(detector.cascade, "MAX_PYRAMID_PIXELS", BOUND)



# -- an image too large for --min-face ---------------------------------------------------------------

# 64x80 at --min-face 6: a 129x161 first level (20,769 px); 8.7 is the least that fits 10,000.
TOO_LARGE_64x80 = "would scale this 80x64 image's first pyramid level to 161x129"


def test_align_skips_and_lists_an_image_too_large_for_the_min_face(weights, tmp_path, small_bound):
    from detector.align import AlignConfig, main as align

    album = tmp_path / "album"
    (album / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    cv2.imwrite(str(album / "a.jpg"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))  # 12,513 px at 6
    cv2.imwrite(str(album / "sub" / "b.png"), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))  # 6,561 px
    cfg = AlignConfig(images=str(album), weights=str(weights), out=str(tmp_path / "aligned"), progress=False,
                      detector=DetectorConfig(min_face=6))
    for _ in range(2):  # a rerun tries it again, and lists it again
        summary = align(cfg)
        assert list(summary["too_large"]) == ["a.jpg"]
        assert summary["too_large"]["a.jpg"].endswith("use --min-face 6.7 or more for this image")
        assert summary["images"] == 2 and summary["with_face"] + summary["without_face"] == 1
    written = json.loads((tmp_path / "aligned" / "summary.json").read_text())
    assert written["too_large"] == summary["too_large"]
    index = (tmp_path / "aligned" / "index.csv").read_text()
    assert "sub/b.png" in index and "a.jpg" not in index


def test_wider_eval_refuses_an_image_too_large_for_the_min_face_before_any_work(wider_set, tmp_path, small_bound):
    from evaluation.wider_eval import WiderEvalConfig, main as wider_main

    images, gt = wider_set
    pnet = _nets(tmp_path / "w", ("pnet",))
    cfg = WiderEvalConfig(images=str(images), gt=str(gt), pred=str(tmp_path / "pred"), weights=str(pnet),
                          detector=DetectorConfig(min_face=6))
    with pytest.raises(ValueError) as err:
        wider_main(cfg)
    assert str(err.value).startswith(f"{images / '0--Parade' / '0_a.jpg'}: --min-face (MIN_FACE=) 6 {TOO_LARGE_64x80}")
    assert "use --min-face 8.7 or more for this image (2 of the 2 images are too large for it)" in str(err.value)
    assert not (tmp_path / "pred").exists()
    proc = _cli("evaluation.wider_eval", "--images", images, "--gt", gt, "--pred", tmp_path / "pred", "--weights",
                pnet, "--min-face", "6", patch=PATCH_BOUND)
    _one_line_error(proc, "0_a.jpg: --min-face (MIN_FACE=) 6", "use --min-face 8.7 or more")
    assert not (tmp_path / "pred").exists()
    wider_main(WiderEvalConfig(**{**cfg.__dict__, "detector": DetectorConfig(min_face=8.7)}))  # the value named


def test_stage_recall_and_landmarks_refuse_an_image_too_large_for_the_min_face(wider_set, weights, tmp_path,
                                                                                small_bound):
    from evaluation.landmarks import LandmarkEvalConfig, main as landmarks_main
    from evaluation.stage_recall import StageRecallConfig, main as recall_main

    images, gt = wider_set
    with pytest.raises(ValueError, match=f"0_a.jpg: --min-face \\(MIN_FACE=\\) 6 {TOO_LARGE_64x80}"):
        recall_main(StageRecallConfig(images=str(images), gt=str(gt), weights=str(weights), out=str(tmp_path / "sr"),
                                      detector=DetectorConfig(min_face=6), progress=False))
    assert not (tmp_path / "sr").exists()
    data = tmp_path / "data"
    data.mkdir()
    cv2.imwrite(str(data / "face.png"), np.zeros((64, 80, 3), np.uint8))
    (data / "list.txt").write_text("face.png 20 60 10 50 30 22 50 22 40 32 32 42 48 42\n")
    cfg = LandmarkEvalConfig(landmarks=str(data / "list.txt"), weights=str(weights), out=str(tmp_path / "lm"),
                             part="all", progress=False, detector=DetectorConfig(min_face=6))
    with pytest.raises(ValueError, match=f"face.png: --min-face \\(MIN_FACE=\\) 6 {TOO_LARGE_64x80}"):
        landmarks_main(cfg)
    assert not (tmp_path / "lm" / "results.json").exists()


def test_mining_skips_an_image_too_large_for_the_mining_min_face_with_its_reason(tiny_wider, weights, small_bound):
    from dataclasses import replace

    from prepare.generate import MINING_DETECTOR, build_items, tiny_config, work

    cfg = tiny_config(tiny_wider.train_txt, tiny_wider.train_images, None, "unused", net_sizes=(24,), workers=1,
                      mine_with=str(weights), mine=replace(MINING_DETECTOR, min_face=6))
    items, _ = build_items(cfg)
    index, records, reason = work((0, items[0], cfg))
    assert records == [] and reason.startswith("too large for --mine-min-face 6 (its first pyramid level would "
                                               "exceed the detector's bound; use --mine-min-face ")


def _eval_lfw(tmp_path: Path, weights: Path, image_shape: tuple, *args: str) -> int:
    """evaluation.lfw's exit code on three blank images of ``image_shape`` (A twice, B once) and one
    pair of each kind, written to ``tmp_path / "lfw"``."""
    from evaluation.lfw import cli as lfw_cli

    people = tmp_path / "people"
    (people / "A").mkdir(parents=True)
    (people / "B").mkdir()
    for name in ("A/A_0001", "A/A_0002", "B/B_0001"):
        cv2.imwrite(str(people / f"{name}.jpg"), np.zeros(image_shape, np.uint8))
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1 1\nA 1 2\nA 1 B 1\n")
    return lfw_cli(["--images", str(people), "--pairs", str(pairs), "--out", str(tmp_path / "lfw"), "--weights",
                    str(weights), "--no-progress", *args])


def test_eval_lfw_refuses_an_image_too_large_for_the_min_face(weights, tmp_path, small_bound, capsys):
    people = tmp_path / "people"
    assert _eval_lfw(tmp_path, weights, (64, 80, 3), "--min-face", "6") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{people / 'A' / 'A_0001.jpg'}: --min-face (MIN_FACE=) 6" in err, err
    assert "(3 of the 3 images are too large for it)" in err
    assert not (tmp_path / "lfw").exists()


# -- result files the stage did not write ------------------------------------------------------------

FOREIGN = {"garbage": "{not json", "a list": "[1, 2]", "a user's": json.dumps({"my": "notes"})}


def _refused_names(error, path: Path, stage: str) -> None:
    assert str(error) == (f"{path} exists and was not written by {stage}: it is not replaced; move it or write the "
                          f"outputs to another folder")


def test_wider_eval_and_stage_recall_refuse_a_results_file_they_did_not_write(wider_set, weights, tmp_path):
    from evaluation.stage_recall import StageRecallConfig, main as recall_main
    from evaluation.wider_eval import WiderEvalConfig, main as wider_main

    images, gt = wider_set
    pnet = _nets(tmp_path / "w", ("pnet",))
    wider = WiderEvalConfig(images=str(images), gt=str(gt), pred=str(tmp_path / "pred"), weights=str(pnet))
    recall = StageRecallConfig(images=str(images), gt=str(gt), weights=str(pnet), out=str(tmp_path / "sr"),
                               progress=False)
    wider_main(wider)
    recall_main(recall)
    own = {folder: (tmp_path / folder / "results.json").read_text() for folder in ("pred", "sr")}
    assert wider_main(wider)["images_detected_this_run"] == 0 and recall_main(recall)  # reruns replace their own
    others = {"pred": own["sr"], "sr": own["pred"]}  # each other's results
    for folder, run, stage in (("pred", lambda: wider_main(wider), "evaluation.wider_eval"),
                               ("sr", lambda: recall_main(recall), "evaluation.stage_recall")):
        path = tmp_path / folder / "results.json"
        for text in (*FOREIGN.values(), others[folder]):
            path.write_text(text)
            with pytest.raises(OutputError) as err:
                run()
            _refused_names(err.value, path, stage)
            assert path.read_text() == text
    proc = _cli("evaluation.stage_recall", "--images", images, "--gt", gt, "--weights", pnet, "--out", tmp_path / "sr")
    _one_line_error(proc, f"{tmp_path / 'sr' / 'results.json'} exists and was not written by evaluation.stage_recall")


def test_roc_landmarks_and_lfw_refuse_a_results_file_they_did_not_write(weights, tmp_path, capsys):
    from evaluation.landmarks import LandmarkEvalConfig, main as landmarks_main

    (tmp_path / "roc").mkdir()
    (tmp_path / "roc" / "summary.json").write_text(json.dumps([{"stage": "pnet"}]))  # not roc's: no AUC
    proc = _cli("evaluation.roc", "--val-data", tmp_path / "no-build", "--weights", weights, "--out", tmp_path / "roc")
    _one_line_error(proc, f"{tmp_path / 'roc' / 'summary.json'} exists and was not written by evaluation.roc")
    data = tmp_path / "data"
    data.mkdir()
    cv2.imwrite(str(data / "face.png"), np.zeros((64, 80, 3), np.uint8))
    (data / "list.txt").write_text("face.png 20 60 10 50 30 22 50 22 40 32 32 42 48 42\n")
    (tmp_path / "lm").mkdir()
    for text in FOREIGN.values():
        (tmp_path / "lm" / "results.json").write_text(text)
        with pytest.raises(OutputError) as err:
            landmarks_main(LandmarkEvalConfig(landmarks=str(data / "list.txt"), weights=str(weights),
                                              out=str(tmp_path / "lm"), part="all", progress=False))
        _refused_names(err.value, tmp_path / "lm" / "results.json", "evaluation.landmarks")
    (tmp_path / "lfw").mkdir()
    (tmp_path / "lfw" / "results.json").write_text(FOREIGN["a user's"])
    assert _eval_lfw(tmp_path, weights, (40, 40, 3)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{tmp_path / 'lfw' / 'results.json'} exists and was not written" in err, err
    assert (tmp_path / "lfw" / "results.json").read_text() == FOREIGN["a user's"]


def test_data_builds_refuse_a_manifest_they_did_not_write_and_rebuild_over_their_own(tiny_wider, weights, tmp_path,
                                                                                     capsys):
    from prepare.generate import main as generate, tiny_config
    from prepare.identities import cli as identities_cli

    out = tmp_path / "build"
    out.mkdir()
    cfg = tiny_config(tiny_wider.train_txt, tiny_wider.train_images, None, out, workers=1)
    faces_manifest = json.dumps({"record": "face", "schema_version": 1, "fingerprint": "f", "shards": []})
    for text in (*FOREIGN.values(), faces_manifest):  # garbage, a user's file, an identity build's manifest
        (out / "manifest.json").write_text(text)
        with pytest.raises(OutputError) as err:
            generate(cfg)
        _refused_names(err.value, out / "manifest.json", "prepare.generate")
        assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    proc = _cli("prepare.generate", "--wider-txt", tiny_wider.train_txt, "--wider-images", tiny_wider.train_images,
                "--out", out, "--tiny", "--workers", "1")
    _one_line_error(proc, f"{out / 'manifest.json'} exists and was not written by prepare.generate")
    (out / "manifest.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "fingerprint": "old",
                                                   "shards": []}))
    built = generate(cfg)  # an earlier build's manifest (other settings): rebuilt
    assert built["fingerprint"] != "old"
    assert generate(cfg)["fingerprint"] == built["fingerprint"]  # and up to date after
    people = tmp_path / "people"
    (people / "A").mkdir(parents=True)
    cv2.imwrite(str(people / "A" / "A_0001.jpg"), np.zeros((40, 40, 3), np.uint8))
    assert identities_cli(["--images", str(people), "--out", str(out), "--aligned", str(tmp_path / "aligned"),
                           "--weights", str(weights), "--no-progress"]) == 2  # a detector build's manifest
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"error: {out / 'manifest.json'} exists and was not written by python -m prepare.identities: "
                        f"it is not replaced; move it or write the outputs to another folder"), err
    assert not (tmp_path / "aligned").exists()


# -- inputs that were not named as inputs; --threads ---------------------------------------------------


def test_eval_landmarks_refuses_an_output_folder_inside_the_lists_images(weights, tmp_path):
    from evaluation.landmarks import LandmarkEvalConfig, main as landmarks_main

    data = tmp_path / "data"
    (data / "faces").mkdir(parents=True)
    cv2.imwrite(str(data / "faces" / "face.png"), np.zeros((64, 80, 3), np.uint8))
    (data / "list.txt").write_text("faces\\face.png 20 60 10 50 30 22 50 22 40 32 32 42 48 42\n")
    for out in (data / "eval", data / "faces" / "eval"):
        with pytest.raises(OutputError, match=f"--out {out} lies inside the input the images of --landmarks {data}"):
            landmarks_main(LandmarkEvalConfig(landmarks=str(data / "list.txt"), weights=str(weights), out=str(out),
                                              part="all", progress=False))
        assert not out.exists()
    proc = _cli("evaluation.landmarks", "--landmarks", data / "list.txt", "--weights", weights, "--out", data / "eval")
    _one_line_error(proc, f"--out {data / 'eval'} lies inside the input the images of --landmarks {data}")


def test_a_training_output_folder_holding_the_init_weights_is_refused(tmp_path):
    from trainers.preflight import PreflightError, check_outputs

    run = tmp_path / "run"
    _nets(run, ("pnet",))
    cfg = SimpleNamespace(net="pnet", data=str(tmp_path / "data"), out=str(run), export=None, init=str(run),
                          overwrite_shipped=False)
    with pytest.raises(PreflightError, match=f"--out {run} holds the input --init {run / 'pnet.pt'}"):
        check_outputs(cfg)
    with pytest.raises(PreflightError, match=f"--export {run / 'pnet.pt'} is the input --init {run}'s file"):
        check_outputs(SimpleNamespace(**{**vars(cfg), "out": str(tmp_path / "new"), "export": str(run / "pnet.pt")}))
    check_outputs(SimpleNamespace(**{**vars(cfg), "out": str(tmp_path / "new")}))  # apart: fine
    check_outputs(SimpleNamespace(**{**vars(cfg), "init": "scratch"}))


@pytest.mark.parametrize("threads", ["0", "-1"])
def test_the_benchmarks_threads_below_one_is_a_usage_error_naming_the_option(threads):
    for module, args in (("benchmarks.bench_detector", ["--threads", threads]),
                         ("benchmarks.bench_backends", ["--threads", "2", threads]),
                         ("benchmarks.bench_train", ["--threads", threads])):
        _usage_error(_cli(module, *args, timeout=120), "--threads must be", threads)
