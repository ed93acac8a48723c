"""The one line a stage ends a refused run with (``core.stage.run_stage``): ``python -m <module>: error: <message>``.

``has_prefix(proc, line)`` checks that prefix for the stage a test ran (``python -m MODULE``, ``core.launch MODULE`` or
a ``runpy.run_module("MODULE")`` child), so that a fault test checks the stage's own name, not only ``error: ``.
"""

from __future__ import annotations

import re
import subprocess



def stage_of(proc: subprocess.CompletedProcess) -> str:
    """The module a child process ran as its stage."""
    args = [str(a) for a in proc.args]
    if "-m" in args:
        module = args[args.index("-m") + 1]
        return args[args.index("-m") + 2] if module == "core.launch" else module
    found = re.search(r"run_module\((['\"])([\w.]+)\1", args[args.index("-c") + 1]) if "-c" in args else None
    if found is None:
        raise ValueError(f"no stage in {args}")
    return found.group(2)


def has_prefix(proc: subprocess.CompletedProcess, line: str) -> bool:
    """``line`` starts with the stage's prefix."""
    return line.startswith(f"python -m {stage_of(proc)}: error: ")
