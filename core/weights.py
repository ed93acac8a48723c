"""Where a set of weights comes from, and loading it into the nets.

A weights spec, accepted by every stage that runs a net (mining, detection, ROC, evaluation,
export, ``--init`` of the trainer), is one of:

* ``shipped``: the weights committed in ``weights/`` at the repository root;
* ``original:PATH``: facenet-pytorch's ``pnet.pt``/``rnet.pt``/``onet.pt`` (the original MTCNN
  weights), a folder holding them or, for one net, the file itself;
* ``PATH``: a folder with this project's ``pnet.pt`` [``rnet.pt`` [``onet.pt``]] or one such file.

Files are plain state dicts, the trainer's checkpoints, or a state dict packed with its training
record (``pack_weights``: the embedder's, which carries the people it learnt); all load with
``weights_only=True``, so a weights file can never run code. A file that cannot be used is refused
with ``WeightsError``, one line naming it: zero bytes, truncated or corrupt, objects other than
tensors, NaN or infinite values, or tensors that do not fit the net they are loaded into (another
net's, another shape).

Digests. torch reads a file whose bits changed without noticing, so the SHA-256 of a weights file
is checked on load wherever one is recorded: in ``SHA256SUMS`` of its folder (``weights/SHA256SUMS``
for the shipped files) or, for what a training run wrote, in ``<file>.sha256`` beside it (both
``sha256sum`` format, so ``sha256sum -c`` reads them). A packed file and a checkpoint also hold the
SHA-256 of their tensors and record, which travels with the file wherever it is copied.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.atomic import atomic_write_text
from core.device import resolve_device
from core.outputs import file_sha256  # noqa: F401  (core.weights.file_sha256, as before)
from core.nets import NET_NAMES, build_net, has_landmark_head, load_state

SHIPPED = "shipped"
ORIGINAL_PREFIX = "original:"
REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_WEIGHTS_DIR = REPO_ROOT / "weights"
# A training checkpoint is a dict with this "format" and the state dict under "model".
CHECKPOINT_FORMAT = "mtcnn-train-checkpoint/1"
# A weights file that carries its training record: {"format", "model", "record", "sha256"} (pack_weights).
EMBEDDER_FORMAT = "face-embedder/1"
WEIGHTS_FORMATS = (CHECKPOINT_FORMAT, EMBEDDER_FORMAT)
SUMS_FILE = "SHA256SUMS"  # a folder's recorded digests (the shipped weights'), sha256sum format
DIGEST_SUFFIX = ".sha256"  # <file>.sha256: the digest a training run recorded for the file it wrote


@dataclass(frozen=True)
class WeightsSpec:
    """A parsed weights spec: where the files are and whether they are the original MTCNN's."""

    path: Path
    original: bool

    def net_file(self, net: str) -> Path:
        """The file holding ``net``'s weights (``path`` itself when it is a file)."""
        return self.path / f"{net}.pt" if self.path.is_dir() else self.path


def parse_weights(spec: str) -> WeightsSpec:
    """``shipped`` | ``original:PATH`` | ``PATH`` -> ``WeightsSpec`` (nothing is checked on disk)."""
    spec = str(spec)
    if spec == SHIPPED:
        return WeightsSpec(SHIPPED_WEIGHTS_DIR, original=False)
    if spec.startswith(ORIGINAL_PREFIX):
        rest = spec[len(ORIGINAL_PREFIX):]
        if not rest:
            raise ValueError("'original:' needs a folder: original:PATH")
        return WeightsSpec(Path(rest).expanduser(), original=True)
    return WeightsSpec(Path(spec).expanduser(), original=False)


def is_original(spec: str) -> bool:
    return str(spec).startswith(ORIGINAL_PREFIX)


def resolve_weights(weights: str) -> Path:
    """The folder named by a ``--weights`` value: ``shipped``, ``original:PATH`` or a checkpoint folder."""
    parsed = parse_weights(weights)
    folder = parsed.path
    if weights == SHIPPED:
        if not (folder / "pnet.pt").is_file():
            raise FileNotFoundError(
                f"no shipped weights: {folder / 'pnet.pt'} does not exist. Train the nets first, or pass "
                f"'original:PATH' (a folder with facenet-pytorch's pnet.pt/rnet.pt/onet.pt) or a checkpoint folder"
            )
        return folder
    if parsed.original:
        missing = [n for n in NET_NAMES if not (folder / f"{n}.pt").is_file()]
        if missing:
            raise FileNotFoundError(
                f"original weights folder {folder} lacks {', '.join(m + '.pt' for m in missing)} "
                f"(facenet-pytorch 2.6.0's facenet_pytorch/data/{{pnet,rnet,onet}}.pt)"
            )
        return folder
    if not folder.is_dir():
        raise FileNotFoundError(
            f"weights {weights!r}: expected 'shipped', 'original:PATH' or a folder holding pnet.pt [rnet.pt [onet.pt]]"
        )
    if not (folder / "pnet.pt").is_file():
        raise FileNotFoundError(f"checkpoint folder {folder} has no pnet.pt")
    return folder


