"""The embedder as a kind of model for the one training loop (``trainers.train``).

``embed_parts`` builds what the loop needs: the net (with a margin softmax's class centres when the
loss is one), P x K batches of an identity build, the augmentation (mirror, small shifts, seeded
per batch so that resume repeats it), the step sums and log columns, and the validation: the held-
out identities' crops are embedded and their matched pairs and as many seeded mismatched pairs
scored (best-threshold accuracy, AUC, mean distances) after every epoch.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.atomic import atomic_write_json
from core.embednet import EmbedNet, build_net
from core.nets import normalize_images
from core.verification import best_threshold, rates, roc, auc, squared_distances
from lmdb_builders.faces import FACES
from lmdb_builders.identity import IdentityBatchSampler, faces_to_batch, split_identities
from lmdb_builders.reader import ShardDataset, ShardLoader
from lmdb_builders.schema import SchemaError
from trainers.distributed import DistInfo, RankSlice
from trainers.embed_config import EmbedConfig, embed_config_from_dict
from trainers.engine import TIMING_COLUMNS
from trainers.metric_losses import LOSS_COLUMNS, build_loss
from trainers.preflight import PreflightError
from trainers.reporting import plot_curves, write_log
from trainers.parts import Parts

TRAIN_COLUMNS = ("train_loss", "train_acc", "train_active", "grad_norm")
VALIDATION_COLUMNS = ("val_acc", "val_auc", "val_threshold", "val_same_dist", "val_diff_dist", "val_pairs")
LOG_COLUMNS = ("epoch", "lr", *TRAIN_COLUMNS, *VALIDATION_COLUMNS, *TIMING_COLUMNS)
# Step sums: the loss, the loss's own (``metric_losses``: its columns' counts), samples, and what
# the loop adds (gradient norm, steps).
SUMS = ("loss", "samples", "grad_norm", "steps")
MAX_VAL_PAIRS = 3000  # matched pairs scored per epoch (as many mismatched): a stable, quick figure
MAX_VAL_IMAGES = 3000  # held-out crops embedded per epoch (a seeded draw where there are more)


class Embedder(nn.Module):
    """The net and its loss (``metric_losses.build_loss``): what the optimizer trains and a checkpoint
    holds, the net's weights and a margin softmax's class centres (``head.weight``)."""

    def __init__(self, net: EmbedNet, head: nn.Module):
        super().__init__()
        self.net, self.head = net, head


class EmbedWithLoss(nn.Module):
    def __init__(self, model: Embedder):
        super().__init__()
        self.model = model

    def forward(self, batch: dict):
        features = self.model.net.features(normalize_images(batch["image"]))
        labels = batch["identity"]
        loss, sums = self.model.head(features, labels)
        return loss, {"loss": loss.detach(), **sums, "samples": len(labels)}


def shift_batch(images: torch.Tensor, offsets: np.ndarray) -> torch.Tensor:
    """Each NHWC image moved by its (dx, dy) pixels, the edge pixels repeated into the gap."""
    if not len(images) or not np.abs(offsets).max():
        return images
    s = int(np.abs(offsets).max())
    padded = F.pad(images.permute(0, 3, 1, 2).float(), (s, s, s, s), mode="replicate")
    h, w = images.shape[1:3]
    out = torch.stack([padded[i, :, s - dy : s - dy + h, s - dx : s - dx + w] for i, (dx, dy) in enumerate(offsets)])
    return out.round().to(images.dtype).permute(0, 2, 3, 1).contiguous()


class EmbedRecipe:
    """What ``train_one_epoch`` needs to know of the embedder's training (``parts.Recipe``); the
    loss's own sums, columns and progress figures come from the loss."""

    label = "embedder"

    def __init__(self, cfg: EmbedConfig, loss: nn.Module):
        self.cfg, self.loss = cfg, loss
        self.sums = (*SUMS, *loss.sums)

    def prepare(self, batch: dict, epoch: int, batch_index: int, rank: int) -> dict:
        """Mirror and shift, drawn per (seed, epoch, batch, rank)."""
        rng = np.random.default_rng([self.cfg.seed, epoch, batch_index, rank, 2])
        images = batch["image"]
        flip = rng.random(len(images)) < 0.5
        offsets = rng.integers(-self.cfg.shift, self.cfg.shift + 1, (len(images), 2))
        if self.cfg.flip:
            mask = torch.as_tensor(flip, device=images.device)[:, None, None, None]
            images = torch.where(mask, images.flip(2), images)
        if self.cfg.shift:
            images = shift_batch(images, offsets)
        return {**batch, "image": images}

    def postfix(self, s: dict) -> dict:
        return {"loss": f"{s['loss'] / s['steps']:.4f}", **self.loss.postfix(s)}

    def columns(self, s: dict, wait: float, elapsed: float) -> dict:
        return {"train_loss": s["loss"] / s["steps"], **dict.fromkeys(LOSS_COLUMNS, float("nan")),
                **self.loss.columns(s), "grad_norm": s["grad_norm"] / s["steps"],
                "samples_per_s": s["samples"] / elapsed, "data_wait_share": wait / elapsed, "epoch_s": elapsed}


