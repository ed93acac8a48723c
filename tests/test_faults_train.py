"""Faults of a training run, injected: builds lacking a kind the loss needs, an output folder in use,
holding an earlier run, read-only or full, devices this machine lacks, unusable ``--init`` weights,
missing or corrupt shards (also inside a DataLoader worker), bad option values, and weights that
make must retrain when the training flags change.

Each must end in one line, ``python -m trainers.train: error: ...`` with exit code 2 (no
traceback), found before any work where it can be. Most runs call ``trainers.train.cli`` in this
process (``run``); the worker case runs ``python -m trainers.train`` in a child process with the
fault patched in first, so that its exit code and the whole of its stderr are the real ones.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch

import core.device
import trainers.detector_task
import trainers.train
from core.nets import build_net
from lmdb_builders.manifest import MANIFEST_NAME, fingerprint
from lmdb_builders.schema import KIND_NAMES, Kind
from lmdb_builders.synthetic import synthetic_records, write_synthetic_build
from lmdb_builders.writer import ShardWriter, WriterConfig
from trainers.checkpoint import load_checkpoint
from trainers.config import parse_args
from trainers.train import cli
from child_env import REPO, child_env

PREFIX = "python -m trainers.train: error: "
# A tiny run: 2 steps of 32 samples, 20% of the samples held out for validation.
TINY = ["--epochs", "1", "--batches-per-epoch", "2", "--batch-size", "32", "--val-fraction", "0.2", "--workers", "0",
        "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the nets are small


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    """A complete 12 px build (600 synthetic samples of every kind)."""
    root = tmp_path_factory.mktemp("faults_train") / "pnet"
    write_synthetic_build(root, 12, 600, seed=12, per_image=100)
    return root


def fresh_build(folder: Path, build: Path) -> Path:
    """A copy of ``build`` this test may damage."""
    shutil.copytree(build, folder)
    return folder


def kinds_build(folder: Path, counts: dict, landmark_list: bool = True) -> Path:
    """A 12 px build of ``counts`` synthetic samples per kind; its manifest says whether it was
    made with a landmark list, as ``prepare.generate``'s does."""
    writer = ShardWriter(folder, fingerprint({"kinds": {int(k): n for k, n in counts.items()}}), WriterConfig())
    rng = np.random.default_rng(0)
    writer.add_image(0, [synthetic_records(rng, 12, kind, n) for kind, n in counts.items() if n])
    writer.finish(1, {"net_size": 12, "net_sizes": [12], "seed": 0,
                      "config": {"inputs": {"wider_txt": "0" * 16, "landmarks": "1" * 16 if landmark_list else None}}})
    return folder


@pytest.fixture
def work(monkeypatch):
    """Records whether a run opened its build and whether it trained (a refusal must come before)."""
    calls = {"dataset": 0, "epochs": 0}
    real_dataset, real_epoch = trainers.detector_task.ShardDataset, trainers.train.train_one_epoch

    def dataset(*args, **kwargs):
        calls["dataset"] += 1
        return real_dataset(*args, **kwargs)

    def epoch(*args, **kwargs):
        calls["epochs"] += 1
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainers.detector_task, "ShardDataset", dataset)
    monkeypatch.setattr(trainers.train, "train_one_epoch", epoch)
    return calls


@pytest.fixture
def run(capsys):
    """``run(*argv)`` -> (exit code, stderr lines) of ``python -m trainers.train`` in this process."""

    def call(*argv):
        capsys.readouterr()
        try:
            code = cli([str(a) for a in argv])
        except SystemExit as e:  # argparse's usage errors
            code = e.code
        return code, capsys.readouterr().err.strip().splitlines()

    return call


def one_line_error(code: int, lines: list[str], *says: str) -> str:
    """Assert exit code 2 and one error line (after any epoch summaries) holding every ``says``."""
    errors = [line for line in lines if not line.startswith(("epoch ", "resuming "))]
    assert code == 2, lines
    assert len(errors) == 1 and errors[0].startswith(PREFIX), lines
    for text in says:
        assert text in errors[0], errors[0]
    return errors[0]


def pnet_args(data, out, *more) -> list:
    return ["--net", "pnet", "--data", data, "--out", out, *TINY, *more]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- 1. a build without a kind the loss needs ------------------------------------------------------
