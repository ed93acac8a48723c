"""One training epoch and one validation pass, with their statistics as named running sums.

``train_one_epoch`` returns the log's ``lr``, ``TRAIN_COLUMNS`` and ``TIMING_COLUMNS``;
``evaluate`` returns ``VALIDATION_COLUMNS`` (``trainers.reporting`` writes them to log.csv).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from core.nets import normalize_images
from lmdb_builders.reader import ShardDataset, records_to_batch
from trainers.augment import flip_mask, hflip_batch, photometric_batch, photometric_params
from trainers.config import TrainConfig
from trainers.distributed import DistInfo
from trainers.losses import LossWeights, Wing, flatten_output, multitask_loss, sample_losses

TRAIN_COLUMNS = ("train_loss", "train_cls", "train_box", "train_landmark", "train_acc", "train_kept", "grad_norm")
VALIDATION_COLUMNS = ("val_loss", "val_cls", "val_box", "val_landmark", "val_acc", "val_recall", "val_fpr")
TIMING_COLUMNS = ("samples_per_s", "data_wait_share", "epoch_s")

# Running sums of a training epoch: loss terms and gradient norm per step (means divide by steps),
# classification hits on the samples with label >= 0 (before OHEM), steps and samples.
TRAIN_SUMS = ("loss", "cls", "box", "landmark", "grad_norm", "kept", "correct", "n_cls", "steps", "samples")
# Of a validation pass: each loss term's sum and sample count, hits, and threshold counts.
VALIDATION_SUMS = ("cls", "n_cls", "box", "n_box", "landmark", "n_landmark", "correct",
                   "true_pos", "n_pos", "false_pos", "n_neg")


class RunningSums:
    """Named float64 sums in one tensor on the training device: adding costs no host sync, and one
    all-reduce sums them over the processes."""

    def __init__(self, names: tuple[str, ...], device=torch.device("cpu")):
        self.names = names
        self.values = torch.zeros(len(names), dtype=torch.float64, device=device)

    def add(self, **terms) -> None:
        """Add one value (a number or a 0-d tensor) to every sum."""
        if terms.keys() != set(self.names):
            raise KeyError(f"expected {self.names}, got {tuple(terms)}")
        self.values += torch.stack([_float64(terms[n], self.values.device) for n in self.names])

    def all_reduce(self) -> None:
        dist.all_reduce(self.values)

    def totals(self) -> dict[str, float]:
        return dict(zip(self.names, self.values.tolist()))


class NetWithLoss(nn.Module):
    """The net and its loss in one forward: ``(loss, named step sums)`` (``TRAIN_SUMS`` less the
    ones ``train_one_epoch`` adds itself), as ``train_one_epoch`` takes from any kind of model.

    Wrapped in DistributedDataParallel, its output holds the loss itself, so DDP's search for unused
    parameters starts from what backward really reaches: a head whose term is the unconnected 0
    (a rank's share of a batch without box or landmark samples) is marked unused for that step.
    """

    def __init__(self, net: nn.Module, weights: LossWeights, ohem_keep: float | None, wing: Wing | None = None):
        super().__init__()
        self.net, self.weights, self.ohem_keep, self.wing = net, weights, ohem_keep, wing

    def forward(self, batch: dict):
        output = self.net(normalize_images(batch["image"]))
        terms = multitask_loss(output, batch, self.weights, self.ohem_keep, self.wing)
        with torch.no_grad():
            logits = flatten_output(output).logits
            cls = batch["label"] >= 0
            sums = {"loss": terms.total, "cls": terms.cls, "box": terms.box, "landmark": terms.landmark,
                    "kept": terms.kept, "correct": (logits.argmax(1) == batch["label"])[cls].sum(), "n_cls": cls.sum(),
                    "samples": len(cls)}
        return terms.total, sums


class DetectorRecipe:
    """What ``train_one_epoch`` needs to know of the detector nets' training: the step sums, the
    batch augmentation, the log's columns and the progress bar's figures."""

    sums = TRAIN_SUMS

    def __init__(self, cfg: TrainConfig):
        self.cfg, self.label = cfg, cfg.net

    def prepare(self, batch: dict, epoch: int, batch_index: int, rank: int) -> dict:
        return augment(batch, self.cfg, epoch, batch_index, rank)

    @staticmethod
    def postfix(s: dict) -> dict:
        return {"loss": f"{s['loss'] / s['steps']:.4f}", "acc": f"{s['correct'] / max(1.0, s['n_cls']):.3f}"}

    @staticmethod
    def columns(s: dict, wait: float, elapsed: float) -> dict:
        return _train_columns(s, wait, elapsed)


# -- training ------------------------------------------------------------------------------------
def train_one_epoch(model: nn.Module, loader, optimizer, scheduler, scaler, cfg, device,
                    dist_info: DistInfo, epoch: int, first_batch: int = 0, recipe=None) -> dict:
    """One pass over the loader's batches with ``model`` a module whose forward takes the batch and
    returns ``(loss, step sums)`` (``NetWithLoss``, or DDP of one); ``recipe`` (default
    ``DetectorRecipe(cfg)``) names the sums, augments the batch and makes the log's columns."""
    recipe = recipe or DetectorRecipe(cfg)
    model.train()
    sums = RunningSums(recipe.sums, device)
    bar = tqdm(total=len(loader), desc=f"{recipe.label} {epoch + 1}/{cfg.epochs}", dynamic_ncols=True, leave=False,
               disable=not (cfg.progress and dist_info.main))
    wait = 0.0
    start = time.perf_counter()
    it = iter(loader)
    for step in range(len(loader)):
        t = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - t
        # Augment on the device: a GPU mirrors a batch far faster than the host does.
        batch = recipe.prepare(_to_device(batch, device), epoch, first_batch + step, dist_info.rank)
        with _autocast(device, cfg):
            loss, step_sums = model(batch)
        grad_norm = _optimizer_step(loss, model, optimizer, scheduler, scaler, cfg.grad_clip)
        with torch.no_grad():
            sums.add(**step_sums, grad_norm=grad_norm, steps=1.0)
        if step % 10 == 9 or step == len(loader) - 1:
            _check_and_show(sums.totals(), bar, step, epoch, cfg, recipe, optimizer.param_groups[0]["lr"])
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timing = torch.tensor([wait, time.perf_counter() - start], dtype=torch.float64, device=device)
    if dist_info.on:
        sums.all_reduce()
        dist.all_reduce(timing)
        timing /= dist_info.world
    return {"lr": optimizer.param_groups[0]["lr"], **recipe.columns(sums.totals(), *timing.tolist())}


def augment(batch: dict, cfg: TrainConfig, epoch: int, batch_index: int, rank: int) -> dict:
    """Mirroring and photometric changes, drawn per (seed, epoch, batch, rank): a resumed run
    changes the same samples in the same way."""
    if cfg.flip:
        rng = np.random.default_rng([cfg.seed, epoch, batch_index, rank])
        batch = hflip_batch(batch, flip_mask(batch["kind"], rng))
    if cfg.photometric:  # its own stream, so turning it on or off leaves the mirroring draws alone
        rng = np.random.default_rng([cfg.seed, epoch, batch_index, rank, 1])
        batch = photometric_batch(batch, photometric_params(len(batch["kind"]), rng))
    return batch


def _optimizer_step(loss: torch.Tensor, model: nn.Module, optimizer, scheduler, scaler,
                    grad_clip: float | None) -> torch.Tensor:
    """Backward, clip, step; returns the global gradient norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return grad_norm


def _check_and_show(s: dict, bar, step: int, epoch: int, cfg, recipe, lr: float) -> None:
    if not math.isfinite(s["loss"]):
        raise FloatingPointError(f"{recipe.label}: the loss is {s['loss']} in epoch {epoch + 1} by step {step + 1}; "
                                 f"lower --lr (now {cfg.lr}) or set --grad-clip")
    bar.set_postfix(**recipe.postfix(s), lr=f"{lr:.2e}", refresh=False)
    bar.update(step + 1 - bar.n)


def _train_columns(s: dict, wait: float, elapsed: float) -> dict:
    steps = s["steps"]  # summed over the processes
    return {
        "train_loss": s["loss"] / steps, "train_cls": s["cls"] / steps, "train_box": s["box"] / steps,
        "train_landmark": s["landmark"] / steps, "train_acc": s["correct"] / max(1.0, s["n_cls"]),
        "train_kept": s["kept"] / steps, "grad_norm": s["grad_norm"] / steps,
        "samples_per_s": s["samples"] / elapsed, "data_wait_share": wait / elapsed, "epoch_s": elapsed,
    }


# -- validation ----------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: nn.Module, dataset: ShardDataset, indices, cfg: TrainConfig, device=torch.device("cpu")) -> dict:
    """Losses (no OHEM), accuracy on pos+neg, recall / false-positive rate at the stage threshold, in order."""
    model.eval()
    indices = np.sort(np.asarray(indices, dtype=np.int64))
    sums = RunningSums(VALIDATION_SUMS, device)
    for start in range(0, len(indices), cfg.val_batch_size):
        batch = _to_device(records_to_batch(dataset.__getitems__(indices[start:start + cfg.val_batch_size])), device)
        with _autocast(device, cfg):
            output = model(normalize_images(batch["image"]))
        sums.add(**_validation_sums(output, batch, cfg.stage_threshold))
    return _validation_columns(sums.totals(), cfg.weights, len(indices))


def _validation_sums(output, batch: dict, threshold: float) -> dict:
    per = sample_losses(output, batch)
    logits = flatten_output(output).logits.float()
    p_face = torch.softmax(logits, 1)[:, 1]
    label = batch["label"]
    pos, neg = label == 1, label == 0
    cls = pos | neg
    lm = per.landmark if per.landmark is not None else per.box.new_zeros(0)
    return {"cls": per.cls.sum(), "n_cls": len(per.cls), "box": per.box.sum(), "n_box": len(per.box),
            "landmark": lm.sum(), "n_landmark": len(lm), "correct": (logits.argmax(1) == label)[cls].sum(),
            "true_pos": (p_face[pos] >= threshold).sum(), "n_pos": pos.sum(),
            "false_pos": (p_face[neg] >= threshold).sum(), "n_neg": neg.sum()}


def _validation_columns(s: dict, weights: LossWeights, n_samples: int) -> dict:
    def ratio(a, b):
        return float(a / b) if b else float("nan")

    terms = {name: ratio(s[name], s[f"n_{name}"]) for name in ("cls", "box", "landmark")}
    # A term without carrying samples counts 0 (as in training); a NaN loss stays NaN.
    total = sum(w * (terms[name] if s[f"n_{name}"] else 0.0)
                for w, name in zip((weights.det, weights.box, weights.landmark), terms))
    return {"val_loss": float(total) if n_samples else float("nan"), "val_cls": terms["cls"],
            "val_box": terms["box"], "val_landmark": terms["landmark"], "val_acc": ratio(s["correct"], s["n_cls"]),
            "val_recall": ratio(s["true_pos"], s["n_pos"]), "val_fpr": ratio(s["false_pos"], s["n_neg"])}


# -- helpers -------------------------------------------------------------------------------------
def _float64(value, device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device=device, dtype=torch.float64)
    return torch.tensor(value, dtype=torch.float64, device=device)


def _autocast(device: torch.device, cfg):
    if device.type == "cuda" and cfg.amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.amp.autocast("cuda", dtype=dtype)
    return nullcontext()


def _to_device(batch: dict, device: torch.device) -> dict:
    if device.type != "cuda":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
