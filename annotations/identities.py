"""An identity-labelled image folder: ``<root>/<identity>/<image>`` (LFW, CASIA-WebFace, VGGFace2).

Every image below an identity's folder belongs to it (sub-folders included); images lying in
``root`` itself belong to nobody and are counted, not used. Identities and images are sorted, so
an identity's number is the same on every machine. One image file (by content) under two
identities would carry two labels: every copy of it is left out, and the copies are listed
(``IdentityFolder.ambiguous``) for the build's report. LFW itself holds such files (the same press
photo filed under two people), so refusing them would refuse LFW.

A build may read several such folders ("roots") at once: ``root_labels`` names each by its folder's
name, and ``namespaced`` keeps their identities apart (the first root's names stay as they are,
LFW's, which people lists and pairs files name; another root's ``Ann`` is ``<label>/Ann``, and no
folder name holds a ``/``). ``normalised_name`` is how one person's name is compared across data
sets that spell it differently.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class IdentityFolder:
    root: Path
    identities: tuple[str, ...]
    """Identity names (folder names), sorted."""
    images: tuple[tuple[int, str], ...]
    """(identity number, path relative to ``root`` in posix form), sorted by path."""
    loose: int
    """Images directly in ``root``, outside any identity folder (not used)."""
    ambiguous: tuple[str, ...] = ()
    """Paths (relative to ``root``) of images whose content is also filed under another identity:
    left out of ``images``, since each would carry two labels."""

    def without(self, names: set[str]) -> "IdentityFolder":
        """The same folder less the identities in ``names`` (renumbered)."""
        keep = tuple(n for n in self.identities if n not in names)
        number = {n: k for k, n in enumerate(keep)}
        images = tuple((number[self.identities[i]], r) for i, r in self.images if self.identities[i] in number)
        if not images:
            raise ValueError(f"{self.root}: no identity is left once {len(names)} are left out")
        return IdentityFolder(self.root, keep, images, self.loose, self.ambiguous)

    def counts(self) -> list[int]:
        """Images per identity, by identity number."""
        counts = [0] * len(self.identities)
        for identity, _ in self.images:
            counts[identity] += 1
        return counts


def identity_of(relative: str) -> str | None:
    """The identity an image path relative to the root belongs to (its first folder)."""
    parts = relative.split("/")
    return parts[0] if len(parts) > 1 else None


def two_label_images(root: Path, found: list[tuple[str, str]]) -> set[str]:
    """The paths of ``found`` ((identity, relative path) pairs) whose content is also filed under
    another identity: every copy of such a file, since each would carry two labels. Files are sized
    first; only those whose size another identity's file shares are read and digested."""
    by_size: dict[int, list[tuple[str, str]]] = {}
    for identity, relative in found:
        by_size.setdefault(os.stat(root / relative).st_size, []).append((identity, relative))
    ambiguous: set[str] = set()
    for size, group in by_size.items():
        if not size or len({identity for identity, _ in group}) < 2:  # empty files are no image (unreadable)
            continue
        by_digest: dict[str, list[tuple[str, str]]] = {}
        for identity, relative in group:
            with open(root / relative, "rb") as handle:
                by_digest.setdefault(hashlib.file_digest(handle, "sha256").hexdigest(), []).append((identity, relative))
        for copies in by_digest.values():
            if len({identity for identity, _ in copies}) > 1:
                ambiguous |= {relative for _, relative in copies}
    return ambiguous


def read_identity_folder(root: str | os.PathLike) -> IdentityFolder:
    """The identities and images under ``root``. FileNotFoundError for a missing root; ValueError
    for one without any identity's image."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"identity folder {root} does not exist")
    found: list[tuple[str, str]] = []
    loose = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in filenames:
            if not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            relative = (Path(dirpath) / name).relative_to(root).as_posix()
            identity = identity_of(relative)
            if identity is None:
                loose += 1
            else:
                found.append((identity, relative))
    if not found:
        raise ValueError(f"{root}: no images in <identity>/<image> folders"
                         f"{f' ({loose} images lie in the folder itself)' if loose else ''}")
    ambiguous = two_label_images(root, found)
    found = [(i, r) for i, r in found if r not in ambiguous]
    if not found:
        raise ValueError(f"{root}: every image is filed under two identities ({len(ambiguous)} files)")
    names = tuple(sorted({identity for identity, _ in found}))
    number = {name: k for k, name in enumerate(names)}
    images = tuple(sorted(((number[i], r) for i, r in found), key=lambda t: t[1]))
    return IdentityFolder(root, names, images, loose, tuple(sorted(ambiguous)))


def normalised_name(name: str) -> str:
    """A person's name as compared across data sets: case folded, accents stripped (NFKD, the
    combining marks dropped) and each run of spaces, underscores and hyphens one space, so that
    "José_Maria Aznar", "jose maria aznar" and "JOSE-MARIA  AZNAR" are one name."""
    bare = "".join(c for c in unicodedata.normalize("NFKD", name.casefold()) if not unicodedata.combining(c))
    return " ".join(t for t in re.split(r"[\s_\-]+", bare) if t)


def root_labels(roots: Sequence[str | os.PathLike]) -> list[str]:
    """Each identity root's label: its folder's name as given (a symbolic link names it otherwise).
    ValueError when two roots share one: their identities and aligned crops would mix."""
    labels = [Path(r).name or Path(r).resolve().name for r in roots]
    for k, label in enumerate(labels):
        if not label:
            raise ValueError(f"identity folder {roots[k]} has no name to label its identities with; name it by a "
                             f"symbolic link")
        if label in labels[:k]:
            raise ValueError(f"identity folders {roots[labels.index(label)]} and {roots[k]} are both named {label!r}, "
                             f"which labels their identities; give one another name (a symbolic link)")
    return labels


def namespaced(k: int, label: str, name: str) -> str:
    """The name of identity ``name`` of root number ``k`` (0-based) in a build of several roots:
    the first root's as it is, another's ``<label>/<name>``."""
    return name if k == 0 else f"{label}/{name}"
