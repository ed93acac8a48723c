"""A standard face-embedding backbone beside the small default: ArcFace's IResNet (Deng et al. 2019).

The "improved" residual net of insightface's arcface_torch, for a GPU and a large identity set
(``trainers.embed --backbone iresnet18|iresnet34|iresnet50|iresnet100``; the 2-core default stays
``core.embednet.EmbedNet``). A stride-1 3x3 stem of 64 channels (conv - BN - PReLU), then four
stages of 64, 128, 256 and 512 channels, each opened by a stride-2 block, of the IR block
(BN - conv3x3 - BN - PReLU - conv3x3 (the block's stride) - BN, plus the shortcut: identity, or a
1x1 conv and BN where the shape changes), then the head BN - flatten - dropout - FC - BN1d. The
four halvings take arcface_torch's 112 px to a 7 x 7 map; any square input divisible by 16 works,
the FC's width following it (so tests can train one at 32-64 px).

The layer and parameter names are arcface_torch's (``conv1``, ``layer1.0.bn1``, ``fc``), so a
state dict's keys say which backbone it is (``core.embednet.spec_from_state``), but for the last
BN: arcface_torch's ``features`` is here ``embedding``, as ``features`` is the method every
embedder has; its per-channel scale is trained, as ``EmbedNet``'s is (arcface_torch fixes it at 1).

Input, output and ``features`` are ``EmbedNet``'s: ``normalize_images``' layout (NCHW, (x - 127.5) /
128), ``features`` the embedding before normalisation, ``forward`` it L2-normalised; ``spec`` holds
``input_size`` and ``dim``, as ``EmbedSpec`` does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Blocks per stage of the standard depths (arcface_torch's iresnet18 ... iresnet100).
IRESNET_LAYERS = {"iresnet18": (2, 2, 2, 2), "iresnet34": (3, 4, 6, 3), "iresnet50": (3, 4, 14, 3),
                  "iresnet100": (3, 13, 30, 3)}
WIDTHS = (64, 128, 256, 512)


@dataclass(frozen=True)
class IResNetSpec:
    layers: tuple[int, int, int, int] = IRESNET_LAYERS["iresnet18"]
    """IR blocks per stage (``IRESNET_LAYERS``)."""
    input_size: int = 112
    """Side of the square input crop in pixels (divisible by 16; arcface_torch's 112)."""
    dim: int = 512
    """Embedding size."""
    dropout: float = 0.0
    """Dropout before the embedding layer while training."""

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(int(n) for n in self.layers))
        if self.input_size < 16 or self.input_size % 16:
            raise ValueError(f"the embedder's input size must be a multiple of 16, got {self.input_size}")
        if len(self.layers) != 4 or min(self.layers) < 1:
            raise ValueError(f"an IResNet needs 4 positive block counts, got {self.layers}")
        if self.dim < 2 or not 0 <= self.dropout < 1:
            raise ValueError(f"dim must be >= 2 and dropout in [0, 1), got {self.dim} {self.dropout}")

    @property
    def backbone(self) -> str:
        """Its name in ``IRESNET_LAYERS``, or ``iresnet[a, b, c, d]`` for other depths."""
        return next((k for k, v in IRESNET_LAYERS.items() if v == self.layers), f"iresnet{list(self.layers)}")

    def describe(self) -> str:
        return f"{self.backbone} at {self.input_size} px, dim {self.dim}"

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class IBasicBlock(nn.Module):
    """The IR block: BN before the first conv, PReLU between the convs, the stride on the second."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv3x3(cin, cout)
        self.bn2, self.prelu = nn.BatchNorm2d(cout), nn.PReLU(cout)
        self.conv2, self.bn3 = _conv3x3(cout, cout, stride), nn.BatchNorm2d(cout)
        self.downsample = (None if stride == 1 and cin == cout else
                           nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    def __init__(self, spec: IResNetSpec = IResNetSpec()):
        super().__init__()
        self.spec = spec
        self.conv1, self.bn1, self.prelu = _conv3x3(3, WIDTHS[0]), nn.BatchNorm2d(WIDTHS[0]), nn.PReLU(WIDTHS[0])
        cin = WIDTHS[0]
        for k, (cout, n) in enumerate(zip(WIDTHS, spec.layers), 1):
            setattr(self, f"layer{k}", nn.Sequential(IBasicBlock(cin, cout, 2),
                                                     *(IBasicBlock(cout, cout, 1) for _ in range(n - 1))))
            cin = cout
        side = spec.input_size // 16
        self.bn2 = nn.BatchNorm2d(cin)
        self.dropout = nn.Dropout(spec.dropout)
        self.fc = nn.Linear(cin * side * side, spec.dim)
        self.embedding = nn.BatchNorm1d(spec.dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding before normalisation (what a margin softmax's cosine also starts from)."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.embedding(self.fc(self.dropout(torch.flatten(self.bn2(x), 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(x), dim=1)


def iresnet_spec_from_state(state: dict) -> IResNetSpec:
    """The ``IResNetSpec`` a state dict of ``IResNet`` was made with, read off its shapes (KeyError
    or IndexError where it is not one's)."""
    layers = []
    for k in range(1, 5):
        n = 0
        while f"layer{k}.{n}.conv1.weight" in state:
            n += 1
        layers.append(n)
    fc = state["fc.weight"]
    dim, flat = int(fc.shape[0]), int(fc.shape[1])
    side = int(round((flat / WIDTHS[-1]) ** 0.5))
    return IResNetSpec(layers=tuple(layers), input_size=16 * side, dim=dim)
