"""Command lines generated from the stages' frozen config dataclasses.

Each field becomes ``--field-name`` (underscores to dashes) and its docstring (the string literal
written under it) is its ``--help``; a field without a default is a required option. Types:
``str``, ``int``, ``float``, ``bool`` (``--x`` / ``--no-x``), ``X | None`` (also accepts ``none``),
tuples (``nargs``) and nested config dataclasses, whose fields are offered as if they were the
outer one's (their names must not clash). ``field(metadata=...)`` may set ``flag`` (another option
name), ``choices`` and ``cli=False`` (not offered).

``--config FILE`` (repeatable; a later file wins) reads a recipe file (``configs/*.toml``): a TOML
table of the command line's options, each key an option's name without its ``--`` (``_`` or ``-``),
written flat as the command line offers them, nested configs' fields included
(``landmark-min-scale = 0.9``, ``loss-weights = [1, 1, 2.5]``, ``flip = false``). Its values become
the defaults, so options given on the command line win, and each is converted and checked as the
same text given as an option would be (the dataclass's ``__post_init__`` runs on the result). A
missing or unreadable file, a key that is no option and a value of the wrong type are usage errors
naming the file and the key.

Only ``__main__`` blocks call ``parse_config``; stages take the config object.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import textwrap
import tomllib
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


def add_config_arguments(parser: argparse.ArgumentParser, cls, seen: dict | None = None, defaults=None,
                         prefix: str = "", flags: dict | None = None) -> None:
    """Add one option per field of ``cls`` (and of its nested config dataclasses) to ``parser``;
    ``defaults``, an instance of ``cls``, gives the options' defaults in place of the class's; a
    nested config's ``prefix`` (its field's ``metadata``) goes before each of its fields' names, and
    its ``flags`` name some of its options otherwise."""
    seen = {} if seen is None else seen
    docs = field_docs(cls)
    for f, tp in _cli_fields(cls):
        inner, optional = _unwrap_optional(tp)
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if defaults is not None:
            default = getattr(defaults, f.name)
        if dataclasses.is_dataclass(inner):
            # The outer field's default is the nested options' (two stages may nest one config with
            # other defaults, as the trainers do OptimConfig).
            add_config_arguments(parser, inner, seen, default if isinstance(default, inner) else None,
                                 f.metadata.get("prefix", ""), f.metadata.get("flags"))
            continue
        dest = prefix + f.name
        if dest in seen:
            raise TypeError(f"{cls.__name__}.{dest} clashes with {seen[dest]}.{dest} on the command line")
        seen[dest] = cls.__name__
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
        flag = (flags or {}).get(f.name) or ("--" + dest.replace("_", "-") if prefix else _flag(f))
        parser.add_argument(flag, **kwargs)


def config_from_namespace(cls, ns: argparse.Namespace, _prefix: str = "", **overrides):
    """Build ``cls`` (and its nested configs) from parsed options; ``overrides`` win."""
    values = {}
    for f, tp in _cli_fields(cls):
        inner, _ = _unwrap_optional(tp)
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif dataclasses.is_dataclass(inner):
            values[f.name] = config_from_namespace(inner, ns, f.metadata.get("prefix", ""))
        elif hasattr(ns, _prefix + f.name):
            value = getattr(ns, _prefix + f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def _recipe_item(action: argparse.Action, value):
    """One TOML value as the option's converter reads the same text; a table, list or boolean where
    the option takes a word is refused rather than turned into its Python spelling."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected {_expected(action)}, got {value!r}")
    try:
        converted = (action.type or str)(str(value))
    except (TypeError, ValueError):
        raise ValueError(f"expected {_expected(action)}, got {value!r}") from None
    if action.choices is not None and converted not in action.choices:
        raise ValueError(f"{converted!r} is not one of {', '.join(map(repr, action.choices))}")
    return converted


def _expected(action: argparse.Action) -> str:
    name = getattr(action.type, "__name__", "str")
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _recipe_value(action: argparse.Action, value):
    if isinstance(action, (argparse.BooleanOptionalAction, argparse._StoreTrueAction)):
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if action.nargs == 0:
        raise ValueError("this option cannot be set from a file")
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        if not isinstance(value, list):
            raise ValueError(f"expected a list of {_expected(action).split()[-1]}s, got {value!r}")
        if isinstance(action.nargs, int) and len(value) != action.nargs:
            raise ValueError(f"expected {action.nargs} values, got {len(value)}")
        if action.nargs == "+" and not value:
            raise ValueError("expected at least one value")
        return tuple(_recipe_item(action, v) for v in value)
    return _recipe_item(action, value)


class RecipeParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` with ``--config FILE``: the file's options are the defaults, options
    given win. Read before the command line is parsed, so that a parser which adds its own options
    (``--tiny``, ``--no-ohem``) or parses twice still gets them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--config", action="append", default=[], metavar="FILE",
                          help="a recipe file (configs/*.toml): its options are the defaults, options given "
                               "win; repeatable, a later file wins")

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
        pre.add_argument("--config", action="append", default=[])
        try:
            files = pre.parse_known_args(args)[0].config
        except argparse.ArgumentError:  # --config without a file: the full parse says so
            files = []
        for path in files:
            self._read_recipe(path)
        return super().parse_known_args(args, namespace)

    def _read_recipe(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                recipe = tomllib.load(f)
        except FileNotFoundError:
            self.error(f"--config {path}: no such file")
        except OSError as e:
            self.error(f"--config {path}: cannot read it ({e.strerror or e})")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            self.error(f"--config {path}: not a TOML file ({e})")
        # The options a key may name: each --option, the --no- spelling of a boolean left out (write x = false)
        options = {opt[2:]: action for action in self._actions for opt in action.option_strings
                   if opt.startswith("--") and action.dest not in ("help", "config")
                   and not (isinstance(action, argparse.BooleanOptionalAction) and opt.startswith("--no-"))}
        for key, value in recipe.items():
            action = options.get(key.replace("_", "-"))
            if action is None:
                hint = (" (options are written flat, as on the command line, not as tables)"
                        if isinstance(value, dict) else "")
                self.error(f"--config {path}: {key!r} is not an option of {self.prog}{hint}")
            try:
                value = _recipe_value(action, value)
            except ValueError as e:
                self.error(f"--config {path}: {key}: {e}")
            self.set_defaults(**{action.dest: value})
            action.required = False  # the file gives it


def config_parser(cls, prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    parser = RecipeParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
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
