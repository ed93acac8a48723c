"""The one definition of an aligned identity face record (``make recog-data``'s shards).

Same header as the detector's samples (``lmdb_builders.schema``), so the shard writer, reader and
verification serve both; a packed little-endian struct, never a pickle:

=========== ========== ===================================================================
field       type       meaning
=========== ========== ===================================================================
version     uint8      ``FACE_SCHEMA_VERSION``
kind        uint8      0 (``face``): the kinds index of a shard counts faces
size        uint16     side of the square aligned crop in pixels
identity    int32      the identity's number in the build's manifest (``identities``)
source      int32      the image's number in the build's manifest (``images``)
image       uint8[size, size, 3]  the aligned crop, RGB
=========== ========== ===================================================================
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from lmdb_builders.schema import RecordSpec, SchemaError, decode_fixed

FACE_SCHEMA_VERSION = 1
FACE_KIND = 0
MIN_SIZE, MAX_SIZE = 16, 1024


@lru_cache(maxsize=None)
def face_dtype(size: int) -> np.dtype:
    return np.dtype([("version", "u1"), ("kind", "u1"), ("size", "<u2"), ("identity", "<i4"), ("source", "<i4"),
                     ("image", "u1", (size, size, 3))])


def make_face_records(images: np.ndarray, identities, sources) -> np.ndarray:
    """Encode N aligned crops (uint8 (N, S, S, 3)) with their identity and image numbers."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
        raise SchemaError(f"face crops must be uint8 (N, S, S, 3), got {images.dtype} {images.shape}")
    size = images.shape[1]
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise SchemaError(f"face crop size {size} is outside {MIN_SIZE}-{MAX_SIZE}")
    identities, sources = np.asarray(identities), np.asarray(sources)
    if identities.shape != (len(images),) or sources.shape != (len(images),) or (identities < 0).any():
        raise SchemaError(f"need one identity number >= 0 and one source number per crop, got "
                          f"{identities.shape} and {sources.shape} for {len(images)} crops")
    recs = np.zeros(len(images), dtype=face_dtype(size))
    recs["version"], recs["kind"], recs["size"] = FACE_SCHEMA_VERSION, FACE_KIND, size
    recs["identity"], recs["source"], recs["image"] = identities, sources, images
    return recs


def face_record_size(records: np.ndarray) -> int:
    size = records.dtype["image"].shape[0] if records.dtype.names and "image" in records.dtype.names else None
    if size is None or records.dtype != face_dtype(size):
        raise SchemaError(f"not an array of face records: {records.dtype}")
    return size


def decode_face_records(buffers, size: int) -> np.ndarray:
    return decode_fixed(buffers, face_dtype(size), FACE_SCHEMA_VERSION, "face record")


FACES = RecordSpec("face", FACE_SCHEMA_VERSION, {FACE_KIND: "face"}, face_record_size, decode_face_records)
