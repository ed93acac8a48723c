"""End-to-end pnet-data stage on the tiny fixture: output, determinism, resume, errors, command
line, the ordered pool, Makefile."""

import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

import prepare.generate as generate
from annotations.landmarks import landmark_holdout_mask
from core.geometry import iou
from detector import DetectorConfig
from lmdb_builders.manifest import MANIFEST_NAME, load_manifest
from lmdb_builders.reader import ShardDataset, records_to_batch
from lmdb_builders.writer import WriterConfig, read_shard_meta
from prepare.fingerprint import build_fingerprint
from prepare.generate import TINY, main, parse_args, tiny_config
from prepare.pool import ordered_map
from child_env import REPO


def config(paths, out, **kw):
    """The tiny config with 64 KiB shards, so that the fixture spans several parts."""
    kw.setdefault("writer", WriterConfig(shard_bytes=64 << 10, commit_every=50))
    return tiny_config(paths.train_txt, paths.train_images, paths.landmarks_txt, out, **kw)


def strip(manifest):
    return {k: v for k, v in manifest.items() if k != "_path"}


@pytest.fixture(scope="module")
def built(tiny_wider, tmp_path_factory):
    out = tmp_path_factory.mktemp("pnet")
    return main(config(tiny_wider, out, workers=1)), out


def test_every_kind_is_produced_and_readable(built):
    manifest, out = built
    counts = manifest["buckets"]["12"]["counts"]
    assert all(counts[k] > 0 for k in ("neg", "pos", "part", "landmark")), counts
    ds = ShardDataset(out, 12)
    batch = records_to_batch(ds.__getitems__(list(range(len(ds)))))
    kind = batch["kind"].numpy()
    assert batch["image"].shape[1:] == (12, 12, 3)
    assert torch.isfinite(batch["box"][batch["has_box"]]).all()
    lms = batch["landmarks"][batch["has_landmarks"]]
    assert ((lms >= 0) & (lms <= 1)).all()
    assert np.bincount(kind, minlength=4).tolist() == [counts["neg"], counts["pos"], counts["part"], counts["landmark"]]
    assert (out / "report.json").exists()


def test_manifest_describes_the_build(built, tiny_wider):
    manifest, out = built
    assert manifest["seed"] == 0 and manifest["net_sizes"] == [12]
    held_out = landmark_holdout_mask(8, 0.05).sum()
    assert manifest["report"]["wider_images"] == 5 and manifest["report"]["landmark_images"] == 8 - held_out
    assert manifest["report"]["dropped_annotations"]["wider"]["invalid"] == 1
    for shard in manifest["shards"]:
        meta = read_shard_meta(out / shard["path"])
        assert meta["sha256"] == shard["sha256"] and meta["samples"] == shard["samples"]
    assert "config" in manifest and manifest["config"]["sampling"]["negatives_per_image"] == 12


def test_same_seed_same_bytes_whatever_the_worker_count(built, tiny_wider, tmp_path):
    manifest, _ = built
    two = main(config(tiny_wider, tmp_path / "two", workers=2))
    assert strip(two) == strip(manifest)
    other = main(config(tiny_wider, tmp_path / "seed1", workers=1, seed=1))
    assert [s["sha256"] for s in other["shards"]] != [s["sha256"] for s in manifest["shards"]]


def test_finished_build_is_left_alone(built, tiny_wider, capsys):
    manifest, out = built
    stamp = (out / MANIFEST_NAME).stat().st_mtime_ns
    again = main(config(tiny_wider, out, workers=2))  # the worker count is not part of the fingerprint
    assert "up to date" in capsys.readouterr().out
    assert (out / MANIFEST_NAME).stat().st_mtime_ns == stamp and strip(again) == strip(manifest)


def test_interrupted_build_resumes_to_identical_output(built, tiny_wider, tmp_path, monkeypatch):
    manifest, _ = built
    out = tmp_path / "interrupted"
    real_work = generate.work

    def dies_at_item_9(args):
        if args[0] == 9:
            raise KeyboardInterrupt  # the user pressed Ctrl-C (the writer drops its open part)
        return real_work(args)

    monkeypatch.setattr(generate, "work", dies_at_item_9)
    with pytest.raises(KeyboardInterrupt):
        main(config(tiny_wider, out, workers=1))
    assert not (out / MANIFEST_NAME).exists()
    assert not list(out.glob("12/*.tmp"))
    assert list(out.glob("12/shard-*.lmdb"))  # earlier parts survived
    monkeypatch.setattr(generate, "work", real_work)
    resumed = main(config(tiny_wider, out, workers=1))
    assert strip(resumed) == strip(manifest)


