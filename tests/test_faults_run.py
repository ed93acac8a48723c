"""Faults of a run, injected: bad weights files, devices this machine lacks, output folders that are
in use, read-only or full, shards that are missing or corrupt, and rebuilds after retraining.

Each fault must end in one line (``error: ...``, exit code 2 at the command line, no traceback)
found before any work where it can be, never in a wrong result. Command-line runs go through
``runpy`` in a child process, with the fault patched in first (``_cli``), so the exit code and
the whole of stderr are the real ones.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from core.atomic import DiskFullError, NotWritableError, atomic_write_bytes, ensure_writable_folder
from core.device import DeviceError, resolve_device
from core.lock import folder_lock
from core.nets import build_net
from core.weights import WeightsError, load_net, load_nets, load_state_dict
from detector import DetectorConfig, load_detector
from child_env import REPO, child_env
from stage_errors import has_prefix

NETS = ("pnet", "rnet", "onet")


# -- helpers ------------------------------------------------------------------------------------
def _cli(module: str, args: list, patch: str = "", timeout: int = 180) -> subprocess.CompletedProcess:
    """``python -m module args`` in a child process, after running ``patch`` (the injected fault)."""
    code = textwrap.dedent(patch) + textwrap.dedent(f"""
        import runpy, sys
        sys.argv = [{module!r}] + sys.argv[1:]
        runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
    """)
    env = child_env()
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _one_line_error(proc: subprocess.CompletedProcess, *says: str) -> str:
    """Assert exit code 2 and a single ``python -m <stage>: error: ...`` line on stderr holding every ``says``;
    the line."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and has_prefix(proc, lines[0]), proc.stderr
    for text in says:
        assert text in lines[0], lines[0]
    return lines[0]


# The nets report when they run, so that a test sees whether an error came before any work.
FORWARD_SENTINEL = """
import core.nets as _nets
for _cls in (_nets.PNet, _nets.RNet, _nets.ONet):
    _real = _cls.forward
    def _forward(self, x, _real=_real):
        import sys
        sys.stderr.write("FORWARD RAN\\n")
        return _real(self, x)
    _cls.forward = _forward
"""

# Every file created in TARGET's folder fails as on a read-only file system.
READ_ONLY = """
import errno, os, tempfile
_target = os.path.realpath(os.environ["FAULT_TARGET"])
_mkstemp = tempfile.mkstemp
def _refuse(*args, dir=None, **kwargs):
    if dir is not None and os.path.realpath(dir).startswith(_target):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
    return _mkstemp(*args, dir=dir, **kwargs)
tempfile.mkstemp = _refuse
"""

# Syncing a file whose name holds FAULT_NAME fails as on a full disk (ENOSPC, as NFS and delayed
# allocation report it); every other file is written normally.
DISK_FULL = """
import errno, os
_name = os.environ["FAULT_NAME"]
_fsync = os.fsync
def _full(fd):
    if _name in os.readlink(f"/proc/self/fd/{fd}"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _fsync(fd)
os.fsync = _full
"""

# The shard reader meets a file LMDB cannot open and lets LMDB's own error through.
LMDB_INVALID = """
import lmdb, lmdb_builders.reader as _reader
def _broken(self, build_dir, size):
    raise lmdb.InvalidError(f"{build_dir}/shard-24.lmdb: MDB_INVALID: File is not an LMDB file")
_reader.ShardDataset.__init__ = _broken
"""


