"""Entry point: python -m ssl_jax.main --config configs/<method>.py:<variant> --workdir DIR.

`config.mode` picks the job: pretrain (then export + eval), eval (protocols
in config.eval.protocols on `--config.encoder=<workdir>/export`).
"""
import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and the export go.")
flags.mark_flags_as_required(["config", "workdir"])

MODES = ("pretrain", "eval")


def main(argv):
  del argv
  if os.environ.get("SSL_JAX_DISTRIBUTED"):   # set by launch/tpu_pod.sh
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize()
  config, workdir = _CONFIG.value, _WORKDIR.value
  from ssl_jax.registry import check_choice  # pylint: disable=g-import-not-at-top
  check_choice("mode", config.mode, MODES)
  logging.set_verbosity(logging.WARNING)   # Orbax is chatty at INFO
  if config.mode == "pretrain":
    from ssl_jax import train  # pylint: disable=g-import-not-at-top
    train.train(config, workdir)
  else:
    from ssl_jax import eval_job  # pylint: disable=g-import-not-at-top
    results = eval_job.run(config, workdir)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
  app.run(main)
