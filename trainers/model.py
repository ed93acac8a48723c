"""The net to train (seeded, optionally from earlier weights), its optimizer and learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from core.nets import build_net, load_state
from core.weights import WeightsError, load_state_dict, parse_weights
from trainers.config import TrainConfig


def init_model(cfg: TrainConfig) -> nn.Module:
    """The net, seeded with ``cfg.seed``, initialised as ``cfg.init`` says.

    Weights that cannot be used (missing, empty, truncated, corrupt, not finite, another net's or
    another shape) raise ``WeightsError``, one line naming ``--init`` and the file."""
    torch.manual_seed(cfg.seed)
    model = build_net(cfg.net, landmark_head=cfg.landmark_head)
    if cfg.init != "scratch":
        try:
            path = parse_weights(cfg.init).net_file(cfg.net)
        except ValueError as e:
            raise WeightsError(f"--init {cfg.init}: {e}") from None
        if not path.is_file():
            raise WeightsError(f"--init {cfg.init}: {path} does not exist")
        try:
            load_state(model, cfg.net, load_state_dict(path, net=cfg.net))
        except WeightsError as e:
            raise WeightsError(f"--init {cfg.init}: {e}") from None
        except ValueError as e:  # fits the net, but not --no-landmark-head's
            raise WeightsError(f"--init {cfg.init}: {path}: {e}") from None
    return model


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


def build_optimizer(model: nn.Module, cfg, steps_per_epoch: int):
    """Optimizer (weight decay on weights of rank >= 2 only) and its per-step LambdaLR schedule, as
    ``cfg.optim`` says over ``cfg.epochs``."""
    optim = cfg.optim
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if optim.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, nesterov=optim.momentum > 0)
    else:
        opt = torch.optim.AdamW(groups, lr=optim.lr)
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(optim.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        return lr_factor(step, total, warmup, optim.schedule)

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