ALL_KINDS = {Kind.NEGATIVE: 60, Kind.POSITIVE: 30, Kind.PART: 30, Kind.LANDMARK: 30}


@pytest.mark.parametrize("missing", [Kind.NEGATIVE, Kind.POSITIVE, Kind.PART, Kind.LANDMARK],
                         ids=lambda k: KIND_NAMES[k])
def test_a_build_without_a_kind_the_loss_needs_is_refused_before_training(missing, tmp_path, run, work):
    data = kinds_build(tmp_path / "pnet", {**ALL_KINDS, missing: 0})
    weights = tmp_path / "weights" / "pnet.pt"
    code, lines = run(*pnet_args(data, tmp_path / "out", "--export", weights))
    one_line_error(code, lines, f"{data}: no {KIND_NAMES[missing]} samples of 12 px", "the pnet loss needs them")
    assert work["epochs"] == 0 and not weights.exists() and not (tmp_path / "out" / "checkpoints").exists()


def test_kinds_held_out_entirely_for_validation_are_named_with_the_option(tmp_path, run, work):
    data = kinds_build(tmp_path / "pnet", {**ALL_KINDS, Kind.PART: 1})  # round(0.6 * 1) = 1: all held out
    code, lines = run(*pnet_args(data, tmp_path / "out"), "--val-fraction", "0.6")
    one_line_error(code, lines, "no part samples", "its 1 part samples are all held out for validation",
                   "--val-fraction 0.6")
    assert work["epochs"] == 0


@pytest.mark.parametrize("flags, landmark_list", [(["--no-landmark-head"], True), ([], False)],
                         ids=["no-landmark-head", "build-without-landmark-list"])
def test_landmark_samples_are_needed_only_by_a_landmark_head_on_a_build_with_a_landmark_list(
        flags, landmark_list, tmp_path, run):
    data = kinds_build(tmp_path / "pnet", {**ALL_KINDS, Kind.LANDMARK: 0}, landmark_list=landmark_list)
    code, lines = run(*pnet_args(data, tmp_path / "out", *flags))
    assert code == 0, lines
    assert (tmp_path / "out" / "pnet.pt").is_file()