class WeightsError(ValueError):
    """A weights file that cannot be used (unreadable, not weights, not finite, or not this net's);
    ``str()`` is one line naming the file."""


def _first_line(err: BaseException, limit: int = 160) -> str:
    text = (str(err).strip().splitlines() or [""])[0]
    text = text if len(text) <= limit else text[:limit] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# What torch's weights-only unpickler says when a file holds a Python object, or bytes it cannot read.
_OBJECT = re.compile(r"Unsupported global: GLOBAL (\S+)")
_UNPICKLER = re.compile(r"WeightsUnpickler error:\s*([^\n]+)")


def _unreadable(path: Path, err: Exception) -> WeightsError:
    """Why ``torch.load`` could not read ``path``, as the user would put it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
    if size == 0:
        reason = "zero bytes"
    elif head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        # torch.save writes a zip archive whose directory is at the very end: a cut file lacks it.
        reason = f"truncated: {size:,} bytes of a zip archive without its directory at the end"
    elif isinstance(err, pickle.UnpicklingError) and (found := _OBJECT.search(str(err))):
        reason = (f"it holds pickled Python objects ({found.group(1)}), not only tensors: a whole module saved "
                  f"with torch.save(model)? Such files are never unpickled here; save net.state_dict()")
    elif isinstance(err, pickle.UnpicklingError) and (found := _UNPICKLER.search(str(err))):
        # torch's advice to retry with weights_only=False (which runs any code in the file) is not passed on
        reason = f"corrupt: not a pickle of tensors ({found.group(1).strip()})"
    elif isinstance(err, EOFError) or "EOF" in str(err):
        reason = f"truncated: {_first_line(err)}"
    else:
        reason = f"corrupt: {_first_line(err)}"
    return WeightsError(f"{path}: not a readable weights file ({reason})")


def state_problems(expected: dict, state: dict, name: str) -> list[str]:
    """What keeps ``state`` from loading into a module whose state dict is ``expected`` (named
    ``name`` in the messages): missing and unexpected keys, other shapes. Empty when it fits."""

    def listed(keys):
        return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")

    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        problems.append(f"missing {listed(missing)}")
    if unexpected:
        problems.append(f"unexpected {listed(unexpected)}")
    problems += [f"{k} is {tuple(state[k].shape)}, {name} needs {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape][:3]
    return problems


def _fit_problems(name: str, state: dict) -> list[str]:
    """What keeps ``state`` from loading into net ``name`` (empty when it fits)."""
    return state_problems(build_net(name, landmark_head=has_landmark_head(name, state)).state_dict(), state, name)


def check_fits(name: str, state: dict, path) -> None:
    """Raise ``WeightsError`` naming ``path`` unless ``state`` loads into net ``name`` (keys and shapes)."""
    problems = _fit_problems(name, state)
    if problems:
        others = [n for n in NET_NAMES if n != name and not _fit_problems(n, state)]
        detail = f"they fit {others[0]} ({others[0]}'s file under another name?)" if others else "; ".join(problems)
        raise WeightsError(f"{path}: weights do not fit {name}: {detail}")


_SUMS_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")


def read_sums(path) -> dict[str, str]:
    """``{name: hex}`` of a ``sha256sum``-format file (``HEX  NAME`` lines; blank and ``#`` lines
    skipped). ``WeightsError`` naming the file and line for any other line."""
    path, sums = Path(path), {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        found = _SUMS_LINE.fullmatch(line.strip())
        if not found:
            raise WeightsError(f"{path}:{number}: not a digest line ('SHA256  NAME', as sha256sum writes it)")
        sums[found.group(2)] = found.group(1).lower()
    return sums


def recorded_digest(path) -> tuple[str, Path] | None:
    """The SHA-256 recorded for the weights file ``path`` and the file that records it: its folder's
    ``SHA256SUMS`` where that lists it (the shipped weights), else ``<path>.sha256`` (what a training
    run wrote); None where neither does."""
    path = Path(path)
    sums = path.parent / SUMS_FILE
    if sums.is_file():
        listed = read_sums(sums)
        if path.name in listed:
            return listed[path.name], sums
    beside = Path(f"{path}{DIGEST_SUFFIX}")
    if beside.is_file():
        listed = read_sums(beside)
        if len(listed) != 1:
            raise WeightsError(f"{beside}: not the digest record of {path.name} (one line 'SHA256  {path.name}')")
        return next(iter(listed.values())), beside
    return None


def write_digest(path, digest: str) -> Path:
    """Record ``digest`` as the SHA-256 of the weights file ``path`` just written, where a load will
    look for it (``recorded_digest``): its line in the folder's ``SHA256SUMS`` where that lists the
    file (a retrained shipped net), else ``<path>.sha256``. Returns the file written."""
    path = Path(path)
    sums = path.parent / SUMS_FILE
    if sums.is_file() and path.name in read_sums(sums):
        lines = [f"{digest}  {path.name}" if (m := _SUMS_LINE.fullmatch(line.strip())) and m.group(2) == path.name
                 else line for line in sums.read_text().splitlines()]
        atomic_write_text(sums, "\n".join(lines) + "\n")
        return sums
    beside = Path(f"{path}{DIGEST_SUFFIX}")
    atomic_write_text(beside, f"{digest}  {path.name}\n")
    return beside


def _restore_hint(path: Path, record: Path) -> str:
    if record.name == SUMS_FILE and path.parent.resolve() == Path(SHIPPED_WEIGHTS_DIR).resolve():
        return (f"restore the shipped file: git checkout weights/{path.name} (replaced on purpose? then record its "
                f"SHA-256 in {record})")
    if record.name == SUMS_FILE:
        return f"copy it again from where it came (or, if it was replaced on purpose, update {record})"
    return (f"write it again from its training run (the trainer's --resume rewrites it from the last checkpoint), "
            f"or, if it was replaced on purpose, delete {record}")


def check_digest(path) -> None:
    """``WeightsError`` (one line: the file, the recorded and the found SHA-256, how to restore it)
    unless ``path``'s bytes have the digest recorded for it (``recorded_digest``; nothing to check
    where none is recorded)."""
    path = Path(path)
    recorded = recorded_digest(path)
    if recorded is None:
        return
    expected, record = recorded
    found = file_sha256(path)
    if found != expected:
        raise WeightsError(f"{path}: SHA-256 {found} is not the {expected} that {record} records, so the file "
                           f"changed since ({path.stat().st_size:,} bytes: a flipped bit, a partial copy, another "
                           f"file under its name?); {_restore_hint(path, record)}")


def content_sha256(state: dict, record) -> str:
    """SHA-256 of a state dict's tensors (each key's name, dtype, shape and bytes, in key order) and of
    its training record (canonical JSON): what ``pack_weights`` stores in the file itself."""
    h = hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode())
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous().reshape(-1)
        h.update(f"\n{key} {t.dtype} {tuple(state[key].shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def json_record(record: dict | None) -> dict | None:
    """``record`` as JSON reads it back (tuples become lists), so that the record stored in a file is
    equal to its JSON copy (``embedder.json``); TypeError for values JSON cannot hold."""
    return None if record is None else json.loads(json.dumps(record))


def pack_weights(state: dict, record: dict | None, fmt: str = EMBEDDER_FORMAT) -> dict:
    """A weights file's contents that carry their training record: ``{"format", "model": state,
    "record", "sha256": content_sha256(state, record)}``, all loadable with ``weights_only=True``."""
    record = json_record(record)
    return {"format": fmt, "model": state, "record": record, "sha256": content_sha256(state, record)}


@dataclass(frozen=True)
class Weights:
    """What a weights file holds: the tensors and the training record stored with them."""

    path: Path
    state: dict
    """The state dict (tensors only)."""
    record: dict | None
    """The training record stored in the file (``pack_weights``, an embedder's checkpoint); None
    for a plain state dict, which says nothing about how it was trained."""


def load_weights(path, device: str = "cpu", net: str | None = None) -> Weights:
    """The state dict and training record of a plain state-dict file, a packed one (``pack_weights``)
    or a training checkpoint (never unpickles objects).

    Raises ``WeightsError`` (one line naming the file) when its SHA-256 is not the one recorded for
    it (``check_digest``), when it is empty, truncated or corrupt, holds something else than
    tensors, its tensors or record are not those its stored SHA-256 was made of, or it holds NaN or
    infinite values; with ``net``, also when the tensors do not fit that net (keys or shapes). A
    missing file stays ``FileNotFoundError``; a bad ``device`` is ``core.device.DeviceError``.
    """
    path = Path(path)
    location = resolve_device(device)
    if path.is_file():
        check_digest(path)
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles before refusing them: one line, ours
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location=location, weights_only=True)
    except FileNotFoundError:
        raise
    except OSError as err:
        if not path.is_file():  # a folder, a permission problem: the OS says why
            raise WeightsError(f"{path}: not a readable weights file ({err.strerror or err})") from None
        raise _unreadable(path, err) from None
    except Exception as err:  # anything the unpickler or the zip reader raises on bad bytes
        raise _unreadable(path, err) from None
    packed, record = None, None
    if isinstance(obj, dict) and obj.get("format") in WEIGHTS_FORMATS:
        packed, obj, record = obj, obj.get("model"), obj.get("record")
        if record is not None and not isinstance(record, dict):
            raise WeightsError(f"{path}: its training record is {type(record).__name__}, not a dict")
    other = [(k, v) for k, v in obj.items() if not isinstance(v, torch.Tensor)] if isinstance(obj, dict) else []
    if not isinstance(obj, dict) or not obj or other:
        what = (type(obj).__name__ if not isinstance(obj, dict) else "an empty dict" if not obj
                else f"a dict whose {other[0][0]!r} is {type(other[0][1]).__name__}, not a tensor")
        raise WeightsError(f"{path}: not a state dict or training checkpoint (holds {what})")
    stored = packed.get("sha256") if packed is not None else None
    if stored is not None and (found := content_sha256(obj, record)) != stored:
        raise WeightsError(f"{path}: its tensors and training record hash to SHA-256 {found}, not the {stored} "
                           f"stored with them, so they changed after the file was written (a flipped bit?)")
    floats = [v for v in obj.values() if v.is_floating_point()]
    bad = sum(int((~torch.isfinite(v)).sum()) for v in floats)
    if bad:
        total = sum(v.numel() for v in floats)
        raise WeightsError(f"{path}: {bad:,} of {total:,} values are NaN or infinite (a diverged training run?)")
    if net is not None:
        check_fits(net, obj, path)
    return Weights(path, obj, record)


def load_state_dict(path, device: str = "cpu", net: str | None = None) -> dict:
    """The state dict of a weights file (``load_weights``, which says what is refused)."""
    return load_weights(path, device, net).state


def load_net(name: str, path, device: str = "cpu") -> nn.Module:
    """Net ``name`` built to match the file (with or without the optional landmark head) and loaded.

    Raises ``WeightsError`` when the file is unusable or does not fit ``name`` (``load_state_dict``).
    """
    state = load_state_dict(path, device, net=name)
    net = build_net(name, landmark_head=has_landmark_head(name, state))
    load_state(net, name, state)
    return net


def load_nets(folder: Path, device: str = "cpu") -> dict[str, nn.Module]:
    """Build and load every net whose ``<name>.pt`` state dict is in ``folder`` (pnet first, no gap)."""
    resolve_device(device)  # a device this machine lacks is refused before any file is read
    nets = {}
    for name in NET_NAMES:
        path = Path(folder) / f"{name}.pt"
        if not path.is_file():
            later = [n for n in NET_NAMES[NET_NAMES.index(name) + 1:] if (Path(folder) / f"{n}.pt").is_file()]
            if later:
                raise FileNotFoundError(f"{folder} has {', '.join(n + '.pt' for n in later)} but no {name}.pt")
            break
        nets[name] = load_net(name, path, device)
    if not nets:
        raise FileNotFoundError(f"{folder} has no pnet.pt")
    return nets


def weights_digests(weights: str) -> dict[str, str]:
    """sha256 of each net file a ``--weights`` spec names (``{"pnet.pt": hex, ...}``): what a result
    made with these weights records, so that a later run can tell whether the files changed."""
    folder = resolve_weights(weights)
    return {f"{name}.pt": file_sha256(folder / f"{name}.pt") for name in NET_NAMES if (folder / f"{name}.pt").is_file()}
