"""Build a small synthetic face data set in the official WIDER FACE layout, plus a landmark list.

Run as ``python -m demo.data --out DIR [--train N --val N --landmarks N --seed S]`` (``--help``
lists every option; ``DemoConfig`` holds the defaults). Writes, under DIR::

    WIDER_train/images/<k>--Demo/<k>_Demo_demo_<i>.jpg
    WIDER_val/images/<k>--Demo/<k>_Demo_demo_<i>.jpg
    wider_face_split/wider_face_train_bbx_gt.txt       WIDER bbx_gt format
    wider_face_split/wider_face_val_bbx_gt.txt
    eval_tools/ground_truth/wider_{face,easy,medium,hard}_val.mat   official evaluation files (val)
    landmarks/demo_faces/<nnnnn>.jpg                   80x80 RGB, one face each
    landmarks/trainImageList.txt                       CNN_FacePoint format, backslash paths
    sample/astronaut.png                               skimage's astronaut, for ``make detect`` (main only)

Everything is made from images that ship inside scikit-image, so it needs no download: the 100
aligned 25x25 greyscale LFW faces of ``skimage.data.lfw_subset()`` are resized, tinted and pasted
onto crops of skimage's photographs; its 100 non-face patches are pasted too, unannotated, so a
square patch is not by itself a sign of a face. ``astronaut`` is not used: the detector test keeps
it as an image no net has seen. The set lets the whole pipeline run end to end in seconds (tests,
``make demo``); it does not teach a detector anything about real faces.

The same seed gives byte-identical files. ``with_edge_cases=True`` (test fixtures) adds to the
first training image one face flagged invalid, one face partly outside the image (negative x)
and one degenerate box (w = 0), and leaves the last training image without faces. The annotation
files are written by the writers beside their parsers (``annotations.wider``,
``annotations.landmarks``, ``annotations.wider_mat``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from annotations.landmarks import write_facepoint
from annotations.wider import write_wider_txt
from annotations.wider_mat import SETTINGS, GtImage, write_ground_truth
from core.atomic import atomic_write_bytes
from core.stage import run_stage

# Relative positions (x, y) of the five landmarks inside an aligned lfw_subset face crop, in the
# order left eye, right eye, nose, left mouth corner, right mouth corner. Estimated by eye on
# upscaled crops with the points drawn on them; they are the same for every face, so they are
# right to a few percent of the face size, which is what a demo needs.
RELATIVE_LANDMARKS = ((0.33, 0.37), (0.67, 0.37), (0.50, 0.57), (0.35, 0.73), (0.65, 0.73))

# (skimage.data function, file of the same image in skimage.data.data_dir). None of them shows a
# human face. The file is read with cv2 when present because the loader functions import imageio
# and pooch, which costs half a second that a test fixture should not pay.
BACKGROUND_SOURCES = (
    ("coffee", "coffee.png"),
    ("chelsea", "chelsea.png"),
    ("rocket", "rocket.jpg"),
    ("hubble_deep_field", "hubble_deep_field.jpg"),
    ("immunohistochemistry", "ihc.png"),
    ("colorwheel", "color.png"),
    ("retina", "retina.jpg"),
)
MAX_BACKGROUND_SIDE = 640  # retina (1411 px) and hubble (1000 px) are downscaled to this once

NUM_LFW_FACES = 100  # lfw_subset: the first 100 are faces, the last 100 are not
FACES_PER_IMAGE = (1, 6)
DISTRACTORS_PER_IMAGE = (0, 3)
FACE_SIDE_RANGE = (20, 90)  # face width in pixels; height is 1.0-1.2 times it, as in WIDER
PLACEMENT_ATTEMPTS = 40
LANDMARK_IMAGE_SIDE = 80  # like the 80x80 images of the shared CNN_FacePoint set
LANDMARK_FACE_SIDE_RANGE = (28, 64)
JPEG_QUALITY = 90
NUM_EVENTS = 3
DIFFICULTY_MIN_HEIGHT = {"easy": 40, "medium": 28, "hard": 0}  # see evaluation_ground_truth

# RGB multipliers applied to the greyscale faces so the set is not colourless.
SKIN_TINTS = np.array(
    [
        (1.00, 0.86, 0.74),
        (0.96, 0.78, 0.62),
        (0.82, 0.62, 0.46),
        (0.62, 0.44, 0.32),
        (0.45, 0.32, 0.24),
        (0.95, 0.95, 0.95),
    ]
)


@dataclass(frozen=True)
class DemoPaths:
    root: Path
    train_images: Path
    train_txt: Path
    val_images: Path
    val_txt: Path
    val_ground_truth: Path  # folder with the official-format .mat files of the val split
    landmarks_txt: Path


@dataclass(frozen=True)
class DemoConfig:
    out_dir: Path = field(metadata={"flag": "--out"})
    """Folder to write the data set into; files of an earlier build are overwritten, never deleted."""
    num_train_images: int = field(default=60, metadata={"flag": "--train"})
    """Images of the WIDER_train split."""
    num_val_images: int = field(default=20, metadata={"flag": "--val"})
    """Images of the WIDER_val split (with the official evaluation .mat files)."""
    num_landmark_faces: int = field(default=200, metadata={"flag": "--landmarks"})
    """Faces (one 80x80 image each) of the CNN_FacePoint landmark list."""
    seed: int = 0
    """The same seed gives byte-identical files."""
    image_width: int = field(default=320, metadata={"flag": "--width"})
    """Width of every WIDER-layout image, pixels."""
    image_height: int = field(default=240, metadata={"flag": "--height"})
    """Height of every WIDER-layout image, pixels."""
    with_edge_cases: bool = field(default=False, metadata={"flag": "--edge-cases"})
    """Add the broken annotations the test fixtures use (invalid flag, a face off the border, a
    zero-width box, a training image without faces)."""

    def __post_init__(self):
        for flag, count in (("train", self.num_train_images), ("val", self.num_val_images),
                            ("landmarks", self.num_landmark_faces)):
            if count < 0:
                raise ValueError(f"--{flag} must not be negative, got {count}")
        if min(self.image_width, self.image_height) < 2 * FACE_SIDE_RANGE[0]:
            raise ValueError(f"image size {self.image_width}x{self.image_height} is too small for faces of "
                             f"{FACE_SIDE_RANGE[0]} px")
        if self.with_edge_cases and self.num_train_images < 2:
            raise ValueError("edge cases need at least 2 training images (edge cases + a 0-face image)")


@dataclass(frozen=True)
class _Annotation:
    """One bbx_gt line: the pasted (or deliberately broken) box and the invalid flag."""

    x: int
    y: int
    w: int
    h: int
    invalid: int = 0

    def row(self) -> tuple[int, ...]:
        """The box line's ten values (``annotations.wider``): x y w h and the attributes."""
        return self.x, self.y, self.w, self.h, 0, 0, 0, self.invalid, 0, 0