def test_several_sizes_share_the_same_crops(tiny_wider, tmp_path):
    manifest = main(config(tiny_wider, tmp_path / "multi", workers=1, net_sizes=(12, 48)))
    assert manifest["buckets"]["12"]["counts"] == manifest["buckets"]["48"]["counts"]
    small, large = ShardDataset(tmp_path / "multi", 12), ShardDataset(tmp_path / "multi", 48)
    a, b = records_to_batch(small.__getitems__([0, 5])), records_to_batch(large.__getitems__([0, 5]))
    assert torch.equal(a["kind"], b["kind"]) and torch.equal(a["box"].nan_to_num(), b["box"].nan_to_num())
    assert b["image"].shape[1:] == (48, 48, 3)


def test_landmark_holdout_is_disjoint_from_training(tiny_wider, tmp_path):
    base = config(tiny_wider, tmp_path, landmark_holdout=0.5)
    train, _ = generate.build_items(base)
    held, _ = generate.build_items(replace(base, landmark_part="holdout"))
    train_paths = {i.path for i in train if isinstance(i, generate.LandmarkItem)}
    held_paths = {i.path for i in held if isinstance(i, generate.LandmarkItem)}
    assert train_paths and held_paths and not train_paths & held_paths
    assert len(train_paths | held_paths) == 8


def test_unreadable_image_is_skipped_and_reported(tiny_wider, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_wider.root, root)
    txt = root / tiny_wider.train_txt.relative_to(tiny_wider.root)
    images = root / tiny_wider.train_images.relative_to(tiny_wider.root)
    victim = sorted(images.rglob("*.jpg"))[1]
    victim.write_bytes(b"not a jpeg")
    manifest = main(tiny_config(txt, images, None, tmp_path / "out", workers=1))
    skipped = manifest["report"]["skipped_images"]
    assert len(skipped) == 1 and str(victim) in skipped[0]
    assert manifest["buckets"]["12"]["counts"]["landmark"] == 0


