"""The optimiser and learning-rate settings both trainers share: ``OptimConfig``, nested in
``trainers.config.TrainConfig`` and ``trainers.embed_config.EmbedConfig`` (each with its own
defaults; the command line offers its fields flat: ``--lr``, ``--weight-decay``, ...).

``nest_optim`` reads them out of a config dict stored before they were nested (a checkpoint's), so
that such a run still resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = field(default="sgd", metadata={"choices": OPTIMIZERS})
    """sgd (momentum, Nesterov) or adamw."""
    lr: float = 0.1
    """Peak learning rate (reached after the warm-up); see docs/experiments.md ("The training schedule") for how
    the detector nets' was chosen."""
    momentum: float = 0.9
    """SGD momentum (Nesterov when above 0); unused by adamw."""
    weight_decay: float = 1e-4
    """Applied to conv and dense weights (and a margin softmax's class centres) only, not to biases, batch norm
    or PReLU slopes."""
    schedule: str = field(default="cosine", metadata={"choices": SCHEDULES})
    """cosine (to 0), step (x0.1 at 50% and 75% of the steps) or constant; per step, after the warm-up."""
    warmup_epochs: float = 0.5
    """Linear warm-up from lr / steps to lr over this many epochs."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this (None or 0: off); the mean norm before clipping is logged."""

    def __post_init__(self):
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        # "not x > 0" rather than "x <= 0": NaN is refused too.
        for flag, value, ok, rule in (("--lr", self.lr, self.lr > 0, "> 0"),
                                      ("--warmup-epochs", self.warmup_epochs, self.warmup_epochs >= 0, ">= 0"),
                                      ("--momentum", self.momentum, self.momentum >= 0, ">= 0"),
                                      ("--weight-decay", self.weight_decay, self.weight_decay >= 0, ">= 0")):
            if not ok:
                raise ValueError(f"{flag} must be {rule}, got {value}")
        if self.grad_clip is not None and not self.grad_clip >= 0:
            raise ValueError(f"--grad-clip must be positive, 0 or none, got {self.grad_clip}")
        # One spelling per meaning, so that a resume compares like with like.
        object.__setattr__(self, "grad_clip", self.grad_clip or None)


OPTIM_FIELDS = tuple(f.name for f in fields(OptimConfig))


def nest_optim(d: dict, default: OptimConfig) -> dict:
    """A stored config dict with its optimiser settings under ``optim``: a dict written before they
    were nested holds them flat, each missing one taking ``default``'s value."""
    if "optim" in d:
        return {**d, "optim": OptimConfig(**{k: v for k, v in d["optim"].items() if k in OPTIM_FIELDS})}
    flat = {k: d[k] for k in OPTIM_FIELDS if k in d}
    rest = {k: v for k, v in d.items() if k not in OPTIM_FIELDS}
    return {**rest, "optim": OptimConfig(**{**_values(default), **flat})}


def _values(cfg: OptimConfig) -> dict:
    return {name: getattr(cfg, name) for name in OPTIM_FIELDS}