def _save_random_nets(folder: Path, names=NETS, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    for name in names:
        torch.save(build_net(name).state_dict(), folder / f"{name}.pt")
    return folder


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def val_build(tiny_wider, tmp_path_factory):
    """A held-out sample build with 12/24/48 px shards (what ``make roc`` reads), read-only here."""
    from prepare.generate import main as generate, tiny_config

    out = tmp_path_factory.mktemp("faults") / "val"
    generate(tiny_config(tiny_wider.val_txt, tiny_wider.val_images, tiny_wider.landmarks_txt, out,
                         net_sizes=(12, 24, 48), workers=1, landmark_holdout=0.5, landmark_part="holdout"))
    return out


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    return _save_random_nets(tmp_path_factory.mktemp("faults") / "weights")



# -- 1. weights files ---------------------------------------------------------------------------
def _corrupt(kind: str, path: Path) -> None:
    good = path.parent / "good.pt"
    torch.save(build_net("pnet").state_dict(), good)
    data = good.read_bytes()
    if kind == "zero bytes":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt":
        path.write_bytes(b"\x80\x02not a torch file at all" * 20)
    elif kind == "pickled objects":
        torch.save(build_net("pnet"), path)  # a whole module, not a state dict


@pytest.mark.parametrize("kind, says", [
    ("zero bytes", "(zero bytes)"),
    ("truncated", "(truncated: "),
    ("corrupt", "(corrupt: "),
    ("pickled objects", "save net.state_dict()"),
])
def test_an_unreadable_weights_file_is_one_line_naming_it(tmp_path, kind, says):
    path = tmp_path / "pnet.pt"
    _corrupt(kind, path)
    with pytest.raises(WeightsError) as err:
        load_net("pnet", path)
    text = str(err.value)
    assert text.startswith(f"{path}: not a readable weights file") and says in text and "\n" not in text
    assert "weights_only" not in text  # torch's advice to unpickle anything is never passed on


def test_weights_of_another_net_or_shape_do_not_fit(tmp_path):
    torch.save(build_net("rnet").state_dict(), tmp_path / "pnet.pt")  # an rnet.pt saved as pnet.pt
    with pytest.raises(WeightsError, match=r"pnet.pt: weights do not fit pnet: they fit rnet"):
        load_net("pnet", tmp_path / "pnet.pt")
    state = build_net("onet").state_dict()
    state["dense5.weight"] = torch.zeros(256, 1000)  # an O-Net of another shape
    torch.save(state, tmp_path / "onet.pt")
    with pytest.raises(WeightsError) as err:
        load_net("onet", tmp_path / "onet.pt")
    assert str(err.value) == (f"{tmp_path / 'onet.pt'}: weights do not fit onet: "
                              f"dense5.weight is (256, 1000), onet needs (256, 1152)")


def test_nan_or_infinite_weights_are_refused(tmp_path):
    state = build_net("pnet").state_dict()
    state["conv1.weight"].view(-1)[:7] = float("nan")
    state["conv1.bias"][0] = float("inf")
    torch.save({"format": "mtcnn-train-checkpoint/1", "model": state}, tmp_path / "pnet.pt")  # a checkpoint too
    total = sum(v.numel() for v in state.values() if v.is_floating_point())
    with pytest.raises(WeightsError, match=rf"pnet.pt: 8 of {total:,} values are NaN or infinite"):
        load_state_dict(tmp_path / "pnet.pt")


def test_the_clis_print_a_bad_weights_file_as_one_line(tmp_path, val_build, wider_set):
    weights = _save_random_nets(tmp_path / "w")
    (weights / "rnet.pt").write_bytes(b"")
    proc = _cli("evaluation.roc", ["--val-data", val_build, "--weights", weights, "--out", tmp_path / "roc"])
    _one_line_error(proc, f"{weights / 'rnet.pt'}: not a readable weights file (zero bytes)")
    images, gt = wider_set
    proc = _cli("evaluation.wider_eval", ["--images", images, "--gt", gt, "--pred", tmp_path / "pred",
                                          "--weights", weights], patch=FORWARD_SENTINEL)
    _one_line_error(proc, "rnet.pt: not a readable weights file (zero bytes)")
    assert not (tmp_path / "pred").exists()  # found before the output folder was touched


# -- 2. devices ---------------------------------------------------------------------------------
@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_devices_this_machine_lacks_are_one_line(no_gpu):
    cases = {
        "cuda": "--device cuda: no CUDA device is available on this machine (torch.cuda.is_available() is False); "
                "use --device cpu",
        "cuda:1": "--device cuda:1: no CUDA device is available on this machine",
        "mps": "--device mps: the Apple GPU (MPS) is not available on this machine",
        "gpu": "--device gpu: not a device name; use cpu, cuda, cuda:N or mps (an NVIDIA GPU is cuda)",
        "cuda:-1": "--device cuda:-1: not a device name",
        "fpga": "--device fpga: not a device this project runs on",
        "banana": "--device banana: not a device name",
    }
    for text, says in cases.items():
        with pytest.raises(DeviceError) as err:
            resolve_device(text)
        assert str(err.value).startswith(says) and "\n" not in str(err.value), text
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_gpu_index_out_of_range_names_the_devices_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DeviceError, match=r"--device cuda:2: this machine has 2 CUDA devices \(cuda:0 \.\. cuda:1\)"):
        resolve_device("cuda:2")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("cuda") == torch.device("cuda")  # no index added: placement unchanged


