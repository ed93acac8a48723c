"""The MTCNN cascade detector: image pyramid -> P-Net -> R-Net -> O-Net.

The arithmetic follows the original MTCNN (Zhang et al. 2016) as ported by facenet-pytorch 2.6.0
(``models/utils/detect_face.py``), so that the original weights reproduce its detections:

* pyramid scales ``12 / min_face * factor**k`` while ``min(h, w) * scale >= 12``; each level is the
  image area-resampled (``F.interpolate(mode="area")``, i.e. adaptive average pooling) to
  ``(int(h * scale + 1), int(w * scale + 1))``;
* P-Net runs fully convolutionally on every level; a map cell ``(x, y)`` with face probability
  ``>= threshold`` is the window ``floor((2x + 1) / scale) .. floor((2x + 12) / scale)`` (the
  original's ``generateBoundingBox``, stride 2, cell 12), NMS 0.5 within each scale, then 0.7
  across scales, then box regression;
* R-Net and O-Net get the squared (``rerec``) boxes of the stage before, cut at integer pixel
  positions (the original's ``fix``), area-resampled to 24 / 48 px; probability ``> threshold``
  keeps a box; R-Net: NMS 0.7 then regression; O-Net: regression then NMS 0.7 in 'min' mode;
  landmarks are decoded on O-Net's input box.

Conventions and deliberate differences from facenet-pytorch:

* Coordinates are the project's (``core/geometry.py``): 0-based, inclusive. facenet-pytorch keeps
  the original Matlab code's 1-based coordinates, so its boxes and landmarks are exactly ours + 1
  (the same pixels are cut and the nets see the same crops).
* Crops reaching past the border are zero-padded, as in the original Matlab code and as the
  training crops are (``crop_with_padding``); facenet-pytorch instead squeezes the visible part.
* Box maths (IoU/NMS with inclusive ``+1`` areas, regression, squaring, landmark decoding) are the
  project's single implementation in ``core/geometry.py``. Two original quirks are kept where they
  matter: the original P-Net stage regresses with widths ``x2 - x1`` (no ``+1``; reproduced for
  original weights by rescaling the offsets, ``_original_pnet_offsets``: without it the final
  astronaut box moves by 1.5 px), and P-Net windows are computed in float32 as facenet-pytorch
  does. facenet-pytorch's P-Net/R-Net NMS uses torchvision's areas without ``+1``; here all NMS
  uses ``+1`` areas like the original Matlab code (a few different proposals survive; the
  astronaut result is unchanged).

Speed: every pyramid level and every crop is an area average read off one integral image (four
gathers per output pixel, exact integer sums), so all crops of a stage are cut and resized in a
few vectorised tensor ops and go through the net in batches. NMS over P-Net's thousands of
proposals only compares boxes whose x ranges overlap (``nms_fast``, same result as
``core.geometry.nms``); the only per-box Python loop left is its greedy pass (a few microseconds per
box). Images, integral image, crops and nets stay on ``cfg.device``; only the per-box outputs (a
few numbers per box) come back to numpy for the box maths.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np
import torch
from torch import nn

from core.device import resolve_device
from core.geometry import NUM_LANDMARKS, calibrate, denormalize_landmarks, nms_fast, square
from core.imageio import convert_rgb_uint8, image_size
from core.nets import INPUT_SIZES, NET_NAMES, normalize_images
from core.weights import is_original, load_nets, resolve_weights

# P-Net geometry: one output cell per 12x12 window, cells 2 px apart (two 3x3 convs + one 2x2 pool).
PNET_STRIDE = 2
PNET_CELL = 12
# Where the nets run: PyTorch, or onnxruntime over the files of ``make export`` (``load_detector``).
BACKENDS = ("torch", "onnx")
# Default crops per forward pass (DetectorConfig.batch_size None).
_CPU_BATCH = {"rnet": 128, "onet": 64}
_DEVICE_BATCH = 2048
# The smallest min_face: P-Net's 12 px window on an image upsampled at most 2x.
MIN_FACE_FLOOR = PNET_CELL / 2
# The most pixels the pyramid's first level may hold: P-Net needs about 100 bytes per level pixel
# (9 Mpx took 0.9 GB on the CPU), so 40 Mpx is about 4 GB. Default settings reach it only for
# images above 110 Mpx; a small min_face reaches it sooner (0.5 on a 512x512 image: 151 Mpx).
MAX_PYRAMID_PIXELS = 40_000_000



@dataclass(frozen=True)
class DetectorConfig:
    """Cascade settings; the defaults are the original MTCNN's (and facenet-pytorch's).

    The only place these defaults are written: the stages that run the detector (detect,
    wider_eval, landmarks, roc, the benchmark) take theirs from here.
    """

    min_face: float = 20.0
    """Smallest face looked for, in pixels: the first pyramid level scales the image by
    12 / min_face. 20 is the original's; smaller finds smaller faces at a steeply rising cost.
    At least 6 (P-Net's window upsampled 2x), and the first level may hold at most 40 Mpx
    (``MAX_PYRAMID_PIXELS``): an image needing more is refused, naming the smallest value it takes."""
    scale_factor: float = 0.709
    """Ratio between pyramid levels, in (0, 1). 0.709 (about 1 / sqrt(2), halving the area per
    level) is the original's."""
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    """Face-probability thresholds of P-Net, R-Net and O-Net. The original's 0.6 / 0.7 / 0.7: P-Net
    lets more through because R-Net and O-Net reject the rest."""
    pnet_scale_nms: float = 0.5
    """NMS IoU among P-Net's windows within one pyramid level (the original's 0.5)."""
    nms_thresholds: tuple[float, float, float] = (0.7, 0.7, 0.7)
    """NMS IoU after P-Net (across levels), R-Net and O-Net (the original's 0.7 each)."""
    onet_nms_mode: str = "min"
    """O-Net's final NMS overlap: 'min' divides the intersection by the smaller area (removes a
    small box inside a larger one), as the original does; 'union' is IoU."""
    pnet_regression: str | None = None
    """How P-Net's box offsets scale: 'inclusive' (by x2 - x1 + 1, as ``regression_targets`` trains
    them) or 'original' (by x2 - x1, the original stage 1). None: 'original' for weights loaded as
    original:PATH by ``load_detector``, 'inclusive' otherwise."""
    device: str = "cpu"
    """Where images, crops and nets live: cpu or cuda[:N]."""
    batch_size: int | None = None
    """Crops per forward pass of R-Net / O-Net, a speed setting. None: per device; on the CPU small
    batches that stay in cache (128 / 64, about 2x faster per crop than 512), elsewhere 2048."""

    def __post_init__(self):
        if not self.min_face >= MIN_FACE_FLOOR:
            raise ValueError(f"min_face (--min-face, MIN_FACE=) must be >= {MIN_FACE_FLOOR:g} pixels, got "
                             f"{self.min_face:g}: below it P-Net's {PNET_CELL} px window would look at an image "
                             f"upsampled more than {PNET_CELL / MIN_FACE_FLOOR:g}x, with no detail to find")
        if not 0 < self.scale_factor < 1:
            raise ValueError(f"scale_factor must be in (0, 1), got {self.scale_factor}")
        for name, values in (("thresholds", self.thresholds), ("nms_thresholds", self.nms_thresholds)):
            if len(values) != len(NET_NAMES) or not all(0 <= v <= 1 for v in values):
                raise ValueError(f"{name} must be {len(NET_NAMES)} values in [0, 1], got {values}")
        if not 0 <= self.pnet_scale_nms <= 1:
            raise ValueError(f"pnet_scale_nms must be in [0, 1], got {self.pnet_scale_nms}")
        if self.onet_nms_mode not in ("union", "min"):
            raise ValueError(f"onet_nms_mode must be 'union' or 'min', got {self.onet_nms_mode!r}")
        if self.pnet_regression not in (None, "inclusive", "original"):
            raise ValueError(f"pnet_regression must be None, 'inclusive' or 'original', got {self.pnet_regression!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def result_settings(self) -> dict:
        """The settings that decide the detections, JSON-ready: all but device and batch_size (where
        and how fast), for the stages that refuse to mix results of other settings in one folder."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in asdict(self).items() if name not in ("device", "batch_size")}


@dataclass(frozen=True, eq=False)
class Detections:
    """Faces found in one image, best score first.

    ``boxes`` (N, 4) float ``x1 y1 x2 y2`` (0-based, inclusive), ``scores`` (N,) face
    probabilities of the last stage run, ``landmarks`` (N, 5, 2) ``x, y`` pixels (left eye, right
    eye, nose, left and right mouth corner), NaN where that stage's net has no landmark head.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros((0, NUM_LANDMARKS, 2)))

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class _StageSpec:
    name: str
    threshold: float
    nms_threshold: float
    nms_mode: str
    calibrate_before_nms: bool
    original_offsets: bool = False
    batch_size: int = 1


class PyramidTooLargeError(ValueError):
    """An image too large for ``min_face``; ``least`` is the smallest ``min_face`` it allows."""

    def __init__(self, message: str, least: float):
        super().__init__(message)
        self.least = least


def check_pyramid(height: int, width: int, min_face: float) -> None:
    """Refuse (``PyramidTooLargeError``, a ValueError) an image whose first pyramid level would exceed
    ``MAX_PYRAMID_PIXELS``, naming the smallest ``min_face`` this image allows."""
    def first_level(face: float) -> int:
        return int(height * PNET_CELL / face + 1) * int(width * PNET_CELL / face + 1)

    scale, level = PNET_CELL / min_face, first_level(min_face)
    if level > MAX_PYRAMID_PIXELS:
        least = math.ceil(PNET_CELL * math.sqrt(height * width / MAX_PYRAMID_PIXELS) * 10) / 10
        while first_level(least) > MAX_PYRAMID_PIXELS:
            least = round(least + 0.1, 1)
        least = max(least, MIN_FACE_FLOOR)
        raise PyramidTooLargeError(
            f"--min-face (MIN_FACE=) {min_face:g} would scale this {width}x{height} image's first pyramid level to "
            f"{int(width * scale + 1)}x{int(height * scale + 1)} ({level / 1e6:.0f} Mpx, more than the "
            f"{MAX_PYRAMID_PIXELS / 1e6:.0f} Mpx the detector allows): use --min-face {least:g} or more for this "
            f"image", least)


def check_image_pyramids(paths, min_face: float, names=None) -> None:
    """Refuse (ValueError, one line) before any work when an image file of ``paths`` is too large for
    ``min_face`` (``check_pyramid``), naming the image (``names``: how to call each, default its
    path) and the smallest ``min_face`` it allows; sizes come from the headers (``image_size``),
    and unreadable files are left to the stage, which counts them."""
    paths = list(paths)
    names = paths if names is None else list(names)
    refused = []
    for path, name in zip(paths, names):
        size = image_size(path)
        if size is None:
            continue
        try:
            check_pyramid(size[1], size[0], min_face)
        except PyramidTooLargeError as err:
            refused.append((name, err))
    if refused:
        name, err = refused[0]
        others = f" ({len(refused)} of the {len(paths)} images are too large for it)" if len(refused) > 1 else ""
        raise ValueError(f"{name}: {err}{others}")


def pyramid_scales(height: int, width: int, min_face: float, factor: float) -> list[float]:
    """The original's scale pyramid: ``12 / min_face * factor**k`` while the short side stays >= 12 px."""
    scale = PNET_CELL / min_face
    short = min(height, width) * scale
    scales = []
    while short >= PNET_CELL:
        scales.append(scale)
        scale *= factor
        short *= factor
    return scales


def _integral_image(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, C) uint8 -> (H + 1, W + 1, C) with ``out[r, c] = image[:r, :c].sum()`` per channel, on ``device``.

    int32 while every sum fits (255 * H * W < 2**31, images up to ~8 Mpx), else float64; exact
    either way. On the CPU OpenCV's ``integral`` is ~30x faster than two torch cumsums; elsewhere
    the image goes to the device as uint8 and the sums are taken there.
    """
    h, w, c = image.shape
    exact32 = 255 * h * w < 2**31
    if device.type == "cpu":
        return torch.from_numpy(cv2.integral(image, sdepth=cv2.CV_32S if exact32 else cv2.CV_64F).reshape(h + 1, w + 1, c))
    dtype = torch.int32 if exact32 else torch.float64
    out = torch.zeros((h + 1, w + 1, c), dtype=dtype, device=device)
    pixels = torch.from_numpy(image).to(device)
    out[1:, 1:] = pixels.cumsum(0, dtype=dtype).cumsum(1, dtype=dtype)
    return out


def _area_bounds(start: torch.Tensor, length: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Adaptive average pooling's bins: output i averages input [floor(i*L/S), ceil((i+1)*L/S)).
    i = torch.arange(size, device=start.device)
    lo = start[:, None] + (i[None, :] * length[:, None]) // size
    hi = start[:, None] + ((i[None, :] + 1) * length[:, None] + size - 1) // size
    return lo, hi


def _area_resample(integral: torch.Tensor, boxes: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Cut integer inclusive ``boxes`` (N, 4) out of the image and area-resample each to (out_h, out_w).

    Exactly ``F.interpolate(crop, (out_h, out_w), mode="area")`` (adaptive average pooling) of
    each crop, with the parts of a box outside the image read as zeros: one gather of the four
    integral-image corners of every output pixel. Returns (N, out_h, out_w, C) float32 on the
    integral's device.
    """
    height, width, channels = integral.shape[0] - 1, integral.shape[1] - 1, integral.shape[2]
    x1, y1, x2, y2 = boxes.to(torch.int64).unbind(1)
    r0, r1 = _area_bounds(y1, y2 - y1 + 1, out_h)
    c0, c1 = _area_bounds(x1, x2 - x1 + 1, out_w)
    count = ((r1 - r0)[:, :, None] * (c1 - c0)[:, None, :]).unsqueeze(-1).to(torch.float32)
    rows = torch.stack([r1, r0]).clamp_(0, height).mul_(width + 1)  # (2, N, out_h), flat offsets
    cols = torch.stack([c1, c0]).clamp_(0, width)  # (2, N, out_w)
    corners = rows[:, None, :, :, None] + cols[None, :, :, None, :]  # (2, 2, N, out_h, out_w)
    v = integral.view(-1, channels).index_select(0, corners.reshape(-1)).view(2, 2, len(boxes), out_h, out_w, channels)
    sums = (v[0, 0] - v[0, 1]) - (v[1, 0] - v[1, 1])  # exact (integer sums); each < 2**24, exact in float32
    return sums.to(torch.float32) / count


def _area_resize(integral: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """The whole image area-resampled to (out_h, out_w): ``_area_resample`` of its full box, computed
    separably (gather rows, then columns), ~2x faster for pyramid levels. (1, out_h, out_w, C) float32."""
    height, width = integral.shape[0] - 1, integral.shape[1] - 1
    zero = torch.zeros(1, dtype=torch.int64, device=integral.device)
    r0, r1 = (t[0] for t in _area_bounds(zero, zero + height, out_h))
    c0, c1 = (t[0] for t in _area_bounds(zero, zero + width, out_w))
    strips = integral.index_select(0, r1) - integral.index_select(0, r0)  # (out_h, W + 1, C)
    sums = strips.index_select(1, c1) - strips.index_select(1, c0)
    count = ((r1 - r0)[:, None] * (c1 - c0)[None, :]).unsqueeze(-1).to(torch.float32)
    return (sums.to(torch.float32) / count).unsqueeze(0)


def _pnet_windows(xs: np.ndarray, ys: np.ndarray, scale: float) -> np.ndarray:
    """Image boxes of P-Net map cells: the original ``generateBoundingBox`` shifted to 0-based pixels.

    Computed in float32 as facenet-pytorch does, so that windows on an integer boundary floor alike.
    """
    cells = np.stack([xs, ys], axis=1).astype(np.float32)
    s = np.float32(scale)
    top_left = np.floor((np.float32(PNET_STRIDE) * cells + np.float32(1)) / s) - 1
    bottom_right = np.floor((np.float32(PNET_STRIDE) * cells + np.float32(PNET_CELL)) / s) - 1
    return np.concatenate([top_left, bottom_right], axis=1).astype(np.float64)


def _original_pnet_offsets(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Offsets of the original P-Net, relative to ``x2 - x1`` (no +1), rescaled for ``calibrate``.

    The original stage 1 regresses ``x1 + dx * (x2 - x1)``; ``calibrate`` multiplies by the
    inclusive width ``x2 - x1 + 1``. Scaling the offsets by ``(x2 - x1) / (x2 - x1 + 1)`` makes the
    one calibration reproduce the original (it moves the crops of the next stage by up to a pixel,
    which changes the final boxes of the original weights by about 1.5 px on the astronaut image).
    """
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return offsets * np.stack([w / (w + 1), h / (h + 1), w / (w + 1), h / (h + 1)], axis=1)


def _landmarks_or_nan(values: np.ndarray | None, boxes: np.ndarray) -> np.ndarray:
    if values is None:
        return np.full((len(boxes), NUM_LANDMARKS, 2), np.nan)
    return denormalize_landmarks(values, boxes)


def _cpu(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().to("cpu", torch.float64).numpy()


def batch_slices(counts: list[int], batch_size: int) -> list[list[tuple[int, int, int]]]:
    """Group the crops of several images, ``counts[i]`` of image i in order, into batches of
    ``batch_size``: each batch is a list of ``(image, start, stop)`` slices, filled image after image.

    One image gives ``range(0, n, batch_size)`` chunks, as a single-image detector batches them.
    """
    batches, current, room = [], [], batch_size
    for image, count in enumerate(counts):
        start = 0
        while start < count:
            stop = min(count, start + room)
            current.append((image, start, stop))
            room -= stop - start
            start = stop
            if room == 0:
                batches.append(current)
                current, room = [], batch_size
    if current:
        batches.append(current)
    return batches


class Detector:
    """The cascade over ``nets`` (name -> module): ``pnet`` and optionally ``rnet``, then ``onet``.

    The nets are moved to ``cfg.device`` and put in eval mode (in place). A cascade without
    ``rnet`` stops after P-Net, one without ``onet`` after R-Net.
    """

    def __init__(self, nets: dict[str, nn.Module], cfg: DetectorConfig = DetectorConfig()):
        unknown = set(nets) - set(NET_NAMES)
        if unknown:
            raise ValueError(f"unknown nets {sorted(unknown)}; expected names among {NET_NAMES}")
        order = [name for name in NET_NAMES if name in nets]
        if order != list(NET_NAMES[: len(order)]) or not order:
            raise ValueError(f"the nets must be a prefix of {NET_NAMES} (pnet first, no gap), got {sorted(nets)}")
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.nets = {name: nets[name].to(self.device).eval() for name in order}
        self.stages = tuple(order)
        last = len(NET_NAMES) - 1
        self._specs = {
            name: _StageSpec(
                name=name,
                threshold=cfg.thresholds[i],
                nms_threshold=cfg.nms_thresholds[i],
                nms_mode=cfg.onet_nms_mode if i == last else "union",
                calibrate_before_nms=i == last,
                original_offsets=i == 0 and cfg.pnet_regression == "original",
                batch_size=cfg.batch_size or (_CPU_BATCH.get(name, 1) if self.device.type == "cpu" else _DEVICE_BATCH),
            )
            for i, name in enumerate(NET_NAMES)
        }

    def detect(self, image) -> Detections:
        """Faces in one RGB image (H, W, 3), runs every loaded stage. uint8 is taken as it is; grey
        and RGBA are converted, and so are uint16 (scaled by 1/257), other integers within 0-255 and
        floats in [0, 1] (scaled by 255) or [0, 255] (``core.imageio.convert_rgb_uint8``). Any other
        array (bool, negative, NaN, out of range, another shape) is a ``ValueError`` saying what is
        expected, and so is an image whose first pyramid level would exceed ``MAX_PYRAMID_PIXELS``
        at this ``min_face`` (``check_pyramid``)."""
        return self.detect_stages(image, self.stages)[self.stages[-1]]

    def detect_stages(self, image, stages=NET_NAMES) -> dict[str, Detections]:
        """Each requested stage's detections (after its regression and NMS; not squared).

        ``stages`` must be a prefix of ``("pnet", "rnet", "onet")`` among the loaded nets: hard
        example mining for R-Net asks for ``("pnet",)``, for O-Net ``("pnet", "rnet")``. Stage
        k + 1 starts from ``square`` of stage k's boxes.
        """
        stages = tuple(stages)
        if not stages or stages != NET_NAMES[: len(stages)]:
            raise ValueError(f"stages must be a non-empty prefix of {NET_NAMES}, got {stages}")
        missing = [s for s in stages if s not in self.nets]
        if missing:
            raise ValueError(f"stages {missing} requested but their nets are not loaded (have {self.stages})")
        rgb = convert_rgb_uint8(image)
        height, width = rgb.shape[:2]
        check_pyramid(height, width, self.cfg.min_face)
        out: dict[str, Detections] = {}
        with torch.inference_mode():
            integral = _integral_image(rgb, self.device)
            dets = self._propose(integral, height, width)
            out["pnet"] = dets
            for name in stages[1:]:
                dets = self._refine([integral], [square(dets.boxes)], self._specs[name])[0] if len(dets) else dets
                out[name] = dets
        return out

    def detect_batch(self, images) -> list[Detections]:
        """Faces in each of several RGB images of any sizes: ``[self.detect(im) for im in images]``, faster.

        P-Net runs over each image's own pyramid; then the R-Net crops of all the images go through
        R-Net together, in shared batches of ``batch_size`` crops, and likewise for O-Net, so that a
        stage makes a few full forward passes instead of a small one per image. Every box, score and
        landmark comes out as ``detect`` gives it, up to float32 rounding: which kernel PyTorch runs
        for a convolution depends on the batch size and on the CPU (on the development machines,
        batches of under 4 crops at 1 thread or under 12 at 2 round differently; on other CPUs larger
        ones too), so a crop may differ in the last float32 bits (about 1e-6 of a box side).
        Memory: one integral image (12 bytes per pixel) per image.
        """
        rgbs = [convert_rgb_uint8(image) for image in images]
        for rgb in rgbs:
            check_pyramid(*rgb.shape[:2], self.cfg.min_face)
        with torch.inference_mode():
            integrals = [_integral_image(rgb, self.device) for rgb in rgbs]
            found = [self._propose(integral, *rgb.shape[:2]) for integral, rgb in zip(integrals, rgbs)]
            for name in self.stages[1:]:
                todo = [i for i, dets in enumerate(found) if len(dets)]
                refined = self._refine([integrals[i] for i in todo], [square(found[i].boxes) for i in todo],
                                       self._specs[name])
                for i, dets in zip(todo, refined):
                    found[i] = dets
        return found

    def _propose(self, integral: torch.Tensor, height: int, width: int) -> Detections:
        """Stage 1: P-Net over the pyramid, NMS per scale and across scales, regression."""
        cfg, spec, net = self.cfg, self._specs["pnet"], self.nets["pnet"]
        windows, scores, offsets, marks = [], [], [], []
        for scale in pyramid_scales(height, width, cfg.min_face, cfg.scale_factor):
            level = _area_resize(integral, int(height * scale + 1), int(width * scale + 1))
            out = net(normalize_images(level))
            prob = torch.softmax(out.logits, dim=1)[0, 1]
            ys, xs = torch.nonzero(prob >= spec.threshold, as_tuple=True)
            if len(ys) == 0:
                continue
            boxes = _pnet_windows(xs.cpu().numpy(), ys.cpu().numpy(), scale)
            score = _cpu(prob[ys, xs])
            keep = nms_fast(boxes, score, cfg.pnet_scale_nms, "union")
            windows.append(boxes[keep])
            scores.append(score[keep])
            offsets.append(_cpu(out.box[0][:, ys, xs].T)[keep])
            marks.append(None if out.landmarks is None else _cpu(out.landmarks[0][:, ys, xs].T)[keep])
        if not windows:
            return Detections.empty()
        boxes, score, offset = np.concatenate(windows), np.concatenate(scores), np.concatenate(offsets)
        values = None if marks[0] is None else np.concatenate(marks)
        return self._finish(boxes, score, offset, values, spec)

    def _refine(self, integrals: list[torch.Tensor], boxes: list[np.ndarray], spec: _StageSpec) -> list[Detections]:
        """Stages 2 and 3 for one or more images: cut + resize every box of every image, run the net
        over all crops in shared batches, then keep, NMS and regress per image."""
        net, size = self.nets[spec.name], INPUT_SIZES[spec.name]
        kept, cuts = [], []
        for image_boxes in boxes:
            cut = np.floor(image_boxes)
            ok = (cut[:, 2] >= cut[:, 0]) & (cut[:, 3] >= cut[:, 1]) & np.isfinite(cut).all(axis=1)
            kept.append(image_boxes[ok])
            cuts.append(torch.as_tensor(cut[ok], device=self.device))
        probs, offsets, marks = [], [], []
        for batch in batch_slices([len(c) for c in cuts], spec.batch_size):
            crops = torch.cat([_area_resample(integrals[i], cuts[i][lo:hi], size, size) for i, lo, hi in batch])
            out = net(normalize_images(crops))
            probs.append(torch.softmax(out.logits, dim=1)[:, 1])
            offsets.append(out.box)
            marks.append(out.landmarks)
        if not probs:
            return [Detections.empty() for _ in boxes]
        prob, offset = torch.cat(probs), torch.cat(offsets)
        mark = None if marks[0] is None else torch.cat(marks)
        found, start = [], 0
        for image_boxes in kept:
            stop = start + len(image_boxes)
            keep_t = start + torch.nonzero(prob[start:stop] > spec.threshold).flatten()
            values = None if mark is None else _cpu(mark[keep_t])
            found.append(self._finish(image_boxes[keep_t.cpu().numpy() - start], _cpu(prob[keep_t]),
                                      _cpu(offset[keep_t]), values, spec))
            start = stop
        return found

    @staticmethod
    def _finish(boxes, score, offset, values, spec: _StageSpec) -> Detections:
        """Landmarks decoded on the net's input boxes; regression and NMS in the stage's order."""
        if len(boxes) == 0:
            return Detections.empty()
        landmarks = _landmarks_or_nan(values, boxes)
        if spec.original_offsets:
            offset = _original_pnet_offsets(boxes, offset)
        if spec.calibrate_before_nms:
            boxes = calibrate(boxes, offset)
            pick = nms_fast(boxes, score, spec.nms_threshold, spec.nms_mode)
            boxes = boxes[pick]
        else:
            pick = nms_fast(boxes, score, spec.nms_threshold, spec.nms_mode)
            boxes = calibrate(boxes[pick], offset[pick])
        return Detections(boxes=boxes, scores=score[pick], landmarks=landmarks[pick])


def load_detector(weights: str, cfg: DetectorConfig = DetectorConfig(), backend: str = "torch",
                  threads: int | None = None) -> Detector:
    """A ``Detector`` from ``shipped`` (``weights/`` at the repo root), ``original:PATH`` or a checkpoint folder.

    With ``cfg.pnet_regression`` None, original weights get the original P-Net regression.

    ``backend="onnx"``: ``weights`` is a folder written by ``make export`` (``detector/export.py``);
    its nets run in onnxruntime on the CPU, ``threads`` intra-op threads per net (None:
    onnxruntime's default, one per core), under the same cascade code, and ``cfg.pnet_regression``
    None takes the mode the export recorded. The torch backend leaves threads to torch's global
    setting (``torch.set_num_threads``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of: {', '.join(BACKENDS)}")
    if backend == "onnx" and str(cfg.device) != "cpu":
        raise ValueError(f"the onnx backend runs on the CPU (onnxruntime), not on {cfg.device!r}")
    resolve_device(cfg.device)  # a device this machine lacks is one line (DeviceError), before any file is read
    if backend == "onnx":
        from detector.onnx_backend import load_onnx_nets  # onnxruntime is imported only when asked for

        nets, regression = load_onnx_nets(weights, threads)
        return Detector(nets, cfg if cfg.pnet_regression else replace(cfg, pnet_regression=regression))
    if cfg.pnet_regression is None:
        cfg = replace(cfg, pnet_regression="original" if is_original(weights) else "inclusive")
    return Detector(load_nets(resolve_weights(weights), cfg.device), cfg)


__all__ = [
    "DetectorConfig",
    "Detections",
    "Detector",
    "load_detector",
    "pyramid_scales",
]
