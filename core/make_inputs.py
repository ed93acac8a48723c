"""Content stamps for make: a target is up to date when its inputs' contents are, whatever the mtimes.

make compares modification times only, so an annotation edited and given an older mtime looks
unchanged, a person added inside an identity folder is invisible, and a copied build folder
(``cp -r``: new mtimes in copy order) looks out of date on every run while its stage finds nothing
to do. Each recipe therefore ends by recording what its target was made from::

    python core/make_inputs.py write TARGET PREREQUISITE...     # the recipe's last line

(``<dir>/.<name>.inputs``: each prerequisite's path, relative to the target's folder and absolute,
with the sha256 of a file's bytes or of a folder's listing: every file below it with its size and
mtime). When the Makefile is read, one call checks the stamps of the targets it names::

    python core/make_inputs.py check TARGET...

and prints the targets whose inputs changed in content (the Makefile makes them depend on FORCE);
a target whose inputs are all as recorded but newer than it by mtime is given their mtime instead,
so that make takes it as up to date (an unchanged copy settles at once). A target without a stamp is left
to make's mtimes. Only the standard library is imported, so that reading the Makefile costs
milliseconds: it runs by path (``python core/make_inputs.py``), not through the ``core`` package.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

FORMAT = "make-inputs/1"


def stamp_path(target: str | Path) -> Path:
    target = Path(target)
    return target.parent / f".{target.name}.inputs"


def folder_listing(folder: Path) -> list[str]:
    """Every file below ``folder`` as ``relative/path size mtime_ns`` lines, sorted (hidden files
    too: a folder's listing is all that is in it)."""
    lines = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in files:
            path = Path(root, name)
            try:
                st = path.stat()
            except OSError:
                continue
            lines.append(f"{path.relative_to(folder).as_posix()} {st.st_size} {st.st_mtime_ns}")
    return sorted(lines)


def digest(path: Path) -> str | None:
    """sha256 of a file's bytes, ``dir:`` + sha256 of a folder's listing, None when absent."""
    if path.is_dir():
        return "dir:" + hashlib.sha256("\n".join(folder_listing(path)).encode()).hexdigest()
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def write(target: str, prerequisites: list[str]) -> None:
    """Record the contents ``target`` was made from (prerequisites that are not files, such as
    make's FORCE, are left out). Written atomically beside the target."""
    folder = Path(target).parent
    inputs = []
    for name in dict.fromkeys(prerequisites):  # make lists a prerequisite once per rule naming it
        path = Path(name)
        found = digest(path)
        if found is None:
            continue
        inputs.append({"path": os.path.relpath(path, folder), "abs": str(path.resolve()), "digest": found})
    text = json.dumps({"format": FORMAT, "inputs": inputs}, indent=1) + "\n"
    out = stamp_path(target)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # as a plain open would, not mkstemp's 0600
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, out)


def _where(folder: Path, entry: dict) -> Path:
    """The input now: by its path relative to the target (a copied tree keeps its own inputs), else
    where it was."""
    relative = folder / entry["path"]
    return relative if relative.exists() else Path(entry["abs"])


def _stamp(target: Path) -> list[dict] | None:
    try:
        stamp = json.loads(stamp_path(target).read_text())
        target.stat()
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("format") != FORMAT:
        return None
    return stamp.get("inputs", [])


def check(targets: list[str]) -> list[str]:
    """The targets whose inputs differ in content from their stamps (make redoes them). A target
    whose inputs are all as recorded but newer by mtime gets the newest input's mtime (no newer:
    make compares with ``>``), inputs first, so that a stamped target that is an input of another
    is settled before it is compared. Targets without a stamp are make's business."""
    paths = {Path(t).resolve(): t for t in targets}
    stale, done = [], set()
    digests: dict[Path, str | None] = {}

    def settle(path: Path) -> None:
        if path in done:
            return
        done.add(path)
        inputs = _stamp(path)
        if inputs is None:
            return
        newest = 0
        for entry in inputs:
            where = _where(path.parent, entry)
            if where.resolve() in paths:
                settle(where.resolve())
            key = where.resolve()
            if key not in digests:
                digests[key] = digest(where)
            if digests[key] != entry["digest"]:
                stale.append(paths[path])
                return
            newest = max(newest, where.stat().st_mtime_ns)
        if newest > path.stat().st_mtime_ns:
            os.utime(path, ns=(newest, newest))  # make's view: as new as the inputs it was made from

    for path in paths:
        settle(path)
    return stale


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "write":
        write(argv[1], argv[2:])
        return 0
    if argv and argv[0] == "check":
        print(" ".join(check(argv[1:])))
        return 0
    print("usage: python core/make_inputs.py write TARGET PREREQUISITE... | check TARGET...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
