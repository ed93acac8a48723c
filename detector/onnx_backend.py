"""The nets exported by ``detector/export.py`` run by onnxruntime, as drop-in modules for ``Detector``.

An export folder holds ``pnet.onnx`` [``rnet.onnx`` [``onet.onnx``]] and ``mtcnn.json`` (what
they are and how the cascade uses them; see ``detector/export.py``). ``OnnxNet`` wraps one
onnxruntime session so that it is called exactly like the torch net: a normalised (N, 3, H, W)
float tensor in, ``core.nets.NetOutput`` of tensors out; ``Detector`` then runs its one cascade
over it unchanged (``load_detector(folder, cfg, backend="onnx")``). CPU only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from core.nets import NET_NAMES, NetOutput
from core.weights import ORIGINAL_PREFIX, SHIPPED

MANIFEST_NAME = "mtcnn.json"
FORMAT = "mtcnn-onnx/1"
INPUT_NAME = "images"
# The outputs of every exported net, in this order; "landmarks" only where the net has that head.
OUTPUT_NAMES = ("logits", "box", "landmarks")


def onnx_file(name: str) -> str:
    return f"{name}.onnx"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class OnnxNet(nn.Module):
    """One exported net in an onnxruntime session, called like the torch net it came from.

    ``threads``: intra-op threads of the session (None: onnxruntime's default, one per core).
    """

    def __init__(self, model: bytes, threads: int | None = None):
        super().__init__()
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        inputs = [i.name for i in self.session.get_inputs()]
        if inputs != [INPUT_NAME] or self.output_names[:2] != list(OUTPUT_NAMES[:2]):
            raise ValueError(f"not an exported MTCNN net: inputs {inputs}, outputs {self.output_names}")

    def forward(self, x: torch.Tensor) -> NetOutput:
        images = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        out = dict(zip(self.output_names, self.session.run(None, {INPUT_NAME: images})))
        landmarks = out.get("landmarks")
        return NetOutput(torch.from_numpy(out["logits"]), torch.from_numpy(out["box"]),
                         None if landmarks is None else torch.from_numpy(landmarks))


def read_manifest(folder) -> dict:
    """The export folder's ``mtcnn.json``; FileNotFoundError / ValueError say what is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"onnx weights {str(folder)!r}: not a folder (write one with make export)")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        have = sorted(p.name for p in folder.glob("*.onnx"))
        raise FileNotFoundError(
            f"{folder} has no {MANIFEST_NAME}{' (only ' + ', '.join(have) + ')' if have else ' and no .onnx files'}: "
            f"write the export with make export EXPORT_OUT={folder}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                         f"expected {FORMAT!r}")
    return manifest


def load_onnx_nets(weights: str, threads: int | None = None) -> tuple[dict[str, OnnxNet], str]:
    """The nets of an export folder (each file checked against the sha256 its manifest records)
    and the P-Net regression mode the export recorded."""
    weights = str(weights)
    if weights == SHIPPED or weights.startswith(ORIGINAL_PREFIX):
        raise ValueError(f"the onnx backend reads a folder written by make export (pnet.onnx ... {MANIFEST_NAME}), "
                         f"not {weights!r}")
    folder = Path(weights).expanduser()
    manifest = read_manifest(folder)
    nets = {}
    for name in manifest["nets"]:
        if name not in NET_NAMES:
            raise ValueError(f"{folder / MANIFEST_NAME}: unknown net {name!r}")
        path = folder / manifest["nets"][name]["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{folder} lacks {path.name}, which {MANIFEST_NAME} lists (export again)")
        model = path.read_bytes()
        if sha256_hex(model) != manifest["nets"][name]["sha256"]:
            raise ValueError(f"{path}: sha256 differs from the one {MANIFEST_NAME} records (export again)")
        nets[name] = OnnxNet(model, threads)
    return nets, manifest["cascade"]["pnet_regression"]
