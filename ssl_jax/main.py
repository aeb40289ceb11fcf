"""Entry point: python -m ssl_jax.main --config configs/<method>.py:<variant> --workdir DIR.

`config.mode` picks the job: pretrain (then export + eval), train (the same
trainer running an evaluation objective, e.g. configs/eval/linear.py:job_cpu
on `--config.encoder`), eval (the in-memory protocols in
config.eval.protocols on `--config.encoder=<workdir>/export`).

Every setting is checked (`ssl_jax.config_check`) before any data is read. A
problem the user can fix (bad setting, unknown key, missing file, NaN loss,
failed checkpoint save, dataset not prepared, malformed checkpoint file)
prints one line `ssl_jax: error: ...` and exits 1; `--debug` or
SSL_JAX_DEBUG=1 adds the traceback.
"""
import json
import logging as std_logging
import os
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from ssl_jax import config_check
from ssl_jax import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and the export go.")
_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of errors (or SSL_JAX_DEBUG=1).")
flags.mark_flags_as_required(["config", "workdir"])

MODES = ("pretrain", "train", "eval")


def _debug(argv=None) -> bool:
  if os.environ.get("SSL_JAX_DEBUG", "") not in ("", "0"):
    return True
  if argv is not None:
    return "--debug" in argv
  return flags.FLAGS.is_parsed() and _DEBUG.value


def _fail(message: str, exc: BaseException = None, argv=None):
  """One line on stderr (the traceback only in debug mode), exit status 1."""
  if exc is not None and _debug(argv):
    traceback.print_exception(exc)
  hint = "" if _debug(argv) else " (--debug or SSL_JAX_DEBUG=1 shows the traceback)"
  print(f"ssl_jax: error: {message}{hint}", file=sys.stderr, flush=True)
  sys.exit(1)


def _parse_flags(argv):
  """absl's parse, with config problems reported in one line."""
  problem = config_check.config_file_error(argv)
  if problem:
    _fail(problem, argv=argv)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(config_check.unknown_override(argv) or f"{e} (--helpshort lists the flags)", e, argv)
  except Exception as e:  # pylint: disable=broad-except
    # ml_collections fails deep inside the parser on an unknown --config.<key>.
    _fail(config_check.unknown_override(argv) or f"bad --config: {type(e).__name__}: {e}",
          e, argv)


def _quiet_background_noise():
  """After a failed async save (disk full) Orbax logs every writer thread's
  traceback and tensorstore prints "Event loop is closed" for callbacks of
  the aborted save; the one-line CheckpointSaveError covers them all.
  `--debug` keeps them."""
  class _NoOrbaxTracebacks(std_logging.Filter):
    def filter(self, record):
      if record.exc_info and "/orbax/" in (record.pathname or ""):
        record.exc_info, record.exc_text = None, None
      return True
  logging.get_absl_handler().addFilter(_NoOrbaxTracebacks())
  previous = sys.excepthook

  def hook(kind, value, tb):
    if kind is RuntimeError and str(value) == "Event loop is closed":
      return
    previous(kind, value, tb)
  sys.excepthook = hook


def _user_errors():
  """Exceptions that mean "fix a setting or a file", not "a bug here"."""
  from ssl_jax import checkpoint, train  # pylint: disable=g-import-not-at-top
  from ssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  from ssl_jax.interop import torch_pickle  # pylint: disable=g-import-not-at-top
  return (config_check.ConfigError, train.NonFiniteError, checkpoint.CheckpointSaveError,
          sources.DatasetNotPreparedError, torch_pickle.CheckpointError, FileNotFoundError)


def main(argv):
  del argv
  distributed.initialize()   # SSL_JAX_DISTRIBUTED=1: launch/tpu_pod.sh, multi-process runs
  config, workdir = _CONFIG.value, _WORKDIR.value
  logging.set_verbosity(logging.WARNING)   # Orbax is chatty at INFO
  if not _debug():
    _quiet_background_noise()
  import jax  # pylint: disable=g-import-not-at-top
  try:
    config_check.check(config, MODES, jax.device_count())
  except config_check.ConfigError as e:
    _fail(str(e), e)
  try:
    if config.mode in ("pretrain", "train"):   # "train": the same loop, an eval objective
      from ssl_jax import train  # pylint: disable=g-import-not-at-top
      train.train(config, workdir)
    else:
      from ssl_jax import eval_job  # pylint: disable=g-import-not-at-top
      results = eval_job.run(config, workdir)
      print(json.dumps(results, indent=1))
  except _user_errors() as e:
    _fail(str(e), e)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
