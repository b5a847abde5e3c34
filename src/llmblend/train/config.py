"""Typed training configs from YAML, with command-line values on top (TRL's pattern).

A config is a plain dataclass whose fields carry ``metadata={"help": ...}``. :func:`build_config`
merges, in order: the dataclass defaults, a YAML file, then explicit overrides; unknown keys and
values of the wrong type are errors that name the key and the expected type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from llmblend.errors import LlmblendError

C = TypeVar("C")


def setting(help: str, default: Any = dataclasses.MISSING) -> Any:
    """A config field with its help text (shown by ``--help`` and kept in the YAML docs)."""
    return dataclasses.field(default=default, metadata={"help": help})


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """``value`` converted to ``annotation`` (str/int/float/bool, optional, tuple/list of str)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        is_null = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_null and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise LlmblendError(f"config {name}: expected a list, got {value!r}")
        return origin(str(item).strip() for item in items)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise LlmblendError(f"config {name}: expected true or false, got {value!r}")
    if annotation in (int, float, str):
        try:
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return annotation(value)
        except (TypeError, ValueError):
            raise LlmblendError(f"config {name}: expected {annotation.__name__}, got {value!r}") from None
    return value


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping; a clear error for a missing file or a file that is not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise LlmblendError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise LlmblendError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise LlmblendError(f"config file {path} must hold a mapping of settings, got {type(data).__name__}")
    return data


def build_config(cls: type[C], yaml_path: str | Path | None = None, **overrides: Any) -> C:
    """Defaults, then the YAML file, then ``overrides`` whose value is not None."""
    known = _field_types(cls)
    values: dict[str, Any] = {}
    sources = [(str(yaml_path), read_yaml(yaml_path))] if yaml_path else []
    sources.append(("command line", {k: v for k, v in overrides.items() if v is not None}))
    for where, mapping in sources:
        for key, value in mapping.items():
            name = key.replace("-", "_")
            if name not in known:
                raise LlmblendError(f"{where}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
            values[name] = _coerce(name, value, known[name])
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values and _is_required(f)]
    if missing:
        raise LlmblendError(
            f"missing required setting(s): {', '.join(missing)} (set them in YAML or as flags)"
        )
    try:
        return cls(**values)
    except ValueError as exc:
        raise LlmblendError(str(exc)) from exc


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def parse_assignments(assignments: list[str]) -> dict[str, str]:
    """``["key=value", ...]`` from ``--set`` flags into a dict; an error names a malformed one."""
    result = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LlmblendError(f"--set expects KEY=VALUE, got {item!r}")
        result[key.strip()] = value.strip()
    return result


def config_to_yaml(config: Any) -> str:
    """The config as YAML (tuples as lists), for ``config.yaml`` beside a trained model."""
    data = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
    return yaml.safe_dump(data, sort_keys=False)