def record_labels(manifest: dict) -> np.ndarray:
    """Every record's identity number: records are in identity order (``prepare.identities``)."""
    counts = [int(n) for _, n in manifest["identities"]]
    if sum(counts) != int(manifest["num_images"]):
        raise SchemaError(f"{manifest['_path']}: its identities hold {sum(counts)} faces, its shards "
                          f"{manifest['num_images']}: rebuild it (make recog-data)")
    return np.repeat(np.arange(len(counts)), counts)


def val_pairs(labels: np.ndarray, seed: int, cap: int = MAX_VAL_PAIRS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, same) positions in ``labels``: matched pairs (at most ``cap``, a seeded draw) and as many
    seeded mismatched ones."""
    rng = np.random.default_rng([seed, 0x7A1])
    i, j = np.triu_indices(len(labels), 1)
    same = labels[i] == labels[j]
    pos = np.flatnonzero(same)
    pos = np.sort(rng.choice(pos, min(cap, len(pos)), replace=False)) if len(pos) else pos
    neg = np.flatnonzero(~same)
    neg = np.sort(rng.choice(neg, min(len(pos), len(neg)), replace=False)) if len(neg) else neg
    chosen = np.concatenate([pos, neg])
    return i[chosen], j[chosen], same[chosen]


@torch.no_grad()
def embed_records(net: EmbedNet, dataset: ShardDataset, indices, batch_size: int, device) -> np.ndarray:
    net.eval()
    out = []
    for start in range(0, len(indices), batch_size):
        recs = dataset.__getitems__(indices[start : start + batch_size])
        out.append(net(normalize_images(torch.from_numpy(np.array(recs["image"]))).to(device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, net.spec.dim), np.float32)


def evaluate_embedder(net: EmbedNet, dataset: ShardDataset, indices, labels, cfg: EmbedConfig, device) -> dict:
    if len(indices) < 2:
        return {c: float("nan") for c in VALIDATION_COLUMNS}
    if len(indices) > MAX_VAL_IMAGES:  # all pairs of a large set would not fit in memory
        indices = np.sort(np.random.default_rng([cfg.seed, 0x7A2]).choice(indices, MAX_VAL_IMAGES, replace=False))
    emb = embed_records(net, dataset, indices, cfg.val_batch_size, device)
    i, j, same = val_pairs(labels[indices], cfg.seed)
    if not same.any() or same.all():
        return {c: float("nan") for c in VALIDATION_COLUMNS}
    dist = squared_distances(emb[i], emb[j])
    threshold = best_threshold(dist, same)
    return {"val_acc": rates(dist, same, threshold)[2], "val_auc": auc(*roc(dist, same)), "val_threshold": threshold,
            "val_same_dist": float(dist[same].mean()), "val_diff_dist": float(dist[~same].mean()),
            "val_pairs": float(len(same))}


def summary(row: dict) -> str:
    return (f"epoch {row['epoch']}: loss {row['train_loss']:.4f} | val acc {row['val_acc']:.3f} auc {row['val_auc']:.3f} "
            f"(same {row['val_same_dist']:.3f}, different {row['val_diff_dist']:.3f}) | "
            f"{row['samples_per_s']:.0f} samples/s, data wait {100 * row['data_wait_share']:.1f}%")


def training_record(manifest: dict, cfg: EmbedConfig) -> dict:
    """The embedder's training record: the build and the LFW people it held, so that ``make eval-lfw``
    can refuse to score pairs of people the embedder saw. It is stored inside ``embedder.pt`` and the
    checkpoints (what eval-lfw reads); ``embedder.json`` beside them is a copy to read."""
    config = manifest.get("config") or {}
    return {"data": str(Path(manifest["_path"]).parent), "data_fingerprint": manifest.get("fingerprint"),
            "lfw_fold_left_out": config.get("fold"), "only_people": config.get("only_people"),
            "identities": len(manifest["identities"]), "faces": int(manifest["num_images"]), "loss": cfg.loss,
            "seed": cfg.seed, "people": sorted(name for name, _ in manifest["identities"]),
            "recipe": training_recipe(cfg),
            "build": {k: v for k, v in config.items() if k not in BUILD_NOT_RECIPE}}


# What is not the recipe: where the data and outputs are, how the run is driven and how fast it goes.
# Two embedders whose records hold the same recipe and build differ only in the people they saw
# (evaluation.lfw_cv refuses to average folds that differ in more).
RUN_NOT_RECIPE = ("data", "out", "export", "overwrite_shipped", "device", "num_workers", "val_batch_size", "threads",
                  "resume", "restart", "stop_after_epochs", "progress")
BUILD_NOT_RECIPE = ("fold", "excluded_people")


def training_recipe(cfg: EmbedConfig) -> dict:
    # The optimiser settings flat, as in the records of embedders trained before they were nested
    # (OptimConfig), so that lfw_cv compares an old fold's recipe with a new one's field by field.
    flat = {**{k: v for k, v in asdict(cfg).items() if k != "optim"}, **asdict(cfg.optim)}
    return {k: v for k, v in flat.items() if k not in RUN_NOT_RECIPE}


def report(history: list[dict], out, record: dict) -> None:
    atomic_write_json(out / "embedder.json", record)
    write_log(history, out / "log.csv", LOG_COLUMNS)
    plot_curves(history, out / "loss_curve.png", "embedder", ["train_loss"], ["val_acc", "val_auc", "train_acc",
                                                                          "train_active"])


def build_size(manifest: dict) -> int:
    sizes = sorted(int(s) for s in manifest["buckets"])
    if len(sizes) != 1:
        raise SchemaError(f"{manifest['_path']}: an identity build holds one crop size, this one {sizes}")
    return sizes[0]


def check_identity_split(cfg: EmbedConfig, manifest: dict, labels: np.ndarray, train_idx, val_idx) -> None:
    """Refuse, before any training, a split that cannot train or validate: fewer than 2 training
    identities (a batch needs two people), ``--people`` above the training identities (the sampler
    would quietly cut the batch), or a validation part without a matched and a mismatched pair
    (its figures would be NaN)."""
    build = Path(manifest["_path"]).parent
    total = len(manifest["identities"])
    train_people = len(np.unique(labels[train_idx]))
    val_counts = np.unique(labels[val_idx], return_counts=True)[1]
    held = f"--val-fraction {cfg.val_fraction:g} holds out {len(val_counts)} of its {total} identities"
    if train_people < 2:
        raise PreflightError(f"{build}: {train_people} identities to train on ({held}); a batch needs at least 2 "
                             "people, and validation 2 more: rebuild it with at least 4 identities"
                             + (" or lower --val-fraction" if len(val_counts) else ""))
    if cfg.people > train_people:
        raise PreflightError(f"--people {cfg.people} is more than the {train_people} identities of {build}'s training "
                             f"part ({held}): use --people {train_people} or fewer")
    if len(val_counts) < 2 or not (val_counts >= 2).any():
        why = ("no held-out identity has 2 faces" if len(val_counts) >= 2 else
               "validation needs at least 2, one of them with 2 faces")
        raise PreflightError(f"{build}: {held}, so its validation pairs would be empty and its figures NaN ({why}): "
                             + ("raise --val-fraction" if total >= 4 else "rebuild it with at least 4 identities"))


def embed_parts(cfg: EmbedConfig, device: torch.device, dist_info: DistInfo) -> Parts:
    from lmdb_builders.manifest import load_manifest

    manifest = load_manifest(cfg.data, FACES.name, FACES.version)
    dataset = ShardDataset(cfg.data, build_size(manifest), spec=FACES)
    labels = record_labels(dataset.manifest)
    train_idx, val_idx = split_identities(labels, cfg.val_fraction, cfg.seed)
    check_identity_split(cfg, manifest, labels, train_idx, val_idx)
    sampler = IdentityBatchSampler(labels, train_idx, cfg.people, cfg.per_person, cfg.seed, cfg.batches_per_epoch)
    torch.manual_seed(cfg.seed)
    net = build_net(cfg.spec(dataset.size))  # the build's crop size: EmbedConfig.backbone says why
    loss = build_loss(cfg, len(manifest["identities"]))  # a margin softmax's centres: drawn after the net's weights
    model = Embedder(net, loss).to(device, memory_format=torch.channels_last)
    record = training_record(manifest, cfg)  # inside embedder.pt and every checkpoint; embedder.json: a copy
    loader = ShardLoader(dataset, RankSlice(sampler, dist_info.rank, dist_info.world), num_workers=cfg.num_workers,
                         pin_memory=device.type == "cuda", persistent_workers=cfg.num_workers > 0, seed=cfg.seed,
                         to_batch=faces_to_batch)
    return Parts(model=model, loss_model=EmbedWithLoss(model), recipe=EmbedRecipe(cfg, model.head), sampler=sampler,
                 loader=loader, data_fingerprint=str(manifest.get("fingerprint", "")),
                 evaluate=lambda: evaluate_embedder(net, dataset, val_idx, labels, cfg, device),
                 report=lambda history, out: report(history, out, record), summary=summary, result=lambda m: m.net,
                 config_from_dict=embed_config_from_dict, record=record)
