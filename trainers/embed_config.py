"""The embedding trainer's settings: ``EmbedConfig``, its checks and the command line generated from it.

The fields the training loop shares with the detector nets' ``TrainConfig`` (optimizer, schedule,
device, resume, ...) have the same names and meanings; ``python -m trainers.embed --help`` lists all.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from core.cli import parse_config
from core.embednet import BACKBONES, EmbedSpec, iresnet_spec
from core.iresnet import IResNetSpec
from trainers.optim_config import OptimConfig, nest_optim
from trainers.metric_losses import DEFAULT_MARGINS, LOSSES

PROG = "python -m trainers.embed"
# The embedder's optimiser defaults, where they differ from the detector nets'.
EMBED_OPTIM = OptimConfig(weight_decay=5e-4, warmup_epochs=1.0, grad_clip=5.0)
_SPEC = EmbedSpec()


@dataclass(frozen=True)
class EmbedConfig:
    data: str
    """An identity build folder (``make recog-data``: manifest.json + shards); the crop size is read."""
    out: str
    """Output folder: checkpoints/, log.csv, loss_curve.png, embedder.pt."""
    export: str | None = None
    """Also write the final weights to this file."""
    overwrite_shipped: bool = False
    """Allow --export (or --out) in the committed weights/ folder, replacing the shipped embedder;
    without it such a run is refused before any work."""
    loss: str = field(default="triplet", metadata={"choices": LOSSES})
    """triplet (FaceNet: P x K batches, online semi-hard negatives), arcface or cosface (margin softmax).
    The default was chosen on LFW's View 1 (weights/EMBEDDER_CARD.md)."""
    margin: float | None = None
    """The loss's margin; None: 0.2 (triplet, squared distance), 0.5 (arcface, radians), 0.35 (cosface)."""
    scale: float = 32.0
    """Margin softmax: the scale s of the cosine logits."""
    people: int = 32
    """P: identities per batch."""
    per_person: int = 4
    """K: images per identity in a batch (drawn with replacement from people with fewer)."""
    epochs: int = 24
    """Passes over the training images (or batches_per_epoch steps each)."""
    optim: OptimConfig = field(default_factory=lambda: EMBED_OPTIM)
    """The optimiser, learning rate, schedule, warm-up and clipping (``trainers.optim_config``; offered
    flat: --optimizer, --lr, --weight-decay, ...); the embedder's defaults: weight decay 5e-4, one
    epoch's warm-up, gradient norm clipped at 5."""
    backbone: str = field(default="small", metadata={"choices": BACKBONES})
    """The net: small (``core.embednet``, sized for CPU training; --widths and --blocks shape it) or
    arcface_torch's iresnet18/34/50/100 (``core.iresnet``, 24-65 M parameters: for a GPU and a large
    identity set; --dim 512 is arcface_torch's). Every net is built for the build's crop size, so an
    IResNet at its standard 112 px wants a build made with --image-size 112 (make RECOG_SIZE=112):
    the crops are not resized in training, since enlarging 64 px crops would add compute but no detail."""
    widths: tuple[int, int, int, int] = (32, 48, 96, 192)
    """The small net: channels of the stem and the three residual stages (``core.embednet``)."""
    blocks: tuple[int, int, int] = _SPEC.blocks
    """The small net: residual blocks per stage."""
    dim: int = _SPEC.dim
    """Embedding size."""
    dropout: float = _SPEC.dropout
    """Dropout before the embedding layer."""
    flip: bool = True
    """Mirror each training crop with probability 0.5."""
    shift: int = 3
    """Move each training crop by up to this many pixels in x and y (edge pixels repeated)."""
    val_fraction: float = 0.05
    """Share of the identities held out for validation (verification of their pairs each epoch)."""
    seed: int = 0
    """Seeds the initial weights, the split, the batches and the augmentation."""
    device: str = "cpu"
    """cpu or cuda (cuda:N); under torchrun each process takes cuda:LOCAL_RANK."""
    amp: bool = True
    """Mixed precision on CUDA; ignored on CPU."""
    num_workers: int = field(default=1, metadata={"flag": "--workers"})
    """DataLoader worker processes (0: read in the training process)."""
    batches_per_epoch: int | None = None
    """None: one pass over the training images."""
    val_batch_size: int = 512
    """Crops per forward pass in validation (speed and memory only)."""
    threads: int | None = None
    """torch intra-op threads; None: torch's default."""
    resume: bool = False
    """Continue from the latest checkpoint in ``out``."""
    restart: bool = False
    """Delete an earlier run's checkpoints and outputs in ``out`` and start over."""
    stop_after_epochs: int | None = None
    """Stop once this many epochs are done, as if interrupted (for testing resume)."""
    progress: bool = True
    """tqdm bars."""

    net = "embedder"  # the file stem of the weights and the loop's name for this kind of model

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        for flag, ok in (("--people must be >= 2", self.people >= 2), ("--per-person must be >= 2", self.per_person >= 2),
                         ("--epochs must be >= 1", self.epochs >= 1),
                         ("--val-fraction must be in [0, 1)", 0 <= self.val_fraction < 1),
                         ("--seed must be >= 0", self.seed >= 0), ("--workers must be >= 0", self.num_workers >= 0),
                         ("--shift must be >= 0", self.shift >= 0), ("--scale must be > 0", self.scale > 0),
                         ("--batches-per-epoch must be >= 1", (self.batches_per_epoch or 1) >= 1),
                         ("--margin must be >= 0", (self.margin or 0) >= 0),
                         (f"--threads must be >= 0 or none (0: torch's default), got {self.threads}",
                          self.threads is None or self.threads >= 0)):
            if not ok:
                raise ValueError(flag)
        if self.resume and self.restart:
            raise ValueError("--resume and --restart exclude each other: continue the earlier run or start over")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        self.spec(16)  # the net's own checks

    @property
    def batch_size(self) -> int:
        return self.people * self.per_person

    @property
    def loss_margin(self) -> float:
        return DEFAULT_MARGINS[self.loss] if self.margin is None else self.margin

    def spec(self, input_size: int) -> EmbedSpec | IResNetSpec:
        if self.backbone != "small":
            return iresnet_spec(self.backbone, input_size, self.dim, self.dropout)
        return EmbedSpec(input_size=input_size, widths=self.widths, blocks=self.blocks, dim=self.dim,
                         dropout=self.dropout)

    @classmethod
    def tiny(cls, data, out, **changes) -> "EmbedConfig":
        """A few small steps on a tiny build: for tests and the demo."""
        base = dict(data=str(data), out=str(out), epochs=2, people=4, per_person=2, batches_per_epoch=4,
                    widths=(8, 8, 16, 16), dim=16, num_workers=0, val_fraction=0.34,
                    optim=replace(EMBED_OPTIM, warmup_epochs=0.5), progress=False)
        return cls(**{**base, **changes})


def embed_config_from_dict(d: dict) -> EmbedConfig:
    """An ``EmbedConfig`` from ``asdict`` output (a checkpoint's), ignoring fields it no longer has;
    one stored before the optimiser settings were nested holds them flat (``nest_optim``)."""
    known = {f.name for f in fields(EmbedConfig)}
    return EmbedConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in nest_optim(d, EMBED_OPTIM).items()
                          if k in known})


def parse_embed_args(argv=None, description: str | None = None) -> EmbedConfig:
    return parse_config(EmbedConfig, argv, PROG, description)
