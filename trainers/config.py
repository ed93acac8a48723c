"""The trainer's settings: ``TrainConfig``, its checks, and the command line generated from it.

Every field's docstring is its ``--help`` (``core.cli``); ``python -m trainers.train --help``
lists them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from core.cli import config_from_namespace, config_parser
from core.nets import EXTRA_HEAD_PREFIX, NET_NAMES
from detector.cascade import DetectorConfig
from lmdb_builders.reader import PAPER_RATIO, kind_quotas
from lmdb_builders.schema import Kind
from trainers.losses import DEFAULT_LOSS_WEIGHTS, DEFAULT_OHEM_KEEP, LossWeights, Wing
from trainers.optim_config import OptimConfig, nest_optim

# Validation recall / false positives are counted at the detector's stage thresholds.
DEFAULT_THRESHOLDS = dict(zip(NET_NAMES, DetectorConfig().thresholds))
PROG = "python -m trainers.train"
PAPER_KIND_RATIO = tuple(float(PAPER_RATIO[kind]) for kind in sorted(Kind))
LANDMARK_LOSSES = ("mse", "wing")
RATIO_NAMES = {Kind.NEGATIVE: "negative", Kind.POSITIVE: "positive", Kind.PART: "part", Kind.LANDMARK: "landmark"}


@dataclass(frozen=True)
class TrainConfig:
    net: str = field(metadata={"choices": NET_NAMES})
    """pnet, rnet or onet."""
    data: str | None = None
    """A build folder (``manifest.json`` + ``<size>/shard-*.lmdb``); the net's input size is read.
    None: data/<net>."""
    out: str | None = None
    """Output folder: checkpoints/, log.csv, loss_curve.png, <net>.pt. None: runs/<net>."""
    export: str | None = None
    """Also write the final weights (the plain state dict) to this file, e.g. the folder the detector reads."""
    overwrite_shipped: bool = False
    """Allow --export (or --out) in the committed weights/ folder, replacing the shipped weights;
    without it such a run is refused before any work."""
    epochs: int = 16
    """Passes over the training split (or ``batches_per_epoch`` steps each)."""
    batch_size: int = 384
    """Samples per optimizer step, over all processes together."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """The optimiser, learning rate, schedule, warm-up and clipping (``trainers.optim_config``; offered
    flat: --optimizer, --lr, --momentum, --weight-decay, --schedule, --warmup-epochs, --grad-clip)."""
    loss_weights: tuple[float, float, float] | None = None
    """det, box, landmark; None: 1/0.5/0.5 (P-Net, R-Net), 1/0.5/1 (O-Net)."""
    landmark_loss: str = field(default="mse", metadata={"choices": LANDMARK_LOSSES})
    """mse, or wing (Feng et al., CVPR 2018: logarithmic below --wing-width, linear beyond). Its term
    is far larger than MSE's for the same error, so it wants a smaller landmark weight. Validation
    always reports the landmark MSE, so runs with either loss compare."""
    wing_width: float = Wing.width
    """Wing loss's w, a fraction of the crop's side (0.15: the paper's 10 px of a 64-px input)."""
    wing_epsilon: float = Wing.epsilon
    """Wing loss's epsilon, a fraction of the crop's side (0.03: the paper's 2 px of 64)."""
    kind_ratio: tuple[float, float, float, float] = PAPER_KIND_RATIO
    """negative, positive, part, landmark: each kind's share of a batch (the paper's 3 / 1 / 1 / 2).
    A larger positive share moves the face probabilities up, as a lower stage threshold would."""
    ohem_keep: float | None = DEFAULT_OHEM_KEEP
    """Share of each batch's classification losses that count (largest first); None: all."""
    landmark_head: bool = True
    """Train P-Net's / R-Net's optional landmark head (O-Net always has one)."""
    flip: bool = True
    """Mirror each training sample but landmark ones with probability 0.5 (``trainers.augment``)."""
    photometric: bool = False
    """Blur, saturation, contrast and brightness changes of each training sample (``trainers.augment``).
    Off by default; see docs/experiments.md."""
    val_fraction: float = 0.05
    """Share of each kind held out of the shards for validation."""
    threshold: float | None = None
    """Face probability at which validation recall / false positives are counted; None: the
    detector's threshold for this stage (``DetectorConfig.thresholds``)."""
    seed: int = 0
    """Seeds the initial weights, the validation split, the batch order and the augmentation draws."""
    device: str = "cpu"
    """cpu or cuda (cuda:N); under torchrun each process takes cuda:LOCAL_RANK."""
    amp: bool = True
    """Mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling); ignored on CPU."""
    init: str = "scratch"
    """scratch, original:PATH (facenet-pytorch's <net>.pt, or the folder holding it) or PATH (a state
    dict or checkpoint of this trainer)."""
    num_workers: int = field(default=1, metadata={"flag": "--workers"})
    """DataLoader worker processes (0: read in the training process)."""
    batches_per_epoch: int | None = None
    """None: one pass over the training split's kinds (per the sampler)."""
    val_batch_size: int = 1024
    """Samples per forward pass in validation (speed and memory only)."""
    threads: int | None = None
    """torch intra-op threads. None: torch's default (OMP_NUM_THREADS, else all cores), less one per
    DataLoader worker for P-Net, whose steps are so short that a worker needs a core of its own."""
    resume: bool = False
    """Continue from the latest checkpoint in ``out`` (starts afresh when there is none)."""
    restart: bool = False
    """Delete the checkpoints and outputs an earlier run left in ``out`` and start over. Without
    --resume or --restart, an ``out`` holding checkpoints is refused rather than overwritten."""
    stop_after_epochs: int | None = None
    """Stop once this many epochs are done, as if interrupted (for testing resume)."""
    progress: bool = True
    """tqdm bars."""

    def __post_init__(self):
        if self.net not in NET_NAMES:
            raise ValueError(f"net must be one of {NET_NAMES}, got {self.net!r}")
        if self.landmark_loss not in LANDMARK_LOSSES:
            raise ValueError(f"--landmark-loss must be mse or wing, got {self.landmark_loss!r}")
        try:
            Wing(self.wing_width, self.wing_epsilon)  # its own check, run whichever landmark loss is chosen
        except ValueError as e:
            raise ValueError(f"--wing-width, --wing-epsilon: {e}") from None
        for flag, value, ok, rule in (
                ("--epochs", self.epochs, self.epochs >= 1, ">= 1"),
                ("--batch-size", self.batch_size, self.batch_size >= 2,
                 ">= 2 (a batch needs a negative and a positive)"),
                ("--val-fraction", self.val_fraction, 0 < self.val_fraction < 1, "between 0 and 1 (exclusive)"),
                ("--seed", self.seed, self.seed >= 0, ">= 0"),
                ("--workers", self.num_workers, self.num_workers >= 0, ">= 0 (0: read in the training process)"),
                ("--batches-per-epoch", self.batches_per_epoch, _none_or_at_least(self.batches_per_epoch, 1),
                 ">= 1 or none"),
                ("--val-batch-size", self.val_batch_size, self.val_batch_size >= 1, ">= 1"),
                ("--threads", self.threads, _none_or_at_least(self.threads, 0), ">= 0 or none"),
                ("--threshold", self.threshold, self.threshold is None or 0 <= self.threshold <= 1,
                 "between 0 and 1 or none"),
                ("--stop-after-epochs", self.stop_after_epochs, _none_or_at_least(self.stop_after_epochs, 1),
                 ">= 1 or none")):
            if not ok:
                raise ValueError(f"{flag} must be {rule}, got {value}")
        if self.resume and self.restart:
            raise ValueError("--resume and --restart exclude each other: continue the earlier run or start over")
        if self.ohem_keep is not None and not 0.0 < self.ohem_keep <= 1.0:
            raise ValueError(f"--ohem-keep must be in (0, 1] or none, got {self.ohem_keep}")
        object.__setattr__(self, "kind_ratio", tuple(float(r) for r in self.kind_ratio))
        if len(self.kind_ratio) != 4 or min(self.kind_ratio) < 0 or sum(self.kind_ratio[:2]) == 0:
            raise ValueError("--kind-ratio needs four shares >= 0 (negative, positive, part, landmark), "
                             f"negatives or positives among them, got {' '.join(map(str, self.kind_ratio))}")
        if self.loss_weights is not None:
            object.__setattr__(self, "loss_weights", tuple(float(w) for w in self.loss_weights))
            if len(self.loss_weights) != 3:
                raise ValueError("loss_weights needs three values: det, box, landmark")
            given = " ".join(f"{w:g}" for w in self.loss_weights)
            if not all(math.isfinite(w) and w >= 0 for w in self.loss_weights):
                raise ValueError(f"--loss-weights needs three finite weights >= 0 (det, box, landmark), got {given}")
            if not any(self.loss_weights):
                raise ValueError(f"--loss-weights {given} weighs every term 0, so nothing would be trained: "
                                 "give at least the det term a weight > 0")
        self._check_batches()
        # One spelling per meaning, so that a resume compares like with like.
        object.__setattr__(self, "data", self.data or f"data/{self.net}")
        object.__setattr__(self, "out", self.out or f"runs/{self.net}")

    def _check_batches(self) -> None:
        """Refuse a kind ratio or batch size that gives a weighted loss term no sample in a batch:
        classification needs negatives and positives, box regression positives or part faces (the
        landmark term's kind depends on the build, ``trainers.preflight.check_kind_ratio``)."""
        weights, ratio = self.weights, dict(zip(sorted(Kind), self.kind_ratio))
        needs = []  # (term, its weight's name, the kinds it needs: all of them, or any one)
        if weights.det > 0:
            needs.append(("the classification loss", "det", (Kind.NEGATIVE, Kind.POSITIVE), all))
        if weights.box > 0:
            needs.append(("the box loss", "box", (Kind.POSITIVE, Kind.PART), any))
        shares = " ".join(f"{r:g}" for r in self.kind_ratio)
        for term, weight, kinds, rule in needs:
            if not rule(ratio[k] > 0 for k in kinds):
                missing = " or ".join(RATIO_NAMES[k] for k in kinds if not ratio[k])
                names = (" and " if rule is all else " or ").join(RATIO_NAMES[k] for k in kinds)
                raise ValueError(f"--kind-ratio {shares} gives no {missing} samples, and {term} ({weight} weight "
                                 f"{getattr(weights, weight):g}, --loss-weights) needs {names} samples: give them a "
                                 "share, or weigh the term 0")
        needed = {k for _, _, kinds, rule in needs if rule is all for k in kinds}
        if weights.box > 0 and not ratio[Kind.POSITIVE]:
            needed.add(Kind.PART)
        head = EXTRA_HEAD_PREFIX[self.net] is None or self.landmark_head
        if weights.landmark > 0 and ratio[Kind.LANDMARK] and head:
            needed.add(Kind.LANDMARK)
        starved = _starved(self.batch_size, ratio, needed)
        if starved:
            least = next(n for n in range(self.batch_size + 1, 1 << 20) if not _starved(n, ratio, needed))
            raise ValueError(f"--batch-size {self.batch_size} is too small for --kind-ratio {shares}: a batch would "
                             f"hold no {' or '.join(RATIO_NAMES[k] for k in sorted(starved))} sample; use at least "
                             f"{least}")

    @property
    def batch_ratio(self) -> dict:
        """``kind_ratio`` keyed by sample kind, as ``MixedKindBatchSampler`` takes it."""
        return dict(zip(sorted(Kind), self.kind_ratio))

    @property
    def weights(self) -> LossWeights:
        return LossWeights(*self.loss_weights) if self.loss_weights else DEFAULT_LOSS_WEIGHTS[self.net]

    @property
    def wing(self) -> Wing | None:
        """The Wing loss's widths when the landmark loss is wing; None: MSE."""
        return Wing(self.wing_width, self.wing_epsilon) if self.landmark_loss == "wing" else None

    @property
    def stage_threshold(self) -> float:
        return DEFAULT_THRESHOLDS[self.net] if self.threshold is None else self.threshold

    @classmethod
    def tiny(cls, net: str, data, out, **changes) -> "TrainConfig":
        """A few small steps on a tiny build: for tests and the demo."""
        base = dict(net=net, data=str(data), out=str(out), epochs=2, batch_size=64, batches_per_epoch=6,
                    num_workers=0, val_fraction=0.2, val_batch_size=256, progress=False)
        return cls(**{**base, **changes})


def _starved(batch_size: int, ratio: dict, needed: set) -> set:
    """The ``needed`` kinds that ``batch_size`` samples split by ``ratio`` give no sample."""
    if not any(r > 0 for r in ratio.values()):
        return set(needed)
    quotas = kind_quotas(batch_size, ratio, {k: (0,) for k in ratio})
    return {k for k in needed if quotas.get(k, 0) < 1}


def _none_or_at_least(value, least) -> bool:
    return value is None or value >= least


# Fields that may differ between a run and its resumption (they do not change the arithmetic).
RESUMABLE_CHANGES = {"data", "out", "export", "overwrite_shipped", "device", "num_workers", "val_batch_size", "threads", "resume",
                     "restart", "stop_after_epochs", "progress"}


def config_from_dict(d: dict) -> TrainConfig:
    """A ``TrainConfig`` from ``asdict`` output (a checkpoint's), ignoring fields it no longer has;
    one stored before the optimiser settings were nested holds them flat (``nest_optim``)."""
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in nest_optim(d, OptimConfig()).items() if k in known})


def parse_args(argv=None, prog: str = PROG, description: str | None = None) -> TrainConfig:
    """``TrainConfig`` from the command line: one option per field, and ``--no-ohem``."""
    parser = config_parser(TrainConfig, prog, description)
    parser.add_argument("--no-ohem", action="store_true", help="every classification loss counts (--ohem-keep none)")
    ns = parser.parse_args(argv)
    try:
        return config_from_namespace(TrainConfig, ns, **({"ohem_keep": None} if ns.no_ohem else {}))
    except (TypeError, ValueError) as e:
        parser.error(str(e))
