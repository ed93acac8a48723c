"""Using a trained face embedder: ``load_embedder(...)`` and ``embed(embedder, crops)``.

    from recognition.embedder import load_embedder, embed
    embedder = load_embedder("shipped")              # weights/embedder.pt, or a file, or a folder holding embedder.pt
    vectors = embed(embedder, crops, flip=True)      # crops: uint8 RGB (N, S, S, 3), aligned as make recog-data aligns
    distance = ((vectors[0] - vectors[1]) ** 2).sum()  # squared distance: small for one person, 0 to 4

Crops of another size than the net's input are resized (area averaging when shrinking). With
``flip`` each crop's embedding is that of the crop plus that of its mirror image, normalised again.
A weights file is the net's state dict packed with its training record (``core.weights.pack_weights``:
the build, the people it learnt, the LFW fold it left out; ``embedder.record``), a training
checkpoint (which holds the same record), or a plain state dict (no record: an embedder of unknown
training data); its shapes give the net.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from core.device import resolve_device
from core.embednet import EmbedNet, build_net, spec_from_state
from core.iresnet import IResNet
from core.nets import normalize_images
from core.weights import WeightsError, load_weights, state_problems

EMBEDDER_FILE = "embedder.pt"
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "weights"


def resolve_embedder(spec: str) -> Path:
    """``shipped`` (weights/embedder.pt), a weights file, or a folder holding embedder.pt."""
    path = SHIPPED_DIR / EMBEDDER_FILE if spec == "shipped" else Path(spec)
    if path.is_dir():
        path = path / EMBEDDER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"embedder weights {path} do not exist"
                                f"{' (make train-embed writes them)' if spec != 'shipped' else ''}")
    return path


@dataclass
class FaceEmbedder:
    net: EmbedNet | IResNet
    device: torch.device
    path: Path
    record: dict | None = None
    """The training record stored in the weights file (``trainers.embed_task.training_record``: the
    build, ``people``, ``lfw_fold_left_out``); None when the file carries none."""

    @property
    def input_size(self) -> int:
        return self.net.spec.input_size

    @property
    def dim(self) -> int:
        return self.net.spec.dim


def load_embedder(spec: str = "shipped", device: str = "cpu") -> FaceEmbedder:
    """The embedder a weights spec names, in eval mode on ``device``, with the training record its
    file carries; WeightsError for a file that is not an embedder's or does not fit the net its
    shapes describe (one line naming it and what does not fit)."""
    location = resolve_device(device)
    path = resolve_embedder(spec)
    weights = load_weights(path)
    state = weights.state
    if any(k.startswith("net.") for k in state):  # a training checkpoint's model: the net and its class centres
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    try:
        net = build_net(spec_from_state(state))
    except ValueError as e:
        raise WeightsError(f"{path}: {(str(e).splitlines() or [''])[0]}") from None
    problems = state_problems(net.state_dict(), state, "the embedder")
    if problems:
        raise WeightsError(f"{path}: weights do not fit the embedder their shapes describe ({net.spec.describe()}): "
                           f"{'; '.join(problems)}")
    net.load_state_dict(state)
    return FaceEmbedder(net.to(location).eval(), torch.device(location), path, weights.record)


def fit_crops(crops, size: int) -> np.ndarray:
    """uint8 (N, size, size, 3): each crop resized to the net's input where it differs."""
    crops = [np.asarray(c) for c in crops]
    for c in crops:
        if c.dtype != np.uint8 or c.ndim != 3 or c.shape[2] != 3:
            raise ValueError(f"face crops must be uint8 RGB (H, W, 3), got {c.dtype} {c.shape}")
    return np.stack([c if c.shape[:2] == (size, size) else
                     cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA if c.shape[0] > size else cv2.INTER_LINEAR)
                     for c in crops]) if crops else np.zeros((0, size, size, 3), np.uint8)


@torch.no_grad()
def embed(embedder: FaceEmbedder, crops, flip: bool = False, batch_size: int = 256) -> np.ndarray:
    """(N, dim) float32 unit vectors of the crops."""
    images = fit_crops(crops, embedder.input_size)
    out = []
    for start in range(0, len(images), batch_size):
        x = normalize_images(torch.from_numpy(images[start : start + batch_size])).to(embedder.device)
        e = embedder.net.features(x)
        if flip:
            e = torch.nn.functional.normalize(e, dim=1) + torch.nn.functional.normalize(embedder.net.features(x.flip(3)), dim=1)
        out.append(torch.nn.functional.normalize(e, dim=1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, embedder.dim), np.float32)
