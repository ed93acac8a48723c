"""The one line a stage ends a refused run with (``core.stage.run_stage``): ``python -m <module>: error: <message>``.

``has_prefix(proc, line)`` checks that prefix for the stage a test ran (``python -m MODULE``, ``core.launch MODULE`` or
a ``runpy.run_module("MODULE")`` child), so that a fault test checks the stage's own name, not only ``error: ``.
"""

from __future__ import annotations

import re
import subprocess

# detector.detect's main still prints its own refusals of an image or weights without its name (its body
# belongs to the DetectorConfig refactor under way); what reaches its run_stage tail has the prefix.
OWN_LINES = {"detector.detect": "error: "}


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
    """``line`` starts with the stage's prefix (for detector.detect: either spelling, see OWN_LINES)."""
    stage = stage_of(proc)
    return line.startswith(f"python -m {stage}: error: ") or line.startswith(OWN_LINES.get(stage, "\0"))
