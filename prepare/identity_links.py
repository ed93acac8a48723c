"""A flat folder of images and an identity list as an identity folder of links (CelebA's layout).

    python -m prepare.identity_links --images celeba/Celeb --list celeba/identity_CelebA.txt --out build/celeba

CelebA ships its images in one flat folder and their people in ``identity_CelebA.txt``
(``annotations.celeba``). This writes ``<out>/<identity>/<image>``, each a symbolic link to the
image's real path, and ``<out>/links.json`` (the counts below and the list's SHA-256), so that the
folder is an identity root like LFW's: ``make recog-data IDENTITIES="lfw/images build/celeba"``,
``make enroll GALLERY=...`` and every other reader of ``annotations.identities`` take it as it is.
Links rather than a reader of the flat layout inside ``prepare.identities``: one reader of identity
folders stays the only one, a root stays a plain path that make can name (a ``folder:list`` spec
holds the ``:`` make refuses in file names), and no image is copied (they are never the project's).

Images the list names but the folder lacks are counted (the list covers all 202,599 images of
CelebA; a subset holds a few thousand), and so are the folder's images the list does not name
(linked nowhere). The folder is built beside ``--out`` and renamed into place, so it is whole or
absent; a rerun replaces a folder this stage wrote and refuses any other. Bad input (a missing
folder, a malformed list line: one line naming file:line) exits with code 2.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from annotations.celeba import parse_identity_list
from annotations.identities import IMAGE_SUFFIXES
from core.atomic import current_umask, atomic_write_json
from core.outputs import OutputError, check_output_apart, file_sha256, json_holding
from core.stage import stage_cli

PROG = "python -m prepare.identity_links"
LINKS_NAME = "links.json"


@dataclass(frozen=True)
class IdentityLinksConfig:
    images: str
    """Flat folder of images (CelebA's img_celeba or a part of it)."""
    list: str
    """Identity list: '<image> <identity>' lines, an optional 'image identity' header (identity_CelebA.txt)."""
    out: str
    """Identity folder to write: <out>/<identity>/<image> links and links.json."""


def check_replaceable(out: Path) -> None:
    """An existing ``out`` is replaced only when this stage wrote it (its ``links.json``) or it is empty."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputError(f"--out {out} is not a folder: name a folder for the identity links")
    if out.is_dir() and any(out.iterdir()) and not json_holding("list_sha256", "linked")(out / LINKS_NAME):
        raise OutputError(f"{out} exists and was not written by {PROG} (no {LINKS_NAME}): it is not replaced; "
                          f"move it or name another folder")


def main(cfg: IdentityLinksConfig) -> dict:
    """Write the links; returns what ``links.json`` records."""
    images, out = Path(cfg.images), Path(cfg.out)
    if not images.is_dir():
        raise FileNotFoundError(f"images folder {images} does not exist")
    check_output_apart(out, {"--images": images, "--list": cfg.list})
    check_replaceable(out)
    listed = parse_identity_list(cfg.list)
    present = sorted(p.name for p in images.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES) and p.is_file())
    linked = [name for name in present if name in listed]
    unlisted = [name for name in present if name not in listed]
    if not linked:
        raise ValueError(f"{cfg.list} names none of the {len(present)} images of {images}")
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        real = images.resolve()
        for name in linked:
            folder = building / listed[name]
            folder.mkdir(exist_ok=True)
            os.symlink(real / name, folder / name)
        record = {"images": str(real), "list": str(Path(cfg.list).resolve()), "list_sha256": file_sha256(cfg.list),
                  "listed": len(listed), "linked": len(linked), "identities": len({listed[n] for n in linked}),
                  "listed_absent": len(listed) - len(linked), "unlisted": len(unlisted), "unlisted_first": unlisted[:10]}
        atomic_write_json(building / LINKS_NAME, record)
        os.chmod(building, 0o777 & ~current_umask())  # mkdtemp's 0700 is for a name nobody else uses
        if out.exists():
            shutil.rmtree(out)  # links and links.json only (checked above); rmtree never follows a link
        building.rename(out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    print(f"{record['linked']} images of {record['identities']} identities linked -> {out}; "
          f"{record['listed_absent']} listed images absent from {images}, {record['unlisted']} of its images unlisted")
    return record


cli = stage_cli(IdentityLinksConfig, main)

if __name__ == "__main__":
    sys.exit(cli())