def test_the_detector_and_weights_refuse_a_missing_gpu_before_reading_files(no_gpu, tmp_path):
    with pytest.raises(DeviceError, match="--device cuda: no CUDA device"):
        load_detector(str(tmp_path / "not-there"), DetectorConfig(device="cuda"))  # not FileNotFoundError
    weights = _save_random_nets(tmp_path / "w", ("pnet",))
    with pytest.raises(DeviceError, match="--device cuda:0: no CUDA device"):
        load_nets(weights, "cuda:0")  # what mining and roc call; torch.load would raise a RuntimeError


def test_the_clis_refuse_a_device_first(tmp_path, random_weights, val_build, wider_set):
    """--device cuda:99 exists on no machine here; it is reported before any input is read."""
    proc = _cli("evaluation.roc", ["--val-data", tmp_path / "nowhere", "--weights", random_weights,
                                   "--out", tmp_path / "roc", "--device", "cuda:99"])
    _one_line_error(proc, "--device cuda:99: ")
    images, gt = wider_set
    proc = _cli("evaluation.wider_eval", ["--images", images, "--gt", tmp_path / "no-gt", "--pred", tmp_path / "pred",
                                          "--weights", random_weights, "--device", "gpu"])
    _one_line_error(proc, "--device gpu: not a device name")
    proc = _cli("evaluation.landmarks", ["--landmarks", tmp_path / "no-list.txt", "--weights", random_weights,
                                         "--out", tmp_path / "lm", "--device", "mps:0"])
    _one_line_error(proc, "--device mps:0: ")
    proc = _cli("evaluation.stage_recall", ["--images", images, "--gt", tmp_path / "no-gt", "--weights", random_weights,
                                            "--out", tmp_path / "sr", "--device", "cuda:99"])
    _one_line_error(proc, "--device cuda:99: ")
    assert not any((tmp_path / f).exists() for f in ("roc", "pred", "lm", "sr"))


# -- 3. one run per output folder --------------------------------------------------------------
def _evaluation_runs(tmp_path, random_weights, val_build, wider_set) -> dict[str, tuple[str, list]]:
    """The detector's evaluations, each writing to ``tmp_path / <key>``: key -> (module, arguments)."""
    images, gt = wider_set
    return {
        "roc": ("evaluation.roc", ["--val-data", val_build, "--weights", random_weights, "--out", tmp_path / "roc"]),
        "pred": ("evaluation.wider_eval", ["--images", images, "--gt", gt, "--pred", tmp_path / "pred",
                                           "--weights", random_weights]),
        "lm": ("evaluation.landmarks", ["--landmarks", tmp_path / "no-list.txt", "--weights", random_weights,
                                        "--out", tmp_path / "lm"]),
        "sr": ("evaluation.stage_recall", ["--images", images, "--gt", gt, "--weights", random_weights,
                                           "--out", tmp_path / "sr"]),
    }


