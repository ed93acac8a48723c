"""One training loop for P-Net, R-Net and O-Net, from a build's LMDB shards.

    python -m trainers.train --net pnet --data data/pnet --out runs/pnet [--export weights/pnet.pt] [--resume]
    torchrun --nproc_per_node 2 -m trainers.train --net pnet ...      # data-parallel (gloo on CPU)

Batches mix the sample kinds in the paper's ratio (``MixedKindBatchSampler``); a per-kind share
of the shards (``val_fraction``) is held out and evaluated after every epoch. The loss is the
masked multi-task loss with OHEM (``trainers.losses``).

The output folder holds ``checkpoints/epoch-XXX.pt`` (model, optimizer, scheduler, sampler
position, every random state, the config and the log so far; loadable with
``torch.load(..., weights_only=True)``), ``log.csv`` and ``loss_curve.png`` (rewritten atomically
after every epoch) and, once the last epoch is done, ``<net>.pt``: the plain state dict the
detector loads. ``--resume`` continues from the latest checkpoint and ends with exactly the
weights an uninterrupted run would have produced.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import random
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from core.atomic import atomic_write_bytes
from lmdb_builders.reader import MixedKindBatchSampler, ShardDataset, ShardLoader, records_to_batch, split_by_kind
from trainers.augment import flip_mask, hflip_batch, photometric_batch, photometric_params
from trainers.losses import (DEFAULT_LOSS_WEIGHTS, DEFAULT_OHEM_KEEP, LossWeights, flatten_output, multitask_loss,
                             sample_losses)
from core.nets import INPUT_SIZES, NET_NAMES, build_net, load_state, normalize_images
from core.weights import CHECKPOINT_FORMAT, load_state_dict, parse_weights

# The cascade's stage thresholds (facenet-pytorch's 0.6 / 0.7 / 0.7): recall is reported at these.
DEFAULT_THRESHOLDS = {"pnet": 0.6, "rnet": 0.7, "onet": 0.7}
LOG_COLUMNS = (
    "epoch", "lr", "train_loss", "train_cls", "train_box", "train_landmark", "train_acc", "train_kept", "grad_norm",
    "val_loss", "val_cls", "val_box", "val_landmark", "val_acc", "val_recall", "val_fpr",
    "samples_per_s", "data_wait_share", "epoch_s",
)


@dataclass(frozen=True)
class TrainConfig:
    net: str = "pnet"
    """pnet, rnet or onet."""
    data: str = "data/pnet"
    """A build folder (``manifest.json`` + ``<size>/shard-*.lmdb``); the net's input size is read."""
    out: str = "runs/pnet"
    """Output folder: checkpoints/, log.csv, loss_curve.png, <net>.pt."""
    export: str | None = None
    """Also write the final weights (the plain state dict) to this file, e.g. the folder the detector reads."""
    epochs: int = 16
    batch_size: int = 384
    """Samples per optimizer step, over all processes together."""
    optimizer: str = "sgd"
    """sgd (momentum, Nesterov) or adamw."""
    lr: float = 0.1
    """Peak learning rate (reached after the warm-up); see the README for how it was chosen."""
    momentum: float = 0.9
    weight_decay: float = 1e-4
    """Applied to conv and dense weights only, not to biases or PReLU slopes."""
    schedule: str = "cosine"
    """cosine (to 0), step (x0.1 at 50% and 75% of the steps) or constant; per step, after the warm-up."""
    warmup_epochs: float = 0.5
    """Linear warm-up from lr / steps to lr over this many epochs."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this (None: off); the mean norm before clipping is logged."""
    loss_weights: tuple[float, float, float] | None = None
    """det, box, landmark; None: 1/0.5/0.5 (P-Net, R-Net), 1/0.5/1 (O-Net)."""
    ohem_keep: float | None = DEFAULT_OHEM_KEEP
    """Share of each batch's classification losses that count (largest first); None: all."""
    landmark_head: bool = True
    """Train P-Net's / R-Net's optional landmark head (O-Net always has one)."""
    flip: bool = True
    """Mirror each training sample but landmark ones with probability 0.5 (``trainers.augment``)."""
    photometric: bool = False
    """Blur, saturation, contrast and brightness changes of each training sample (``trainers.augment``).
    Off by default: on the shared set it did not raise R-Net's or O-Net's WIDER AP (README)."""
    val_fraction: float = 0.05
    """Share of each kind held out of the shards for validation."""
    threshold: float | None = None
    """Face probability at which validation recall / false positives are counted; None: 0.6/0.7/0.7."""
    seed: int = 0
    device: str = "cpu"
    """cpu or cuda (cuda:N); under torchrun each process takes cuda:LOCAL_RANK."""
    amp: bool = True
    """Mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling); ignored on CPU."""
    init: str = "scratch"
    """scratch, original:PATH (facenet-pytorch's <net>.pt, or the folder holding it) or PATH (a state
    dict or checkpoint of this trainer)."""
    num_workers: int = 1
    """DataLoader worker processes (0: read in the training process)."""
    batches_per_epoch: int | None = None
    """None: one pass over the training split's kinds (per the sampler)."""
    val_batch_size: int = 1024
    threads: int | None = None
    """torch intra-op threads. None: torch's default (OMP_NUM_THREADS, else all cores), less one per
    DataLoader worker for P-Net, whose steps are so short that a worker needs a core of its own."""
    resume: bool = False
    """Continue from the latest checkpoint in ``out`` (starts afresh when there is none)."""
    stop_after_epochs: int | None = None
    """Stop once this many epochs are done, as if interrupted (for testing resume)."""
    progress: bool = True
    """tqdm bars."""

    def __post_init__(self):
        if self.net not in NET_NAMES:
            raise ValueError(f"net must be one of {NET_NAMES}, got {self.net!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"schedule must be cosine, step or constant, got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be positive")
        if self.ohem_keep is not None and not 0.0 < self.ohem_keep <= 1.0:
            raise ValueError(f"ohem_keep must be in (0, 1] or None, got {self.ohem_keep}")
        if self.loss_weights is not None:
            object.__setattr__(self, "loss_weights", tuple(float(w) for w in self.loss_weights))
            if len(self.loss_weights) != 3:
                raise ValueError("loss_weights needs three values: det, box, landmark")

    @property
    def weights(self) -> LossWeights:
        return LossWeights(*self.loss_weights) if self.loss_weights else DEFAULT_LOSS_WEIGHTS[self.net]

    @property
    def stage_threshold(self) -> float:
        return DEFAULT_THRESHOLDS[self.net] if self.threshold is None else self.threshold

    @classmethod
    def tiny(cls, net: str, data, out, **changes) -> "TrainConfig":
        """A few small steps on a tiny build: for tests and the demo."""
        base = dict(net=net, data=str(data), out=str(out), epochs=2, batch_size=64, batches_per_epoch=6,
                    num_workers=0, val_fraction=0.2, val_batch_size=256, warmup_epochs=0.5, progress=False)
        return cls(**{**base, **changes})


# Fields that may differ between a run and its resumption (they do not change the arithmetic).
RESUMABLE_CHANGES = {"data", "out", "export", "device", "num_workers", "val_batch_size", "threads", "resume",
                     "stop_after_epochs", "progress"}


# -- building blocks -----------------------------------------------------------------------------
def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "step":
        return 0.1 ** sum(progress >= m for m in (0.5, 0.75))
    return 1.0


def build_optimizer(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int):
    """Optimizer (weight decay on weights of rank >= 2 only) and its per-step LambdaLR schedule."""
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        return lr_factor(step, total, warmup, cfg.schedule)

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def init_model(cfg: TrainConfig) -> nn.Module:
    """The net, seeded with ``cfg.seed``, initialised as ``cfg.init`` says."""
    torch.manual_seed(cfg.seed)
    model = build_net(cfg.net, landmark_head=cfg.landmark_head)
    if cfg.init != "scratch":
        load_state(model, cfg.net, load_state_dict(parse_weights(cfg.init).net_file(cfg.net)))
    return model


class NetWithLoss(nn.Module):
    """The net and its loss in one forward, returning ``(LossTerms, detached logits)``.

    Wrapped in DistributedDataParallel, its output is the loss itself, so DDP's search for unused
    parameters starts from what backward really reaches: a head whose term is the unconnected 0
    (a rank's share of a batch without box or landmark samples) is marked unused for that step.
    """

    def __init__(self, net: nn.Module, weights: LossWeights, ohem_keep: float | None):
        super().__init__()
        self.net, self.weights, self.ohem_keep = net, weights, ohem_keep

    def forward(self, images: torch.Tensor, batch: dict):
        output = self.net(images)
        return multitask_loss(output, batch, self.weights, self.ohem_keep), flatten_output(output).logits.detach()


class RankSlice:
    """Rank ``rank`` of ``world`` takes every world-th sample of each batch of a batch sampler."""

    def __init__(self, batch_sampler: MixedKindBatchSampler, rank: int = 0, world: int = 1):
        self.sampler, self.rank, self.world = batch_sampler, rank, world
        if batch_sampler.batch_size < world:
            raise ValueError(f"batch size {batch_sampler.batch_size} is smaller than the {world} processes")

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch, start_batch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for batch in self.sampler:
            yield batch[self.rank :: self.world]


# -- random states (as tensors and plain types, so checkpoints load with weights_only=True) -------
def rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": torch.tensor(py_state[1], dtype=torch.int64)},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), None))


# -- checkpoints -------------------------------------------------------------------------------
def checkpoint_path(out, epoch: int) -> Path:
    return Path(out) / "checkpoints" / f"epoch-{epoch:03d}.pt"


def latest_checkpoint(out) -> Path | None:
    found = [(int(m.group(1)), p) for p in (Path(out) / "checkpoints").glob("epoch-*.pt")
             if (m := re.fullmatch(r"epoch-(\d+)\.pt", p.name))]
    return max(found)[1] if found else None


def save_torch(obj, path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a training checkpoint ({CHECKPOINT_FORMAT})")
    return ckpt


def config_from_dict(d: dict) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in d.items() if k in known})


