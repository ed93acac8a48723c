"""The official WIDER FACE evaluation ground truth (``eval_tools/ground_truth/*.mat``): read and write.

``wider_face_val.mat`` holds ``event_list``, ``file_list`` and ``face_bbx_list`` (boxes ``x y w h``)
as cells (events x 1) of cells (images x 1); ``wider_{easy,medium,hard}_val.mat`` hold
``gt_list``: per image, the 1-based indices of the faces that count in that setting. The reader is
used by ``evaluation.wider_eval``; the writer by ``demo.data`` (the demo's validation split) and
by the evaluator's tests (hand-built cases). Read and write round-trip: ``load_ground_truth`` of a
written folder gives back the same images, boxes and settings.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.io import loadmat, savemat

from core.atomic import atomic_write_bytes

SETTINGS = ("easy", "medium", "hard")


@dataclass(frozen=True)
class GtImage:
    event: str
    name: str  # file name without extension
    boxes: np.ndarray  # (K, 4) float x y w h
    keep: dict  # setting -> 0-based indices (int64) of the faces counted in that setting

    @property
    def key(self) -> tuple[str, str]:
        return self.event, self.name


def _cell_str(cell) -> str:
    return str(np.asarray(cell).ravel()[0])


def _cells(cell) -> list:
    arr = np.asarray(cell, dtype=object)
    return [] if arr.size == 0 else list(arr.ravel())


def load_ground_truth(gt_dir) -> list[GtImage]:
    """The official .mat files as one list of images, in file order."""
    gt_dir = Path(gt_dir)
    main = loadmat(gt_dir / "wider_face_val.mat")
    settings = {s: loadmat(gt_dir / f"wider_{s}_val.mat")["gt_list"] for s in SETTINGS}
    images = []
    for e, event_cell in enumerate(main["event_list"].ravel()):
        event = _cell_str(event_cell)
        files = _cells(main["file_list"].ravel()[e])
        boxes = _cells(main["face_bbx_list"].ravel()[e])
        keeps = {s: _cells(settings[s].ravel()[e]) for s in SETTINGS}
        for j, file_cell in enumerate(files):
            bbx = np.asarray(boxes[j], dtype=np.float64).reshape(-1, 4)
            keep = {s: np.asarray(keeps[s][j], dtype=np.int64).ravel() - 1 for s in SETTINGS}
            for s, idx in keep.items():
                if idx.size and (idx.min() < 0 or idx.max() >= len(bbx)):
                    raise ValueError(f"{event}/{_cell_str(file_cell)}: {s} gt_list index out of range")
            images.append(GtImage(event=event, name=_cell_str(file_cell), boxes=bbx, keep=keep))
    return images


def _cell(items) -> np.ndarray:
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


# The MAT 5 header is 116 bytes of free text; scipy puts the current time in it, which would make
# two builds of the same data differ. A fixed text keeps the files byte-identical for a seed; it
# names the module that first wrote them and stays as it is so that files already built still match.
MAT_HEADER = b"MATLAB 5.0 MAT-file, written by mtcnn-train evaluation.ground_truth".ljust(116)


def _save(path: Path, variables: dict) -> None:
    buf = io.BytesIO()
    savemat(buf, variables)
    data = buf.getvalue()
    atomic_write_bytes(path, MAT_HEADER + data[len(MAT_HEADER):])


def write_ground_truth(folder, images: list[GtImage]) -> Path:
    """Write ``images`` (grouped by event in their order; ``keep`` 0-based) as the official files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    events: dict[str, list[GtImage]] = {}
    for image in images:
        events.setdefault(image.event, []).append(image)
    event_list = _cell(list(events))
    file_list = _cell([_cell([im.name for im in ims]) for ims in events.values()])
    boxes = _cell([_cell([np.asarray(im.boxes, dtype=np.float64).reshape(-1, 4) for im in ims])
                   for ims in events.values()])
    _save(folder / "wider_face_val.mat", {"event_list": event_list, "file_list": file_list, "face_bbx_list": boxes})
    for s in SETTINGS:
        lists = _cell([_cell([(np.asarray(im.keep[s], dtype=np.int64) + 1).astype(np.uint16).reshape(-1, 1)
                              for im in ims]) for ims in events.values()])
        _save(folder / f"wider_{s}_val.mat", {"gt_list": lists, "event_list": event_list, "file_list": file_list})
    return folder
