"""Config files and dotted overrides, shared by everything that builds a
config outside absl's `--config` flag: the results suites, `config_check`
(before absl parses), `bench/` and the tests.

A config file is a Python file (not a package module) whose `get_config(arg)`
returns an ml_collections.ConfigDict; "path.py:arg" names one variant, as on
the `--config` flag.
"""
import contextlib
import importlib.util
import os
from typing import Any, Dict, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_module(path: str, name: Optional[str] = None):
  """A Python file as a fresh module (config files are not importable)."""
  name = name or "ssl_jax_cfg_" + os.path.basename(path)[:-3]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(spec: str, base: str = REPO):
  """"configs/<x>.py[:<variant>]" -> (the ConfigDict its get_config builds,
  the module). A relative path is taken from `base` (the repository by
  default; `config_check` passes the cwd, as absl does)."""
  path, _, arg = spec.partition(":")
  full = path if os.path.isabs(path) else os.path.join(base, path)
  if not os.path.isfile(full):
    raise FileNotFoundError(f"config file {path} not found under {base} "
                            "(give configs/<name>.py:<variant>).")
  module = load_module(full)
  return (module.get_config(arg) if arg else module.get_config()), module


def set_dotted(config, overrides: Dict[str, Any], new_keys: bool = False):
  """{"a.b.c": value} onto a ConfigDict; returns it. Dict values become
  ConfigDicts. `new_keys`: allow keys the config lacks (results rows add
  fields); otherwise a missing key raises, naming the valid ones."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  with config.unlocked() if new_keys else contextlib.nullcontext():
    for key, value in overrides.items():
      node = config
      *path, last = key.split(".")
      for p in path:
        node = node[p]
      if not new_keys and last not in node:
        raise KeyError(f"override {key!r}: no such key; valid here: "
                       f"{', '.join(sorted(node))}.")
      node[last] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value
  return config

