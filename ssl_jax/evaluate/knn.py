"""Weighted kNN classifier on frozen features (DINO, Caron et al. 2021, Sec. 4.1):
cosine similarity, k = 20 neighbours, each voting exp(sim / T), T = 0.07."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.progress import Progress


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _votes(train_f, train_y, test_f, k, temperature, num_classes):
  sim = test_f @ train_f.T                                  # [Q, N]
  top_sim, top_idx = jax.lax.top_k(sim, k)
  weights = jnp.exp(top_sim / temperature)
  onehot = jax.nn.one_hot(train_y[top_idx], num_classes)    # [Q, k, C]
  return jnp.einsum("qk,qkc->qc", weights, onehot)


def _l2n(x):
  x = np.asarray(x, np.float32).reshape(len(x), -1)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_accuracy(train_f, train_y, test_f, test_y, num_classes: int, k: int = 20,
                 temperature: float = 0.07, chunk: int = 1024):
  """Returns {"top1", "top5"} in percent."""
  train_f, test_f = jnp.asarray(_l2n(train_f)), _l2n(test_f)
  train_y = jnp.asarray(train_y)
  k = min(k, train_f.shape[0])
  top1 = top5 = 0
  progress = Progress(f"kNN (k={k}, {train_f.shape[0]} train)", len(test_f), unit="queries")
  for s in range(0, len(test_f), chunk):
    votes = np.asarray(_votes(train_f, train_y, jnp.asarray(test_f[s:s + chunk]), k,
                              temperature, num_classes))
    y = test_y[s:s + chunk]
    order = np.argsort(-votes, axis=1)
    top1 += int((order[:, 0] == y).sum())
    top5 += int((order[:, :5] == y[:, None]).any(1).sum())
    progress.update(len(y))
  n = len(test_f)
  return {"top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n}
