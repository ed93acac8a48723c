"""Where a set of weights comes from, and loading it into the nets.

A weights spec, accepted by every stage that runs a net (mining, detection, ROC, evaluation,
export, ``--init`` of the trainer), is one of:

* ``shipped``: the weights committed in ``weights/`` at the repository root;
* ``original:PATH``: facenet-pytorch's ``pnet.pt``/``rnet.pt``/``onet.pt`` (the original MTCNN
  weights), a folder holding them or, for one net, the file itself;
* ``PATH``: a folder with this project's ``pnet.pt`` [``rnet.pt`` [``onet.pt``]] or one such file.

Files are plain state dicts or the trainer's checkpoints; both load with ``weights_only=True``,
so a weights file can never run code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.nets import NET_NAMES, build_net, has_landmark_head, load_state

SHIPPED = "shipped"
ORIGINAL_PREFIX = "original:"
REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_WEIGHTS_DIR = REPO_ROOT / "weights"
# A training checkpoint is a dict with this "format" and the state dict under "model".
CHECKPOINT_FORMAT = "mtcnn-train-checkpoint/1"


@dataclass(frozen=True)
class WeightsSpec:
    """A parsed weights spec: where the files are and whether they are the original MTCNN's."""

    path: Path
    original: bool

    def net_file(self, net: str) -> Path:
        """The file holding ``net``'s weights (``path`` itself when it is a file)."""
        return self.path / f"{net}.pt" if self.path.is_dir() else self.path


def parse_weights(spec: str) -> WeightsSpec:
    """``shipped`` | ``original:PATH`` | ``PATH`` -> ``WeightsSpec`` (nothing is checked on disk)."""
    spec = str(spec)
    if spec == SHIPPED:
        return WeightsSpec(SHIPPED_WEIGHTS_DIR, original=False)
    if spec.startswith(ORIGINAL_PREFIX):
        rest = spec[len(ORIGINAL_PREFIX):]
        if not rest:
            raise ValueError("'original:' needs a folder: original:PATH")
        return WeightsSpec(Path(rest).expanduser(), original=True)
    return WeightsSpec(Path(spec).expanduser(), original=False)


def is_original(spec: str) -> bool:
    return str(spec).startswith(ORIGINAL_PREFIX)


def resolve_weights(weights: str) -> Path:
    """The folder named by a ``--weights`` value: ``shipped``, ``original:PATH`` or a checkpoint folder."""
    parsed = parse_weights(weights)
    folder = parsed.path
    if weights == SHIPPED:
        if not (folder / "pnet.pt").is_file():
            raise FileNotFoundError(
                f"no shipped weights: {folder / 'pnet.pt'} does not exist. Train the nets first, or pass "
                f"'original:PATH' (a folder with facenet-pytorch's pnet.pt/rnet.pt/onet.pt) or a checkpoint folder"
            )
        return folder
    if parsed.original:
        missing = [n for n in NET_NAMES if not (folder / f"{n}.pt").is_file()]
        if missing:
            raise FileNotFoundError(
                f"original weights folder {folder} lacks {', '.join(m + '.pt' for m in missing)} "
                f"(facenet-pytorch 2.6.0's facenet_pytorch/data/{{pnet,rnet,onet}}.pt)"
            )
        return folder
    if not folder.is_dir():
        raise FileNotFoundError(
            f"weights {weights!r}: expected 'shipped', 'original:PATH' or a folder holding pnet.pt [rnet.pt [onet.pt]]"
        )
    if not (folder / "pnet.pt").is_file():
        raise FileNotFoundError(f"checkpoint folder {folder} has no pnet.pt")
    return folder


def load_state_dict(path, device: str = "cpu") -> dict:
    """A state dict from a plain state-dict file or from a training checkpoint (never unpickles objects)."""
    obj = torch.load(path, map_location=device, weights_only=True)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state dict or training checkpoint")
    return obj


def load_net(name: str, path, device: str = "cpu") -> nn.Module:
    """Net ``name`` built to match the file (with or without the optional landmark head) and loaded."""
    state = load_state_dict(path, device)
    net = build_net(name, landmark_head=has_landmark_head(name, state))
    load_state(net, name, state)
    return net


def load_nets(folder: Path, device: str = "cpu") -> dict[str, nn.Module]:
    """Build and load every net whose ``<name>.pt`` state dict is in ``folder`` (pnet first, no gap)."""
    nets = {}
    for name in NET_NAMES:
        path = Path(folder) / f"{name}.pt"
        if not path.is_file():
            later = [n for n in NET_NAMES[NET_NAMES.index(name) + 1:] if (Path(folder) / f"{n}.pt").is_file()]
            if later:
                raise FileNotFoundError(f"{folder} has {', '.join(n + '.pt' for n in later)} but no {name}.pt")
            break
        nets[name] = load_net(name, path, device)
    if not nets:
        raise FileNotFoundError(f"{folder} has no pnet.pt")
    return nets