def test_malformed_annotation_gives_file_and_line(tmp_path, tiny_wider):
    bad = tmp_path / "bad_bbx_gt.txt"
    bad.write_text("0--Parade/a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n1 2 three 4 0 0 0 0 0 0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "prepare.generate", "--wider-txt", str(bad), "--wider-images",
         str(tiny_wider.train_images), "--out", str(tmp_path / "out"), "--workers", "1"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert f"{bad}:4:" in proc.stderr and "Traceback" not in proc.stderr


def test_command_line_matches_the_makefile_and_the_config(tmp_path):
    paths = ["--wider-txt", "t.txt", "--wider-images", "im", "--landmarks", "l.txt", "--out", "o"]
    assert parse_args(paths + ["--net-size", "12", "--seed", "0", "--workers", "0", "--tiny"]) == tiny_config(
        "t.txt", "im", "l.txt", "o")
    plain = parse_args(paths + ["--net-size", "24", "--mine-with", "w"])
    assert plain == generate.GenerateConfig("t.txt", "im", "o", "l.txt", net_sizes=(24,), mine_with="w")
    assert plain.mine == replace(DetectorConfig(), pnet_regression="inclusive")  # the detector's, nested
    given = parse_args(paths + ["--net-size", "12", "24", "48", "--landmark-part", "holdout", "--tiny",
                                "--negatives-per-image", "5", "--landmark-samples-per-face", "2", "--shard-mb", "2",
                                "--mine-thresholds", "0.6", "0.3", "0.7", "--device", "cuda", "--limit-images", "3"])
    assert given.net_sizes == (12, 24, 48) and given.landmark_part == "holdout" and given.limit_images == 3
    assert given.sampling == replace(TINY["sampling"], negatives_per_image=5)  # options given win over --tiny
    assert given.landmark_aug.samples_per_face == 2 and given.writer == WriterConfig(2 << 20, commit_every=50)
    assert given.mine.thresholds == (0.6, 0.3, 0.7) and given.mine.device == "cuda"
    with pytest.raises(SystemExit):
        parse_args(paths + ["--net-size", "12", "--mine-with", "w"])  # mining writes 24 or 48 px


def test_pool_keeps_task_order_with_a_bounded_window():
    consumed = []

    def tasks():
        for i in range(30):
            consumed.append(i)
            yield -i

    results = ordered_map(abs, tasks(), workers=2, window_per_worker=2)
    assert next(results) == 0 and len(consumed) == 4  # 2 workers x 2 in flight, no more read ahead
    assert list(results) == list(range(1, 30))


def test_makefile_rebuilds_when_an_input_changes(tiny_wider, tmp_path):
    root = tmp_path / "wider"
    shutil.copytree(tiny_wider.root, root)
    an_hour_ago = time.time() - 3600  # inputs made well before the build
    for path in root.rglob("*"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    landmarks = root / tiny_wider.landmarks_txt.relative_to(tiny_wider.root)
    make = ["make", "-C", str(REPO), "--no-print-directory", f"WIDER={root}", f"OUT={tmp_path / 'out'}",
            f"LANDMARKS={landmarks}", "GEN_FLAGS=--tiny", "WORKERS=1", f"PY={sys.executable}", "VENV_STAMP="]
    manifest = tmp_path / "out" / "pnet" / MANIFEST_NAME
    subprocess.run(make + ["pnet-data"], check=True, capture_output=True)
    first = load_manifest(manifest.parent)
    assert subprocess.run(make + ["-q", "pnet-data"]).returncode == 0  # the target is a file, up to date
    # The landmark list edited after the build (its last face removed): make reruns the stage, and
    # the stage, seeing another input, builds anew. The build is dated a second back so that the
    # edit is later whatever the file system's time resolution.
    built_at = manifest.stat().st_mtime_ns - 10**9
    os.utime(manifest, ns=(built_at, built_at))
    landmarks.write_text("".join(landmarks.read_text().splitlines(keepends=True)[:-1]))
    assert subprocess.run(make + ["-q", "pnet-data"]).returncode == 1
    subprocess.run(make + ["pnet-data"], check=True, capture_output=True)
    second = load_manifest(manifest.parent)
    assert manifest.stat().st_mtime_ns > built_at
    assert second["fingerprint"] != first["fingerprint"]
    assert second["config"]["inputs"]["landmarks"] != first["config"]["inputs"]["landmarks"]
    assert subprocess.run(make + ["-q", "pnet-data"]).returncode == 0
    # Other sample settings are another build too; the worker count is not.
    assert subprocess.run(make + ["-q", "pnet-data", "SEED=1"]).returncode == 1
    assert subprocess.run(make + ["-q", "pnet-data", "GEN_FLAGS=--tiny --negatives-per-image 3"]).returncode == 1
    assert subprocess.run(make + ["-q", "pnet-data", "GEN_FLAGS_pnet=--negatives-per-image 3"]).returncode == 1
    assert subprocess.run(make + ["-q", "pnet-data", "WORKERS=2"]).returncode == 0
    assert (tmp_path / "out" / "settings" / "pnet.txt").read_text() == "seed=0 recipe=configs/data-pnet.toml flags=--tiny\n"


def test_onet_landmark_crops_span_the_boxes_rnet_hands_onet(tmp_path, make_dry_run, monkeypatch):
    # The O-Net build's command as the Makefile writes it, with its recipe file (read from the
    # repo, as make runs it): its landmark crops reach R-Net's boxes, which are up to 1.3x a list's
    # face box and a tenth of it higher.
    command = make_dry_run(f"OUT={tmp_path}", f"{tmp_path}/onet/manifest.json").splitlines()[-1].split()
    assert command[command.index("--config") + 1] == "configs/data-onet.toml"
    monkeypatch.chdir(REPO)
    shipped = parse_args(command[command.index("prepare.generate") + 1:])
    assert shipped.mine.thresholds == (0.6, 0.3, 0.7)  # R-Net at 0.3 while mining: more negatives
    cfg = shipped.landmark_aug
    assert (cfg.min_scale, cfg.max_scale, cfg.max_shift, cfg.min_iou) == (0.9, 1.4, 0.15, 0.45)
    face = np.array([100.0, 100.0, 199.0, 199.0])
    rnet_box = np.array([85.0, 75.0, 214.0, 204.0])  # 1.3x the side, 0.1 of it higher
    assert iou(face, rnet_box[None])[0] >= cfg.min_iou
    assert cfg.max_scale >= 1.3 and cfg.max_shift >= 0.1
    config = command.index("--config")
    default = parse_args(command[command.index("prepare.generate") + 1:config] + command[config + 2:])
    assert iou(face, rnet_box[None])[0] < default.landmark_aug.min_iou  # what the other builds' crops leave out


@pytest.mark.slow
def test_real_wider_subset(shared_data, tmp_path):
    wider = shared_data / "wider"
    cfg = generate.GenerateConfig(
        wider_txt=str(wider / "wider_face_split" / "wider_face_train_bbx_gt.txt"),
        wider_images=str(wider / "WIDER_train" / "images"), landmarks=None, out=str(tmp_path / "real"),
        limit_images=40, workers=2, writer=WriterConfig(shard_bytes=1 << 20),
    )
    manifest = main(cfg)
    counts = manifest["buckets"]["12"]["counts"]
    assert counts["neg"] > 40 * 40 and counts["pos"] > 100 and counts["part"] > counts["pos"]
    assert len(manifest["shards"]) > 1 and not manifest["report"]["skipped_images"]
    assert len(ShardDataset(tmp_path / "real", 12)) == manifest["buckets"]["12"]["samples"]
    assert load_manifest(tmp_path / "real")["fingerprint"] == manifest["fingerprint"]
    stamp = (tmp_path / "real" / MANIFEST_NAME).stat().st_mtime_ns
    assert build_fingerprint(replace(cfg, workers=1))[0] == manifest["fingerprint"]
    main(replace(cfg, workers=1))  # another worker count: the finished build is left alone
    assert (tmp_path / "real" / MANIFEST_NAME).stat().st_mtime_ns == stamp
