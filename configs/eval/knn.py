"""knn evaluation of an exported encoder (frozen), pre-trained vs random init.

Command:
  python -m ssl_jax.main --config configs/eval/knn.py \
      --config.encoder=/tmp/mae_tiny/export --workdir /tmp/eval_knn
Data defaults to the embedded Fashion-MNIST; set --config.data.name / image_size
to match the encoder's pre-training data. Results go to <workdir>/metrics.jsonl.

DINO's weighted vote (k = 20, T = 0.07: knn/top1, knn/top5) and DINOv2's
sweep k in {10, 20, 100, 200} (knn/top1_k<k>, knn/top5_k<k>). The train
features stream batch by batch into a running top-k (eval.knn.stream; at
most eval.knn.block = 8192 train rows held), with the same numbers as the
in-memory kNN (tests/test_knn_stream.py).
"""
from ssl_jax import config_defaults


def get_config(arg: str = ""):
  del arg
  c = config_defaults.eval_config("knn")
  c.eval.max_train_examples = 10_000
  c.eval.knn.ks = (10, 20, 100, 200)
  c.eval.knn.stream = True
  return c
