"""Command-line options made from a config dataclass: a setting's name, type, default and help are written once,
in its field, so a new setting is one edit.

    @dataclass
    class Config:
        data: str = option(help="where the photos are")     # no default: a required --data
        epochs: int = option(50, help="at most this many")  # --epochs, an int, 50 unless given
        resume: bool = option(False, help="go on")          # --resume (a True default gives --no-resume)

    add_options(parser, Config); config = config_from_args(Config, parser.parse_args())
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING
from typing import Any


def option(default: Any = MISSING, *, help: str | None = None, flag: str | None = None,
           choices: Sequence[Any] | None = None, default_factory: Any = MISSING) -> Any:
    """A dataclass field carrying its option's help, and its flag when not `--field-name`."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"help": help, "flag": flag, "choices": choices})


def add_options(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One option per field of `config_class`, its dest the field name; a field that is itself a config dataclass
    adds its own fields' options. A bool is a switch away from its default (`--name` or `--no-name`), a tuple takes
    that many values, `X | None` takes an X, and a field without a default is a required option."""
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        kind = hints[field.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            add_options(parser, kind)
            continue
        default = _default(field)
        settings: dict[str, Any] = {"dest": field.name, "help": field.metadata.get("help")}
        if kind is bool:
            settings["action"] = "store_false" if default else "store_true"
            if default and settings["help"]:
                settings["help"] = f"turn off: {settings['help']}"
        else:
            kind = _without_none(kind)
            if typing.get_origin(kind) is tuple:
                item_types = typing.get_args(kind)
                settings.update(nargs=len(item_types), type=item_types[0])
            else:
                settings["type"] = kind
            if default is MISSING:
                settings["required"] = True
            else:
                settings["default"] = default
            if field.metadata.get("choices") is not None:
                settings["choices"] = field.metadata["choices"]
        parser.add_argument(_flag(field, default), **settings)


def config_from_args(config_class: type, args: argparse.Namespace) -> Any:
    """The config that the options `add_options` made were given (other attributes of `args` are ignored)."""
    hints = typing.get_type_hints(config_class)
    values = {}
    for field in dataclasses.fields(config_class):
        kind = hints[field.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            values[field.name] = config_from_args(kind, args)
        else:
            value = getattr(args, field.name)  # a list for an nargs option: the dataclass holds a tuple
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return config_class(**values)


def config_argv(config: Any) -> list[str]:
    """The options that give `config` back (the settings that differ from the defaults): a run made from
    Python can record the command line that repeats it."""
    argv: list[str] = []
    for field in dataclasses.fields(config):
        value, default = getattr(config, field.name), _default(field)
        if dataclasses.is_dataclass(value):
            argv += config_argv(value)
        elif value != default and value is not None:
            argv.append(_flag(field, default))
            if not isinstance(value, bool):
                argv += [str(v) for v in value] if isinstance(value, tuple) else [str(value)]
    return argv


def _default(field: dataclasses.Field) -> Any:
    return field.default_factory() if field.default_factory is not MISSING else field.default


def _flag(field: dataclasses.Field, default: Any) -> str:
    if field.metadata.get("flag"):
        return field.metadata["flag"]
    name = field.name.replace("_", "-")
    return f"--no-{name}" if default is True else f"--{name}"


def _without_none(kind: Any) -> Any:
    """X for `X | None`; any other type as it is."""
    if typing.get_origin(kind) in (types.UnionType, typing.Union):
        others = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        if len(others) == 1:
            return others[0]
    return kind