def test_a_second_run_on_an_output_folder_in_use_is_refused(tmp_path, random_weights, val_build, wider_set):
    runs = _evaluation_runs(tmp_path, random_weights, val_build, wider_set)
    for folder, (module, args) in runs.items():
        with folder_lock(tmp_path / folder, "the first run"):
            proc = _cli(module, args, patch=FORWARD_SENTINEL)
        _one_line_error(proc, f"{tmp_path / folder} is in use by pid {os.getpid()} (the first run")
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == [".lock"], folder


# -- 4. output folders that cannot be written, disks that fill up -----------------------------
def test_a_read_only_output_folder_is_found_before_any_work(tmp_path, random_weights, val_build, wider_set):
    runs = _evaluation_runs(tmp_path, random_weights, val_build, wider_set)
    del runs["lm"]  # its --landmarks list does not exist here: only the evaluations whose inputs are real
    for folder, (module, args) in runs.items():
        os.environ["FAULT_TARGET"] = str(tmp_path / folder)
        try:
            proc = _cli(module, args, patch=READ_ONLY + FORWARD_SENTINEL)
        finally:
            del os.environ["FAULT_TARGET"]
        _one_line_error(proc, f"{tmp_path / folder}: cannot write in the output folder (Read-only file system)")


def test_an_output_folder_that_cannot_be_created_is_one_line(tmp_path, random_weights):
    (tmp_path / "a-file").write_text("")
    proc = _cli("evaluation.landmarks", ["--landmarks", tmp_path / "list.txt", "--weights", random_weights,
                                         "--out", tmp_path / "a-file" / "lm"])
    _one_line_error(proc, f"{tmp_path / 'a-file' / 'lm'}: cannot create the output folder (Not a directory)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders (mode bits do not bind it)")
def test_a_folder_without_write_permission_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(NotWritableError) as err:
            ensure_writable_folder(folder)
        assert str(err.value) == f"{folder}: cannot write in the output folder (Permission denied)"
    finally:
        folder.chmod(0o700)


class _FullFile:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("old")
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullFile(real_fdopen(fd, *a, **k)))
    with pytest.raises(DiskFullError) as err:
        atomic_write_bytes(target, b"new")
    free = shutil.disk_usage(tmp_path).free
    assert err.value.errno == errno.ENOSPC
    text = str(err.value)
    assert text.startswith(f"{target}: disk full (") and text.endswith(" bytes free on the device)")
    assert abs(int(text.split("(")[1].split()[0].replace(",", "")) - free) < 2**30
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    with pytest.raises(DiskFullError) as err:  # found by the probe a stage writes before any work
        ensure_writable_folder(tmp_path)
    assert str(err.value).startswith(f"{tmp_path}: disk full (")


def test_a_disk_that_fills_while_writing_results_is_one_line(tmp_path, random_weights, val_build):
    out = tmp_path / "roc"
    out.mkdir()
    old = '[{"stage": "pnet", "auc": 0.5, "recall_at_threshold": 0.5}]\n'  # an earlier run's: roc replaces its own
    (out / "summary.json").write_text(old)
    os.environ["FAULT_NAME"] = "summary.json"
    try:
        proc = _cli("evaluation.roc", ["--val-data", val_build, "--weights", random_weights, "--out", out],
                    patch=DISK_FULL)
    finally:
        del os.environ["FAULT_NAME"]
    _one_line_error(proc, f"{out / 'summary.json'}: disk full (", " bytes free on the device)")
    assert (out / "summary.json").read_text() == old  # the old result, whole
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# -- 5. shards that are missing or corrupt ------------------------------------------------------
def test_roc_names_a_missing_or_corrupt_shard_in_one_line(tmp_path, random_weights, val_build):
    val = shutil.copytree(val_build, tmp_path / "val")
    shards = [val / s["path"] for s in json.loads((val / "manifest.json").read_text())["shards"] if s["size"] == 24]
    args = ["--val-data", val, "--weights", random_weights, "--out", tmp_path / "roc"]
    header = shards[0].read_bytes()[:4096]
    with shards[0].open("r+b") as f:  # LMDB's meta pages: the file no longer opens
        f.write(b"\xff" * 4096)
    proc = _cli("evaluation.roc", args, patch=FORWARD_SENTINEL)
    _one_line_error(proc, shards[0].name)
    with shards[0].open("r+b") as f:
        f.write(header)
    shards[0].unlink()
    proc = _cli("evaluation.roc", args, patch=FORWARD_SENTINEL)
    _one_line_error(proc, str(shards[0]), "missing")
    # LMDB's own error, should a reader let one through, is one line too.
    proc = _cli("evaluation.roc", args, patch=LMDB_INVALID)
    _one_line_error(proc, "shard-24.lmdb: MDB_INVALID: File is not an LMDB file")
    assert not (tmp_path / "roc").exists()


