"""Faults of weights files, injected: a flipped bit that torch reads without noticing, an embedder
copied away from its training record or without one, an embedder file of other shapes.

Every one must end in one line naming the file (``error: ...`` and exit code 2 at the command
line), never in a result made with other weights than those recorded, or in figures of an embedder
scored on the people it learnt. The embedder runs are a few steps of a tiny net on the demo's 12
people (``demo.identities``), as in ``tests/test_recognition.py``.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import core.weights
import recognition.embedder
from annotations.lfw import parse_pairs
from child_env import REPO, child_env
from recognition.embedder import load_embedder
from stage_errors import one_line_error as _one_line_error
from core.weights import (SUMS_FILE, WeightsError, file_sha256, load_weights, pack_weights, read_sums,
                          write_digest)
from demo.identities import DemoIdentitiesConfig, build
from detector import load_detector
from evaluation.lfw import UNKNOWN_TRAINING, LfwEvalConfig, check_unseen
from evaluation.lfw import main as lfw_main
from prepare.identities import IdentityDataConfig
from prepare.identities import main as identities_main
from trainers.checkpoint import ResumeError
from trainers.embed_config import EmbedConfig
from trainers.embed_task import embed_parts
from trainers.train import main as train_main

SHIPPED = REPO / "weights"
SHIPPED_FILES = ("pnet.pt", "rnet.pt", "onet.pt", "embedder.pt")


# -- helpers ------------------------------------------------------------------------------------
def _cli(module: str, args: list, patch: str = "") -> subprocess.CompletedProcess:
    """``python -m module args`` in a child process, after running ``patch``."""
    code = textwrap.dedent(patch) + textwrap.dedent(f"""
        import runpy, sys
        sys.argv = [{module!r}] + sys.argv[1:]
        runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
    """)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=180)




def _tensors(path: Path) -> dict:
    obj = torch.load(path, weights_only=True)
    return obj["model"] if "format" in obj else obj


def flip_a_float_bit(path: Path) -> str:
    """Flip the lowest mantissa bit of one float32 weight stored in ``path``: the value moves by one
    unit in the last place and stays finite, so torch reads the file as if nothing happened. Returns
    the tensor's name."""
    data = bytearray(path.read_bytes())
    before = _tensors(path)
    for key, t in before.items():
        if t.dtype != torch.float32:
            continue
        for value in t.flatten()[:500].tolist():
            pattern = struct.pack("<f", value)
            if value and bytes(data).count(pattern) == 1:
                data[bytes(data).index(pattern)] ^= 0x01
                path.write_bytes(bytes(data))
                after = _tensors(path)  # torch notices nothing: finite values, one of them changed
                assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
                assert not torch.equal(after[key], before[key])
                return key
    raise AssertionError(f"no float of {path} has a byte pattern found once in the file")


