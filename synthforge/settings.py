"""Build plain-data config dataclasses from YAML mappings, with errors that name the key path."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar

from synthforge.errors import UserError, excerpt

T = TypeVar("T")


class SpecError(UserError):
    """A pipeline spec problem; the message starts with the file and the key path."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp`` (ints are accepted as floats); raise naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option, where)
            except SpecError as exc:
                errors.append(str(exc))
        raise SpecError(errors[0])
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise SpecError(f"{where}: expected a list, got {type(value).__name__} {excerpt(value)}")
        item_type = typing.get_args(tp)[0]
        items = [_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{where}: expected a mapping, got {type(value).__name__} {excerpt(value)}")
        return dict(value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build_config(tp, value, where)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{where}: expected a finite number, got {excerpt(value)}")
    if tp in (int, float) and isinstance(value, bool):
        raise SpecError(f"{where}: expected {tp.__name__}, got a boolean")
    if isinstance(value, tp):
        return value
    raise SpecError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {excerpt(value)}")


def build_config(cls: type[T], data: Any, where: str) -> T:
    """Instantiate dataclass ``cls`` from mapping ``data``: unknown keys and wrong types name ``where.key``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping of settings, got {type(data).__name__} {excerpt(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    old_names = {old: f.name for f in fields.values() for old in f.metadata.get(ALIASES, ())}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = old_names.get(key, key)
        if name not in fields:
            raise SpecError(f"{where}.{key}: unknown setting (expected one of: {', '.join(sorted(fields))})")
        if name in kwargs:
            old = next(o for o, n in old_names.items() if n == name and o in data)
            raise SpecError(f"{where}.{name}: set twice, also under its older name {old}: keep one")
        kwargs[name] = _coerce(value, hints[name], f"{where}.{key}")
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise SpecError(f"{where}.{missing[0]}: required setting is missing")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: {exc}") from None


OMIT_IF_NONE = "omit_if_none"  # field metadata: a setting added later, left out while unset (cache keys stay)
OMIT_IF_DEFAULT = "omit_if_default"  # field metadata: a setting added later, left out at its default (likewise)
ALIASES = "aliases"  # field metadata: the older names a renamed setting is still read under


def renamed(*old: str, **field_args: Any) -> Any:
    """A dataclass field that was renamed: ``old`` names are still read as it (``field_args``: as ``field``)."""
    metadata = {**field_args.pop("metadata", {}), ALIASES: old}
    return dataclasses.field(metadata=metadata, **field_args)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain JSON-able data (tuples become lists; fields marked ``OMIT_IF_NONE`` are left
    out while None, ``OMIT_IF_DEFAULT`` at their default, so adding such a setting changes no fingerprint of
    configs that don't use it)."""
    return _plain(config)


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not (f.metadata.get(OMIT_IF_NONE) and getattr(value, f.name) is None)
            and not (f.metadata.get(OMIT_IF_DEFAULT) and getattr(value, f.name) == _default(f))
        }
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