# -- 6. rebuilds that do not lie ---------------------------------------------------------------
def test_predictions_of_other_weights_files_are_not_reused(tmp_path, wider_set, capsys):
    from evaluation.wider_eval import WiderEvalConfig, main as wider_main

    images, gt = wider_set
    weights = _save_random_nets(tmp_path / "w", ("pnet",), seed=0)
    cfg = WiderEvalConfig(images=str(images), gt=str(gt), pred=str(tmp_path / "pred"), weights=str(weights))
    first = wider_main(cfg)
    assert first["images_detected_this_run"] == 2
    assert wider_main(cfg)["images_detected_this_run"] == 0  # same files: resumed, nothing redone
    _save_random_nets(weights, ("pnet",), seed=1)  # retrained into the same folder
    capsys.readouterr()
    again = wider_main(cfg)
    note = capsys.readouterr().err
    assert again["images_detected_this_run"] == 2, "predictions of the old weights were reused"
    assert "made with other weights files (pnet.pt changed since): removed 2 prediction files" in note
    assert again["weights_sha256"] == {"pnet.pt": _sha256(weights / "pnet.pt")} != first["weights_sha256"]
    settings = json.loads((tmp_path / "pred" / "settings.json").read_text())
    assert settings["weights_sha256"] == again["weights_sha256"]
    # A folder written before the digests were recorded cannot vouch for its predictions either.
    (tmp_path / "pred" / "settings.json").write_text(json.dumps({k: v for k, v in settings.items()
                                                                 if k != "weights_sha256"}))
    assert wider_main(cfg)["images_detected_this_run"] == 2


def test_onnx_predictions_of_another_export_are_not_reused(tmp_path, wider_set):
    pytest.importorskip("onnxruntime")
    from detector.export import ExportConfig, main as export
    from evaluation.wider_eval import WiderEvalConfig, main as wider_main

    images, gt = wider_set
    weights = _save_random_nets(tmp_path / "w", ("pnet",), seed=0)
    export(ExportConfig(out=str(tmp_path / "onnx"), weights=str(weights)))
    cfg = WiderEvalConfig(images=str(images), gt=str(gt), pred=str(tmp_path / "pred"), weights=str(tmp_path / "onnx"),
                          backend="onnx")
    first = wider_main(cfg)
    assert first["images_detected_this_run"] == 2 and list(first["weights_sha256"]) == ["mtcnn.json"]
    assert wider_main(cfg)["images_detected_this_run"] == 0
    _save_random_nets(weights, ("pnet",), seed=1)
    export(ExportConfig(out=str(tmp_path / "onnx"), weights=str(weights)))  # exported again, other nets
    assert wider_main(cfg)["images_detected_this_run"] == 2
    with pytest.raises(ValueError, match="--overwrite"):  # torch predictions are not mixed with onnx ones
        wider_main(WiderEvalConfig(**{**cfg.__dict__, "weights": str(weights), "backend": "torch"}))


