"""P-Net, R-Net and O-Net as a kind of model for the one training loop (``trainers.train``).

``detector_parts`` builds what the loop needs: the net of ``cfg.net``, a build's mixed-kind
batches (``MixedKindBatchSampler``) with a per-kind share held out, the masked multi-task loss with
OHEM (``NetWithLoss``, ``trainers.losses``), the augmentation (mirroring, photometric changes,
seeded per batch), the step sums and log columns (``DetectorRecipe``) and the validation after
every epoch (``evaluate_detector``: losses, accuracy, recall and false-positive rate at the stage
threshold).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from core.nets import INPUT_SIZES, normalize_images
from lmdb_builders.reader import (MixedKindBatchSampler, ShardDataset, ShardLoader, records_to_batch,
                                  split_by_kind)
from trainers.augment import flip_mask, hflip_batch, photometric_batch, photometric_params
from trainers.config import TrainConfig, config_from_dict
from trainers.distributed import DistInfo, RankSlice
from trainers.engine import TIMING_COLUMNS, evaluate
from trainers.losses import LossWeights, Wing, flatten_output, multitask_loss, sample_losses
from trainers.model import init_model
from trainers.parts import Parts
from trainers.preflight import check_kinds
from trainers.reporting import report_epoch, summary

TRAIN_COLUMNS = ("train_loss", "train_cls", "train_box", "train_landmark", "train_acc", "train_kept", "grad_norm")
VALIDATION_COLUMNS = ("val_loss", "val_cls", "val_box", "val_landmark", "val_acc", "val_recall", "val_fpr")
LOG_COLUMNS = ("epoch", "lr", *TRAIN_COLUMNS, *VALIDATION_COLUMNS, *TIMING_COLUMNS)

# Running sums of a training epoch: loss terms and gradient norm per step (means divide by steps),
# classification hits on the samples with label >= 0 (before OHEM), steps and samples.
TRAIN_SUMS = ("loss", "cls", "box", "landmark", "grad_norm", "kept", "correct", "n_cls", "steps", "samples")
# Of a validation pass: each loss term's sum and sample count, hits, and threshold counts.
VALIDATION_SUMS = ("cls", "n_cls", "box", "n_box", "landmark", "n_landmark", "correct",
                   "true_pos", "n_pos", "false_pos", "n_neg")


def detector_parts(cfg: TrainConfig, device: torch.device, dist_info: DistInfo) -> Parts:
    """P-Net, R-Net or O-Net on a build's mixed-kind batches, with the multi-task loss."""
    # channels_last: normalize_images already yields NHWC-strided input; 5-30% faster on CPU.
    model = init_model(cfg).to(device, memory_format=torch.channels_last)
    dataset = ShardDataset(cfg.data, INPUT_SIZES[cfg.net])
    train_idx, val_idx = split_by_kind(dataset.kinds, cfg.val_fraction, cfg.seed)
    check_kinds(cfg, dataset.manifest, dataset.size, train_idx, val_idx)
    val_all = np.sort(np.concatenate([v for v in val_idx.values()]))
    sampler = MixedKindBatchSampler(train_idx, cfg.batch_size, ratio=cfg.batch_ratio,
                                    seed=cfg.seed, batches_per_epoch=cfg.batches_per_epoch)
    # Workers return raw record arrays; decoding (and pinning on CUDA) happen in this process.
    loader = ShardLoader(dataset, RankSlice(sampler, dist_info.rank, dist_info.world), num_workers=cfg.num_workers,
                         pin_memory=device.type == "cuda", persistent_workers=cfg.num_workers > 0, seed=cfg.seed)
    return Parts(model=model, loss_model=NetWithLoss(model, cfg.weights, cfg.ohem_keep, cfg.wing),
                 recipe=DetectorRecipe(cfg), sampler=sampler, loader=loader,
                 data_fingerprint=str(dataset.manifest.get("fingerprint", "")),
                 evaluate=lambda: evaluate_detector(model, dataset, val_all, cfg, device),
                 report=lambda history, out: report_epoch(history, out, cfg.net, LOG_COLUMNS), summary=summary,
                 config_from_dict=config_from_dict)


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
    """What ``train_one_epoch`` needs to know of the detector nets' training (``parts.Recipe``): the
    step sums, the batch augmentation, the log's columns and the progress bar's figures."""

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
        steps = s["steps"]  # summed over the processes
        return {
            "train_loss": s["loss"] / steps, "train_cls": s["cls"] / steps, "train_box": s["box"] / steps,
            "train_landmark": s["landmark"] / steps, "train_acc": s["correct"] / max(1.0, s["n_cls"]),
            "train_kept": s["kept"] / steps, "grad_norm": s["grad_norm"] / steps,
            "samples_per_s": s["samples"] / elapsed, "data_wait_share": wait / elapsed, "epoch_s": elapsed,
        }


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


# -- validation ----------------------------------------------------------------------------------
def evaluate_detector(model: nn.Module, dataset: ShardDataset, indices, cfg: TrainConfig,
                      device=torch.device("cpu")) -> dict:
    """Losses (no OHEM), accuracy on pos+neg, recall / false-positive rate at the stage threshold, in order."""
    indices = np.sort(np.asarray(indices, dtype=np.int64))
    batches = (records_to_batch(dataset.__getitems__(indices[start:start + cfg.val_batch_size]))
               for start in range(0, len(indices), cfg.val_batch_size))
    totals = evaluate(model, batches, lambda batch: normalize_images(batch["image"]),
                      lambda output, batch: _validation_sums(output, batch, cfg.stage_threshold),
                      VALIDATION_SUMS, cfg, device)
    return _validation_columns(totals, cfg.weights, len(indices))


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
