"""LMDB shards: bit-exact round trip, crash safety and resume, reader checks, kind-mixing sampler."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from lmdb_builders.manifest import MANIFEST_NAME, load_manifest
from lmdb_builders.reader import (
    PAPER_RATIO,
    MixedKindBatchSampler,
    ShardDataset,
    ShardLoader,
    kind_quotas,
    records_to_batch,
    split_by_kind,
)
from lmdb_builders.schema import HAS_BOX, HAS_LANDMARKS, Kind, Sample, SchemaError, record_dtype
from lmdb_builders.writer import ShardWriter, WriterConfig, read_shard_meta
from child_env import REPO


def synthetic_samples(image_index: int, sizes=(12,)):
    """A deterministic handful of samples of every kind for one 'image'."""
    rng = np.random.default_rng([42, image_index])
    out = []
    for j in range(int(rng.integers(3, 9))):
        kind = Kind(j % 4)
        size = sizes[j % len(sizes)]
        out.append(Sample(
            rng.integers(0, 256, (size, size, 3), dtype=np.uint8), kind,
            box=rng.normal(size=4).astype(np.float32) if HAS_BOX[kind] else None,
            landmarks=rng.random(10).astype(np.float32) if HAS_LANDMARKS[kind] else None,
        ))
    return out


def write_build(out, n_images, sizes=(12,), shard_bytes=4096):
    writer = ShardWriter(out, "fp-test", WriterConfig(shard_bytes=shard_bytes, commit_every=7))
    for i in range(writer.resume_image, n_images):
        writer.add_image(i, [s.to_record() for s in synthetic_samples(i, sizes)])
    return writer.finish(n_images, {"note": "test"})


def strip(manifest):
    return {k: v for k, v in manifest.items() if k != "_path"}


def test_round_trip_is_bit_exact(tmp_path):
    manifest = write_build(tmp_path, 30, sizes=(12, 24))
    assert len(manifest["shards"]) > 2  # really rolled
    for size in (12, 24):
        expected = [s for i in range(30) for s in synthetic_samples(i, (12, 24)) if s.size == size]
        ds = ShardDataset(tmp_path, size)
        assert len(ds) == len(expected) == manifest["buckets"][str(size)]["samples"]
        batch = records_to_batch(ds.__getitems__(list(range(len(ds)))))
        for i, s in enumerate(expected):
            assert torch.equal(batch["image"][i], torch.from_numpy(s.image))
            assert batch["kind"][i].item() == s.kind
            if s.box is not None:
                assert torch.equal(batch["box"][i], torch.from_numpy(s.box))
            else:
                assert torch.isnan(batch["box"][i]).all()
            if s.landmarks is not None:
                assert torch.equal(batch["landmarks"][i], torch.from_numpy(s.landmarks))
            else:
                assert torch.isnan(batch["landmarks"][i]).all()
            back = Sample.from_bytes(s.to_bytes())
            assert np.array_equal(back.image, s.image) and back.kind == s.kind


def test_batch_masks_follow_the_kind(tmp_path):
    write_build(tmp_path, 10)
    batch = records_to_batch(ShardDataset(tmp_path, 12).__getitems__(list(range(12))))
    kind = batch["kind"].numpy()
    assert (batch["label"].numpy() == np.select([kind == 0, kind == 1], [0, 1], -1)).all()
    assert (batch["has_box"].numpy() == np.isin(kind, [1, 2])).all()
    assert (batch["has_landmarks"].numpy() == (kind == 3)).all()


def test_same_input_gives_identical_manifest(tmp_path):
    a = write_build(tmp_path / "a", 25)
    b = write_build(tmp_path / "b", 25)
    assert strip(a) == strip(b)
    assert all(len(s["sha256"]) == 64 for s in a["shards"])


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [{repo!r}, {tests!r}]
    from test_shards import synthetic_samples
    from lmdb_builders.writer import ShardWriter, WriterConfig
    w = ShardWriter({out!r}, "fp-test", WriterConfig(shard_bytes=4096, commit_every=7))
    for i in range(w.resume_image, 200):
        w.add_image(i, [s.to_record() for s in synthetic_samples(i)])
        time.sleep(0.01)
    w.finish(200, {{"note": "test"}})
""")


