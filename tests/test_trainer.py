"""Trainer: masked multi-task loss and OHEM, original weights, learning, exact resume, DDP on gloo.

The data are tiny synthetic shard sets written with ``ShardWriter`` (``lmdb_builders.synthetic``):
bright blobs for faces, noise for negatives, so a few steps really lower the loss.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lmdb_builders.synthetic import synthetic_records, write_synthetic_build
from lmdb_builders.reader import MixedKindBatchSampler, ShardDataset, records_to_batch, split_by_kind
from lmdb_builders.schema import Kind
from trainers.losses import LossWeights, Wing, flatten_output, multitask_loss, ohem_count, wing_loss
from core.nets import EXTRA_HEAD_PREFIX, INPUT_SIZES, NetOutput, build_net, load_state, normalize_images
from trainers.checkpoint import latest_checkpoint, load_checkpoint, save_torch
from trainers.config import TrainConfig, parse_args
from trainers.distributed import RankSlice
from trainers.detector_task import LOG_COLUMNS, evaluate_detector as evaluate
from trainers.model import init_model, lr_factor
from trainers.optim_config import OptimConfig
from trainers.train import main
from child_env import REPO, child_env

HEADS = {  # (box head, landmark head, classification head) module names
    "pnet": ("conv4_2", "conv4_3", "conv4_1"),
    "rnet": ("dense5_2", "dense5_3", "dense5_1"),
    "onet": ("dense6_2", "dense6_3", "dense6_1"),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the nets are small


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Tiny synthetic builds: size -> folder (600 samples of every kind mix)."""
    root = tmp_path_factory.mktemp("train_builds")
    for size in (12, 24, 48):
        write_synthetic_build(root / str(size), size, 600, seed=size, per_image=100)
    return {size: root / str(size) for size in (12, 24, 48)}


def make_batch(size: int, counts: dict, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    recs = np.concatenate([synthetic_records(rng, size, kind, n) for kind, n in counts.items() if n])
    return records_to_batch(recs)


def params_of(model, prefix):
    return [p for n, p in model.named_parameters() if n.startswith(prefix + ".")]


# -- loss: masks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("net", ["pnet", "rnet", "onet"])
def test_negatives_only_give_zero_box_and_landmark_loss_and_only_a_classification_gradient(net):
    torch.manual_seed(0)
    model = build_net(net)
    batch = make_batch(INPUT_SIZES[net], {Kind.NEGATIVE: 16})
    terms = multitask_loss(model(normalize_images(batch["image"])), batch, LossWeights(1, 0.5, 0.5))
    assert terms.box.item() == 0.0 and terms.landmark.item() == 0.0
    assert terms.cls.item() > 0 and terms.kept == math.ceil(0.7 * 16)
    terms.total.backward()
    box_head, lm_head, cls_head = HEADS[net]
    for p in params_of(model, box_head) + params_of(model, lm_head):
        assert p.grad is None or not p.grad.any()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params_of(model, cls_head))
    assert model.conv1.weight.grad.abs().sum() > 0  # the trunk learns through the classification head


