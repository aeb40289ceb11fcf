"""linear evaluation of an exported encoder (frozen), pre-trained vs random init.

Command:
  python -m ssl_jax.main --config configs/eval/linear.py \
      --config.encoder=/tmp/mae_tiny/export --workdir /tmp/eval_linear
Data defaults to the embedded Fashion-MNIST; set --config.data.name / image_size
to match the encoder's pre-training data. Results go to <workdir>/metrics.jsonl.
"""
from ssl_jax import config_defaults


def get_config(arg: str = ""):
  del arg
  c = config_defaults.eval_config("linear")
  c.eval.max_train_examples = 10_000
  return c
