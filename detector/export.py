"""Export the nets to ONNX for use outside PyTorch: ``make export [WEIGHTS=...] [EXPORT_OUT=build/export]``.

    python -m detector.export --weights shipped --out build/export [--opset 18]

Writes ``pnet.onnx`` (dynamic batch, height and width), ``rnet.onnx`` and ``onet.onnx`` (dynamic
batch) for the nets the weights hold, then ``mtcnn.json``: everything a C++ or mobile program
needs to rebuild the cascade around them (input layout and normalisation, what each output
means, P-Net's stride and window, thresholds, NMS, pyramid, the P-Net regression mode, the
opset and each file's sha256). Every head of the torch net is exported, the optional landmark
heads of P-Net and R-Net included when the weights have them (``mtcnn.json`` says per net).
All files are written atomically, ``mtcnn.json`` last; ``load_detector(folder, backend="onnx")``
runs them with onnxruntime through the same cascade code as the torch nets.

Each exported net is run once by onnxruntime against torch on random images (P-Net at two
sizes, batch 2) and the largest difference is printed; above ``TOLERANCE`` the export fails.
Bad input (missing weights) prints one line and exits with code 2.
"""

from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.atomic import atomic_write_bytes, atomic_write_json
from core.outputs import check_names_free, check_output_apart, weights_folder
from core.nets import INPUT_SIZES, PIXEL_MEAN, PIXEL_SCALE, normalize_images
from core.stage import error_line, run_stage
from core.weights import is_original, load_nets, resolve_weights
from detector.cascade import PNET_CELL, PNET_STRIDE, DetectorConfig
from detector.onnx_backend import FORMAT, INPUT_NAME, MANIFEST_NAME, OUTPUT_NAMES, OnnxNet, onnx_file, sha256_hex

EXIT_BAD_INPUT = 2
PROG = "python -m detector.export"
# Largest |onnxruntime - torch| accepted on the self-check (float32 arithmetic in another order).
TOLERANCE = 1e-4
# Self-check inputs: P-Net at two sizes (a graph fixed to the traced size fails the second).
PNET_CHECK_SHAPES = ((2, 37, 53), (1, 120, 81))
CHECK_BATCH = 3


@dataclass(frozen=True)
class ExportConfig:
    out: str
    """Output folder: pnet.onnx, rnet.onnx, onet.onnx and mtcnn.json."""
    weights: str = "shipped"
    """shipped | original:PATH | a checkpoint folder with pnet.pt [rnet.pt [onet.pt]]."""
    opset: int = 18
    """ONNX opset of the files (18: the torch exporter's own; onnxruntime 1.14 and later run it)."""