def test_nan_targets_never_enter_the_arithmetic():
    torch.manual_seed(0)
    model = build_net("rnet")
    batch = make_batch(24, {Kind.NEGATIVE: 6, Kind.POSITIVE: 3, Kind.PART: 4, Kind.LANDMARK: 5})
    assert batch["box"].isnan().any() and batch["landmarks"].isnan().any()
    terms = multitask_loss(model(normalize_images(batch["image"])), batch, LossWeights())
    terms.total.backward()
    assert all(torch.isfinite(t) for t in terms[:4])
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_terms_are_means_over_the_samples_that_carry_them():
    # 2 negatives, 1 positive, 1 part, 1 landmark: hand-computed values.
    batch = {
        "label": torch.tensor([0, 0, 1, -1, -1]),
        "has_box": torch.tensor([False, False, True, True, False]),
        "has_landmarks": torch.tensor([False, False, False, False, True]),
        "box": torch.tensor([[float("nan")] * 4] * 2 + [[0.1, 0, 0, 0], [0, 0.2, 0, 0], [float("nan")] * 4]),
        "landmarks": torch.tensor([[float("nan")] * 10] * 4 + [[0.5] * 10]),
    }
    logits = torch.zeros(5, 2)  # CE = ln 2 for every sample
    out = NetOutput(logits, torch.zeros(5, 4), torch.zeros(5, 10))
    terms = multitask_loss(out, batch, LossWeights(1, 0.5, 2), ohem_keep=None)
    assert terms.cls.item() == pytest.approx(math.log(2))
    assert terms.box.item() == pytest.approx((0.01 / 4 + 0.04 / 4) / 2)
    assert terms.landmark.item() == pytest.approx(0.25)
    assert terms.total.item() == pytest.approx(math.log(2) + 0.5 * 0.00625 + 2 * 0.25)
    assert terms.kept == 3


@pytest.mark.parametrize("net, paper, expected", [("rnet", (0.5, 0.5), (1.0, 1.0, 2.5)),
                                                    ("onet", (0.5, 1.0), (1.0, 1.0, 5.0))])
def test_makefile_loss_weights_are_the_papers_caffe_balance(make_dry_run, monkeypatch, net, paper, expected):
    # Caffe's EuclideanLoss is sum((pred - target)**2) / (2 * samples); the paper weighs R-Net's
    # terms 1 / 0.5 / 0.5 and O-Net's 1 / 0.5 / 1 with it. The trainer's terms are means over the
    # 4 and 10 values.
    dry = make_dry_run("OUT=o", "-o", f"o/{net}/manifest.json", f"o/weights/{net}.pt")
    command = dry.split("-m core.launch trainers.train")[-1].split()
    assert command[command.index("--config") + 1] == f"configs/{net}.toml"  # the recipe file, read as make runs it
    monkeypatch.chdir(REPO)
    weights = parse_args(command).loss_weights
    assert weights == expected
    gen = torch.Generator().manual_seed(0)
    box, box_t, lm, lm_t = (torch.rand(6, n, generator=gen) for n in (4, 4, 10, 10))
    batch = {"label": torch.full((6,), -1), "has_box": torch.ones(6, dtype=torch.bool),
             "has_landmarks": torch.ones(6, dtype=torch.bool), "box": box_t, "landmarks": lm_t}
    ours = multitask_loss(NetOutput(torch.zeros(6, 2), box, lm), batch, LossWeights(*weights)).total
    caffe = paper[0] * ((box - box_t) ** 2).sum() / 12 + paper[1] * ((lm - lm_t) ** 2).sum() / 12
    assert ours.item() == pytest.approx(caffe.item(), rel=1e-6)


def test_wing_loss_is_logarithmic_below_the_width_linear_beyond_and_continuous():
    wing = Wing(width=0.15, epsilon=0.03)
    x = torch.tensor([0.0, 0.03, -0.03, 0.15, -0.25, 0.25])
    ln6 = math.log(6.0)  # 1 + 0.15 / 0.03
    expected = [0.0, 0.15 * math.log(2.0), 0.15 * math.log(2.0), 0.15 * ln6, 0.1 + 0.15 * ln6, 0.1 + 0.15 * ln6]
    assert wing_loss(x, wing).tolist() == pytest.approx(expected, abs=1e-7)
    below = wing_loss(torch.tensor([0.15 - 1e-6]), wing).item()
    assert below == pytest.approx(0.15 * ln6, abs=1e-6)  # no step at the width
    with pytest.raises(ValueError, match="width and epsilon"):
        Wing(0.0, 0.03)


