"""One validation pass over a run's config, before any data is read.

Every problem is a `ConfigError` with a one-line message naming the setting,
what is wrong and the valid choices; `ssl_jax.main` prints it without a
traceback. Valid names are read from the registries and from the config
itself (methods, eval protocols, optimizers, a section's keys), so adding a
method, protocol or config key never means editing this file.

Also diagnoses a failed `--config.<key>=<value>` override: ml_collections
raises deep inside absl's flag parser; `unknown_override` names the key, the
closest valid key and the valid keys of that section.
"""
import difflib
import os
from typing import Iterable, List, Optional, Sequence

from ssl_jax import config_files


class ConfigError(ValueError):
  """A bad setting, reported in one line."""


def _did_you_mean(name: str, valid: Iterable[str]) -> str:
  close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
  return f" Did you mean {close[0]!r}?" if close else ""


def _choice(what: str, value, valid: Sequence[str]):
  valid = list(valid)
  if value not in valid:
    raise ConfigError(f"{what}={value!r} is not known.{_did_you_mean(value, valid)} "
                      f"Valid choices: {', '.join(map(str, valid))}.")


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _positive_int(what: str, v, minimum: int = 1):
  if not _is_int(v) or v < minimum:
    raise ConfigError(f"{what}={v!r} must be an integer >= {minimum}.")


# --------------------------------------------------------------- the config file


def config_argument(argv: Sequence[str]) -> Optional[str]:
  """The value of `--config` in argv ("path[:arg]"), or None."""
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a[len("--config="):]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def config_file_error(argv: Sequence[str]) -> Optional[str]:
  """One line if `--config` names no readable file, else None."""
  spec = config_argument(argv)
  if spec is None:
    return None          # absl reports the missing required flag itself
  path = spec.split(":", 1)[0]
  if not os.path.isfile(path):
    return (f"config file {path!r} not found (cwd {os.getcwd()}). Pass --config "
            "configs/<method>.py[:variant], e.g. --config configs/mae.py:vit_tiny.")
  return None


def _load_config(spec: str):
  """The ConfigDict `--config path[:arg]` builds (path from the cwd, as absl)."""
  return config_files.load_config(spec, base=os.getcwd())[0]


def _overrides(argv: Sequence[str]) -> List[str]:
  keys = []
  for a in argv:
    if a.startswith("--config.") and "=" in a:
      keys.append(a[len("--config."):].split("=", 1)[0])
    elif a.startswith("--config.") and len(a) > len("--config."):
      keys.append(a[len("--config."):])
  return keys


def unknown_override(argv: Sequence[str]) -> Optional[str]:
  """One line for the first `--config.<a.b.c>` naming a key the config lacks."""
  spec = config_argument(argv)
  if spec is None:
    return None
  try:
    config = _load_config(spec)
  except Exception:  # pylint: disable=broad-except
    return None       # the config itself fails: let the original error speak
  for key in _overrides(argv):
    node, done = config, []
    for part in key.split("."):
      keys = _section_keys(node)
      if keys is None:
        break          # a value, not a section: ml_collections' own message applies
      if part not in keys:
        section = "config" + "".join("." + d for d in done)
        return (f"unknown config key --config.{key}: {section} has no {part!r}."
                f"{_did_you_mean(part, keys)} Valid keys of {section}: {', '.join(keys)}.")
      node, done = node[part], done + [part]
  return None


def _section_keys(node) -> Optional[List[str]]:
  if hasattr(node, "keys") and callable(node.keys):
    return sorted(node.keys())
  return None


# --------------------------------------------------------------- settings


def check(config, modes: Sequence[str], device_count: int):
  """Raises ConfigError for the first bad setting; reads no data."""
  _choice("mode", config.get("mode"), modes)
  _positive_int("batch_size", config.get("batch_size"))
  total = config.get("total_steps")
  if total is not None:
    _positive_int("total_steps", total)
  elif not (isinstance(config.get("num_epochs"), (int, float)) and config.num_epochs >= 0):
    # 0 is valid: the trainer exports the initialisation (the results suite's
    # random-init twins, docs/ARCHITECTURE.md).
    raise ConfigError(f"num_epochs={config.get('num_epochs')!r} must be >= 0 "
                      "(0 exports the random initialisation), or set total_steps.")
  for key in ("log_every", "checkpoint_every"):
    _positive_int(key, config.get(key))
  _positive_int("keep_checkpoints", config.get("keep_checkpoints"))
  _positive_int("eval_every", config.get("eval_every", 0), minimum=0)
  _check_data(config.get("data"))
  if config.mode in ("pretrain", "train"):
    _check_pretrain(config, device_count)
  _check_eval(config)


