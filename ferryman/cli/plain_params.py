"""Coercing plain ``str`` and ``Path`` options without pydantic.

typer 0.29 coerces every parameter through a pydantic ``TypeAdapter``, built the
first time the parameter is processed (also when its value is ``None``), so every
command that parses one option imported pydantic (~100 ms of CPU, the largest part
of a ``job run --follow`` start; bench/README.md, "CLI start-up pass"). For the types most
options have, with none of typer's extra behaviour (a ``parser``, choices, a file, a
list or tuple), the adapter only does what typer's own helpers do around it:
``str(value)``, ``typer._param_types.coerce_cli_path`` (given a ``Path``: from text
it would build a pydantic adapter for ``Path(value)``), a flag's ``bool`` as it is
(and a missing value is ``None`` before any of them). Those parameters get that
coercion here, before typer builds its adapter; every other parameter, and a flag
given as text, keeps typer's. The values and errors are the same (tests/cli/test_startup.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer._click import Context
from typer._coercion import RuntimeParam, build_runtime_param
from typer._param_types import coerce_cli_path, lenient_issubclass, routes_to_path
from typer.core import _TyperParameter


@dataclass(frozen=True)
class PlainStr(RuntimeParam):
    """What typer's ``str`` adapter does (``_parse_cli_str``), without building it."""

    def _coerce_value(self, value: Any, param: _TyperParameter, ctx: Context) -> Any:
        if isinstance(value, bytes):  # argv is already text on Python 3; kept for parity
            return value.decode("utf-8", "replace")
        return str(value)


@dataclass(frozen=True)
class PlainPath(RuntimeParam):
    """What typer's path adapter does (``coerce_cli_path``), without building it."""

    def _coerce_value(self, value: Any, param: _TyperParameter, ctx: Context) -> Any:
        info = self.parameter_info
        path_type: Any = info.path_type
        if path_type is None and lenient_issubclass(self.annotation, Path):
            path_type = self.annotation
        if path_type is Path and isinstance(value, str):
            value = Path(value)  # what pydantic's Path validation makes of any text
        return coerce_cli_path(value, info, path_type=path_type, param=param, ctx=ctx)


@dataclass(frozen=True)
class PlainBool(RuntimeParam):
    """A flag's own ``True``/``False`` as it is (a missing value is ``None`` before this);
    anything else (text from an environment variable) goes through typer's adapter."""

    def _coerce_value(self, value: Any, param: _TyperParameter, ctx: Context) -> Any:
        if isinstance(value, bool):
            return value
        param._runtime_param = full = build_runtime_param(param.type_descriptor)
        return full._coerce_value(value, param=param, ctx=ctx)


def _plain(param: _TyperParameter) -> RuntimeParam | None:
    descriptor = param.type_descriptor
    info = descriptor.parameter_info
    annotation = descriptor.annotation
    if info.parser is not None or descriptor.file_annotation is not None:
        return None
    if param.multiple or param.nargs != 1 or descriptor.choices is not None:
        return None
    if annotation is bool:
        return PlainBool(parameter_info=info, annotation=annotation)
    if annotation is str:
        return PlainStr(parameter_info=info, annotation=annotation)
    if routes_to_path(annotation, info) and lenient_issubclass(annotation, Path):
        return PlainPath(parameter_info=info, annotation=annotation)
    return None


def _use_plain(param: Any) -> None:
    if isinstance(param, _TyperParameter) and param._runtime_param is None:
        plain = _plain(param)
        if plain is not None:
            param._runtime_param = plain


def use_plain_coercion(command: Any) -> Any:
    """Give ``command``'s plain parameters (and those of its built sub-commands, and the
    ``--help`` option each builds when parsing) a coercion without pydantic; returns
    ``command``."""
    for param in getattr(command, "params", ()):
        _use_plain(param)
    built_help = getattr(command, "get_help_option", None)
    if built_help is not None:

        def get_help_option(ctx: Context) -> Any:
            option = built_help(ctx)  # built on first use, then kept by the command
            _use_plain(option)
            return option

        setattr(command, "get_help_option", get_help_option)  # noqa: B010 (an instance's)
    commands = getattr(command, "commands", None)
    if isinstance(commands, dict):  # a sub-group typer built whole (not the lazy root)
        for sub in commands.values():
            use_plain_coercion(sub)
    return command