def test_wing_replaces_only_the_landmark_term():
    batch = {"label": torch.tensor([0, -1]), "has_box": torch.tensor([False, True]),
             "has_landmarks": torch.tensor([False, True]),
             "box": torch.tensor([[float("nan")] * 4, [0.1, 0, 0, 0]]),
             "landmarks": torch.tensor([[float("nan")] * 10, [0.5] * 5 + [0.03] * 5])}
    out = NetOutput(torch.zeros(2, 2), torch.zeros(2, 4), torch.zeros(2, 10))
    mse = multitask_loss(out, batch, LossWeights(1, 1, 1), ohem_keep=None)
    wing = multitask_loss(out, batch, LossWeights(1, 1, 1), ohem_keep=None, wing=Wing(0.15, 0.03))
    assert mse.landmark.item() == pytest.approx((0.25 + 0.0009) / 2)
    # 0.5 is beyond the width: 0.5 - (0.15 - 0.15 ln 6); 0.03 is below: 0.15 ln 2
    assert wing.landmark.item() == pytest.approx((0.35 + 0.15 * math.log(6) + 0.15 * math.log(2)) / 2)
    assert (wing.cls.item(), wing.box.item()) == (mse.cls.item(), mse.box.item())


def test_landmark_loss_option_reaches_training_and_validation_stays_mse(builds, tmp_path):
    runs = {}
    for loss in ("mse", "wing"):
        cfg = TrainConfig.tiny("onet", builds[48], tmp_path / loss, epochs=1, batches_per_epoch=2, batch_size=32,
                               landmark_loss=loss)
        runs[loss] = (cfg, main(cfg))
    (mse_cfg, mse_run), (wing_cfg, wing_run) = runs["mse"], runs["wing"]
    assert wing_cfg.wing == Wing(0.15, 0.03) and mse_cfg.wing is None
    assert wing_run.history[0]["train_landmark"] != pytest.approx(mse_run.history[0]["train_landmark"], rel=0.1)
    # validation reports the landmark MSE whatever the training loss, so runs compare
    ds = ShardDataset(wing_cfg.data, 48)
    _, val = split_by_kind(ds.kinds, wing_cfg.val_fraction, wing_cfg.seed)
    val_idx = np.concatenate(list(val.values()))
    model = init_model(replace(wing_cfg, init=str(wing_run.weights_path)))
    assert evaluate(model, ds, val_idx, wing_cfg) == evaluate(model, ds, val_idx, mse_cfg)
    assert parse_args(["--net", "onet", "--landmark-loss", "wing", "--wing-width", "0.2"]).wing == Wing(0.2, 0.03)
    for bad in (dict(landmark_loss="l1"), dict(wing_epsilon=0.0)):
        with pytest.raises(ValueError, match="landmark-loss|wing-width"):
            TrainConfig(net="onet", **bad)


def test_pnet_maps_are_flattened_and_a_net_without_landmark_head_has_zero_landmark_term():
    torch.manual_seed(0)
    model = build_net("pnet", landmark_head=False)
    batch = make_batch(12, {Kind.NEGATIVE: 3, Kind.POSITIVE: 2, Kind.LANDMARK: 4})
    out = model(normalize_images(batch["image"]))
    assert out.logits.shape == (9, 2, 1, 1) and flatten_output(out).logits.shape == (9, 2)
    terms = multitask_loss(out, batch, LossWeights())
    assert terms.landmark.item() == 0.0 and terms.box.item() > 0
    terms.total.backward()