def demo_paths(out_dir: str | os.PathLike) -> DemoPaths:
    root = Path(out_dir)
    return DemoPaths(
        root=root,
        train_images=root / "WIDER_train" / "images",
        train_txt=root / "wider_face_split" / "wider_face_train_bbx_gt.txt",
        val_images=root / "WIDER_val" / "images",
        val_txt=root / "wider_face_split" / "wider_face_val_bbx_gt.txt",
        val_ground_truth=root / "eval_tools" / "ground_truth",
        landmarks_txt=root / "landmarks" / "trainImageList.txt",
    )


def sample_photo_path(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / "sample" / "astronaut.png"


def build_demo_dataset(cfg: DemoConfig) -> DemoPaths:
    """Write the data set of ``cfg`` under ``cfg.out_dir`` and return where its parts are."""
    paths = demo_paths(cfg.out_dir)
    image_size = (cfg.image_width, cfg.image_height)
    # One independent stream per part, so that asking for more validation images does not
    # change the training images of the same seed.
    train_rng, val_rng, landmark_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(3))

    train_records = _write_wider_split(
        paths.train_images, cfg.num_train_images, image_size, train_rng, with_edge_cases=cfg.with_edge_cases
    )
    write_wider_txt(paths.train_txt, wider_records(train_records))
    val_records = _write_wider_split(paths.val_images, cfg.num_val_images, image_size, val_rng, with_edge_cases=False)
    write_wider_txt(paths.val_txt, wider_records(val_records))
    write_ground_truth(paths.val_ground_truth, evaluation_ground_truth(val_records))
    landmark_faces = _write_landmark_images(paths.landmarks_txt.parent, cfg.num_landmark_faces, landmark_rng)
    write_facepoint(paths.landmarks_txt, landmark_faces)
    return paths


