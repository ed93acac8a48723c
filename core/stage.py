"""The one command-line tail of every stage: parse its config, run ``main``, and end a failure with a
cause outside the code in one line.

    cli = stage_cli(StatsConfig, main)      # cli(argv) -> exit code, for tests and __main__

    if __name__ == "__main__":
        sys.exit(cli())

The program's name is ``python -m <the stage's module>`` and its ``--help`` text the first paragraph
of the module's docstring, both found from ``main``, so no stage spells either again.

A usage error is argparse's (``<prog>: error: ...``, exit code 2, after the usage line); a failure
of the run whose cause is outside the code ends with the same prefix on one line of stderr, no
traceback, and exit code 2, so every stage's every refusal reads ``<prog>: error: <message>``.
Those causes are what the stages raise for them: ``ValueError`` (a bad value, annotation, schema,
weights file, device...), ``OSError`` (a missing, unreadable or unwritable file, a full disk) and
``FolderLockedError``; a stage adds its own (``errors=``), since core imports nothing above it. Any
other exception is a bug and keeps its traceback; Ctrl-C is ``core.launch``'s.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from core.cli import parse_config
from core.lock import FolderLockedError

EXIT_BAD_INPUT = 2  # argparse's exit code for a usage error: every refusal of the input ends so
KNOWN_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, FolderLockedError)


def error_line(prog: str, err: BaseException | str) -> str:
    """``<prog>: error: <message>``, the message's first line (a worker's error may hold a traceback)."""
    lines = str(err).strip().splitlines()
    message = lines[0] if lines else type(err).__name__
    return f"{prog}: error: {message}"


def run_stage(config_cls, main: Callable, prog: str | None = None, description: str | None = None,
              argv: Sequence[str] | None = None, *, errors: tuple[type[BaseException], ...] = (),
              parse: Callable | None = None, describe: Callable[[BaseException], str] | None = None) -> int:
    """Parse ``config_cls`` from ``argv`` (``parse(argv)`` instead, for a stage with options of its
    own; ``config_cls`` is then unused), run ``main(config)`` and return the exit code: ``main``'s
    when it returns an int, else 0, and 2 after one ``<prog>: error: ...`` line for a known error
    (``KNOWN_ERRORS`` + ``errors``; ``describe(err)``, when given, is the message)."""
    prog = prog or f"python -m {_module_name(main)}"
    if description is None:
        description = _module_summary(main)
    cfg = parse(argv) if parse is not None else parse_config(config_cls, argv, prog=prog, description=description)
    try:
        code = main(cfg)
    except KNOWN_ERRORS + tuple(errors) as err:
        print(error_line(prog, describe(err) if describe is not None else err), file=sys.stderr)
        return EXIT_BAD_INPUT
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def stage_cli(config_cls, main: Callable, **options) -> Callable[[Sequence[str] | None], int]:
    """The stage's command line as a function: ``cli(argv=None)`` is ``run_stage(config_cls, main,
    argv=argv, **options)`` (the tests call it with a list; ``__main__`` with none, for sys.argv)."""
    def cli(argv: Sequence[str] | None = None) -> int:
        return run_stage(config_cls, main, argv=argv, **options)
    return cli


def _module_summary(main: Callable) -> str | None:
    """The first paragraph of the docstring of ``main``'s module (the stage's ``--help`` text)."""
    module = sys.modules.get(getattr(main, "__module__", None) or "__main__")
    doc = getattr(module, "__doc__", None)
    return doc.split("\n\n")[0] if doc else None


def _module_name(main: Callable) -> str:
    module = getattr(main, "__module__", None) or "__main__"
    if module == "__main__":  # run with -m or core.launch: the name it was run under
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None else module
    return module
