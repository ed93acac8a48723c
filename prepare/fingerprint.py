"""What decides a sample build's output, and its hash: the build's identity in its manifest.

A finished build whose manifest holds the same fingerprint is left alone, and a killed one
resumes only with the same fingerprint (``lmdb_builders.writer``). The fingerprint covers the
config less what cannot change the samples (paths, worker count, the mining device), a digest of
each input file's content, and a digest of the code that makes the samples (``SAMPLING_CODE``,
plus ``MINING_CODE`` for mined builds: the bytes of each file, in that fixed order). So a moved
data set is still up to date, while an edited annotation file, a retrained mining net or a change
to the sampling code is not, and a build is never kept after the code that made it has changed.

The Makefile's data rules list the same files as prerequisites (``CODE_prepare.generate.unmined``
and, for the mined builds, ``CODE_prepare.generate``: both computed by ``core.make_deps`` from the
imports, and a test keeps them equal to these).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from pathlib import Path

from core.make_deps import stage_code
from lmdb_builders.manifest import fingerprint
from prepare.mining import mining_stages

# Settings of a build (``prepare.generate.GenerateConfig``'s fields) that do not decide the
# samples; the input files enter by content.
NOT_DECIDING = ("out", "workers", "wider_txt", "wider_images", "landmarks", "mine_with", "mine_device",
                "mine_batch_size")

# The code that decides a build's bytes (paths relative to the project root), in digest order: the
# import closure of prepare.generate, computed by core.make_deps as make's prerequisites are (the
# same function, so the two cannot drift); builds that do not mine leave out what only mining runs.
SAMPLING_CODE = tuple(stage_code("prepare.generate.unmined"))
# Mined builds also depend on the cascade that finds their crops.
MINING_CODE = tuple(name for name in stage_code("prepare.generate") if name not in SAMPLING_CODE)
CODE_ROOT = Path(__file__).resolve().parents[1]


def file_digest(path) -> str:
    """A short sha256 of a file's bytes; of a CelebA folder, of its ``list_*_celeba.txt`` lists."""
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(p.glob("list_*_celeba.txt")) if p.is_dir() else [p]
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def code_files(mined: bool) -> tuple[str, ...]:
    """The files ``code_digest`` reads for a build, mined or not."""
    return SAMPLING_CODE + (MINING_CODE if mined else ())


def code_digest(files, root=None) -> str:
    """A short sha256 of the files' names and bytes, in the given order (paths relative to
    ``root``, the project root by default)."""
    root = Path(root or CODE_ROOT)
    h = hashlib.sha256()
    for name in files:
        data = (root / name).read_bytes()
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:16]


def build_fingerprint(settings: Mapping[str, object]) -> tuple[str, dict]:
    """The settings that decide a build's output (the manifest's ``config``) and their hash.

    ``settings`` are a build's fields as a mapping of name to plain value (what ``dataclasses.asdict``
    makes of ``prepare.generate.GenerateConfig``; a dataclass holding them is taken too). Digested
    by content: the files named by ``wider_txt``, ``landmarks`` (if any) and, when ``mine_with``
    names a folder of mining nets, the nets that mine ``net_sizes[0]`` px samples. Every other
    field except ``NOT_DECIDING`` enters as it is (the ``mine_*`` ones only for mined builds)."""
    described = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings)
    # The mining cascade's settings (a nested DetectorConfig) enter flat, named as their options are.
    described.update({f"mine_{k}": v for k, v in (described.pop("mine", None) or {}).items()})
    wider_txt, landmarks, mine_with = described["wider_txt"], described["landmarks"], described["mine_with"]
    for key in NOT_DECIDING:
        described.pop(key)
    described["inputs"] = {
        "wider_txt": file_digest(wider_txt),
        "landmarks": file_digest(landmarks) if landmarks else None,
    }
    if mine_with:  # retrained nets make mined data stale
        described["inputs"]["mining_nets"] = {
            name: file_digest(Path(mine_with) / f"{name}.pt") for name in mining_stages(described["net_sizes"][0])
        }
    else:
        for key in [k for k in described if k.startswith("mine_")]:
            described.pop(key)
    described["code"] = code_digest(code_files(bool(mine_with)))
    return fingerprint(described), described
