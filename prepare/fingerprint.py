"""What decides a sample build's output, and its hash: the build's identity in its manifest.

A finished build whose manifest holds the same fingerprint is left alone, and a killed one
resumes only with the same fingerprint (``lmdb_builders.writer``). The fingerprint covers the
config less what cannot change the samples (paths, worker count, the mining device) plus a
digest of each input file's content, so a moved data set is still up to date, and an edited
annotation file or a retrained mining net is not.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from lmdb_builders.manifest import fingerprint
from prepare.mining import mining_stages

if TYPE_CHECKING:
    from prepare.generate import GenerateConfig

# Fields of GenerateConfig that do not decide the samples; the input files enter by content.
NOT_DECIDING = ("out", "workers", "wider_txt", "wider_images", "landmarks", "mine_with", "mine_device")


def file_digest(path) -> str:
    """A short sha256 of a file's bytes; of a CelebA folder, of its ``list_*_celeba.txt`` lists."""
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(p.glob("list_*_celeba.txt")) if p.is_dir() else [p]
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def build_fingerprint(cfg: GenerateConfig) -> tuple[str, dict]:
    """The config that decides the output (the manifest's ``config``) and its hash."""
    described = dataclasses.asdict(cfg)
    for key in NOT_DECIDING:
        described.pop(key)
    described["inputs"] = {
        "wider_txt": file_digest(cfg.wider_txt),
        "landmarks": file_digest(cfg.landmarks) if cfg.landmarks else None,
    }
    if cfg.mine_with:  # retrained nets make mined data stale
        described["inputs"]["mining_nets"] = {
            name: file_digest(Path(cfg.mine_with) / f"{name}.pt") for name in mining_stages(cfg.net_sizes[0])
        }
    else:
        for key in [k for k in described if k.startswith("mine_")]:
            described.pop(key)
    return fingerprint(described), described
