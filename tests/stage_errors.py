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


def one_line_error(proc: subprocess.CompletedProcess, *says: str) -> str:
    """Exit code 2 and one ``python -m <stage>: error: ...`` line holding every ``says``; the line."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and has_prefix(proc, lines[0]) and "Traceback" not in proc.stderr, proc.stderr
    for text in says:
        assert text in lines[0], lines[0]
    return lines[0]


def usage_error(proc: subprocess.CompletedProcess, *says: str) -> None:
    """argparse's usage error: exit code 2, the last line ``prog: error: ...`` naming ``says``, no traceback."""
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "error: " in last and all(text in last for text in says), proc.stderr