def _shipped_copy(tmp_path: Path, monkeypatch) -> Path:
    """A copy of weights/ (the four files and SHA256SUMS) that the loaders take for the shipped one."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in (*SHIPPED_FILES, SUMS_FILE):
        shutil.copy(SHIPPED / name, folder / name)
    monkeypatch.setattr(core.weights, "SHIPPED_WEIGHTS_DIR", folder)
    monkeypatch.setattr(recognition.embedder, "SHIPPED_DIR", folder)
    return folder


# -- fixtures: a tiny embedder trained on the demo's fold-2 build, exported too ------------------
@pytest.fixture(scope="module")
def people(tmp_path_factory) -> Path:
    return build(DemoIdentitiesConfig(out=str(tmp_path_factory.mktemp("people"))))


@pytest.fixture(scope="module")
def trained(people, tmp_path_factory) -> EmbedConfig:
    data = IdentityDataConfig(images=str(people / "images"), out=str(people / "build" / "fold-2"),
                              people=str(people / "people.txt"), fold=2, progress=False)
    identities_main(data)
    root = tmp_path_factory.mktemp("embed")
    cfg = EmbedConfig.tiny(data.out, root / "run", epochs=1, export=str(root / "exported" / "embedder.pt"))
    train_main(cfg, embed_parts)
    return cfg


def _fold_pairs(people: Path, fold: int):
    return [p for p in parse_pairs(people / "pairs.txt") if p.fold == fold - 1]


def _lfw_cfg(people: Path, out: Path, embedder, **changes) -> LfwEvalConfig:
    return LfwEvalConfig(images=str(people / "images"), pairs=str(people / "pairs.txt"), out=str(out),
                         embedder=str(embedder), aligned=str(people / "build" / "aligned"), progress=False, **changes)


# -- rule: the shipped weights' SHA-256 are recorded and checked on load -------------------------
def test_the_shipped_weights_match_the_sha256_recorded_in_the_repo():
    recorded = read_sums(SHIPPED / SUMS_FILE)
    assert sorted(recorded) == sorted(SHIPPED_FILES)
    assert all(file_sha256(SHIPPED / name) == digest for name, digest in recorded.items())
    load_detector("shipped")
    assert load_embedder("shipped").record["lfw_fold_left_out"] == 10


@pytest.mark.parametrize("name", ["onet.pt", "embedder.pt"])
def test_a_flipped_bit_in_a_shipped_weights_file_is_one_line_naming_it(name, tmp_path, monkeypatch):
    folder = _shipped_copy(tmp_path, monkeypatch)
    expected = read_sums(folder / SUMS_FILE)[name]
    flip_a_float_bit(folder / name)
    found = file_sha256(folder / name)
    with pytest.raises(WeightsError) as err:
        load_detector("shipped") if name == "onet.pt" else load_embedder("shipped")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{folder / name}: ")
    assert expected in message and found in message and f"git checkout weights/{name}" in message
    if name == "onet.pt":  # and at the command line: one line, exit code 2
        cv2.imwrite(str(tmp_path / "photo.png"), np.full((64, 64, 3), 127, np.uint8))
        patch = f"""
            from pathlib import Path
            import core.weights
            core.weights.SHIPPED_WEIGHTS_DIR = Path({str(folder)!r})
        """
        done = _cli("detector.detect", ["--image", tmp_path / "photo.png", "--weights", "shipped",
                                        "--out", tmp_path / "out"], patch)
        _one_line_error(done, f"{folder / name}: ", expected, found, f"git checkout weights/{name}")


def test_a_retrained_shipped_net_records_its_new_digest_in_the_folders_sha256sums(tmp_path, monkeypatch):
    folder = _shipped_copy(tmp_path, monkeypatch)
    shutil.copy(SHIPPED / "rnet.pt", folder / "onet.pt.new")
    (folder / "onet.pt.new").replace(folder / "onet.pt")  # another O-Net under the name: refused
    with pytest.raises(WeightsError, match="git checkout weights/onet.pt"):
        load_weights(folder / "onet.pt")
    # what trainers.train --export weights/onet.pt --overwrite-shipped does after writing the file
    assert write_digest(folder / "onet.pt", file_sha256(folder / "onet.pt")) == folder / SUMS_FILE
    assert read_sums(folder / SUMS_FILE)["onet.pt"] == file_sha256(folder / "onet.pt")
    assert not (folder / "onet.pt.sha256").exists()
    assert read_sums(folder / SUMS_FILE)["pnet.pt"] == read_sums(SHIPPED / SUMS_FILE)["pnet.pt"]
    load_weights(folder / "onet.pt")
    (folder / SUMS_FILE).write_text("not a digest line\n")
    with pytest.raises(WeightsError, match=f"{SUMS_FILE}:1: not a digest line"):
        load_weights(folder / "onet.pt")


# -- rule: a user's trained weights are checked against the digest their training recorded --------
def test_training_writes_the_sha256_of_each_weights_file_and_the_record_inside(trained):
    run, exported = Path(trained.out) / "embedder.pt", Path(trained.export)
    for path in (run, exported):
        assert read_sums(f"{path}.sha256") == {"embedder.pt": file_sha256(path)}
        raw = torch.load(path, weights_only=True)
        assert raw["format"] == core.weights.EMBEDDER_FORMAT and raw["sha256"]
        assert raw["record"] == json.loads((Path(trained.out) / "embedder.json").read_text())
        assert raw["record"]["people"] == [f"Demo_Person_{k:02d}" for k in range(0, 12, 2)]
    checkpoint = torch.load(Path(trained.out) / "checkpoints" / "epoch-001.pt", weights_only=True)
    assert checkpoint["record"] == raw["record"] and checkpoint["sha256"]


def test_a_flipped_bit_in_a_users_trained_weights_is_one_line_at_the_command_line(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for net in ("pnet", "rnet", "onet"):  # a user's weights folder, each file with its training's digest
        shutil.copy(SHIPPED / f"{net}.pt", folder / f"{net}.pt")
        write_digest(folder / f"{net}.pt", file_sha256(folder / f"{net}.pt"))
    load_detector(str(folder))
    expected = file_sha256(folder / "onet.pt")
    flip_a_float_bit(folder / "onet.pt")
    cv2.imwrite(str(tmp_path / "photo.png"), np.full((64, 64, 3), 127, np.uint8))
    done = _cli("detector.detect", ["--image", tmp_path / "photo.png", "--weights", folder, "--out", tmp_path / "out"])
    _one_line_error(done, f"{folder / 'onet.pt'}: ", expected, file_sha256(folder / "onet.pt"),
                    f"{folder / 'onet.pt'}.sha256")


def test_a_flipped_bit_in_a_trained_embedder_is_refused_beside_its_digest_and_copied_alone(trained, tmp_path):
    beside, alone = tmp_path / "beside", tmp_path / "alone"
    for folder in (beside, alone):
        folder.mkdir()
        shutil.copy(trained.export, folder / "embedder.pt")
    shutil.copy(f"{trained.export}.sha256", beside / "embedder.pt.sha256")
    for folder in (beside, alone):
        load_embedder(str(folder))
        flip_a_float_bit(folder / "embedder.pt")
    with pytest.raises(WeightsError, match="embedder.pt.sha256 records"):
        load_embedder(str(beside))
    with pytest.raises(WeightsError, match="not the .* stored with them"):  # the digest inside the file
        load_embedder(str(alone))
    checkpoint = tmp_path / "epoch-001.pt"
    shutil.copy(Path(trained.out) / "checkpoints" / "epoch-001.pt", checkpoint)
    flip_a_float_bit(checkpoint)
    with pytest.raises(WeightsError, match="not the .* stored with them"):
        load_embedder(str(checkpoint))


def test_a_flipped_bit_in_a_checkpoint_to_resume_from_is_one_line(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained.out, run)
    flip_a_float_bit(run / "checkpoints" / "epoch-001.pt")
    with pytest.raises(ResumeError, match="epoch-001.pt: its model is not the one whose SHA-256 is stored with it"):
        train_main(replace(trained, out=str(run), export=None, resume=True), embed_parts)


# -- rule: the record of the people an embedder saw travels with its weights ---------------------
def test_an_embedder_copied_alone_or_its_checkpoint_still_refuses_the_people_it_saw(trained, people, tmp_path):
    (tmp_path / "alone").mkdir()
    shutil.copy(trained.export, tmp_path / "alone" / "embedder.pt")  # no embedder.json, no .sha256
    checkpoint = Path(trained.out) / "checkpoints" / "epoch-001.pt"
    cfg = _lfw_cfg(people, tmp_path / "e", tmp_path / "alone", fold=1)
    for embedder in (tmp_path / "alone", checkpoint):
        with pytest.raises(ValueError, match="trained on 6 of these pairs' people .*score it with FOLD=2"):
            check_unseen(load_embedder(str(embedder)), _fold_pairs(people, 1), cfg)
        check_unseen(load_embedder(str(embedder)), _fold_pairs(people, 2), cfg)
    done = _cli("evaluation.lfw", ["--images", people / "images", "--pairs", people / "pairs.txt", "--fold", 1,
                                   "--out", tmp_path / "e", "--embedder", checkpoint, "--no-progress"])
    _one_line_error(done, f"{checkpoint} was trained on 6 of these pairs' people")


def test_an_embedder_without_a_training_record_is_refused_unless_scored_as_unknown(trained, people, tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    torch.save(load_embedder(trained.export).net.state_dict(), plain / "embedder.pt")  # as files were written before
    # a record beside it is not what travels with the weights: it is not read
    (plain / "embedder.json").write_text(json.dumps({"people": ["Someone_Else"], "lfw_fold_left_out": 10}))
    args = ["--images", people / "images", "--pairs", people / "pairs.txt", "--fold", 1, "--out", tmp_path / "e",
            "--embedder", plain, "--aligned", people / "build" / "aligned", "--no-progress"]
    _one_line_error(_cli("evaluation.lfw", args), f"{plain / 'embedder.pt'} carries no training record",
                    "--unknown-embedder")
    results = lfw_main(_lfw_cfg(people, tmp_path / "e", plain, fold=1, unknown_embedder=True))
    assert results["pairs"] == 24 and results["embedder_training"] == UNKNOWN_TRAINING
    assert json.loads((tmp_path / "e" / "results.json").read_text())["embedder_training"] == UNKNOWN_TRAINING
    assert f"LFW fold 1 ({UNKNOWN_TRAINING}): 24 pairs" in capsys.readouterr().out
    # the flag is for files without a record: it does not lift a recorded embedder's refusal
    with pytest.raises(ValueError, match="trained on 6 of these pairs' people"):
        lfw_main(_lfw_cfg(people, tmp_path / "r", trained.export, fold=1, unknown_embedder=True))


# -- rule: an embedder of other shapes is one line saying what does not fit ----------------------
def test_an_embedder_of_other_shapes_is_one_line_naming_what_does_not_fit(tmp_path, people):
    state = load_embedder("shipped").net.state_dict()
    bad = tmp_path / "embedder.pt"
    grown = {**state, "stages.0.body.4.weight": torch.zeros(48, 48, 5, 5)}  # a 5x5 conv where the net has 3x3
    torch.save(grown, bad)
    with pytest.raises(WeightsError) as err:
        load_embedder(str(bad))
    message = str(err.value)
    assert message.startswith(f"{bad}: weights do not fit the embedder") and "\n" not in message
    assert "stages.0.body.4.weight is (48, 48, 5, 5), the embedder needs (48, 48, 3, 3)" in message
    assert "Error(s) in loading" not in message
    torch.save({k: v for k, v in state.items() if k != "head.4.running_var"}, bad)
    with pytest.raises(WeightsError, match="missing head.4.running_var"):
        load_embedder(str(bad))
    torch.save(grown, bad)
    done = _cli("recognition.compare", ["--images", people / "images/Demo_Person_00/Demo_Person_00_0001.jpg",
                                     people / "images/Demo_Person_00/Demo_Person_00_0002.jpg", "--embedder", bad])
    _one_line_error(done, f"{bad}: weights do not fit", "stages.0.body.4.weight is (48, 48, 5, 5)")