# -- 2. one run per output folder -------------------------------------------------------------------
HOLD = """
import sys, time
from core.lock import folder_lock
with folder_lock(sys.argv[1], "trainers.train --net pnet"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_run_on_the_same_output_is_refused_naming_the_first_ones_pid(build, tmp_path, run, work):
    # What `kill -9` of make leaves behind: its Python child, still training into OUT.
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, cwd=REPO,
                              env=child_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, lines = run(*pnet_args(build, out))
        one_line_error(code, lines, f"{out} is in use by pid {holder.pid} (trainers.train --net pnet",
                       f"kill {holder.pid}")
        assert work["dataset"] == 0 and not (out / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    code, lines = run(*pnet_args(build, out))  # the holder is gone: the folder is free again
    assert code == 0, lines


# -- 3. an earlier run's checkpoints are never deleted silently ---------------------------------------
def test_a_rerun_over_checkpoints_is_refused_unless_it_resumes_or_restarts(build, tmp_path, run, work):
    out = tmp_path / "out"
    code, lines = run(*pnet_args(build, out))
    assert code == 0, lines
    checkpoint = out / "checkpoints" / "epoch-001.pt"
    before = {p: sha256(p) for p in (checkpoint, out / "pnet.pt", out / "log.csv")}
    work["epochs"] = 0
    code, lines = run(*pnet_args(build, out))
    line = one_line_error(code, lines)
    assert line == (f"{PREFIX}{out} holds checkpoints of an earlier run (epoch 1): continue it with RESUME=1 "
                    f"(--resume) or start over with RESTART=1 (--restart)")
    assert {p: sha256(p) for p in before} == before and work["epochs"] == 0
    code, lines = run(*pnet_args(build, out, "--resume"))  # a finished run: nothing left to train
    assert code == 0 and any(line.startswith("resuming pnet") for line in lines), lines
    code, lines = run(*pnet_args(build, out, "--restart", "--seed", "1"))
    assert code == 0 and work["epochs"] == 1, lines
    assert load_checkpoint(checkpoint)["config"]["seed"] == 1 and sha256(out / "pnet.pt") != before[out / "pnet.pt"]


def test_a_fresh_run_never_deletes_files_of_its_names_that_no_run_wrote(build, tmp_path, run, work):
    # A fresh run clears log.csv, loss_curve.png and <net>.pt of an earlier run: only a run's own.
    out = tmp_path / "out"
    out.mkdir()
    (out / "log.csv").write_text("my notes\n")
    (out / "pnet.pt").write_bytes(b"my weights")
    work["epochs"] = 0
    code, lines = run(*pnet_args(build, out))
    line = one_line_error(code, lines)
    assert line == (f"{PREFIX}{out} holds log.csv, pnet.pt, which no training run wrote there: give another --out, "
                    f"or --restart to delete them")
    assert (out / "log.csv").read_text() == "my notes\n" and (out / "pnet.pt").read_bytes() == b"my weights"
    assert work["epochs"] == 0
    own = tmp_path / "own"
    code, lines = run(*pnet_args(build, own))
    assert code == 0, lines
    for name in ("checkpoints",):  # the run's own files, checkpoints gone: a fresh run takes them over
        for f in (own / name).glob("*"):
            f.unlink()
    code, lines = run(*pnet_args(build, own))
    assert code == 0 and work["epochs"] == 2, lines


def test_a_damaged_checkpoint_to_resume_from_is_one_line(build, tmp_path, run, work):
    out = tmp_path / "out"
    code, lines = run(*pnet_args(build, out, "--epochs", "2", "--stop-after-epochs", "1"))
    assert code == 0, lines
    checkpoint = out / "checkpoints" / "epoch-001.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    work["epochs"] = 0
    code, lines = run(*pnet_args(build, out, "--epochs", "2", "--resume"))
    one_line_error(code, lines, f"{checkpoint}: not a readable checkpoint (", "RESTART=1 (--restart)")
    assert work["epochs"] == 0


def test_resume_and_restart_together_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--net", "pnet", "--resume", "--restart"])
    assert exit_.value.code == 2 and "--resume and --restart exclude each other" in capsys.readouterr().err


# -- 4. output folders that cannot be written; a full disk ---------------------------------------------
def test_a_read_only_output_folder_is_found_before_any_work(build, tmp_path, run, work, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    real_mkstemp = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):  # every file created in OUT fails as on a read-only mount
        if dir is not None and Path(dir).resolve().is_relative_to(out.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    code, lines = run(*pnet_args(build, out))
    one_line_error(code, lines, f"{out}: cannot write in the output folder (Read-only file system)")
    assert work["dataset"] == 0 and work["epochs"] == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_folder_without_write_permission_is_found_before_any_work(build, tmp_path, run, work):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, lines = run(*pnet_args(build, out))
    finally:
        out.chmod(0o755)
    one_line_error(code, lines, f"{out}: cannot write in the output folder (Permission denied)")
    assert work["dataset"] == 0


def test_an_export_folder_that_cannot_be_created_is_found_before_any_work(build, tmp_path, run, work):
    (tmp_path / "weights").write_text("a file where the weights folder should be")
    code, lines = run(*pnet_args(build, tmp_path / "out", "--export", tmp_path / "weights" / "nets" / "pnet.pt"))
    one_line_error(code, lines, f"{tmp_path / 'weights' / 'nets'}: cannot create the output folder (Not a directory)")
    assert work["dataset"] == 0


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_the_previous_checkpoint_survives(
        build, tmp_path, run, monkeypatch):
    out = tmp_path / "out"
    real_fsync = os.fsync

    def full(fd):  # the second epoch's checkpoint meets a full disk (ENOSPC, as delayed allocation reports it)
        if "epoch-002" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    code, lines = run(*pnet_args(build, out, "--epochs", "2"))
    one_line_error(code, lines, str(out / "checkpoints" / "epoch-002.pt"), "disk full", "bytes free on the device")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-001.pt"]  # no temporary file left
    assert load_checkpoint(out / "checkpoints" / "epoch-001.pt")["epoch"] == 1
    monkeypatch.setattr(os, "fsync", real_fsync)  # space freed: the run continues from epoch 1
    code, lines = run(*pnet_args(build, out, "--epochs", "2", "--resume"))
    assert code == 0 and "resuming pnet" in lines[0] and (out / "pnet.pt").is_file(), lines


# -- 5. devices this machine lacks ------------------------------------------------------------------
@pytest.mark.parametrize("device, says", [
    ("cuda", "--device cuda: no CUDA device is available on this machine"),
    ("gpu", "--device gpu: not a device name; use cpu, cuda, cuda:N or mps (an NVIDIA GPU is cuda)"),
], ids=["cuda", "gpu"])
def test_a_device_this_machine_lacks_is_one_line_before_any_work(device, says, build, tmp_path, run, work,
                                                                 monkeypatch):
    monkeypatch.setattr(core.device, "_cuda_count", lambda: 0)  # a machine without a GPU, wherever this runs
    code, lines = run(*pnet_args(build, tmp_path / "out", "--device", device))
    one_line_error(code, lines, says)
    assert work["dataset"] == 0 and not (tmp_path / "out").exists()


# -- 6. unusable --init weights, missing or corrupt shards ----------------------------------------------
def _bad_weights(kind: str, folder: Path) -> Path:
    path = folder / "pnet.pt"
    folder.mkdir()
    if kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "truncated":
        torch.save(build_net("pnet").state_dict(), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "garbage":
        path.write_bytes(os.urandom(4096))
    elif kind == "another-net":
        torch.save(build_net("rnet").state_dict(), path)
    elif kind == "not-finite":
        state = build_net("pnet").state_dict()
        state["conv1.weight"][0, 0, 0, 0] = float("nan")
        torch.save(state, path)
    return path


@pytest.mark.parametrize("kind, says", [
    ("zero-byte", "zero bytes"), ("truncated", "truncated"), ("garbage", "not a readable weights file"),
    ("another-net", "weights do not fit pnet: they fit rnet"), ("not-finite", "NaN or infinite"),
    ("missing", "does not exist"),
])
def test_unusable_init_weights_are_one_line_naming_the_file_before_any_work(kind, says, build, tmp_path, run, work):
    path = _bad_weights(kind, tmp_path / "w") if kind != "missing" else tmp_path / "w" / "pnet.pt"
    code, lines = run(*pnet_args(build, tmp_path / "out", "--init", path))
    one_line_error(code, lines, f"--init {path}", str(path), says)
    assert work["dataset"] == 0


def _shard(build: Path) -> Path:
    return build / json.loads((build / MANIFEST_NAME).read_text())["shards"][0]["path"]


def _flip_a_record_byte(shard: Path) -> None:
    env = lmdb.open(str(shard), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        record = bytes(next(iter(txn.cursor()))[1])
    env.close()
    data = bytearray(shard.read_bytes())
    at = data.find(record) + len(record) // 2
    data[at] ^= 0xFF
    shard.write_bytes(bytes(data))


@pytest.mark.parametrize("fault, says", [
    ("deleted", "listed in the manifest but missing"),
    ("garbage", "not a readable LMDB shard"),
    ("flipped byte", "checksum mismatch"),
])
def test_a_damaged_shard_is_one_line_naming_it(fault, says, build, tmp_path, run, work):
    data = fresh_build(tmp_path / "pnet", build)
    shard = _shard(data)
    (data / "verified.json").unlink(missing_ok=True)
    if fault == "deleted":
        shard.unlink()
    elif fault == "garbage":
        shard.write_bytes(os.urandom(shard.stat().st_size))
    else:
        _flip_a_record_byte(shard)
    code, lines = run(*pnet_args(data, tmp_path / "out"))
    one_line_error(code, lines, str(shard), says)
    assert work["epochs"] == 0


def test_a_manifest_of_another_schema_is_one_line(build, tmp_path, run):
    data = fresh_build(tmp_path / "pnet", build)
    manifest = json.loads((data / MANIFEST_NAME).read_text())
    (data / MANIFEST_NAME).write_text(json.dumps({**manifest, "schema_version": 99}))
    code, lines = run(*pnet_args(data, tmp_path / "out"))
    one_line_error(code, lines, str(data / MANIFEST_NAME), "schema version 99")


# The shard disappears after the build was checked, so that the DataLoader worker meets it.
DELETE_IN_WORKER = """
import lmdb_builders.reader as _reader
_Loader = _reader.ShardLoader
def _loader(dataset, *args, **kwargs):
    dataset.paths[0].unlink()
    return _Loader(dataset, *args, **kwargs)
