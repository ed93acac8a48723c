"""Fault injection on the data side: each broken input or environment ends in one clear line (or a
counted skip), never a silent wrong build. One test (or more) per guard; each fails without it."""

import filecmp
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import lmdb
import numpy as np
import pytest

import prepare.fingerprint as fingerprint
import prepare.generate as generate
from annotations.errors import AnnotationError
from annotations.landmarks import faces_inside_images, load_landmarks
from annotations.wider import parse_wider
from lmdb_builders.manifest import MANIFEST_NAME, load_manifest
from lmdb_builders.reader import ShardDataset, ShardLoader
from lmdb_builders.schema import SchemaError, ShardCorruptError
from lmdb_builders.verify import VERIFIED_NAME
from lmdb_builders.writer import WriterConfig
from prepare.generate import BuildError, main, parse_args, pool_size, tiny_config
from child_env import REPO


def config(paths, out, **kw):
    kw.setdefault("writer", WriterConfig(shard_bytes=64 << 10, commit_every=50))
    kw.setdefault("workers", 1)
    return tiny_config(paths.train_txt, paths.train_images, paths.landmarks_txt, out, **kw)


def copy_fixture(tiny_wider, dest: Path):
    """A writable copy of the tiny WIDER set: (txt, images folder, landmark list) in it."""
    shutil.copytree(tiny_wider.root, dest)
    return (dest / tiny_wider.train_txt.relative_to(tiny_wider.root),
            dest / tiny_wider.train_images.relative_to(tiny_wider.root),
            dest / tiny_wider.landmarks_txt.relative_to(tiny_wider.root))