class _Outputs(nn.Module):
    """The net with its outputs as a plain tuple (``OUTPUT_NAMES`` order, absent heads left out)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor):
        return tuple(t for t in self.net(images) if t is not None)


def export_net(net: nn.Module, name: str, opset: int) -> bytes:
    """One net as an ONNX model: input ``images`` (N, 3, H, W) float32 normalised RGB, dynamic batch
    (and height and width for P-Net), outputs ``logits``, ``box`` [, ``landmarks``]."""
    wrapped = _Outputs(net).eval()
    size = INPUT_SIZES[name]
    example = torch.zeros(2, 3, size, size)
    dims = {0: torch.export.Dim("batch")}
    if name == "pnet":
        dims.update({2: torch.export.Dim("height", min=size), 3: torch.export.Dim("width", min=size)})
    with torch.no_grad():
        outputs = list(OUTPUT_NAMES[: len(wrapped(example))])
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)  # the exporter's notes about torchvision ops it skips
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapped, (example,), dynamo=True, dynamic_shapes={"images": dims},
                                        input_names=[INPUT_NAME], output_names=outputs, opset_version=opset,
                                        verbose=False)
    finally:
        onnx_logger.setLevel(level)
    return program.model_proto.SerializeToString()


def check_shapes(name: str) -> list[tuple[int, int, int]]:
    """(batch, height, width) of the self-check inputs of ``name``."""
    if name == "pnet":
        return list(PNET_CHECK_SHAPES)
    return [(CHECK_BATCH, INPUT_SIZES[name], INPUT_SIZES[name])]


def max_difference(net: nn.Module, model: bytes, shapes, seed: int = 0) -> float:
    """Largest |onnxruntime - torch| over every output, for random uint8 images of each (N, H, W)."""
    session = OnnxNet(model, threads=1)
    rng = np.random.default_rng(seed)
    worst = 0.0
    with torch.inference_mode():
        for n, h, w in shapes:
            images = normalize_images(rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8))
            for want, got in zip(net(images), session(images)):
                if (want is None) != (got is None):
                    raise ValueError("the exported net lacks an output of the torch net")
                if want is not None:
                    if want.shape != got.shape:
                        raise ValueError(f"output shape {tuple(got.shape)}, torch gives {tuple(want.shape)}")
                    worst = max(worst, float((want - got).abs().max()))
    return worst


def describe(weights: str, nets: dict[str, nn.Module], files: dict[str, bytes], opset: int) -> dict:
    """The ``mtcnn.json`` of an export: what the files are and how the cascade uses them."""
    cfg = DetectorConfig()
    cfg = replace(cfg, pnet_regression=cfg.pnet_regression or ("original" if is_original(weights) else "inclusive"))
    cascade = {k: v for k, v in asdict(cfg).items() if k not in ("device", "batch_size")}
    described = {}
    for name, data in files.items():
        size = INPUT_SIZES[name]
        spatial = ["height", "width"] if name == "pnet" else [size, size]
        out_spatial = ["map_height", "map_width"] if name == "pnet" else []
        landmarks = nets[name](torch.zeros(1, 3, size, size)).landmarks is not None
        described[name] = {
            "file": onnx_file(name),
            "sha256": sha256_hex(data),
            "input": {"name": INPUT_NAME, "shape": ["batch", 3, *spatial], "min_size": size},
            "outputs": {out: ["batch", width, *out_spatial]
                        for out, width in zip(OUTPUT_NAMES, (2, 4, 10)) if out != "landmarks" or landmarks},
            "landmark_head": landmarks,
        }
    return {
        "format": FORMAT,
        "weights": weights,
        "opset": opset,
        "exporter": f"torch {torch.__version__} (torch.onnx.export, dynamo)",
        "input": {
            "layout": "NCHW float32",
            "channels": "RGB",
            "normalisation": {"mean": PIXEL_MEAN, "scale": PIXEL_SCALE,
                              "formula": f"(pixel - {PIXEL_MEAN}) / {1 / PIXEL_SCALE:g}"},
            "orientation": "the image as stored, H rows by W columns. The original Caffe nets were trained on "
                           "transposed (column-major) images; the one place that matters, the flatten before the "
                           "dense layers of R-Net and O-Net, is inside the exported graphs: do not transpose.",
        },
        "outputs": {
            "logits": "two-class scores, face is class 1: face probability = softmax over axis 1, element 1",
            "box": "offsets (dx1, dy1, dx2, dy2) of the net's input box [x1, y1, x2, y2]: x1 + dx1 * w, y1 + dy1 * h, "
                   "x2 + dx2 * w, y2 + dy2 * h, with w = x2 - x1 + 1, h = y2 - y1 + 1 (P-Net with "
                   "pnet_regression 'original': w = x2 - x1, h = y2 - y1)",
            "landmarks": "10 values x1..x5, y1..y5 (left eye, right eye, nose, left and right mouth corner) on the "
                         "net's input box: x = x1 - 1 + v * w, y = y1 - 1 + v * h (w, h inclusive as for box)",
        },
        "coordinates": "pixels, 0-based; boxes [x1, y1, x2, y2] inclusive (width x2 - x1 + 1)",
        "pnet": {
            "stride": PNET_STRIDE,
            "cell": PNET_CELL,
            "window": f"map cell (x, y) at pyramid scale s is the image box floor(({PNET_STRIDE}x + 1) / s) - 1, "
                      f"floor(({PNET_STRIDE}y + 1) / s) - 1, floor(({PNET_STRIDE}x + {PNET_CELL}) / s) - 1, "
                      f"floor(({PNET_STRIDE}y + {PNET_CELL}) / s) - 1 (computed in float32)",
        },
        "pyramid": f"scales {PNET_CELL} / min_face * scale_factor**k while min(H, W) * scale >= {PNET_CELL}; each "
                   f"level is the image area-averaged to (int(H * scale + 1), int(W * scale + 1))",
        "cascade": cascade,
        "steps": [
            "P-Net on every pyramid level; keep cells with probability >= thresholds[0]; NMS pnet_scale_nms "
            "(IoU, inclusive areas) per level; then NMS nms_thresholds[0] over all levels; then box regression",
            "R-Net / O-Net input: each box of the stage before made square around its centre "
            "(side max(x2 - x1, y2 - y1)), cut at floor() of its corners, the part outside the image as zeros, "
            "area-averaged to the net's input size",
            "R-Net: keep probability > thresholds[1]; NMS nms_thresholds[1]; then regression",
            "O-Net: keep probability > thresholds[2]; regression; then NMS nms_thresholds[2] in onet_nms_mode "
            "('min': intersection over the smaller area); landmarks decoded on O-Net's input box",
        ],
        "nets": described,
    }


def is_export_folder(out: Path) -> bool:
    """Whether ``out`` holds an earlier export's ``mtcnn.json`` (then its nets' files are this
    stage's too, also those of an export interrupted before its new ``mtcnn.json``)."""
    import json

    try:
        return json.loads((out / MANIFEST_NAME).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_outputs(cfg: ExportConfig, names) -> None:
    """Refuse an output folder that is, holds or lies inside the weights, and file names taken by
    files this stage did not write (a folder without an export's ``mtcnn.json``)."""
    out = Path(cfg.out)
    check_output_apart(out, {"--weights": weights_folder(cfg.weights)})
    own = is_export_folder(out)
    check_names_free(out, [*names, MANIFEST_NAME], "detector.export", lambda path: own)


def main(cfg: ExportConfig) -> int:
    try:
        nets = load_nets(resolve_weights(cfg.weights))
        check_outputs(cfg, [onnx_file(name) for name in nets])
    except (FileNotFoundError, ValueError) as err:
        print(error_line(PROG, err), file=sys.stderr)
        return EXIT_BAD_INPUT
    out = Path(cfg.out)
    files = {}
    for name, net in nets.items():
        net.eval()
        files[name] = export_net(net, name, cfg.opset)
        worst = max_difference(net, files[name], check_shapes(name))
        if not worst <= TOLERANCE:
            raise RuntimeError(f"{name}: onnxruntime differs from torch by {worst:.2e} (> {TOLERANCE:.0e})")
        atomic_write_bytes(out / onnx_file(name), files[name])
        shapes = ", ".join("x".join(map(str, (n, 3, h, w))) for n, h, w in check_shapes(name))
        print(f"{out / onnx_file(name)}: {len(files[name]) / 1e6:.2f} MB, max |onnxruntime - torch| "
              f"{worst:.1e} at {shapes}")
    atomic_write_json(out / MANIFEST_NAME, describe(cfg.weights, nets, files, cfg.opset), sort_keys=False)
    print(f"{out / MANIFEST_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(ExportConfig, main))