_reader.ShardLoader = _loader
"""


def test_a_shard_error_inside_a_dataloader_worker_is_one_line_naming_the_shard(build, tmp_path):
    data = fresh_build(tmp_path / "pnet", build)
    shard = _shard(data)
    code = DELETE_IN_WORKER + textwrap.dedent("""
        import runpy, sys
        sys.argv = ["trainers.train"] + sys.argv[1:]
        runpy.run_module("trainers.train", run_name="__main__", alter_sys=True)
    """)
    args = [str(a) for a in pnet_args(data, tmp_path / "out")]
    args[args.index("--workers") + 1] = "1"  # the records are read in a worker process
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=180,
                          env=child_env())
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr  # one line, no traceback
    assert proc.stderr.startswith(f"{PREFIX}{shard}: cannot read records ("), proc.stderr
    assert "No such file or directory" in proc.stderr and "rebuild" in proc.stderr


# -- 7. option values ----------------------------------------------------------------------------
@pytest.mark.parametrize("flag, value", [
    ("--workers", "-1"), ("--seed", "-1"), ("--epochs", "0"), ("--batch-size", "0"), ("--val-fraction", "0"),
    ("--val-fraction", "1"), ("--val-fraction", "1.5"), ("--lr", "0"), ("--lr", "-0.1"), ("--lr", "nan"),
])
def test_out_of_range_values_are_usage_errors_naming_the_option(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--net", "pnet", flag, value])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and last.startswith(f"{PREFIX}{flag} must be "), last


def test_more_workers_than_cpus_are_capped_with_one_warning(build, tmp_path, run, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    code, lines = run(*pnet_args(build, tmp_path / "out"), "--workers", "3")
    assert code == 0, lines
    warnings = [line for line in lines if "warning" in line]
    assert warnings == ["python -m trainers.train: warning: --workers 3 is more than the 1 CPUs this process may "
                        "use: using 1"]
    assert load_checkpoint(tmp_path / "out" / "checkpoints" / "epoch-001.pt")["config"]["num_workers"] == 1


# -- 8. make retrains when the training settings change --------------------------------------------
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_retrains_when_the_training_flags_change_and_not_otherwise(build, tmp_path):
    out = tmp_path / "build"
    fresh_build(out / "pnet", build)
    # TRAIN_SRC= and -o the build: the code and the data's inputs are left out of the prerequisites,
    # so that the test sees the training settings alone (and needs no ../shared)

    def make(*args):
        return subprocess.run(["make", "-C", str(REPO), "--no-print-directory", f"PY={sys.executable}", "VENV_STAMP=",
                               f"OUT={out}", "TRAIN_SRC=", "-o", str(out / "pnet" / "manifest.json"), *args],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})

    flags = f"TRAIN_FLAGS={' '.join(TINY)}"
    first = make("train-pnet", flags)
    assert first.returncode == 0, first.stderr
    assert (out / "train" / "pnet" / "flags.txt").read_text() == (f"device=cpu seed=0 recipe=configs/pnet.toml "
                                                                   f"flags={' '.join(TINY)}\n")
    assert make("-q", "train-pnet", flags).returncode == 0  # unchanged: up to date
    assert make("-q", "train-pnet", f"{flags} --lr 0.05").returncode == 1
    assert make("-q", "train-pnet", flags, "SEED=1").returncode == 1
    assert make("-q", "train-pnet", flags, "DEVICE=cuda").returncode == 1
    assert make("-q", "train-pnet", flags).returncode == 0  # asking changed nothing
    # New flags retrain, and the checkpoints of the earlier run are not silently deleted
    refused = make("train-pnet", f"{flags} --lr 0.05")
    assert refused.returncode != 0 and "start over with RESTART=1 (--restart)" in refused.stderr
    again = make("train-pnet", f"{flags} --lr 0.05", "RESTART=1")
    assert again.returncode == 0, again.stderr
    assert load_checkpoint(out / "train" / "pnet" / "checkpoints" / "epoch-001.pt")["config"]["optim"]["lr"] == 0.05
    assert make("-q", "train-pnet", f"{flags} --lr 0.05").returncode == 0