def _check_data(d):
  if d is None:
    return
  _positive_int("data.image_size", d.get("image_size"))
  _positive_int("data.prefetch", d.get("prefetch", 1), minimum=0)
  _positive_int("data.shuffle_buffer", d.get("shuffle_buffer", 1))
  if d.get("max_train_examples") is not None:
    _positive_int("data.max_train_examples", d.max_train_examples)


def _check_pretrain(config, device_count: int):
  from ssl_jax import methods, optim  # pylint: disable=g-import-not-at-top
  _choice("method", config.method, methods.METHODS.names())
  o = config.get("optim")
  accum = 1
  if o is not None:
    _choice("optim.name", o.get("name", "adamw"), optim.OPTIMIZERS)
    accum = o.get("grad_accum_steps", 1)
    _positive_int("optim.grad_accum_steps", accum)
  b = config.batch_size
  if b % device_count:
    raise ConfigError(f"batch_size={b} is not divisible by the {device_count} devices; use "
                      f"a multiple of {device_count}.")
  if b % accum:
    raise ConfigError(f"batch_size={b} is not divisible by optim.grad_accum_steps={accum}; "
                      f"use a multiple of {accum * device_count}.")
  if (b // accum) % device_count:
    raise ConfigError(
        f"batch_size={b} does not split into optim.grad_accum_steps={accum} micro-batches "
        f"that each divide over {device_count} devices; use a batch_size that is a multiple "
        f"of {accum * device_count}.")
  _check_input_shards(config.get("data"), b)


def _check_input_shards(d, batch: int):
  """data.input_shards: 0 (one per process) or a multiple of the process count
  dividing the batch (data/pipeline.py:TrainIterator)."""
  import jax  # pylint: disable=g-import-not-at-top
  shards = (d.get("input_shards", 0) if d is not None else 0) or 0
  _positive_int("data.input_shards", shards, minimum=0)
  procs = jax.process_count()
  shards = shards or procs
  if shards % procs:
    raise ConfigError(f"data.input_shards={shards} is not a multiple of the {procs} processes; "
                      f"use 0 (one shard per process) or a multiple of {procs}.")
  if batch % shards:
    raise ConfigError(f"batch_size={batch} is not divisible by {shards} input shards "
                      f"(data.input_shards, {procs} processes); use a multiple of {shards}.")


def _check_eval(config):
  e = config.get("eval")
  if e is None:
    return
  from ssl_jax import evaluate  # pylint: disable=g-import-not-at-top
  from ssl_jax.evaluate import features  # pylint: disable=g-import-not-at-top
  protocols = e.get("protocols", ())
  if isinstance(protocols, str):
    raise ConfigError(f"eval.protocols={protocols!r} must be a tuple of names, e.g. "
                      f"({protocols!r},).")
  for p in protocols:
    _choice("eval.protocols entry", p, evaluate.PROTOCOLS.names())
  _choice("eval.feature", e.get("feature", "cls"), features.FEATURES)
  if not _is_int(e.get("block", -1)) or e.get("block", -1) < -1:
    raise ConfigError(f"eval.block={e.get('block')!r} must be -1 (final output) or a "
                      "0-based block index.")
  _positive_int("eval.batch_size", e.get("batch_size", 1))
  if config.mode == "train" and config.get("encoder") is not None:
    _check_encoder_path(config.encoder)
  kc = e.get("knn")
  if kc is not None:
    _positive_int("eval.knn.k", kc.get("k", 20))
    for k in tuple(kc.get("ks") or ()):
      _positive_int("eval.knn.ks entry", k)
    _positive_int("eval.knn.block", kc.get("block", 8192))
  if config.mode == "eval":
    if not config.get("encoder"):
      raise ConfigError("eval mode needs --config.encoder=<pre-training workdir>/export "
                        "(or a .safetensors / .pth checkpoint).")
    _check_encoder_path(config.encoder)


def _check_encoder_path(path):
  if not os.path.exists(path) and "://" not in path:
    raise ConfigError(f"config.encoder={path!r} does not exist.")
