"""The one definition of a training sample record, shared by writer, reader, miner and tests.

A record is a fixed-width little-endian binary struct (a numpy structured dtype), never a
pickle, so a batch of records decodes with one ``np.frombuffer``:

=========== ========== ===================================================================
field       type       meaning
=========== ========== ===================================================================
version     uint8      ``SCHEMA_VERSION``; a reader refuses records of another version
kind        uint8      ``Kind``: 0 negative, 1 positive, 2 part face, 3 landmark
size        uint16     side of the square image in pixels (12, 24 or 48)
box         float32[4] regression offsets (see ``core.geometry``); NaN where the kind has none
landmarks   float32[10] x1..x5, y1..y5 normalised to the crop; NaN where the kind has none
image       uint8[size, size, 3]  the crop, RGB
=========== ========== ===================================================================

Which targets a kind carries (``HAS_BOX``, ``HAS_LANDMARKS``, ``CLASS_LABEL``) is decided
here too, so the loss masks, the writer's checks and the tests agree.

Keys inside a shard: ``b"%08d" % i`` for record ``i`` (fixed width, so LMDB's byte order is the
record order), plus ``META_KEY`` (JSON describing the shard) and ``KINDS_KEY`` (one uint8 kind
per record, so a reader can build per-kind indices without touching the images).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SCHEMA_VERSION = 1
NET_SIZES = (12, 24, 48)
NUM_BOX = 4
NUM_LANDMARK_VALUES = 10

META_KEY = b"__meta__"
KINDS_KEY = b"__kinds__"


class Kind(enum.IntEnum):
    NEGATIVE = 0
    POSITIVE = 1
    PART = 2
    LANDMARK = 3


KIND_NAMES = {Kind.NEGATIVE: "neg", Kind.POSITIVE: "pos", Kind.PART: "part", Kind.LANDMARK: "landmark"}
KIND_BY_NAME = {name: kind for kind, name in KIND_NAMES.items()}

# Indexed by kind value. Classification uses negatives and positives only (the paper);
# box regression positives and part faces; landmark regression landmark samples.
CLASS_LABEL = np.array([0, 1, -1, -1], dtype=np.int64)  # -1: not used for classification
HAS_BOX = np.array([False, True, True, False])
HAS_LANDMARKS = np.array([False, False, False, True])


def record_key(index: int) -> bytes:
    return b"%08d" % index


@lru_cache(maxsize=None)
def record_dtype(size: int) -> np.dtype:
    """The packed structured dtype of one record with a ``size`` x ``size`` RGB image."""
    return np.dtype(
        [
            ("version", "u1"),
            ("kind", "u1"),
            ("size", "<u2"),
            ("box", "<f4", (NUM_BOX,)),
            ("landmarks", "<f4", (NUM_LANDMARK_VALUES,)),
            ("image", "u1", (size, size, 3)),
        ]
    )


def record_nbytes(size: int) -> int:
    return record_dtype(size).itemsize


class SchemaError(ValueError):
    """A record or shard that does not follow this schema."""


class ShardCorruptError(SchemaError):
    """A shard whose bytes are not those its build wrote: missing, not an LMDB file, or records whose
    checksum differs from the manifest's. ``str()`` is one line naming the shard and how to rebuild it.

    Both error classes take one message argument, so they pickle, and a DataLoader worker's copy
    is rebuilt in the parent with its class (``reader.ShardLoader`` restores the one-line message).
    """


@dataclass(frozen=True, eq=False)
class Sample:
    """One training sample. ``box`` / ``landmarks`` are None where the kind has no such target."""

    image: np.ndarray  # uint8, (size, size, 3), RGB
    kind: Kind
    box: np.ndarray | None = None  # 4 offsets
    landmarks: np.ndarray | None = None  # 10 values

    def __post_init__(self):
        object.__setattr__(self, "kind", Kind(self.kind))
        self.to_record()  # validates shapes and which targets the kind carries

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    def to_record(self) -> np.ndarray:
        """This sample as a one-element structured array of ``record_dtype(size)``."""
        return make_records(self.image[None], self.kind,
                            None if self.box is None else np.asarray(self.box)[None],
                            None if self.landmarks is None else np.asarray(self.landmarks)[None])

    def to_bytes(self) -> bytes:
        return self.to_record().tobytes()

    @classmethod
    def from_bytes(cls, buf: bytes) -> "Sample":
        size = peek_size(buf)
        rec = decode_records([buf], size)[0]
        kind = Kind(int(rec["kind"]))
        return cls(
            image=rec["image"].copy(),
            kind=kind,
            box=rec["box"].copy() if HAS_BOX[kind] else None,
            landmarks=rec["landmarks"].copy() if HAS_LANDMARKS[kind] else None,
        )


def make_records(images: np.ndarray, kind: Kind, boxes=None, landmarks=None) -> np.ndarray:
    """Encode N samples of one kind: uint8 images (N, S, S, 3) plus the targets the kind has.

    Returns a structured array of ``record_dtype(S)``; ``.tobytes()`` of element i is record i.
    """
    kind = Kind(kind)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
        raise SchemaError(f"images must be uint8 (N, S, S, 3), got {images.dtype} {images.shape}")
    size = images.shape[1]
    if size not in NET_SIZES:
        raise SchemaError(f"image size {size} is not one of {NET_SIZES}")
    for name, values, needed, width in (("box offsets", boxes, HAS_BOX[kind], NUM_BOX),
                                        ("landmarks", landmarks, HAS_LANDMARKS[kind], NUM_LANDMARK_VALUES)):
        if (values is not None) != bool(needed):
            raise SchemaError(f"a {KIND_NAMES[kind]} sample {'needs' if needed else 'has no'} {name}")
        if values is not None and np.shape(values) != (len(images), width):
            raise SchemaError(f"{name} must have shape ({len(images)}, {width}), got {np.shape(values)}")
    recs = np.zeros(len(images), dtype=record_dtype(size))
    recs["version"] = SCHEMA_VERSION
    recs["kind"] = int(kind)
    recs["size"] = size
    recs["box"] = np.nan if boxes is None else boxes
    recs["landmarks"] = np.nan if landmarks is None else landmarks
    recs["image"] = images
    return recs


def record_size(records: np.ndarray) -> int:
    """The image size of a structured record array (checked against the schema's dtype)."""
    size = records.dtype["image"].shape[0] if records.dtype.names and "image" in records.dtype.names else None
    if size not in NET_SIZES or records.dtype != record_dtype(size):
        raise SchemaError(f"not an array of schema records: {records.dtype}")
    return size


def peek_size(buf: bytes) -> int:
    """The image size written in a record's header."""
    if len(buf) < 4:
        raise SchemaError("record shorter than its header")
    return int.from_bytes(buf[2:4], "little")


def decode_fixed(buffers, dtype: np.dtype, version: int, what: str = "record") -> np.ndarray:
    """Raw records of one fixed-size ``dtype`` (one image size) as a structured array: each must be
    ``dtype.itemsize`` bytes long and carry ``version`` (``what`` names them in the refusal)."""
    joined = b"".join(buffers)
    if len(joined) != dtype.itemsize * len(buffers):
        raise SchemaError(f"{what}s are not {dtype.itemsize} bytes long (size {dtype['image'].shape[0]})")
    recs = np.frombuffer(joined, dtype=dtype)
    if len(recs) and not (recs["version"] == version).all():
        bad = int(recs["version"][recs["version"] != version][0])
        raise SchemaError(f"{what} schema version {bad}, this reader reads version {version}")
    return recs


def decode_records(buffers, size: int) -> np.ndarray:
    """Decode raw records of one image size into a structured array, checking version and length."""
    return decode_fixed(buffers, record_dtype(size), SCHEMA_VERSION)


@dataclass(frozen=True)
class RecordSpec:
    """What the shard writer and reader need to know of a kind of record: its manifest's name and
    version, its kinds' names (the kinds index counts them), and how to read its image size from
    an array of records and decode raw records. Every record starts with the same header (uint8
    version, uint8 kind, uint16 size), so shard verification reads any of them alike."""

    name: str
    version: int
    kind_names: dict
    size_of: Callable[[np.ndarray], int]
    decode: Callable[[list, int], np.ndarray]


# The detector's training samples (this module's record); ``lmdb_builders.faces`` defines the other.
SAMPLES = RecordSpec("sample", SCHEMA_VERSION, {int(k): n for k, n in KIND_NAMES.items()}, record_size, decode_records)