def run_generate(*args, **kw):
    return subprocess.run([sys.executable, "-m", "prepare.generate", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, **kw)


def one_line_error(proc) -> str:
    """The stderr of a refused run: exit 2, one line, no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "px samples:" not in line]  # progress bar
    assert len(lines) == 1 or lines[0].startswith("usage:"), proc.stderr
    assert lines[-1].startswith("python -m prepare.generate: error: "), proc.stderr  # refused run or usage
    return lines[-1]


@pytest.fixture(scope="module")
def build(tiny_wider, tmp_path_factory):
    """A finished tiny pnet build (read-only: copy it before breaking it)."""
    out = tmp_path_factory.mktemp("build") / "pnet"
    main(config(tiny_wider, out))
    return out


def copy_build(build, dest: Path) -> Path:
    shutil.copytree(build, dest)
    (dest / VERIFIED_NAME).unlink(missing_ok=True)
    return dest


def record_offset(shard: Path, index: int = 0) -> int:
    """Where record ``index``'s value lies in the shard file."""
    env = lmdb.open(str(shard), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        value = txn.get(b"%08d" % index)
    env.close()
    data = shard.read_bytes()
    assert data.count(value) == 1
    return data.index(value)


def patch_bytes(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


# -- 1. shard checksums ------------------------------------------------------------------------
def test_a_flipped_byte_in_a_record_is_named_before_training(build, tmp_path):
    out = copy_build(build, tmp_path / "b")
    shard = out / load_manifest(out)["shards"][0]["path"]
    offset = record_offset(shard, 3) + 100  # inside the image
    patch_bytes(shard, offset, bytes([shard.read_bytes()[offset] ^ 0x01]))
    with pytest.raises(ShardCorruptError, match="checksum mismatch") as err:
        ShardDataset(out, 12)
    message = str(err.value)
    assert str(shard) in message and "\n" not in message and f"delete {out}" in message
    assert "make pnet-data" in message


def test_verified_shards_are_remembered_until_they_change(build, tmp_path, monkeypatch):
    import lmdb_builders.verify as verify

    out = copy_build(build, tmp_path / "b")
    ShardDataset(out, 12)  # verifies every shard and remembers them
    assert (out / VERIFIED_NAME).is_file()
    calls = []
    real_digest = verify.shard_digest
    monkeypatch.setattr(verify, "shard_digest", lambda path: calls.append(path) or real_digest(path))
    ShardDataset(out, 12)
    assert calls == []  # nothing changed: nothing re-read
    shard = out / load_manifest(out)["shards"][1]["path"]
    offset = record_offset(shard, 0) + 50
    patch_bytes(shard, offset, bytes([shard.read_bytes()[offset] ^ 0xFF]))  # a new mtime
    with pytest.raises(ShardCorruptError, match="checksum mismatch"):
        ShardDataset(out, 12)
    assert calls == [shard]


def test_a_kinds_index_that_disagrees_with_its_records_is_corrupt(build, tmp_path):
    out = copy_build(build, tmp_path / "b")
    shard = out / load_manifest(out)["shards"][0]["path"]
    env = lmdb.open(str(shard), subdir=False, lock=False)
    with env.begin(write=True) as txn:
        kinds = bytearray(txn.get(b"__kinds__"))
        kinds[0], kinds[-1] = kinds[-1], kinds[0]  # same counts, other order
        assert kinds[0] != kinds[-1]
        txn.put(b"__kinds__", bytes(kinds))
    env.close()
    with pytest.raises(ShardCorruptError, match="kinds index does not match"):
        ShardDataset(out, 12)


# -- 2. truncated images ------------------------------------------------------------------------
def test_a_truncated_jpeg_gives_no_samples_and_is_counted(tiny_wider, tmp_path, capsys, monkeypatch):
    txt, images, landmarks = copy_fixture(tiny_wider, tmp_path / "data")
    victim_index = 1
    victim = images / parse_wider(txt).images["image"][victim_index]
    intact = victim.read_bytes()
    reference = main(tiny_config(txt, images, landmarks, tmp_path / "ref", workers=1))
    real_work = generate.work

    def skips_the_victim(task):  # the same build, with the victim's item giving nothing
        index, records, reason = real_work(task)
        return (index, [], "skipped") if index == victim_index else (index, records, reason)

    with monkeypatch.context() as patch:
        patch.setattr(generate, "work", skips_the_victim)
        without = main(tiny_config(txt, images, landmarks, tmp_path / "without", workers=1))
    assert without["buckets"] != reference["buckets"]  # the victim's faces did give samples

    victim.write_bytes(intact[: len(intact) * 2 // 3])
    capsys.readouterr()
    truncated = main(tiny_config(txt, images, landmarks, tmp_path / "truncated", workers=1))
    assert [s["sha256"] for s in truncated["shards"]] == [s["sha256"] for s in without["shards"]]
    report = truncated["report"]
    assert report["skipped_images"] == [f"{victim}: truncated JPEG (no end-of-image marker after the last scan)"]
    assert report["skipped_by_reason"] == {"truncated JPEG (no end-of-image marker after the last scan)": 1}
    assert "1 truncated JPEG" in capsys.readouterr().out
    assert load_manifest(tmp_path / "truncated")["report"]["skipped_by_reason"] == report["skipped_by_reason"]


# -- 3. builds that would be useless ------------------------------------------------------------
def test_an_empty_annotation_file_is_refused(tiny_wider, tmp_path):
    empty = tmp_path / "empty_bbx_gt.txt"
    empty.write_text("")
    proc = run_generate("--wider-txt", empty, "--wider-images", tiny_wider.train_images, "--out", tmp_path / "o",
                        "--workers", 1)
    assert "no WIDER image produced samples (0 listed" in one_line_error(proc)
    assert not (tmp_path / "o" / MANIFEST_NAME).exists()


def test_an_images_folder_without_the_listed_images_is_refused(tiny_wider, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(BuildError, match=r"no WIDER image produced samples \(5 listed, 5 skipped"):
        main(replace(config(tiny_wider, tmp_path / "o"), wider_images=str(tmp_path / "elsewhere")))
    assert not (tmp_path / "o" / MANIFEST_NAME).exists()


def test_images_that_all_fail_to_decode_are_refused(tiny_wider, tmp_path):
    txt, images, landmarks = copy_fixture(tiny_wider, tmp_path / "data")
    for jpg in images.rglob("*.jpg"):
        jpg.write_bytes(jpg.read_bytes()[:-200])
    with pytest.raises(BuildError, match=r"no WIDER image produced samples \(5 listed, 5 skipped: 5 truncated JPEG"):
        main(tiny_config(txt, images, landmarks, tmp_path / "o", workers=1))
    assert not (tmp_path / "o" / MANIFEST_NAME).exists()


def test_a_build_without_a_needed_kind_is_refused(tiny_wider, tmp_path):
    cfg = config(tiny_wider, tmp_path / "o")
    with pytest.raises(BuildError, match="the build has no positive samples"):
        main(replace(cfg, sampling=replace(cfg.sampling, min_face=10_000)))  # no face large enough
    assert not (tmp_path / "o" / MANIFEST_NAME).exists()
    txt, images, landmarks = copy_fixture(tiny_wider, tmp_path / "data")
    shutil.rmtree(landmarks.parent / "demo_faces")  # the landmark list's images are gone
    with pytest.raises(BuildError, match="the build has no landmark samples"):
        main(tiny_config(txt, images, landmarks, tmp_path / "o2", workers=1))
    assert not (tmp_path / "o2" / MANIFEST_NAME).exists()
    without_list = main(tiny_config(txt, images, None, tmp_path / "o3", workers=1))  # none asked for: fine
    assert without_list["buckets"]["12"]["counts"]["landmark"] == 0


def test_a_mined_build_whose_cascade_finds_nothing_is_refused_with_a_hint(tiny_wider, tmp_path):
    import torch

    from core.nets import build_net

    weights = tmp_path / "weights"
    weights.mkdir()
    net = build_net("pnet")
    with torch.no_grad():
        net.conv4_1.bias.copy_(torch.tensor([3.0, -3.0]))  # "no face" everywhere
    torch.save(net.state_dict(), weights / "pnet.pt")
    cfg = config(tiny_wider, tmp_path / "rnet", net_sizes=(24,), mine_with=str(weights))
    with pytest.raises(BuildError, match=r"\(5 listed, 0 skipped\): the pnet cascade found no face candidate"):
        main(cfg)
    assert not (tmp_path / "rnet" / MANIFEST_NAME).exists()


def test_an_empty_held_out_part_is_a_warning_but_an_empty_training_part_is_refused(tiny_wider, tmp_path, capsys):
    evaluation = main(config(tiny_wider, tmp_path / "val", landmark_part="holdout", landmark_holdout=0.0))
    assert evaluation["buckets"]["12"]["counts"]["landmark"] == 0
    assert "warning: the landmark list's held-out part is empty" in capsys.readouterr().err
    with pytest.raises(BuildError, match="no landmark samples .* no face of the landmark list's train part is left"):
        main(config(tiny_wider, tmp_path / "train", landmark_holdout=1.0))


# -- 4. boxes mostly outside their image --------------------------------------------------------
def test_a_huge_wider_box_is_dropped_not_clipped_to_the_whole_image(tiny_wider, tmp_path):
    txt, images, _ = copy_fixture(tiny_wider, tmp_path / "data")
    lines = txt.read_text().splitlines()
    count_line = 1  # the first image's face count
    lines[count_line] = str(int(lines[count_line]) + 2)
    lines.insert(count_line + 1, "-50000 -50000 100000 100000 0 0 0 0 0 0")
    lines.insert(count_line + 1, "300 20 40 40 0 0 0 0 0 0")  # 20 of its 40 px wide inside a 320 px image: kept
    txt.write_text("\n".join(lines) + "\n")
    ann = parse_wider(txt, images)
    assert ann.dropped["mostly_outside_image"] == 1
    assert ann.clipped == 2  # the edge-case face hanging off the left border, and the 300 px one
    first = ann.faces[ann.faces.image_index == 0]
    assert not ((first.w >= 320) | (first.h >= 240)).any()  # no face covering the whole image
    assert [300, 20, 20, 40] in first[["x1", "y1", "w", "h"]].values.tolist()
    _, dropped = generate.build_items(tiny_config(txt, images, None, tmp_path / "o"))
    assert dropped["wider"]["mostly_outside_image"] == 1


def test_a_landmark_face_outside_its_image_is_dropped_and_counted(tiny_wider, tmp_path):
    txt, images, landmarks = copy_fixture(tiny_wider, tmp_path / "data")
    lines = landmarks.read_text().splitlines()
    fields = lines[0].split()
    values = [float(v) + 200 for v in fields[1:]]  # box and points moved off the 80 x 80 image
    lines[0] = " ".join([fields[0]] + [f"{v:.2f}" for v in values])
    landmarks.write_text("\n".join(lines) + "\n")
    marks = load_landmarks(landmarks)
    assert faces_inside_images(marks.faces, marks.images_root).tolist() == [False] + [True] * (len(marks.faces) - 1)
    cfg = tiny_config(txt, images, landmarks, tmp_path / "o", workers=1, landmark_holdout=0.0)
    items, dropped = generate.build_items(cfg)
    assert dropped["landmarks"]["mostly_outside_image"] == 1
    landmark_items = [i for i in items if isinstance(i, generate.LandmarkItem)]
    assert sum(len(i.boxes) for i in landmark_items) == len(marks.faces) - 1
    manifest = main(cfg)
    assert manifest["report"]["dropped_annotations"]["landmarks"]["mostly_outside_image"] == 1


# -- 5. one run per output folder ---------------------------------------------------------------
HOLD_LOCK = """
import sys, time
sys.path.insert(0, {repo!r})
from core.lock import folder_lock
with folder_lock({out!r}, "test holder"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_run_on_the_same_folder_is_refused_and_a_killed_holder_is_taken_over(tiny_wider, tmp_path):
    out = tmp_path / "o"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK.format(repo=str(REPO), out=str(out))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = ["--wider-txt", tiny_wider.train_txt, "--wider-images", tiny_wider.train_images, "--out", out,
                "--workers", 1, "--tiny", "--limit-images", 2]
        line = one_line_error(run_generate(*args))
        assert f"{out} is in use by pid {holder.pid}" in line
        assert not (out / MANIFEST_NAME).exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    proc = run_generate(*args)  # the dead holder's lock is taken over
    assert proc.returncode == 0, proc.stderr
    assert (out / MANIFEST_NAME).exists()


# -- 6. one-line errors -------------------------------------------------------------------------
def test_annotation_paths_that_are_folders_are_one_line_errors(tiny_wider, tmp_path):
    line = one_line_error(run_generate("--wider-txt", tiny_wider.root, "--wider-images", tiny_wider.train_images,
                                       "--out", tmp_path / "o"))
    assert f"{tiny_wider.root}: is a folder" in line
    line = one_line_error(run_generate("--wider-txt", tiny_wider.train_txt, "--wider-images", tiny_wider.train_images,
                                       "--landmarks", tiny_wider.root, "--out", tmp_path / "o"))
    assert f"{tiny_wider.root}: a landmark folder must hold CelebA's" in line
    with pytest.raises(AnnotationError, match="is a folder"):
        parse_wider(tiny_wider.root)  # the parser itself, for other callers
    cfg = config(tiny_wider, tmp_path / "untouched")
    with pytest.raises(AnnotationError, match="no such file"):
        main(replace(cfg, wider_txt=str(tmp_path / "absent.txt")))
    with pytest.raises(AnnotationError, match="is not a folder"):
        main(replace(cfg, wider_images=str(tiny_wider.train_txt)))
    with pytest.raises(AnnotationError, match="no such landmark list"):
        main(replace(cfg, landmarks=str(tmp_path / "absent.txt")))
    assert not (tmp_path / "untouched").exists()  # refused before anything was written


def test_a_shard_with_a_garbage_header_is_named(build, tmp_path):
    out = copy_build(build, tmp_path / "b")
    shard = out / load_manifest(out)["shards"][-1]["path"]
    patch_bytes(shard, 0, np.random.default_rng(0).bytes(8192))
    with pytest.raises(ShardCorruptError, match="not a readable LMDB shard") as err:
        ShardDataset(out, 12)
    assert str(err.value).startswith(f"{shard}: ") and "\n" not in str(err.value)


def test_a_shard_missing_from_the_build_is_named(build, tmp_path):
    out = copy_build(build, tmp_path / "b")
    shard = out / load_manifest(out)["shards"][1]["path"]
    shard.unlink()
    with pytest.raises(ShardCorruptError, match=f"{shard}: listed in the manifest but missing"):
        ShardDataset(out, 12)


def test_errors_survive_pickling_and_dataloader_workers(build, tmp_path):
    for error in (ShardCorruptError("x.lmdb: checksum mismatch"), SchemaError("a one-line message")):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)
    out = copy_build(build, tmp_path / "b")
    ds = ShardDataset(out, 12)  # verified; the shard then changes under the reader
    shard = ds.paths[0]
    patch_bytes(shard, record_offset(shard, 0), bytes([7]))  # record 0's schema version byte
    with pytest.raises(SchemaError) as err:
        list(ShardLoader(ds, [[0, 1, 2]], num_workers=1))
    assert str(err.value) == "record schema version 7, this reader reads version 1"


FULL_DISK = """
import resource, runpy, shutil, sys
from collections import namedtuple
sys.path.insert(0, {repo!r})
resource.setrlimit(resource.RLIMIT_FSIZE, (32_768, 32_768))  # writes past 32 KiB fail, as on a full disk
if {full!r}:
    shutil.disk_usage = lambda path: namedtuple("usage", "total used free")(10**9, 10**9 - 4096, 4096)
sys.argv = ["prepare.generate"] + {args!r}
runpy.run_module("prepare.generate", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("full", [True, False])
def test_a_failed_shard_write_is_one_line_with_the_free_bytes(tiny_wider, tmp_path, full):
    out = tmp_path / "o"
    args = ["--wider-txt", str(tiny_wider.train_txt), "--wider-images", str(tiny_wider.train_images),
            "--out", str(out), "--workers", "1", "--tiny", "--shard-mb", "4"]
    proc = subprocess.run([sys.executable, "-c", FULL_DISK.format(repo=str(REPO), full=full, args=args)],
                          cwd=REPO, capture_output=True, text=True)
    line = one_line_error(proc)
    assert "shard-00000.lmdb.tmp: cannot write the shard (" in line
    if full:
        assert "the disk is full: 4,096 bytes free" in line
    else:
        assert "so it is not full" in line and "ulimit -f" in line
    assert not list(out.glob("12/*.tmp")) and not (out / MANIFEST_NAME).exists()


# -- 7. option values that mean nothing ---------------------------------------------------------
PATHS = ["--wider-txt", "t.txt", "--wider-images", "im", "--out", "o"]


@pytest.mark.parametrize("argv, message", [
    (["--workers", "-1"], "--workers must be >= 0 (0: one per CPU), got -1"),
    (["--min-face", "0"], "--min-face must be >= 1 (pixels), got 0"),
    (["--negatives-per-image", "-5"], "--negatives-per-image must be >= 0, got -5"),
    (["--jitter-attempts-per-face", "-1"], "--jitter-attempts-per-face must be >= 0, got -1"),
    (["--landmark-samples-per-face", "-2"], "--landmark-samples-per-face must be >= 0, got -2"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--mine-negatives-per-image", "-1"], "--mine-negatives-per-image must be >= 0, got -1"),
    (["--shard-mb", "0"], "--shard-mb must be > 0, got 0"),
    (["--limit-images", "-3"], "--limit-images must be >= 0 (or none), got -3"),
])
def test_meaningless_values_are_usage_errors_naming_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(PATHS + argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_more_workers_than_cpus_are_capped_with_a_warning(capsys, monkeypatch):
    # The CPUs this process may use (its affinity), as the trainer counts them: not the machine's.
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert pool_size(100) == 2
    assert capsys.readouterr().err.strip() == "warning: --workers 100 is more than the 2 CPUs this process may use: using 2"
    assert pool_size(0) == 2 and pool_size(1) == 1
    assert capsys.readouterr().err == ""


# -- 8. the code that makes the samples is part of the fingerprint ------------------------------
def test_a_change_to_the_sampling_code_rebuilds(tiny_wider, tmp_path, monkeypatch, capsys):
    code = tmp_path / "sampling_rule.py"
    code.write_text("RULE = 1\n")
    monkeypatch.setattr(fingerprint, "SAMPLING_CODE", fingerprint.SAMPLING_CODE + (str(code),))
    cfg = config(tiny_wider, tmp_path / "o", limit_images=3)
    first = main(cfg)
    main(cfg)
    assert "up to date" in capsys.readouterr().out
    code.write_text("RULE = 2\n")
    second = main(cfg)
    assert "up to date" not in capsys.readouterr().out
    assert second["fingerprint"] != first["fingerprint"] and second["config"]["code"] != first["config"]["code"]


def test_the_makefile_watches_exactly_the_fingerprinted_code():
    database = subprocess.run(["make", "-C", str(REPO), "-pq", "--no-print-directory", "OUT=o", "VENV_STAMP=", "help"],
                              capture_output=True, text=True).stdout
    prerequisites = {}
    for line in database.splitlines():
        for stage in ("pnet", "val", "rnet", "onet"):
            if line.startswith(f"o/{stage}/manifest.json:"):
                prerequisites[stage] = {p for p in line.split(":", 1)[1].split() if p.endswith(".py")}
    assert set(prerequisites) == {"pnet", "val", "rnet", "onet"}
    for stage in ("pnet", "val"):
        assert prerequisites[stage] == set(fingerprint.code_files(mined=False)), stage
    for stage in ("rnet", "onet"):
        assert prerequisites[stage] == set(fingerprint.code_files(mined=True)), stage
    assert all((REPO / name).is_file() for name in fingerprint.code_files(mined=True))


# -- 9. shard files, not only records, are identical whatever the worker count ------------------
def test_shard_files_are_byte_identical_whatever_the_worker_count(build, tiny_wider, tmp_path):
    other = tmp_path / "two"
    main(config(tiny_wider, other, workers=2))
    shards = sorted(p.relative_to(build) for p in build.glob("12/shard-*.lmdb"))
    assert len(shards) > 1 and shards == sorted(p.relative_to(other) for p in other.glob("12/shard-*.lmdb"))
    for shard in shards:
        assert filecmp.cmp(build / shard, other / shard, shallow=False), shard