def evaluation_ground_truth(records) -> list[GtImage]:
    """The official evaluation lists of a split. WIDER's easy/medium/hard come from human labels of
    scale, occlusion and pose; the demo approximates them by face height: every valid face counts
    in hard, those at least ``DIFFICULTY_MIN_HEIGHT['medium']`` px tall in medium, and so on."""
    images = []
    for relative, annotations in records:
        event, file_name = relative.split("/")
        boxes = np.array([(a.x, a.y, a.w, a.h) for a in annotations], dtype=np.float64).reshape(-1, 4)
        valid = np.array([a.invalid == 0 and a.w > 0 and a.h > 0 for a in annotations], dtype=bool)
        keep = {s: np.flatnonzero(valid & (boxes[:, 3] >= DIFFICULTY_MIN_HEIGHT[s])) for s in SETTINGS}
        images.append(GtImage(event=event, name=file_name.rsplit(".", 1)[0], boxes=boxes, keep=keep))
    return images


def wider_records(records: list[tuple[str, list[_Annotation]]]) -> list[tuple[str, list[tuple[int, ...]]]]:
    """(relative image path, annotations) records as ``annotations.wider.write_wider_txt`` takes them."""
    return [(image, [a.row() for a in annotations]) for image, annotations in records]


def landmark_points(x: float, y: float, side: float) -> np.ndarray:
    """Pixel landmarks (5, 2) of an aligned lfw_subset face pasted as a ``side`` square at (x, y)."""
    return np.array([(x + rx * side, y + ry * side) for rx, ry in RELATIVE_LANDMARKS])


def _write_wider_split(images_dir: Path, count: int, image_size, rng, with_edge_cases: bool):
    records = []
    for index in range(count):
        event = index * NUM_EVENTS // max(count, 1)  # contiguous events, as in the official files
        relative = f"{event}--Demo/{event}_Demo_demo_{index}.jpg"
        edge_cases = with_edge_cases and index == 0
        no_faces = with_edge_cases and index == count - 1
        image, annotations = _compose_wider_image(image_size, rng, edge_cases=edge_cases, no_faces=no_faces)
        _write_jpeg(images_dir / relative, image)
        records.append((relative, annotations))
    return records


