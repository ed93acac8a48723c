"""Outputs never replace inputs: what every stage checks about where it writes, before any work.

* ``check_output_apart``: an output folder that is, holds or lies inside one of the stage's inputs
  (a file or a folder; symbolic links resolved) is refused in one line naming both options, since
  its outputs would mix with the inputs or replace them; so is an output "folder" that is a file;
* ``check_not_shipped``: the committed weights (``weights/`` at the repository root) are written
  only when the command says so with ``--overwrite-shipped``;
* ``check_names_free``: a rerun overwrites the stage's own earlier outputs (which it tells by a
  marker in the file, or by the manifest that lists them) but never takes the name of a file it
  did not write (a user's photo, another program's file).

Each refusal is an ``OutputError`` (a ``ValueError``, which every stage's command line already
prints as one line with exit code 2).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path


SHIPPED_FLAG = "--overwrite-shipped"


class OutputError(ValueError):
    """An output that would replace or mix with an input, or a file the stage did not write; ``str()``
    is one line."""


def real_path(path) -> Path:
    """``path`` with ``~`` expanded and every symbolic link resolved (whether it exists or not)."""
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def _paths(value) -> list:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [value]
    return [v for v in value if v is not None]


def check_output_apart(out, inputs: dict[str, object], out_option: str = "--out") -> Path:
    """Refuse ``out`` (a folder the stage writes) when it is an existing file, or when it is, holds
    or lies inside any input: ``inputs`` maps an option name to a path, a list of paths, or None.
    Returns ``out``'s real path."""
    real_out = real_path(out)
    if real_out.exists() and not real_out.is_dir():
        raise OutputError(f"{out_option} {out} is a file, not a folder: name a folder for the outputs")
    for option, value in inputs.items():
        for path in _paths(value):
            real_in = real_path(path)
            if real_in == real_out:
                relation = "is"
            elif real_in.is_relative_to(real_out):
                relation = "holds"
            elif real_out.is_relative_to(real_in):
                relation = "lies inside"
            else:
                continue
            raise OutputError(f"{out_option} {out} {relation} the input {option} {path}: the outputs would mix with "
                              f"or replace the inputs; write them to a folder apart from the inputs")
    return real_out


def weights_folder(spec: str | None) -> Path | None:
    """The file or folder a ``--weights`` spec reads (``shipped`` is the committed ``weights/``); None
    for a spec the stage will refuse by itself."""
    if not spec:
        return None
    from core.weights import parse_weights

    try:
        return parse_weights(spec).path
    except ValueError:
        return None


def is_shipped(path) -> bool:
    """Whether ``path`` is, or lies inside, the committed weights folder."""
    from core.weights import SHIPPED_WEIGHTS_DIR

    return real_path(path).is_relative_to(real_path(SHIPPED_WEIGHTS_DIR))


def check_not_shipped(path, option: str, allowed: bool = False) -> None:
    """Refuse to write ``path`` (a file or a folder) in the committed weights folder unless
    ``allowed`` (the stage's ``--overwrite-shipped``)."""
    if path is not None and not allowed and is_shipped(path):
        from core.weights import SHIPPED_WEIGHTS_DIR

        raise OutputError(f"{option} {path} is in the committed weights folder {SHIPPED_WEIGHTS_DIR}, which is "
                          f"written only on purpose: pass {SHIPPED_FLAG} to replace the shipped weights, or write "
                          f"elsewhere")


def file_sha256(path) -> str:
    """The SHA-256 of a file's bytes (hex), read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_names_free(folder, names: Iterable[str], stage: str, is_own: Callable[[Path], bool] = lambda path: False,
                     avoid: Iterable = ()) -> None:
    """Refuse when a file of ``names`` exists in ``folder`` and ``is_own`` (how the stage knows its
    own outputs: a marker in the file, the manifest that lists it) says the stage did not write it,
    or when it is one of ``avoid`` (the stage's inputs)."""
    folder, avoid = Path(folder), {real_path(p) for p in avoid}
    for name in names:
        path = folder / name
        if real_path(path) in avoid:
            raise OutputError(f"{path} is an input of {stage}: it would be replaced by an output; write the outputs "
                              f"to another folder")
        if (path.exists() or path.is_symlink()) and not (path.is_file() and is_own(path)):
            raise OutputError(f"{path} exists and was not written by {stage}: it is not replaced; move it or write "
                              f"the outputs to another folder")


def json_holding(*keys: str) -> Callable[[Path], bool]:
    """An ``is_own`` for ``check_names_free``: the file is a JSON object holding every one of ``keys``,
    or a non-empty list of such objects (what the stage writes there, and another stage's file or a
    user's does not)."""
    import json

    def is_own(path: Path) -> bool:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        docs = doc if isinstance(doc, list) and doc else [doc]
        return all(isinstance(d, dict) and all(key in d for key in keys) for d in docs)

    return is_own
