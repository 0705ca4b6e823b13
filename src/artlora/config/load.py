"""One path for every caller: a YAML file, then `--set key=value` overrides, then validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from artlora.config.base import ConfigError, StageConfig
from artlora.config.pipeline import PipelineConfig

StageT = TypeVar("StageT", bound=StageConfig)


def with_inputs(config: StageT, **inputs: Any) -> StageT:
    """A copy of a stage config with its upstream inputs filled in, validated again."""
    return type(config).model_validate({**config.model_dump(), **inputs})


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.max_steps=10` -> (["train", "max_steps"], 10); values are read as YAML scalars or lists."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {text!r}")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            if node.get(part) is None:  # absent, or an empty section (`train:` loads as None)
                node[part] = {}
            child = node[part]
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Read a YAML config, apply `--set` overrides, validate; errors name the file and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as err:
        raise ConfigError(f"config file not found: {path}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not a text file ({err.reason} at byte {err.start}): give a YAML config") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
    return validate(apply_overrides(data, list(overrides)), source=str(path))


def validate(data: dict[str, Any], source: str = "config") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid config in {source}:"]
    for problem in err.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        got = f" (got {problem['input']!r})" if problem["type"] != "missing" else ""
        lines.append(f"  {field}: {problem['msg']}{got}")
    return "\n".join(lines)
