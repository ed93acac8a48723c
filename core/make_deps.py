"""The code each stage runs, computed from its imports: make's code prerequisites and the builds' code digest.

    python core/make_deps.py --out build/make/code.mk     # what the Makefile includes (and remakes)

A stage's code is its module's import closure within the project: every project module it
imports, at any depth, each with the ``__init__.py`` of its packages (importing ``detector.cascade``
runs ``detector/__init__.py``). Imports are read from the source (``ast``: nothing is imported or
run), those inside functions included, like ``importlib.import_module("literal")``, so a new import
is a new prerequisite with nothing to remember. The include file holds ``CODE_<module> := files``
for each stage of ``STAGES``, like a compiler's ``-MMD`` output; the Makefile remakes it when any
project source changes. Only the standard library is imported: it runs by path at make time.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The top-level packages of the project, whose modules count as its code.
PACKAGES = ("core", "annotations", "lmdb_builders", "detector", "prepare", "trainers", "recognition", "evaluation",
            "demo", "benchmarks")

# Each stage a Makefile rule runs, with the modules left out of its closure: the sample builds
# that do not mine (P-Net's, the val build) never run the cascade that their module imports for
# the mined ones, so an edit to the detector does not rebuild them (nor retrain everything after).
STAGES = {
    "prepare.generate": (),
    "prepare.generate.unmined": ("prepare.mining", "detector"),
    "annotations.subset": (),
    "trainers.train": (),
    "trainers.original_weights": (),
    "evaluation.roc": (),
    "evaluation.wider_eval": (),
    "evaluation.landmarks": (),
    "evaluation.stage_recall": (),
    "detector.export": (),
    "prepare.identities": (),
    "trainers.embed": (),
    "evaluation.lfw": (),
    "evaluation.pairs": (),
    "annotations.pairs_csv": (),
    "evaluation.lfw_cv": (),
    "recognition.export_embedder": (),
    "recognition.enroll": (),
    "recognition.identify": (),
    "recognition.cluster": (),
    "evaluation.ident": (),
    "evaluation.calibrate": (),
    "demo.data": (),
    "demo.identities": (),
}


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of a project module (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``), None if it is not one."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = root.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=None)
def direct_imports(module: str, root: Path = ROOT) -> tuple[str, ...]:
    """The project modules ``module`` imports (``from a import b`` counts ``a.b`` when that is a module)."""
    path = module_file(module, root)
    if path is None:
        return ()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:  # the project's are absolute
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append(node.args[0].value)
    return tuple(dict.fromkeys(m for m in found if module_file(m, root) is not None))


def with_packages(module: str) -> list[str]:
    """``a.b.c`` and the packages importing it runs: ``a``, ``a.b``."""
    parts = module.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts) + 1)]


def closure(module: str, exclude=(), root: Path = ROOT) -> list[str]:
    """Every project file ``module`` runs when imported, sorted (paths relative to ``root``), less
    the modules of ``exclude`` (and what only they import). ``module`` may name a variant of
    ``STAGES`` (``prepare.generate.unmined``): its first two parts are the module."""
    start = ".".join(module.split(".")[:2]) if module_file(module, root) is None else module
    skipped = tuple(exclude)

    def excluded(name: str) -> bool:
        return any(name == x or name.startswith(x + ".") for x in skipped)

    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        for each in with_packages(name):
            if each in seen or excluded(each) or module_file(each, root) is None:
                continue
            seen.add(each)
            todo += direct_imports(each, root)
    return sorted(module_file(m, root).relative_to(root).as_posix() for m in seen)


def stage_code(stage: str, root: Path = ROOT) -> list[str]:
    """The files of ``STAGES[stage]``'s closure: what its Makefile rule lists and a build digests."""
    return closure(stage, STAGES[stage], root)


def include_text(root: Path = ROOT) -> str:
    lines = ["# Written by core/make_deps.py from the stages' imports; remade when a project source changes."]
    for stage in STAGES:
        lines.append(f"CODE_{stage} := {' '.join(stage_code(stage, root))}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python core/make_deps.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the make include file to write")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    with os.fdopen(fd, "w") as f:
        f.write(include_text())
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
