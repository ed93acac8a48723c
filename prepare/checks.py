"""Refusing config values that would run but mean nothing, in the words of the command line.

A config dataclass checks its fields in ``__post_init__`` with ``require``; the message names the
option as the command line spells it (``--min-face``, ``--landmark-samples-per-face``), so that
``prepare.generate``'s parser can print it as a usage error (exit 2).
"""

from __future__ import annotations

import dataclasses


def option(cls, name: str) -> str:
    """The command-line option of field ``name`` of config dataclass ``cls`` (as ``core.cli`` names it)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.metadata.get("flag") or "--" + name.replace("_", "-")


def require(ok: bool, config, name: str, rule: str) -> None:
    """Raise ``ValueError("--option must be <rule>, got <value>")`` unless ``ok``."""
    if not ok:
        value = getattr(config, name)
        shown = " ".join(map(str, value)) if isinstance(value, tuple) else value
        raise ValueError(f"{option(type(config), name)} must be {rule}, got {shown}")


def require_fraction(config, name: str) -> None:
    """A probability or IoU: a number in [0, 1]."""
    value = getattr(config, name)
    require(0.0 <= value <= 1.0, config, name, "between 0 and 1")
