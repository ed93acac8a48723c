"""Export the face embedder to ONNX: ``make export-embedder [EMBEDDER=...] [EXPORT_OUT=build/export]``.

    python -m recognition.export_embedder --embedder shipped --out build/export

Writes ``embedder.onnx`` (input ``images`` (N, 3, S, S) float32 RGB normalised as
``(x - 127.5) / 128``, dynamic batch; output ``embedding`` (N, dim), unit length) and then
``embedder.json``: the input size and layout, the normalisation, the distance (squared Euclidean;
0 to 4), the alignment the crops need, the opset and the file's sha256, the calibrated threshold
(null when uncalibrated) and the weights file's record (the training data, the people learnt, the
calibration). Both are written
atomically. The exported graph is run by onnxruntime against torch on random crops and the
largest difference printed; above ``TOLERANCE`` the export fails. Bad input is one line, exit 2.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.atomic import atomic_write_bytes, atomic_write_json
from core.nets import PIXEL_MEAN, PIXEL_SCALE, normalize_images
from core.outputs import check_names_free, check_output_apart
from core.stage import run_stage
from recognition.embedder import load_embedder
from recognition.threshold import is_calibrated, resolve_threshold

TOLERANCE = 1e-4
INPUT_NAME, OUTPUT_NAME = "images", "embedding"


@dataclass(frozen=True)
class EmbedExportConfig:
    out: str
    """Output folder: embedder.onnx and embedder.json."""
    embedder: str = "shipped"
    """shipped (weights/embedder.pt), a weights file, or a folder holding embedder.pt."""
    opset: int = 18
    """ONNX opset."""


def export_embedder(net: torch.nn.Module, opset: int = 18) -> bytes:
    size = net.spec.input_size
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(net.eval(), (torch.zeros(2, 3, size, size),), dynamo=True,
                                        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                                        verbose=False)
    finally:
        onnx_logger.setLevel(level)
    return program.model_proto.SerializeToString()


def max_difference(net: torch.nn.Module, model: bytes, batch: int = 3, seed: int = 0) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    size = net.spec.input_size
    images = normalize_images(np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
    with torch.inference_mode():
        want = net.eval()(images).numpy()
    (got,) = session.run(None, {INPUT_NAME: images.numpy()})
    return float(np.abs(want - got).max())


def is_export_folder(out: Path) -> bool:
    """Whether ``out`` holds an earlier export's ``embedder.json`` (then ``embedder.onnx`` is this
    stage's too)."""
    try:
        described = json.loads((out / "embedder.json").read_text())
        return isinstance(described, dict) and described.get("file") == "embedder.onnx" and "max_difference_to_torch" in described
    except (OSError, ValueError):
        return False


def main(cfg: EmbedExportConfig) -> dict:
    embedder = load_embedder(cfg.embedder)
    out = Path(cfg.out)
    check_output_apart(out, {"--embedder": embedder.path})
    own = is_export_folder(out)
    check_names_free(out, ["embedder.onnx", "embedder.json"], "recognition.export_embedder", lambda path: own)
    model = export_embedder(embedder.net, cfg.opset)
    worst = max_difference(embedder.net, model)
    if worst > TOLERANCE:
        raise ValueError(f"onnxruntime differs from torch by {worst:.3g} (> {TOLERANCE}); not written")
    spec = embedder.net.spec
    record = embedder.record or {}  # a plain state dict carries none
    threshold, source = resolve_threshold(None, record)
    described = {
        "file": "embedder.onnx", "sha256": hashlib.sha256(model).hexdigest(), "opset": cfg.opset,
        "weights": str(embedder.path), "weights_sha256": hashlib.sha256(embedder.path.read_bytes()).hexdigest(),
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, spec.input_size, spec.input_size], "layout": "NCHW RGB",
                  "normalisation": {"mean": PIXEL_MEAN, "scale": PIXEL_SCALE, "formula": "(x - mean) * scale"}},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", spec.dim], "meaning": "unit-length face embedding"},
        "distance": "squared Euclidean distance of two embeddings (0 to 4); small for one person",
        "crops": "one face aligned as make recog-data aligns it (the 5-point similarity warp onto the ArcFace "
                 f"template scaled to {spec.input_size} px, or the margin crop, as the training build)",
        "mirror": "optionally add the embedding of the mirrored crop and normalise again (make eval-lfw's --flip)",
        "max_difference_to_torch": worst,
        # The same-person threshold and what the net learnt, for a user of the ONNX file alone: the
        # calibration (make calibrate) and the training record the weights file carries.
        "threshold": threshold if is_calibrated(source) else None, "threshold_source": source,
        "threshold_meaning": "two faces are one person below it (squared distance); null: not calibrated "
                             "(make calibrate), see record.calibration for the pairs, FAR and TAR",
        "record": record,
    }
    atomic_write_bytes(f"{cfg.out}/embedder.onnx", model)  # the description is built before either file is written
    atomic_write_json(f"{cfg.out}/embedder.json", described)
    print(f"wrote {cfg.out}/embedder.onnx and embedder.json (onnxruntime vs torch: max difference {worst:.2g})")
    return described


if __name__ == "__main__":
    sys.exit(run_stage(EmbedExportConfig, main))
