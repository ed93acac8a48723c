"""Run a stage's module so that Ctrl-C at any moment ends it with one line, not a traceback.

    python -m core.launch prepare.generate --wider-txt ...     # what the Makefile's recipes run

``python -m MODULE`` imports torch, numpy and the rest before the module's own code can catch
anything, so a Ctrl-C during that start-up prints a ``KeyboardInterrupt`` traceback. This launcher
imports nothing heavy itself, runs the module as ``__main__`` (``runpy``: its ``sys.argv`` and exit
code as with ``-m``) and turns an interrupt, wherever it lands, into ``MODULE: interrupted`` and exit
code 130. Nothing is half-written by the interruption: every output goes through ``core.atomic``
(or a shard's ``.tmp`` name) and is renamed into place only when complete.
"""

from __future__ import annotations

import runpy
import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a process ended by Ctrl-C


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print("usage: python -m core.launch MODULE [ARGS...]", file=sys.stderr)
        return 2
    module = argv[0]
    try:
        sys.argv = [module, *argv[1:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except KeyboardInterrupt:
        print(f"{module}: interrupted; every file it wrote is whole (rerun to continue)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as done:
        code = done.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # between the launcher's own lines
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