# -- loss: OHEM ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 13, 64, 100, 384])
def test_ohem_keeps_exactly_ceil_of_70_percent_the_hardest(n):
    gen = torch.Generator().manual_seed(n)
    logits = torch.randn(n, 2, generator=gen, requires_grad=True)
    label = torch.randint(0, 2, (n,), generator=gen)
    none = torch.zeros(n, dtype=torch.bool)
    batch = {"label": label, "has_box": none, "has_landmarks": none,
             "box": torch.full((n, 4), float("nan")), "landmarks": torch.full((n, 10), float("nan"))}
    out = NetOutput(logits, torch.zeros(n, 4), None)
    terms = multitask_loss(out, batch, LossWeights(), ohem_keep=0.7)
    k = math.ceil(0.7 * n - 1e-9)
    assert terms.kept == k == ohem_count(n, 0.7)
    ce = torch.nn.functional.cross_entropy(logits, label, reduction="none").detach()
    hardest = torch.argsort(ce, descending=True)[:k]
    assert terms.cls.item() == pytest.approx(ce[hardest].mean().item(), rel=1e-6)
    terms.total.backward()
    with_grad = set(torch.nonzero(logits.grad.abs().sum(1) > 0).flatten().tolist())
    assert with_grad == set(hardest.tolist())
    # switched off: every classification sample counts
    assert multitask_loss(out, batch, LossWeights(), ohem_keep=None).kept == n


def test_ohem_counts_only_classification_samples():
    batch = make_batch(12, {Kind.NEGATIVE: 7, Kind.POSITIVE: 3, Kind.PART: 10, Kind.LANDMARK: 10})
    out = build_net("pnet")(normalize_images(batch["image"]))
    assert multitask_loss(out, batch, LossWeights()).kept == math.ceil(0.7 * 10)
    assert [ohem_count(10, 0.7), ohem_count(20, 0.7), ohem_count(0, 0.7), ohem_count(5, 1.0)] == [7, 14, 0, 5]


# -- original weights ------------------------------------------------------------------------------
def original_weights_dir() -> Path | None:
    for folder in (os.environ.get("MTCNN_ORIGINAL_WEIGHTS"), REPO / "weights" / "original"):
        if folder and all((Path(folder) / f"{n}.pt").is_file() for n in INPUT_SIZES):
            return Path(folder)
    return None


@pytest.mark.parametrize("net", ["pnet", "rnet", "onet"])
def test_original_weights_load_with_no_missing_or_unexpected_keys(net):
    folder = original_weights_dir()
    if folder is None:
        pytest.skip("original weights not found (weights/original/ or $MTCNN_ORIGINAL_WEIGHTS)")
    state = torch.load(folder / f"{net}.pt", map_location="cpu", weights_only=True)
    plain = build_net(net, landmark_head=False)
    result = plain.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    with_head = build_net(net, landmark_head=True)
    missing = load_state(with_head, net, state)
    prefix = EXTRA_HEAD_PREFIX[net]
    assert missing == ([] if prefix is None else [prefix + "weight", prefix + "bias"])
    # --init original:PATH: every shipped tensor arrives unchanged, the extra head stays as initialised
    for init in (f"original:{folder / f'{net}.pt'}", f"original:{folder}"):
        model = init_model(TrainConfig(net=net, init=init))
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


# -- training ----------------------------------------------------------------------------------------
def test_a_few_steps_on_the_tiny_set_reduce_the_loss(builds, tmp_path):
    cfg = TrainConfig.tiny("pnet", builds[12], tmp_path / "run", epochs=3, batches_per_epoch=10)
    ds = ShardDataset(cfg.data, 12)
    _, val = split_by_kind(ds.kinds, cfg.val_fraction, cfg.seed)
    val_idx = np.concatenate(list(val.values()))
    before = evaluate(init_model(cfg), ds, val_idx, cfg)
    result = main(cfg)
    after = evaluate(init_model(replace(cfg, init=str(result.weights_path))), ds, val_idx, cfg)
    assert after["val_loss"] < 0.7 * before["val_loss"]
    assert after["val_box"] < before["val_box"] and after["val_landmark"] < before["val_landmark"]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert after == pytest.approx({k: result.history[-1][k] for k in after}, nan_ok=True)


