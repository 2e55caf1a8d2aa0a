"""Typed configs: YAML read with ``yaml.safe_load`` into dataclasses, every key and type checked.

Written here because none of the field's libraries validates a dataclass tree against YAML with
"did you mean" messages and ``a.b=value`` overrides in one small function.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")

#: A config is a page of settings: larger documents, or many aliases (a "billion laughs" expands a few lines
#: into an exponential tree that validation would walk), are refused before they are built.
MAX_CONFIG_BYTES = 1 << 20
MAX_ALIASES = 100


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a document with more than :data:`MAX_ALIASES` aliases."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.n_aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.n_aliases += 1
            if self.n_aliases > MAX_ALIASES:
                raise ConfigError(f"more than {MAX_ALIASES} YAML aliases (*name); a config needs few or none")
        return super().compose_node(parent, index)


def safe_load_yaml(text: str) -> Any:
    """``yaml.safe_load`` bounded in size and aliases (raises ConfigError or yaml.YAMLError)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{len(text):,} characters; a config holds at most {MAX_CONFIG_BYTES:,}")
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys and ill-typed values."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown config key {_join(where, key)!r}.{hint} Valid keys here: {', '.join(sorted(fields))}."
        )
    kwargs = {k: _coerce(hints[k], v, _join(where, k)) for k, v in data.items()}
    return cls(**kwargs)


def from_known_keys(cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from the entries of ``data`` that are its fields (e.g. a protocol.json with extra keys)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return from_dict(cls, {k: v for k, v in data.items() if k in names})


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config (dataclasses, tuples and paths turned into YAML-safe values)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Read YAML ``path`` (optional), apply ``key.sub=value`` overrides, validate into ``cls``."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes; a config holds at most {MAX_CONFIG_BYTES:,}")
        try:
            data = safe_load_yaml(path.read_text()) or {}
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    for item in overrides or []:
        apply_override(data, item)
    try:
        return from_dict(cls, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path else str(err)) from None


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``a.b.c=value`` override in place; the value is parsed as YAML (``1e-3``, ``[1, 2]``).

    A part that meets a list picks the item whose ``name`` it is (``distill.terms.kd.temperature=2``) or,
    if it is a number, the item at that position.
    """
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    node: Any = data
    parts = key.strip().split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            index = _list_item(node, part, item)
            if last:
                node[index] = _value(raw, item)
                return
            node = node[index]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {parts[depth - 1]!r} is not a section")
        if last:
            node[part] = _value(raw, item)
            return
        node = node.setdefault(part, {})


def _value(raw: str, item: str) -> Any:
    try:
        return safe_load_yaml(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({' '.join(str(err).split())})") from None


def _list_item(items: list[Any], part: str, item: str) -> int:
    names = [x.get("name") for x in items if isinstance(x, dict)]
    for i, x in enumerate(items):
        if isinstance(x, dict) and x.get("name") == part:
            return i
    if part.isdigit() and int(part) < len(items):
        return int(part)
    raise ConfigError(f"override {item!r}: no list item named {part!r}; names here: {', '.join(map(str, names))}")


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {', '.join(map(repr, args))}; got {value!r}")
        return value
    if isinstance(tp, type) and hasattr(tp, "from_config"):  # polymorphic sections, e.g. distill terms by kind
        return tp.from_config(value, where)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp is Path and isinstance(value, str):
        return Path(value)
    if isinstance(tp, type) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")
