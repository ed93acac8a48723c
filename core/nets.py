"""The three MTCNN nets (Zhang et al. 2016) and the one input normalisation they all use.

Layer names and shapes match the original weights as shipped in facenet-pytorch
(``facenet_pytorch/data/{pnet,rnet,onet}.pt``), so those state dicts load directly.
P-Net and R-Net may carry one extra head the original files lack (``conv4_3`` / ``dense5_3``,
landmark regression, as in the paper's Fig. 2); it is on when training from scratch and is
simply reported as the only missing key when the original weights are loaded.

Every net returns ``NetOutput(logits, box, landmarks)``: raw two-class logits (face is class 1),
box offsets, and landmark values or None. P-Net's outputs are maps (N, C, H, W); R-Net's and
O-Net's are (N, C).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

INPUT_SIZES = {"pnet": 12, "rnet": 24, "onet": 48}
NET_NAMES = tuple(INPUT_SIZES)

# (x - 127.5) / 128: the original MTCNN's input scaling, used in training, mining and detection.
PIXEL_MEAN = 127.5
PIXEL_SCALE = 0.0078125


def normalize_images(images) -> torch.Tensor:
    """uint8 RGB images (N, H, W, 3), as numpy or tensor, to normalised float (N, 3, H, W)."""
    t = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    return (t.permute(0, 3, 1, 2).float() - PIXEL_MEAN) * PIXEL_SCALE


class NetOutput(NamedTuple):
    logits: torch.Tensor
    box: torch.Tensor
    landmarks: torch.Tensor | None


def _flatten_transposed(x: torch.Tensor) -> torch.Tensor:
    # The original Caffe nets were trained on transposed (Matlab, column-major) images; the
    # shipped dense weights expect features flattened in (W, H, C) order.
    return x.permute(0, 3, 2, 1).contiguous().flatten(1)


class PNet(nn.Module):
    """12x12 proposal net, fully convolutional (stride 2, one cell per 12x12 window)."""

    input_size = 12

    def __init__(self, landmark_head: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)
        self.conv4_3 = nn.Conv2d(32, 10, kernel_size=1) if landmark_head else None

    def forward(self, x: torch.Tensor) -> NetOutput:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        lm = self.conv4_3(x) if self.conv4_3 is not None else None
        return NetOutput(self.conv4_1(x), self.conv4_2(x), lm)


class RNet(nn.Module):
    """24x24 refinement net with a 128-unit dense layer."""

    input_size = 24

    def __init__(self, landmark_head: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)
        self.dense5_3 = nn.Linear(128, 10) if landmark_head else None

    def forward(self, x: torch.Tensor) -> NetOutput:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_transposed(x)))
        lm = self.dense5_3(x) if self.dense5_3 is not None else None
        return NetOutput(self.dense5_1(x), self.dense5_2(x), lm)


class ONet(nn.Module):
    """48x48 output net with a 256-unit dense layer and the landmark head."""

    input_size = 48

    def __init__(self, landmark_head: bool = True):
        super().__init__()
        if not landmark_head:
            raise ValueError("O-Net always has its landmark head (dense6_3)")
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> NetOutput:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_transposed(x)))
        return NetOutput(self.dense6_1(x), self.dense6_2(x), self.dense6_3(x))


_NET_CLASSES = {"pnet": PNet, "rnet": RNet, "onet": ONet}
# The keys of the optional landmark heads, absent from the original P-Net / R-Net files.
EXTRA_HEAD_PREFIX = {"pnet": "conv4_3.", "rnet": "dense5_3.", "onet": None}


def build_net(name: str, landmark_head: bool = True) -> nn.Module:
    if name not in _NET_CLASSES:
        raise ValueError(f"unknown net {name!r}; expected one of {', '.join(NET_NAMES)}")
    return _NET_CLASSES[name](landmark_head=landmark_head or name == "onet")


def has_landmark_head(name: str, state_dict) -> bool:
    """Whether a state dict of net ``name`` carries a landmark head."""
    prefix = EXTRA_HEAD_PREFIX[name]
    return prefix is None or any(k.startswith(prefix) for k in state_dict)


def load_state(net: nn.Module, name: str, state_dict) -> list[str]:
    """Load weights; the optional landmark head may be absent from ``state_dict``.

    Returns the keys that were missing (only ever the extra head's). Any other missing or
    unexpected key raises, naming the keys.
    """
    result = net.load_state_dict(state_dict, strict=False)
    prefix = EXTRA_HEAD_PREFIX[name]
    bad_missing = [k for k in result.missing_keys if prefix is None or not k.startswith(prefix)]
    if bad_missing or result.unexpected_keys:
        raise ValueError(
            f"{name} weights do not match the net: missing {bad_missing}, unexpected {result.unexpected_keys}"
        )
    return list(result.missing_keys)
