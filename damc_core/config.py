"""Strict loading of params.yaml into the frozen dataclasses of `damc_core.params`."""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from damc_core.errors import InputError
from damc_core.params import Params, Range

T = TypeVar("T")


class ConfigError(InputError, ValueError):
    """A params file does not match its schema; the message names the file and the key."""


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate the whole params file; every section is checked, not only the caller's."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    with path.open(encoding="utf-8") as handle:
        try:
            raw = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from error
    return from_dict(Params, raw, source=str(path))


def from_dict(schema: type[T], raw: Any, *, source: str = "<params>") -> T:
    """Build `schema` (a dataclass) from plain YAML data, rejecting unknown, missing and mistyped keys."""
    return _convert(raw, schema, key="", source=source)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-data copy of a config dataclass (tuples become lists), suitable for YAML or JSON."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {name: _plain(item) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _convert(value: Any, hint: Any, *, key: str, source: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build_dataclass(value, hint, key=key, source=source)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return _convert_annotated(value, args, key=key, source=source)
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(choice) for choice in args)
            _fail(source, key, f"must be one of {choices}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        members = [arg for arg in args if arg is not type(None)]
        if len(members) != 1:
            raise TypeError(f"unsupported union {hint} for key '{key}'")
        return _convert(value, members[0], key=key, source=source)
    if origin is tuple:
        return _convert_tuple(value, args, key=key, source=source)
    if origin in (dict, collections.abc.Mapping):
        return _convert_mapping(value, args, key=key, source=source)
    return _convert_scalar(value, hint, key=key, source=source)


def _build_dataclass(value: Any, schema: type, *, key: str, source: str) -> Any:
    where = key or "top level"
    if not isinstance(value, dict):
        _fail(source, key, f"expected a mapping for '{where}', got {_describe(value)}")
    fields = {field.name: field for field in dataclasses.fields(schema)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        names = ", ".join(_join(key, name) for name in unknown)
        _fail(source, key, f"unknown key(s) {names}; allowed under '{where}': {', '.join(fields)}")
    missing = [name for name in fields if name not in value]
    if missing:
        names = ", ".join(_join(key, name) for name in missing)
        _fail(source, key, f"missing key(s) {names}")
    hints = typing.get_type_hints(schema, include_extras=True)
    kwargs = {
        name: _convert(value[name], hints[name], key=_join(key, name), source=source) for name in fields
    }
    try:
        return schema(**kwargs)
    except ValueError as error:  # a cross-field check of the section (its __post_init__)
        _fail(source, key, str(error))


def _convert_annotated(value: Any, args: tuple, *, key: str, source: str) -> Any:
    """A value of `Annotated[type, Range(...)]`: converted to the type, then checked against the range."""
    converted = _convert(value, args[0], key=key, source=source)
    for bounds in args[1:]:
        if isinstance(bounds, Range) and not bounds.contains(converted):
            _fail(source, key, f"must be {bounds}, got {value!r}")
    return converted


def _convert_tuple(value: Any, args: tuple, *, key: str, source: str) -> tuple:
    if not isinstance(value, list):
        _fail(source, key, f"expected a list, got {_describe(value)}")
    if len(args) == 2 and args[1] is Ellipsis:
        item_hints = [args[0]] * len(value)
    else:
        if len(value) != len(args):
            _fail(source, key, f"expected a list of {len(args)} items, got {len(value)}")
        item_hints = list(args)
    return tuple(
        _convert(item, item_hint, key=f"{key}[{index}]", source=source)
        for index, (item, item_hint) in enumerate(zip(value, item_hints, strict=True))
    )


def _convert_mapping(value: Any, args: tuple, *, key: str, source: str) -> dict:
    if not isinstance(value, dict) or not value:
        _fail(source, key, f"expected a non-empty mapping, got {_describe(value)}")
    key_hint, value_hint = args
    return {
        _convert(name, key_hint, key=f"{key} (a name)", source=source): _convert(
            item, value_hint, key=_join(key, str(name)), source=source
        )
        for name, item in value.items()
    }


def _convert_scalar(value: Any, hint: Any, *, key: str, source: str) -> Any:
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint in (bool, str):
        if isinstance(value, hint):
            return value
    else:
        raise TypeError(f"unsupported type {hint} for key '{key}'")
    _fail(source, key, f"expected {hint.__name__}, got {_describe(value)}")


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _fail(source: str, key: str, message: str) -> typing.NoReturn:
    location = f"key '{key}': " if key else ""
    raise ConfigError(f"{source}: {location}{message}")
