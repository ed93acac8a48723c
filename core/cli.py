"""Command lines generated from the stages' frozen config dataclasses.

Each field becomes ``--field-name`` (underscores to dashes) and its docstring (the string literal
written under it) is its ``--help``; a field without a default is a required option. Types:
``str``, ``int``, ``float``, ``bool`` (``--x`` / ``--no-x``), ``X | None`` (also accepts ``none``),
tuples (``nargs``) and nested config dataclasses, whose fields are offered as if they were the
outer one's (their names must not clash). ``field(metadata=...)`` may set ``flag`` (another option
name), ``choices`` and ``cli=False`` (not offered).

Only ``__main__`` blocks call ``parse_config``; stages take the config object.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import lru_cache

_NONE = "none"


@lru_cache(maxsize=None)
def field_docs(cls) -> dict[str, str]:
    """Attribute docstrings of a dataclass: ``{field: the string literal written under it}``."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _unwrap_optional(tp):
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def _scalar(tp, optional: bool):
    def convert(text: str):
        if optional and text.lower() == _NONE:
            return None
        return tp(text)

    convert.__name__ = getattr(tp, "__name__", "value")
    return convert


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _cli_fields(cls):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli", True) and f.init:
            yield f, hints[f.name]


def _default_text(value) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return _NONE if value is None else str(value)


def add_config_arguments(parser: argparse.ArgumentParser, cls, seen: dict | None = None) -> None:
    """Add one option per field of ``cls`` (and of its nested config dataclasses) to ``parser``."""
    seen = {} if seen is None else seen
    docs = field_docs(cls)
    for f, tp in _cli_fields(cls):
        inner, optional = _unwrap_optional(tp)
        if dataclasses.is_dataclass(inner):
            add_config_arguments(parser, inner, seen)
            continue
        dest = f.name
        if dest in seen:
            raise TypeError(f"{cls.__name__}.{dest} clashes with {seen[dest]}.{dest} on the command line")
        seen[dest] = cls.__name__
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        help_text = docs.get(f.name, "").replace("%", "%%")  # argparse formats help with %
        kwargs: dict = {"dest": dest, "help": help_text}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if inner is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs["default"] = default
        else:
            origin = typing.get_origin(inner)
            if origin is tuple:
                args = typing.get_args(inner)
                element = args[0]
                kwargs["nargs"] = "+" if len(args) == 2 and args[1] is Ellipsis else len(args)
                kwargs["type"] = _scalar(element, optional)
            else:
                kwargs["type"] = _scalar(inner, optional)
            if has_default:
                kwargs["default"] = default
                kwargs["help"] = (help_text + f" (default: {_default_text(default)})".replace("%", "%%")).strip()
            else:
                kwargs["required"] = True
            if optional:
                kwargs["help"] += f"; '{_NONE}' for None"
        parser.add_argument(_flag(f), **kwargs)


def config_from_namespace(cls, ns: argparse.Namespace, **overrides):
    """Build ``cls`` (and its nested configs) from parsed options; ``overrides`` win."""
    values = {}
    for f, tp in _cli_fields(cls):
        inner, _ = _unwrap_optional(tp)
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif dataclasses.is_dataclass(inner):
            values[f.name] = config_from_namespace(inner, ns)
        elif hasattr(ns, f.name):
            value = getattr(ns, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def config_parser(cls, prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, cls)
    return parser


def parse_config(cls, argv=None, prog: str | None = None, description: str | None = None):
    """``cls`` from the command line; a config the dataclass refuses is a usage error (exit 2)."""
    parser = config_parser(cls, prog, description)
    ns = parser.parse_args(argv)
    try:
        return config_from_namespace(cls, ns)
    except (TypeError, ValueError) as e:
        parser.error(str(e))
