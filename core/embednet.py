"""The face-embedding net: an aligned RGB face crop -> an L2-normalised embedding (FaceNet).

A small residual net sized for CPU training: a stride-2 stem, three residual stages (each halving
the resolution), then the "BN - dropout - FC - BN" head of ArcFace (Deng et al. 2019), whose
flattened feature map keeps where on the face a feature was (a global average pool would not).
Input is ``normalize_images``' layout and scale (uint8 NHWC RGB -> (x - 127.5) / 128), any square
size divisible by 16; the output has unit length, so the squared distance of two embeddings is
``2 - 2 cos``.

``EmbedNet.spec`` (input size, widths, embedding size) is read back off a state dict's shapes
(``spec_from_state``), so that a weights file is loaded into the net it was trained as
(``load_embedder``). The standard backbones beside it (``BACKBONES``: arcface_torch's IResNet,
``core.iresnet``) are told apart by their parameter names; ``build_net`` makes either from its spec.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.iresnet import IRESNET_LAYERS, IResNet, IResNetSpec, iresnet_spec_from_state

# The embedder's backbones (``trainers.embed --backbone``): this module's small net, the CPU default,
# and the standard IResNets for a GPU and a large identity set.
BACKBONES = ("small", *IRESNET_LAYERS)


@dataclass(frozen=True)
class EmbedSpec:
    input_size: int = 64
    """Side of the square input crop in pixels (divisible by 16)."""
    widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    """Channels of the stem and of the three residual stages."""
    blocks: tuple[int, int, int] = (1, 2, 1)
    """Residual blocks per stage."""
    dim: int = 128
    """Embedding size (FaceNet's 128)."""
    dropout: float = 0.2
    """Dropout before the embedding layer while training."""

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        if self.input_size < 16 or self.input_size % 16:
            raise ValueError(f"the embedder's input size must be a multiple of 16, got {self.input_size}")
        if len(self.widths) != 4 or len(self.blocks) != 3 or min(self.widths) < 1 or min(self.blocks) < 1:
            raise ValueError(f"widths needs 4 and blocks 3 positive values, got {self.widths} {self.blocks}")
        if self.dim < 2 or not 0 <= self.dropout < 1:
            raise ValueError(f"dim must be >= 2 and dropout in [0, 1), got {self.dim} {self.dropout}")

    backbone = "small"

    def describe(self) -> str:
        return f"{self.input_size} px, widths {list(self.widths)}, blocks {list(self.blocks)}, dim {self.dim}"

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout))


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions (pre-activation order of ArcFace's IR block) plus the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class EmbedNet(nn.Module):
    def __init__(self, spec: EmbedSpec = EmbedSpec()):
        super().__init__()
        self.spec = spec
        w, layers = spec.widths, []
        cin = w[0]
        for cout, n in zip(w[1:], spec.blocks):
            layers.append(ResidualBlock(cin, cout, 2))
            layers.extend(ResidualBlock(cout, cout, 1) for _ in range(n - 1))
            cin = cout
        self.stem = _conv_bn(3, w[0], 2)
        self.stages = nn.Sequential(*layers)
        side = spec.input_size // 16
        self.head = nn.Sequential(nn.BatchNorm2d(cin), nn.Dropout(spec.dropout), nn.Flatten(),
                                  nn.Linear(cin * side * side, spec.dim), nn.BatchNorm1d(spec.dim))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding before normalisation (what a margin softmax's cosine also starts from)."""
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(x), dim=1)


def build_net(spec: EmbedSpec | IResNetSpec) -> EmbedNet | IResNet:
    """The embedder's net a spec describes: ``EmbedNet`` or ``IResNet``."""
    return IResNet(spec) if isinstance(spec, IResNetSpec) else EmbedNet(spec)


def check_backbone(backbone: str) -> None:
    if backbone not in BACKBONES:
        raise ValueError(f"--backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")


def iresnet_spec(backbone: str, input_size: int, dim: int, dropout: float) -> IResNetSpec:
    check_backbone(backbone)
    return IResNetSpec(layers=IRESNET_LAYERS[backbone], input_size=input_size, dim=dim, dropout=dropout)


def count_flops(net: nn.Module, input_size: int | None = None) -> int:
    """Multiply-adds of one forward pass on one square crop of ``input_size`` px (the net's
    ``spec.input_size`` by default): the convolutions' and the dense layers', counted from the layer
    shapes by forward hooks (biases, norms and activations left out); what a benchmark reports
    beside samples/s."""
    size = net.spec.input_size if input_size is None else input_size
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output[0].numel() * k
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = net.training
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    net.train(was_training)
    for h in handles:
        h.remove()
    return total


def spec_from_state(state: dict) -> EmbedSpec | IResNetSpec:
    """The spec a state dict of ``EmbedNet`` or ``IResNet`` was made with, read off its names and
    shapes, so that a weights file needs nothing beside it. ValueError when it is not an embedder's."""
    try:
        if "layer1.0.conv1.weight" in state:  # IResNet's names (core.iresnet); EmbedNet's are stem/stages/head
            return iresnet_spec_from_state(state)
        widths = [int(state["stem.0.weight"].shape[0])]
        blocks, stage_in = [], widths[0]
        k = 0
        while f"stages.{k}.body.1.weight" in state:
            cout = int(state[f"stages.{k}.body.1.weight"].shape[0])
            if cout != stage_in or f"stages.{k}.shortcut.0.weight" in state:  # a stage's first (downsampling) block
                widths.append(cout)
                blocks.append(0)
            blocks[-1] += 1
            stage_in = cout
            k += 1
        linear = state["head.3.weight"]
        dim, flat = int(linear.shape[0]), int(linear.shape[1])
        side = int(round((flat / widths[-1]) ** 0.5))
        return EmbedSpec(input_size=16 * side, widths=tuple(widths), blocks=tuple(blocks), dim=dim)
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        raise ValueError(f"not the weights of an embedder ({type(e).__name__}: {e})") from None