@pytest.mark.parametrize("net", ["rnet", "onet"])
def test_rnet_and_onet_train_and_write_every_output(net, builds, tmp_path):
    cfg = TrainConfig.tiny(net, builds[INPUT_SIZES[net]], tmp_path / net, epochs=1, batches_per_epoch=2,
                           batch_size=32, val_fraction=0.1, export=str(tmp_path / "weights" / f"{net}.pt"))
    result = main(cfg)
    assert (tmp_path / "weights" / f"{net}.pt").read_bytes() == result.weights_path.read_bytes()
    out = Path(cfg.out)
    assert result.weights_path == out / f"{net}.pt"
    for name in ("log.csv", "loss_curve.png", "checkpoints/epoch-001.pt"):
        assert (out / name).is_file()
    header, row = (out / "log.csv").read_text().splitlines()
    assert header.split(",") == list(LOG_COLUMNS) == [
        "epoch", "lr", "train_loss", "train_cls", "train_box", "train_landmark", "train_acc", "train_kept",
        "grad_norm", "val_loss", "val_cls", "val_box", "val_landmark", "val_acc", "val_recall", "val_fpr",
        "samples_per_s", "data_wait_share", "epoch_s"]
    assert row.startswith("1,") and len(row.split(",")) == len(LOG_COLUMNS)
    assert result.history[0].keys() == set(LOG_COLUMNS)  # every named metric has its column, and no more
    # the final file is a plain state dict the detector's loader reads (build_net + load_state)
    state = torch.load(result.weights_path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) and v.is_contiguous() for v in state.values())
    load_state(build_net(net), net, state)


