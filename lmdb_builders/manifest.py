"""The JSON manifest that describes (and commits) a built shard set.

A build writes its shards first and ``manifest.json`` last: a folder without a manifest, or
with one whose fingerprint differs from the current config, is not a finished build.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lmdb_builders.schema import KIND_NAMES, SCHEMA_VERSION, SchemaError

MANIFEST_NAME = "manifest.json"


def fingerprint(obj) -> str:
    """A short stable hash of a JSON-able config: equal configs give equal fingerprints."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def empty_counts(kind_names: dict = KIND_NAMES) -> dict[str, int]:
    return {name: 0 for name in kind_names.values()}


def load_manifest(path, record: str = "sample", version: int = SCHEMA_VERSION) -> dict:
    """Read a manifest (or the manifest inside a build folder) and check that it describes records
    of kind ``record`` (``schema.RecordSpec.name``; absent in detector builds) of ``version``."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: no manifest; the build is missing or did not finish")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SchemaError(f"{path}:{e.lineno}: manifest is not valid JSON: {e.msg}") from None
    if not isinstance(manifest, dict):
        raise SchemaError(f"{path}: not a manifest (a JSON {type(manifest).__name__}, not an object)")
    found = manifest.get("record", "sample")
    if found != record:
        raise SchemaError(f"{path}: a build of {found} records, not of {record} records")
    if manifest.get("schema_version") != version:
        raise SchemaError(f"{path}: schema version {manifest.get('schema_version')}, this code reads version {version}")
    manifest["_path"] = str(path)
    return manifest


def is_build_manifest(path, record: str = "sample") -> bool:
    """Whether ``path`` is a manifest a build of ``record`` records wrote (of any schema version): a
    rerun replaces it, and refuses a file of the same name that is not (``core.outputs.check_names_free``)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(doc, dict) and doc.get("record", "sample") == record
            and all(key in doc for key in ("schema_version", "fingerprint", "shards")))


# The Makefile target that builds a manifest's kind of build, by (sizes, mined or not).
_MAKE_TARGETS = {((12,), False): "pnet-data", ((24,), True): "rnet-data", ((48,), True): "onet-data",
                 ((12, 24, 48), False): "val-data"}


def rebuild_hint(manifest: dict) -> str:
    """How to rebuild a build whose shards are damaged: delete the folder, rerun its stage."""
    root = Path(manifest["_path"]).parent
    if manifest.get("record") == "face":
        return f"delete {root} and rebuild it (make recog-data)"
    key = (tuple(manifest.get("net_sizes") or ()), bool(manifest.get("mined_with")))
    stage = f"make {_MAKE_TARGETS[key]}" if key in _MAKE_TARGETS else "python -m prepare.generate"
    return f"delete {root} and rebuild it ({stage})"