def _compose_wider_image(image_size, rng, edge_cases: bool, no_faces: bool):
    width, height = image_size
    image = _background(rng, width, height)
    occupied: list[tuple[int, int, int, int]] = []  # x, y, w, h of everything pasted
    annotations: list[_Annotation] = []
    max_side = min(FACE_SIDE_RANGE[1], min(width, height) // 2)

    if edge_cases:
        # Placed first, on an empty canvas, so that they always fit whatever the seed.
        w, h = _face_shape(rng, max_side)
        y = int(rng.integers(0, height - h + 1))
        x = -(w // 3)  # a third of the face hangs off the left border
        _paste(image, _face_patch(rng, w, h), x, y)
        occupied.append((x, y, w, h))
        annotations.append(_Annotation(x, y, w, h))
        spot = _free_spot(rng, width, height, *_face_shape(rng, max_side), occupied)
        if spot is not None:
            (x, y, w, h) = spot
            _paste(image, _face_patch(rng, w, h), x, y)
            occupied.append(spot)
            annotations.append(_Annotation(x, y, w, h, invalid=1))
        # A zero-width box, as the official files have a few; nothing is pasted for it.
        annotations.append(_Annotation(int(rng.integers(0, width)), int(rng.integers(0, height - 20)), 0, 20))

    num_faces = 0 if no_faces else int(rng.integers(FACES_PER_IMAGE[0], FACES_PER_IMAGE[1] + 1))
    for _ in range(num_faces):
        spot = _free_spot(rng, width, height, *_face_shape(rng, max_side), occupied)
        if spot is None:
            continue
        x, y, w, h = spot
        _paste(image, _face_patch(rng, w, h), x, y)
        occupied.append(spot)
        annotations.append(_Annotation(x, y, w, h))

    num_distractors = int(rng.integers(DISTRACTORS_PER_IMAGE[0], DISTRACTORS_PER_IMAGE[1] + 1))
    for _ in range(num_distractors):
        spot = _free_spot(rng, width, height, *_face_shape(rng, max_side), occupied)
        if spot is None:
            continue
        x, y, w, h = spot
        _paste(image, _face_patch(rng, w, h, non_face=True), x, y)
        occupied.append(spot)
    return image, annotations


def _write_landmark_images(landmarks_dir: Path, count: int, rng) -> list[tuple[str, tuple, np.ndarray]]:
    """Write ``count`` one-face images; returns their (image, box x1 y1 x2 y2, points) for the list."""
    faces = []
    side_img = LANDMARK_IMAGE_SIDE
    for index in range(count):
        image = _background(rng, side_img, side_img)
        side = int(rng.integers(LANDMARK_FACE_SIDE_RANGE[0], LANDMARK_FACE_SIDE_RANGE[1] + 1))
        x = int(rng.integers(0, side_img - side + 1))
        y = int(rng.integers(0, side_img - side + 1))
        _paste(image, _face_patch(rng, side, side), x, y)
        name = f"{index + 1:05d}.jpg"
        _write_jpeg(landmarks_dir / "demo_faces" / name, image)
        box = (x, y, x + side - 1, y + side - 1)  # inclusive, as in core.geometry
        # Backslash on purpose: the CNN_FacePoint lists a user brings are written that way.
        faces.append((f"demo_faces\\{name}", box, landmark_points(x, y, side)))
    return faces


def _face_shape(rng, max_side: int) -> tuple[int, int]:
    w = int(rng.integers(FACE_SIDE_RANGE[0], max_side + 1))
    h = int(round(w * rng.uniform(1.0, 1.2)))
    return w, h


def _free_spot(rng, width, height, w, h, occupied):
    """A position for a w x h patch fully inside the image, 2 px clear of everything pasted; or None."""
    if w > width or h > height:
        return None
    for _ in range(PLACEMENT_ATTEMPTS):
        x = int(rng.integers(0, width - w + 1))
        y = int(rng.integers(0, height - h + 1))
        if all(_apart((x, y, w, h), other, gap=2) for other in occupied):
            return x, y, w, h
    return None


def _apart(a, b, gap: int) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax + aw + gap <= bx or bx + bw + gap <= ax or ay + ah + gap <= by or by + bh + gap <= ay


def _face_patch(rng, w: int, h: int, non_face: bool = False) -> np.ndarray:
    """A tinted RGB uint8 (h, w, 3) patch of a random lfw_subset face (or non-face)."""
    faces, non_faces = _lfw_patches()
    source = non_faces if non_face else faces
    grey = source[int(rng.integers(0, len(source)))]
    if rng.random() < 0.5:
        grey = grey[:, ::-1]
    interpolation = cv2.INTER_AREA if w < grey.shape[1] else cv2.INTER_CUBIC
    grey = cv2.resize(np.ascontiguousarray(grey), (w, h), interpolation=interpolation)
    tint = SKIN_TINTS[int(rng.integers(0, len(SKIN_TINTS)))] * rng.uniform(0.9, 1.1, size=3)
    gain = rng.uniform(0.8, 1.2)
    rgb = grey[:, :, None] * tint[None, None, :] * gain
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _paste(image: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """Paste ``patch`` with its top-left corner at (x, y), cutting whatever falls outside ``image``."""
    height, width = image.shape[:2]
    ph, pw = patch.shape[:2]
    x1, y1 = max(x, 0), max(y, 0)
    x2, y2 = min(x + pw, width), min(y + ph, height)
    if x1 < x2 and y1 < y2:
        image[y1:y2, x1:x2] = patch[y1 - y : y2 - y, x1 - x : x2 - x]


def _background(rng, width: int, height: int) -> np.ndarray:
    """A random width x height RGB crop of one of the background photographs (a fresh array)."""
    photos = _background_photos()
    photo = photos[int(rng.integers(0, len(photos)))]
    ph, pw = photo.shape[:2]
    # Enlarge when needed and by a random factor, so crops differ in texture scale too.
    scale = max(width / pw, height / ph, 1.0) * rng.uniform(1.0, 1.5)
    if scale > 1.0:
        photo = cv2.resize(photo, (int(np.ceil(pw * scale)), int(np.ceil(ph * scale))), interpolation=cv2.INTER_LINEAR)
        ph, pw = photo.shape[:2]
    x = int(rng.integers(0, pw - width + 1))
    y = int(rng.integers(0, ph - height + 1))
    crop = photo[y : y + height, x : x + width]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


@lru_cache(maxsize=1)
def _lfw_patches() -> tuple[np.ndarray, np.ndarray]:
    """(faces, non-faces), each float32 (100, 25, 25) in [0, 1]; cached, never modified."""
    path = Path(skimage.data.data_dir) / "lfw_subset.npy"
    data = np.load(path) if path.is_file() else skimage.data.lfw_subset()
    data = np.asarray(data, dtype=np.float32)
    data.setflags(write=False)
    return data[:NUM_LFW_FACES], data[NUM_LFW_FACES:]


@lru_cache(maxsize=1)
def _background_photos() -> tuple[np.ndarray, ...]:
    photos = []
    for loader, filename in BACKGROUND_SOURCES:
        path = Path(skimage.data.data_dir) / filename
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr is not None else getattr(skimage.data, loader)()
        rgb = np.asarray(rgb)[:, :, :3].astype(np.uint8)  # some loaders return RGBA
        longest = max(rgb.shape[:2])
        if longest > MAX_BACKGROUND_SIDE:
            factor = MAX_BACKGROUND_SIDE / longest
            size = (round(rgb.shape[1] * factor), round(rgb.shape[0] * factor))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        rgb.setflags(write=False)
        photos.append(rgb)
    return tuple(photos)


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"could not encode {path} as JPEG")
    atomic_write_bytes(path, encoded.tobytes())


def main(cfg: DemoConfig) -> DemoPaths:
    """``build_demo_dataset`` plus the sample photo for ``make detect``, with a summary printed."""
    paths = build_demo_dataset(cfg)
    sample = sample_photo_path(cfg.out_dir)
    atomic_write_bytes(sample, (Path(skimage.data.data_dir) / "astronaut.png").read_bytes())
    print(f"demo data set in {paths.root}")
    print(f"  train: {cfg.num_train_images} images in {paths.train_images}, annotations {paths.train_txt}")
    print(f"  val:   {cfg.num_val_images} images in {paths.val_images}, annotations {paths.val_txt}, "
          f"evaluation ground truth {paths.val_ground_truth}")
    print(f"  landmarks: {cfg.num_landmark_faces} faces, list {paths.landmarks_txt}")
    print(f"  a photo no net has seen, for detection: {sample}")
    return paths


if __name__ == "__main__":
    sys.exit(run_stage(DemoConfig, main))