def test_killed_build_leaves_no_complete_looking_shard_and_rerun_completes(tmp_path):
    out = tmp_path / "killed"
    script = KILLED_WRITER.format(repo=str(REPO), tests=str(REPO / "tests"), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("12/shard-*.lmdb"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / MANIFEST_NAME).exists()
    finished = sorted(out.glob("12/shard-*.lmdb"))
    assert len(finished) >= 3
    for path in finished:  # every shard with a final name is whole
        meta = read_shard_meta(path)
        assert meta is not None and meta["samples"] > 0
    for tmp in out.glob("12/*.tmp"):  # what was being written has no description
        assert read_shard_meta(tmp) is None
    resumed = ShardWriter(out, "fp-test", WriterConfig(shard_bytes=4096, commit_every=7))
    assert resumed.resume_image > 0
    assert not list(out.glob("12/*.tmp"))
    del resumed
    assert strip(write_build(out, 200)) == strip(write_build(tmp_path / "whole", 200))


def test_incomplete_part_is_discarded_on_resume(tmp_path):
    write_build(tmp_path, 12, sizes=(12, 24))
    (tmp_path / MANIFEST_NAME).unlink()
    # Simulate a kill between the renames of one part's two shards.
    last_24 = sorted(tmp_path.glob("24/shard-*.lmdb"))[-1]
    last_24.unlink()
    writer = ShardWriter(tmp_path, "fp-test", WriterConfig(shard_bytes=4096, commit_every=7))
    part = int(last_24.stem.split("-")[1])
    assert not (tmp_path / "12" / last_24.name).exists()  # its sibling went too
    assert writer.part == part
    del writer
    assert strip(write_build(tmp_path, 12, sizes=(12, 24))) == strip(write_build(tmp_path / "ref", 12, sizes=(12, 24)))


def test_changed_fingerprint_starts_over(tmp_path):
    write_build(tmp_path, 10)
    writer = ShardWriter(tmp_path, "another-config", WriterConfig(shard_bytes=4096))
    assert writer.resume_image == 0
    assert not list(tmp_path.glob("12/shard-*.lmdb"))
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_reader_refuses_other_schema_version(tmp_path):
    write_build(tmp_path, 5)
    path = tmp_path / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["schema_version"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(SchemaError, match="schema version 99"):
        ShardDataset(tmp_path, 12)


def test_reader_checks_counts_against_shards(tmp_path):
    write_build(tmp_path, 5)
    path = tmp_path / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["shards"][0]["counts"]["neg"] += 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(SchemaError, match="manifest says"):
        ShardDataset(tmp_path, 12)


def test_reader_refuses_records_of_another_version(tmp_path):
    write_build(tmp_path, 3)
    ds = ShardDataset(tmp_path, 12)
    rec = np.zeros((), dtype=record_dtype(12))
    rec["version"] = 2
    from lmdb_builders.schema import decode_records
    with pytest.raises(SchemaError, match="version 2"):
        decode_records([rec.tobytes()], 12)
    assert len(ds) > 0


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest"):
        load_manifest(tmp_path)


def test_dataloader_workers_open_lmdb_lazily(tmp_path):
    write_build(tmp_path, 40)
    ds = ShardDataset(tmp_path, 12)
    train, _ = split_by_kind(ds.kinds, 0.0, seed=0)
    sampler = MixedKindBatchSampler(train, batch_size=14, seed=0)
    loader = ShardLoader(ds, sampler, num_workers=2)
    batches = list(loader)
    assert len(batches) == len(sampler) == len(loader)
    ref = records_to_batch(ds.__getitems__(next(iter(sampler))))
    assert torch.equal(batches[0]["image"], ref["image"])


# -- sampler ----------------------------------------------------------------------------------
def test_quotas_follow_the_paper_ratio():
    avail = {k: np.arange(10) for k in Kind}
    assert kind_quotas(70, PAPER_RATIO, avail) == {Kind.NEGATIVE: 30, Kind.POSITIVE: 10, Kind.PART: 10, Kind.LANDMARK: 20}
    q = kind_quotas(64, PAPER_RATIO, avail)
    assert sum(q.values()) == 64 and q[Kind.NEGATIVE] == 28 and q[Kind.LANDMARK] == 18
    # A kind with no samples gives its share to the others.
    q = kind_quotas(50, PAPER_RATIO, {**avail, Kind.LANDMARK: np.arange(0)})
    assert q == {Kind.NEGATIVE: 30, Kind.POSITIVE: 10, Kind.PART: 10}


def test_sampler_mixes_kinds_and_covers_each_kind():
    kinds = np.repeat(np.arange(4), [300, 100, 100, 200])
    train, val = split_by_kind(kinds, 0.1, seed=0)
    assert all(len(np.intersect1d(train[k], val[k])) == 0 for k in Kind)
    assert sum(len(v) for v in val.values()) == 70
    sampler = MixedKindBatchSampler(train, batch_size=70, seed=1)
    seen = np.concatenate(list(sampler))
    for batch in sampler:
        assert np.bincount(kinds[batch], minlength=4).tolist() == [30, 10, 10, 20]
    assert set(seen) == set(np.concatenate(list(train.values())))  # one epoch covers all


def test_sampler_is_deterministic_and_resumes_mid_epoch():
    train = {k: np.arange(k * 1000, k * 1000 + 97) for k in Kind}
    a = MixedKindBatchSampler(train, 35, seed=3)
    a.set_epoch(2)
    full = list(a)
    b = MixedKindBatchSampler(train, 35, seed=3)
    b.set_epoch(2, start_batch=4)
    assert list(b) == full[4:] and len(b) == len(full) - 4
    a.set_epoch(3)
    assert list(a) != full