def test_resume_ends_with_exactly_the_weights_of_an_uninterrupted_run(builds, tmp_path):
    # photometric on: its draws, like the mirroring's, must repeat after a resume
    base = TrainConfig.tiny("pnet", builds[12], tmp_path / "straight", epochs=2, batches_per_epoch=5, num_workers=1,
                            photometric=True)
    straight = main(base)

    parted_cfg = replace(base, out=str(tmp_path / "parted"))
    first = main(replace(parted_cfg, stop_after_epochs=1))
    assert first.weights_path is None and not (tmp_path / "parted" / "pnet.pt").exists()
    assert latest_checkpoint(parted_cfg.out).name == "epoch-001.pt"
    resumed = main(replace(parted_cfg, resume=True))

    a = torch.load(straight.weights_path, weights_only=True)
    b = torch.load(resumed.weights_path, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    timing = {"samples_per_s", "data_wait_share", "epoch_s"}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(straight.history) == strip(resumed.history)

    ckpt = load_checkpoint(latest_checkpoint(parted_cfg.out))  # weights_only=True inside
    assert ckpt["epoch"] == 2 and ckpt["config"]["net"] == "pnet" and ckpt["sampler"]["epoch"] == 2
    assert {"model", "optimizer", "scheduler", "rng", "history"} <= ckpt.keys()
    # a different arithmetic refuses to resume
    with pytest.raises(ValueError, match="lr"):
        main(replace(parted_cfg, resume=True, optim=replace(parted_cfg.optim, lr=0.123)))


def test_a_checkpoint_with_the_old_flat_optimiser_settings_still_resumes_exactly(builds, tmp_path):
    # Checkpoints written before OptimConfig was nested store lr, grad_clip, ... at the top level.
    base = TrainConfig.tiny("pnet", builds[12], tmp_path / "straight", epochs=2, batches_per_epoch=3,
                            optim=OptimConfig(lr=0.05, grad_clip=2.0))
    straight = main(base)
    parted_cfg = replace(base, out=str(tmp_path / "parted"))
    main(replace(parted_cfg, stop_after_epochs=1))
    path = latest_checkpoint(parted_cfg.out)
    ckpt = load_checkpoint(path)
    flat = {k: v for k, v in ckpt["config"].items() if k != "optim"}
    ckpt["config"] = {**flat, **ckpt["config"]["optim"]}
    assert "optim" not in ckpt["config"] and ckpt["config"]["lr"] == 0.05
    save_torch(ckpt, path)
    resumed = main(replace(parted_cfg, resume=True))
    assert all(torch.equal(straight.state_dict[k], resumed.state_dict[k]) for k in straight.state_dict)
    # and the flat form is compared field by field: another lr is still refused, by its name
    with pytest.raises(ValueError, match="different lr"):
        main(replace(parted_cfg, resume=True, optim=OptimConfig(lr=0.01, grad_clip=2.0)))


# -- DDP -----------------------------------------------------------------------------------------
DDP_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    from trainers.config import TrainConfig
    from trainers.train import main
    data, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    # batch 4 = 2 neg, 1 pos, 1 landmark: each step, a rank's half lacks box or landmark samples
    cfg = TrainConfig.tiny("pnet", data, out, epochs=1, batches_per_epoch=3, batch_size=4, val_fraction=0.1)
    result = main(cfg)
    torch.save(result.state_dict, os.path.join(out, f"rank{os.environ['RANK']}.pt"))
""")


def test_ddp_with_two_gloo_processes_runs_and_keeps_the_ranks_identical(builds, tmp_path):
    # the ranks' halves of a batch really lack a kind (DDP must then not wait for that head's gradient)
    ds = ShardDataset(builds[12], 12)
    train, _ = split_by_kind(ds.kinds, 0.1, 0)
    halves = [list(RankSlice(MixedKindBatchSampler(train, 4, batches_per_epoch=3), r, 2)) for r in (0, 1)]
    assert all(len(b) == 2 for h in halves for b in h)
    assert any(not ds.kinds[b].tolist().count(Kind.LANDMARK) for h in halves for b in h)
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    out.mkdir()
    env = child_env(GLOO_SOCKET_IFNAME="lo")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(builds[12]), str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    init = init_model(TrainConfig(net="pnet"))
    assert any(not torch.equal(r0[k], v) for k, v in init.state_dict().items())  # it did train
    assert torch.equal(torch.load(out / "pnet.pt", weights_only=True)["conv1.weight"], r0["conv1.weight"])
    assert (out / "log.csv").read_text().count("\n") == 2  # header + one epoch, written by rank 0 only


# -- schedule and command line -----------------------------------------------------------------------
def test_lr_schedule_warms_up_then_decays():
    f = [lr_factor(s, 100, 10, "cosine") for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0 and f[10] == 1.0
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] < 0.001
    step = [lr_factor(s, 100, 0, "step") for s in (0, 49, 50, 74, 75, 99)]
    assert step == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cli_maps_onto_the_config():
    assert parse_args(["--net", "rnet", "--grad-clip", "none"]).optim.grad_clip is None
    assert parse_args(["--net", "rnet"]).optim.grad_clip == 1.0 and parse_args(["--net", "rnet"]).ohem_keep == 0.7
    cfg = parse_args(["--net", "onet", "--no-ohem", "--loss-weights", "1", "0.5", "2", "--resume", "--workers", "0",
                      "--export", "w/onet.pt", "--grad-clip", "0"])
    assert (cfg.net, cfg.data, cfg.out, cfg.ohem_keep, cfg.resume, cfg.num_workers, cfg.export,
            cfg.optim.grad_clip) == ("onet", "data/onet", "runs/onet", None, True, 0, "w/onet.pt", None)
    assert cfg.weights == LossWeights(1, 0.5, 2) and cfg.stage_threshold == 0.7
    assert TrainConfig(net="onet").weights == LossWeights(1, 0.5, 1)
    assert (cfg.flip, cfg.photometric) == (True, False)
    changed = parse_args(["--net", "pnet", "--no-flip", "--photometric"])
    assert (changed.flip, changed.photometric) == (False, True)
    pnet = TrainConfig(net="pnet")
    assert pnet.weights == LossWeights(1, 0.5, 0.5) and pnet.stage_threshold == 0.6


def test_every_flag_of_the_makefile_and_readme_parses_with_its_meaning():
    cfg = parse_args([
        "--net", "rnet", "--data", "d", "--out", "o", "--export", "e.pt", "--epochs", "8", "--epochs", "3",
        "--batch-size", "128", "--batches-per-epoch", "40", "--device", "cpu", "--seed", "5", "--resume",
        "--no-flip", "--photometric", "--no-progress", "--init", "original:w", "--loss-weights", "1", "2", "3",
        "--ohem-keep", "0.5", "--no-landmark-head", "--no-amp", "--val-fraction", "0.1", "--workers", "2",
        "--threads", "3", "--threshold", "0.4", "--grad-clip", "2", "--stop-after-epochs", "1",
        "--optimizer", "adamw", "--lr", "0.01", "--schedule", "step", "--warmup-epochs", "1",
        "--momentum", "0.8", "--weight-decay", "0.001", "--kind-ratio", "3", "2", "1", "2"])
    assert cfg == TrainConfig(
        net="rnet", data="d", out="o", export="e.pt", epochs=3, batch_size=128, batches_per_epoch=40, device="cpu",
        seed=5, resume=True, flip=False, photometric=True, progress=False, init="original:w",
        loss_weights=(1.0, 2.0, 3.0), ohem_keep=0.5, landmark_head=False, amp=False, val_fraction=0.1,
        num_workers=2, threads=3, threshold=0.4, stop_after_epochs=1, kind_ratio=(3.0, 2.0, 1.0, 2.0),
        optim=OptimConfig(grad_clip=2.0, optimizer="adamw", lr=0.01, schedule="step", warmup_epochs=1.0, momentum=0.8,
                          weight_decay=0.001))
    assert TrainConfig(net="onet").data == "data/onet" and TrainConfig(net="onet").out == "runs/onet"


def test_help_shows_every_fields_docstring_and_net_is_required(capsys):
    import dataclasses

    from core.cli import field_docs

    docs = field_docs(TrainConfig)
    assert set(docs) == {f.name for f in dataclasses.fields(TrainConfig)}  # every field is documented
    docs = {**{k: v for k, v in docs.items() if k != "optim"}, **field_docs(OptimConfig)}  # offered flat
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for doc in docs.values():
        assert doc in text
    with pytest.raises(SystemExit):
        parse_args([])  # --net is required
    with pytest.raises(SystemExit):
        parse_args(["--net", "pnet", "--ohem-keep", "1.5"])  # the config's checks are usage errors


def test_kind_ratio_defaults_to_the_papers_and_reaches_the_batch_sampler(builds, tmp_path, monkeypatch):
    from lmdb_builders.reader import PAPER_RATIO, kind_quotas

    import trainers.detector_task as train_module

    assert TrainConfig(net="rnet").kind_ratio == (3.0, 1.0, 1.0, 2.0)
    # the float default gives the integer ratio's quotas, so the shipped recipes' batches are unchanged
    available = {k: np.arange(10) for k in Kind}
    assert kind_quotas(384, TrainConfig(net="rnet").batch_ratio, available) == \
        kind_quotas(384, PAPER_RATIO, available)
    seen = []

    class Spy(train_module.MixedKindBatchSampler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self.quotas)

    monkeypatch.setattr(train_module, "MixedKindBatchSampler", Spy)
    main(TrainConfig.tiny("rnet", builds[24], tmp_path / "r", epochs=1, batches_per_epoch=1, batch_size=48,
                          kind_ratio=(3, 3, 0, 2)))
    assert seen == [{Kind.NEGATIVE: 18, Kind.POSITIVE: 18, Kind.LANDMARK: 12}]
    for bad in ((1, 1, 1), (3, -1, 1, 2), (0, 0, 1, 2)):
        with pytest.raises(ValueError, match="kind-ratio"):
            TrainConfig(net="rnet", kind_ratio=bad)


def test_stage_thresholds_are_the_detectors():
    from detector.cascade import DetectorConfig

    assert [TrainConfig(net=n).stage_threshold for n in ("pnet", "rnet", "onet")] == \
        list(DetectorConfig().thresholds)