class ResumeError(ValueError):
    """The latest checkpoint in the output folder belongs to a different run."""


def check_resumable(cfg: TrainConfig, saved: TrainConfig, data_fp: str, saved_fp: str) -> None:
    diff = [f.name for f in fields(TrainConfig)
            if f.name not in RESUMABLE_CHANGES and getattr(cfg, f.name) != getattr(saved, f.name)]
    if data_fp != saved_fp:
        diff.append(f"data fingerprint ({saved_fp} -> {data_fp})")
    if diff:
        raise ResumeError(f"cannot resume in {cfg.out}: the checkpoint was made with a different "
                         f"{', '.join(diff)}; delete the folder or choose another --out")


# -- logs --------------------------------------------------------------------------------------
def write_log(history: list[dict], path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_bytes(path, buf.getvalue().encode())


def plot_history(history: list[dict], path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    styles = {"loss": "-", "cls": "--", "box": "-.", "landmark": ":"}
    for split, color in (("train", "tab:blue"), ("val", "tab:orange")):
        for term, style in styles.items():
            ax_loss.plot(epochs, [r[f"{split}_{term}"] for r in history], style, color=color,
                         label=f"{split} {term}", marker="o", ms=3)
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title=f"{title}: losses")
    ax_loss.legend(fontsize=7, ncol=2)
    for key in ("train_acc", "val_acc", "val_recall", "val_fpr"):
        ax_acc.plot(epochs, [r[key] for r in history], marker="o", ms=3, label=key)
    ax_acc.set(xlabel="epoch", ylim=(0, 1), title="classification (recall/fpr at the stage threshold)")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


# -- one epoch, validation --------------------------------------------------------------------
class _Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.on = self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _autocast(device: torch.device, cfg: TrainConfig):
    if device.type == "cuda" and cfg.amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.amp.autocast("cuda", dtype=dtype)
    return nullcontext()


def _to_device(batch: dict, device: torch.device) -> dict:
    if device.type != "cuda":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train_one_epoch(model: nn.Module, loader, optimizer, scheduler, scaler, cfg: TrainConfig, device, dist_info: _Dist,
                    epoch: int, first_batch: int = 0) -> dict:
    """One pass over the loader's batches with ``model`` a ``NetWithLoss`` (or DDP of one); returns
    the epoch's mean losses, accuracy on pos+neg (before OHEM) and timings."""
    model.train()
    # loss, cls, box, landmark, correct, n_cls, grad norm, kept, steps, samples
    sums = torch.zeros(10, dtype=torch.float64, device=device)
    bar = tqdm(total=len(loader), desc=f"{cfg.net} {epoch + 1}/{cfg.epochs}", dynamic_ncols=True, leave=False,
               disable=not (cfg.progress and dist_info.main))
    wait = 0.0
    start = time.perf_counter()
    it = iter(loader)
    for step in range(len(loader)):
        t = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - t
        if cfg.flip:  # drawn per (seed, epoch, batch, rank): a resumed run mirrors the same samples
            rng = np.random.default_rng([cfg.seed, epoch, first_batch + step, dist_info.rank])
            batch = hflip_batch(batch, flip_mask(batch["kind"], rng))
        if cfg.photometric:  # its own stream, so turning it on or off leaves the mirroring draws alone
            rng = np.random.default_rng([cfg.seed, epoch, first_batch + step, dist_info.rank, 1])
            batch = photometric_batch(batch, photometric_params(len(batch["kind"]), rng))
        batch = _to_device(batch, device)
        images = normalize_images(batch["image"])
        with _autocast(device, cfg):
            terms, logits = model(images, batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms.total).backward()
        scaler.unscale_(optimizer)
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        with torch.no_grad():
            label = batch["label"]
            cls = label >= 0
            correct = (logits.argmax(1) == label)[cls].sum()
            sums += torch.stack([x.detach().double() for x in (terms.total, terms.cls, terms.box, terms.landmark,
                                                                correct, cls.sum(), grad_norm)]
                                + [torch.tensor(v, dtype=torch.float64, device=device)
                                   for v in (terms.kept, 1.0, len(label))])
        if step % 10 == 9 or step == len(loader) - 1:
            s = sums.tolist()
            if not math.isfinite(s[0]):
                raise FloatingPointError(f"{cfg.net}: the loss is {s[0]} in epoch {epoch + 1} by step {step + 1}; "
                                         f"lower --lr (now {cfg.lr}) or set --grad-clip")
            bar.set_postfix(loss=f"{s[0] / s[8]:.4f}", acc=f"{s[4] / max(1.0, s[5]):.3f}",
                            lr=f"{optimizer.param_groups[0]['lr']:.2e}", refresh=False)
            bar.update(step + 1 - bar.n)
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    timing = torch.tensor([wait, elapsed], dtype=torch.float64, device=device)
    if dist_info.on:
        dist.all_reduce(sums)
        dist.all_reduce(timing)
        timing /= dist_info.world
    s = sums.tolist()
    n = s[8]  # steps, summed over the processes
    return {
        "lr": optimizer.param_groups[0]["lr"],
        "train_loss": s[0] / n, "train_cls": s[1] / n, "train_box": s[2] / n, "train_landmark": s[3] / n,
        "train_acc": s[4] / max(1.0, s[5]), "grad_norm": s[6] / n, "train_kept": s[7] / n,
        "samples_per_s": s[9] / timing[1].item(), "data_wait_share": timing[0].item() / timing[1].item(),
        "epoch_s": timing[1].item(),
    }


@torch.no_grad()
def evaluate(model: nn.Module, dataset: ShardDataset, indices, cfg: TrainConfig, device=torch.device("cpu")) -> dict:
    """Losses (no OHEM), accuracy on pos+neg, recall / false-positive rate at the stage threshold, in order."""
    model.eval()
    weights, thr = cfg.weights, cfg.stage_threshold
    indices = np.sort(np.asarray(indices, dtype=np.int64))
    # cls sum, n_cls, box sum, n_box, lm sum, n_lm, correct, true pos, n_pos, false pos, n_neg
    acc = np.zeros(11)
    for start in range(0, len(indices), cfg.val_batch_size):
        batch = _to_device(records_to_batch(dataset.__getitems__(indices[start:start + cfg.val_batch_size])), device)
        with _autocast(device, cfg):
            output = model(normalize_images(batch["image"]))
        per = sample_losses(output, batch)
        logits = flatten_output(output).logits.float()
        p_face = torch.softmax(logits, 1)[:, 1]
        label = batch["label"]
        pos, neg = label == 1, label == 0
        cls = pos | neg
        lm = per.landmark if per.landmark is not None else per.box.new_zeros(0)
        acc += np.array([per.cls.sum().item(), len(per.cls), per.box.sum().item(), len(per.box),
                         lm.sum().item(), len(lm), (logits.argmax(1) == label)[cls].sum().item(),
                         (p_face[pos] >= thr).sum().item(), pos.sum().item(),
                         (p_face[neg] >= thr).sum().item(), neg.sum().item()], dtype=np.float64)

    def ratio(a, b):
        return float(a / b) if b else float("nan")

    cls_l, box_l, lm_l = ratio(acc[0], acc[1]), ratio(acc[2], acc[3]), ratio(acc[4], acc[5])
    # A term without carrying samples counts 0 (as in training); a NaN loss stays NaN.
    total = sum(w * (v if n else 0.0) for w, v, n in zip((weights.det, weights.box, weights.landmark),
                                                         (cls_l, box_l, lm_l), (acc[1], acc[3], acc[5])))
    return {"val_loss": float(total) if len(indices) else float("nan"), "val_cls": cls_l, "val_box": box_l,
            "val_landmark": lm_l, "val_acc": ratio(acc[6], acc[1]), "val_recall": ratio(acc[7], acc[8]),
            "val_fpr": ratio(acc[9], acc[10])}


# -- the run -----------------------------------------------------------------------------------
@dataclass
class TrainResult:
    weights_path: Path | None
    """``<out>/<net>.pt``, or None when the run stopped early (``stop_after_epochs``)."""
    history: list[dict]
    state_dict: dict
    """The final weights of this process's model (CPU)."""


def _clean_out(out: Path, net: str) -> None:
    """A fresh (non-resumed) run: remove what an earlier run left in its own file names."""
    for old in [*(out / "checkpoints").glob("epoch-*.pt"), out / "log.csv", out / "loss_curve.png", out / f"{net}.pt"]:
        if old.is_file():
            old.unlink()


def main(cfg: TrainConfig) -> TrainResult:
    dist_info = _Dist()
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif cfg.net == "pnet" and cfg.num_workers and torch.device(cfg.device).type == "cpu":
        torch.set_num_threads(max(1, threads_before - cfg.num_workers))
    device = torch.device(cfg.device)
    if device.type == "cuda":
        if dist_info.on:
            device = torch.device("cuda", dist_info.local_rank)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    if dist_info.on:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        return _run(cfg, device, dist_info)
    finally:
        torch.set_num_threads(threads_before)
        if dist_info.on:
            dist.destroy_process_group()


def _run(cfg: TrainConfig, device: torch.device, dist_info: _Dist) -> TrainResult:
    out = Path(cfg.out)
    dataset = ShardDataset(cfg.data, INPUT_SIZES[cfg.net])
    data_fp = str(dataset.manifest.get("fingerprint", ""))
    train_idx, val_idx = split_by_kind(dataset.kinds, cfg.val_fraction, cfg.seed)
    val_all = np.sort(np.concatenate([v for v in val_idx.values()]))
    sampler = MixedKindBatchSampler(train_idx, cfg.batch_size, seed=cfg.seed, batches_per_epoch=cfg.batches_per_epoch)
    batches = RankSlice(sampler, dist_info.rank, dist_info.world)

    # channels_last: normalize_images already yields NHWC-strided input; 5-30% faster on CPU.
    model = init_model(cfg).to(device, memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(model, cfg, sampler.batches_per_epoch)
    use_fp16 = device.type == "cuda" and cfg.amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda" if device.type == "cuda" else "cpu", enabled=use_fp16)

    start_epoch, history = 0, []
    ckpt_file = latest_checkpoint(out) if cfg.resume else None
    if ckpt_file is not None:
        ckpt = load_checkpoint(ckpt_file)
        check_resumable(cfg, config_from_dict(ckpt["config"]), data_fp, ckpt["data_fingerprint"])
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"]:
            scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        start_epoch, history = ckpt["sampler"]["epoch"], list(ckpt["history"])
        sampler.set_epoch(start_epoch, ckpt["sampler"]["start_batch"])
        if dist_info.main:
            print(f"resuming {cfg.net} from {ckpt_file} (epoch {start_epoch} of {cfg.epochs} done)", file=sys.stderr)
    elif dist_info.main and not cfg.resume:
        _clean_out(out, cfg.net)
    train_model = NetWithLoss(model, cfg.weights, cfg.ohem_keep)
    if dist_info.on:
        dist.barrier()  # nobody reads the folder while rank 0 cleans it
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)  # a rank's share of a batch may lack a kind (e.g. no landmark sample)

    # Workers return raw record arrays; decoding (and pinning on CUDA) happen in this process.
    loader = ShardLoader(dataset, batches, num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                         persistent_workers=cfg.num_workers > 0, seed=cfg.seed)
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch, sampler.start_batch if epoch == start_epoch else 0)
        stats = train_one_epoch(train_model, loader, optimizer, scheduler, scaler, cfg, device, dist_info, epoch,
                                sampler.start_batch)
        row = {"epoch": epoch + 1, **stats}
        if dist_info.main:
            row.update(evaluate(model, dataset, val_all, cfg, device))
        history.append(row)
        if dist_info.main:
            save_torch({
                "format": CHECKPOINT_FORMAT,
                "net": cfg.net,
                "epoch": epoch + 1,
                "model": _cpu_state(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "sampler": {"epoch": epoch + 1, "start_batch": 0, "seed": cfg.seed},
                "rng": rng_state(),
                "config": asdict(cfg),
                "data_fingerprint": data_fp,
                "world_size": dist_info.world,
                "history": history,
            }, checkpoint_path(out, epoch + 1))
            write_log(history, out / "log.csv")
            plot_history(history, out / "loss_curve.png", cfg.net)
            print(_summary(row), file=sys.stderr)
        if dist_info.on:
            dist.barrier()
        if cfg.stop_after_epochs is not None and epoch + 1 >= cfg.stop_after_epochs and epoch + 1 < cfg.epochs:
            return TrainResult(None, history, _cpu_state(model))

    final = out / f"{cfg.net}.pt"
    if dist_info.main:
        save_torch(_cpu_state(model), final)
        if cfg.export:
            save_torch(_cpu_state(model), cfg.export)
    return TrainResult(final, history, _cpu_state(model))


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().float().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def _summary(row: dict) -> str:
    return (f"epoch {row['epoch']}: loss {row['train_loss']:.4f} (cls {row['train_cls']:.4f} "
            f"box {row['train_box']:.4f} lm {row['train_landmark']:.4f}) acc {row['train_acc']:.3f} | "
            f"val loss {row['val_loss']:.4f} "
            f"acc {row['val_acc']:.3f} recall {row['val_recall']:.3f} fpr {row['val_fpr']:.3f} | "
            f"{row['samples_per_s']:.0f} samples/s, data wait {100 * row['data_wait_share']:.1f}%")


# -- command line ------------------------------------------------------------------------------
def parse_args(argv=None) -> TrainConfig:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m trainers.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--net", choices=NET_NAMES, required=True)
    p.add_argument("--data", help="build folder (default data/<net>)")
    p.add_argument("--out", help="output folder (default runs/<net>)")
    p.add_argument("--export", help="also write the final weights (plain state dict) to this file")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default=d.optimizer)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--schedule", choices=("cosine", "step", "constant"), default=d.schedule)
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="clip the global gradient norm (0: off)")
    p.add_argument("--loss-weights", type=float, nargs=3, metavar=("DET", "BOX", "LANDMARK"),
                   help="default 1 0.5 0.5 (pnet, rnet), 1 0.5 1 (onet)")
    p.add_argument("--ohem-keep", type=float, default=d.ohem_keep, help="share of classification losses kept")
    p.add_argument("--no-ohem", action="store_true", help="every classification loss counts")
    p.add_argument("--no-landmark-head", action="store_true", help="P-Net / R-Net without the landmark head")
    p.add_argument("--no-flip", action="store_true", help="no mirroring of training samples")
    p.add_argument("--photometric", action="store_true", help="blur / colour / brightness changes of training samples")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--threshold", type=float, help="validation recall threshold (default 0.6 pnet, 0.7 rnet/onet)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="cpu, cuda or cuda:N")
    p.add_argument("--no-amp", action="store_true", help="full precision on CUDA")
    p.add_argument("--init", default=d.init,
                   help="scratch, original:PATH (facenet-pytorch's file or its folder) or a state dict / checkpoint")
    p.add_argument("--workers", type=int, default=d.num_workers, help="DataLoader worker processes")
    p.add_argument("--batches-per-epoch", type=int, help="default: one pass over the training split")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's, i.e. OMP_NUM_THREADS or all cores)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--stop-after-epochs", type=int, help="stop early, as if interrupted (testing)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    return TrainConfig(
        net=a.net, data=a.data or f"data/{a.net}", out=a.out or f"runs/{a.net}", export=a.export, epochs=a.epochs,
        batch_size=a.batch_size, optimizer=a.optimizer, lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay,
        schedule=a.schedule, warmup_epochs=a.warmup_epochs, grad_clip=a.grad_clip or None,
        loss_weights=tuple(a.loss_weights) if a.loss_weights else None,
        ohem_keep=None if a.no_ohem else a.ohem_keep, landmark_head=not a.no_landmark_head,
        flip=not a.no_flip,
        photometric=a.photometric,
        val_fraction=a.val_fraction, threshold=a.threshold, seed=a.seed, device=a.device, amp=not a.no_amp,
        init=a.init, num_workers=a.workers, batches_per_epoch=a.batches_per_epoch, threads=a.threads,
        resume=a.resume, stop_after_epochs=a.stop_after_epochs, progress=not a.no_progress,
    )


if __name__ == "__main__":
    try:
        result = main(parse_args())
    except (ResumeError, FileNotFoundError, FloatingPointError) as e:
        sys.exit(f"python -m trainers.train: error: {e}")
    if result.weights_path is not None and _Dist().main:
        print(f"wrote {result.weights_path}")
