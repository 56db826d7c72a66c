"""Helpers for experiment config files: the `arg` string parser and checks that name the key path.

  arg = parse_arg(arg, smoke=False, steps=100)     # "smoke=True,steps=3" -> typed fields
  tiny = load_module("experiments/tiny.py")        # an experiment file (for its get_config)
  require(config, "sft.steps", lambda v: v > 0, "must be positive", origin)
"""
import ast
import importlib.util
import os
from typing import Any, Callable

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses `k=v,k2=v2` (values typed like their defaults); an unknown key raises ValueError.

  A bare word `smoke` means `smoke=True`. Values are read as Python literals when possible.
  """
  out = ml_collections.ConfigDict(defaults)
  if not arg:
    return out
  for item in arg.split(","):
    key, sep, raw = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(f"config argument {key!r} is unknown; known: {', '.join(sorted(defaults))}")
    value: Any = True if not sep else raw
    if sep:
      try:
        value = ast.literal_eval(raw)
      except (ValueError, SyntaxError):
        value = raw
    default = defaults[key]
    if default is not None and not isinstance(value, type(default)):
      if isinstance(default, float) and isinstance(value, int):
        value = float(value)
      else:
        raise ValueError(f"config argument {key}={raw!r} must be a {type(default).__name__}")
    out[key] = value
  return out


def load_module(path: str):
  """The Python file at `path` as a module (experiment files are loaded by path, not imported)."""
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class ConfigError(ValueError):
  """A bad config value: the message names the key path, the value and the config's origin."""


def get(config: ml_collections.ConfigDict, path: str) -> Any:
  node = config
  for part in path.split("."):
    if part not in node:
      raise ConfigError(f"config.{path} is missing")
    node = node[part]
  return node


def require(config: ml_collections.ConfigDict, path: str, check: Callable[[Any], bool], message: str,
            origin: str = "") -> Any:
  """Returns config.<path>; raises ConfigError `config.<path>=<value> <message> (<origin>)` if check fails."""
  value = get(config, path)
  if not check(value):
    raise ConfigError(f"config.{path}={value!r} {message}{where(origin)}")
  return value


def where(origin: str) -> str:
  """" (origin)" for messages, or "" without one."""
  return f" ({origin})" if origin else ""