def _make(*args, env_extra=None) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", f"PY={sys.executable}", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})})


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None or not (REPO / ".venv" / ".installed").is_file(),
                    reason="needs make and the project's .venv (make setup)")
def test_make_eval_wider_is_redone_after_retraining(tmp_path, wider_set):
    images, gt = wider_set
    weights = _save_random_nets(tmp_path / "w", ("pnet",), seed=0)
    pred = tmp_path / "pred"
    flags = [f"IMAGES={images}", f"GT={gt}", f"PRED={pred}", f"WEIGHTS={weights}", "MIN_FACE=20"]
    first = _make("eval-wider", *flags)
    assert first.returncode == 0, first.stderr
    assert json.loads((pred / "results.json").read_text())["images_detected_this_run"] == 2
    done = (pred / "results.json").stat().st_mtime_ns
    assert _make("eval-wider", *flags).returncode == 0
    assert (pred / "results.json").stat().st_mtime_ns == done, "up to date, yet evaluated again"
    assert _make("-q", "eval-wider", *flags).returncode == 0  # and make -q agrees
    assert _make("-q", "eval-wider", *flags[:-1], "MIN_FACE=30").returncode == 1  # a new setting is not
    _save_random_nets(weights, ("pnet",), seed=1)  # retrained into the same folder
    again = _make("eval-wider", *flags)
    assert again.returncode == 0, again.stderr
    results = json.loads((pred / "results.json").read_text())
    assert results["images_detected_this_run"] == 2
    assert results["weights_sha256"]["pnet.pt"] == _sha256(weights / "pnet.pt")
    # Another setting over the same predictions is refused (one line), not reported as up to date.
    other = _make("eval-wider", *flags[:-1], "MIN_FACE=30")
    assert other.returncode != 0 and "error: " in other.stderr and "--overwrite" in other.stderr


def _prerequisites(target: str, *flags) -> list[str]:
    database = subprocess.run(["make", "-pnq", *flags, target], cwd=REPO, capture_output=True, text=True).stdout
    # The rule's line, not a target-specific variable's ("TARGET: VAR = value").
    rule = next(line for line in database.splitlines()
                if line.startswith(target + ":") and "=" not in line.split(":")[1][:2])
    return rule.split(":", 1)[1].split("|")[0].split()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_results_list_the_code_and_files_they_come_from(tmp_path, wider_set):
    images, gt = wider_set
    weights = _save_random_nets(tmp_path / "w", ("pnet", "rnet"))
    roc = _prerequisites(f"{tmp_path}/roc/summary.json", f"OUT={tmp_path}")
    for path in ("evaluation/roc.py", "lmdb_builders/reader.py", "lmdb_builders/schema.py", "core/nets.py",
                 "core/weights.py", "detector/cascade.py", f"{tmp_path}/val/manifest.json",
                 f"{tmp_path}/weights/onet.pt"):
        assert path in roc, path
    wider = _prerequisites(f"{tmp_path}/pred/results.json", f"PRED={tmp_path}/pred", f"WEIGHTS={weights}", f"GT={gt}")
    for path in ("evaluation/wider_eval.py", "annotations/wider_mat.py", "detector/cascade.py", "core/weights.py",
                 f"{weights}/pnet.pt", f"{weights}/rnet.pt", f"{gt}/wider_face_val.mat", f"{gt}/wider_hard_val.mat",
                 f"{tmp_path}/pred/.make-settings"):
        assert path in wider, path
    landmarks = _prerequisites(f"{tmp_path}/lm/results.json", f"LM_OUT={tmp_path}/lm", "WEIGHTS=shipped")
    for path in ("evaluation/landmarks.py", "annotations/landmarks.py", "detector/cascade.py", "weights/pnet.pt",
                 "weights/onet.pt", f"{tmp_path}/lm/.make-settings"):
        assert path in landmarks, path
