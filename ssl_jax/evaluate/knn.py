"""Weighted kNN classifier on frozen features (DINO, Caron et al. 2021, Sec. 4.1):
cosine similarity, the k nearest train features each vote exp(sim / T) for
their label, T = 0.07; DINOv2 (Oquab et al. 2023, Sec. 7 / its eval/knn.py)
reports k in {10, 20, 100, 200} (its softmax over the k similarities only
rescales each query's votes: same ranking).

Blockwise and streaming: train features arrive in batches of any size
(`KnnAccumulator.add`), are buffered up to `block` rows, and each full block
is merged into a running top-k_max per query: similarities of a test chunk
x the train block, then top-k of [running top-k; block]. The [queries, N]
similarity matrix never exists; memory is the test features, queries x
k_max and one block, whatever the size of the train split. Ties go to the
earlier train example, as one top-k over the whole matrix does.
"""
import functools
from typing import Iterable, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.progress import Progress


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _votes(train_f, train_y, test_f, k, temperature, num_classes):
  """All train features at once (the reference the tests compare against)."""
  sim = test_f @ train_f.T                                  # [Q, N]
  top_sim, top_idx = jax.lax.top_k(sim, k)
  weights = jnp.exp(top_sim / temperature)
  onehot = jax.nn.one_hot(train_y[top_idx], num_classes)    # [Q, k, C]
  return jnp.einsum("qk,qkc->qc", weights, onehot)


@functools.partial(jax.jit, static_argnames=("k",))
def _merge(top_sim, top_y, test_f, block_f, block_y, valid, k):
  """Running top-k [Q, k] (similarity, label) merged with one train block."""
  sim = jnp.where(valid[None, :], test_f @ block_f.T, -jnp.inf)      # [Q, block]
  sims = jnp.concatenate([top_sim, sim], axis=1)   # running first: it holds earlier examples
  ys = jnp.concatenate([top_y, jnp.broadcast_to(block_y[None, :], sim.shape)], axis=1)
  top_sim, idx = jax.lax.top_k(sims, k)
  return top_sim, jnp.take_along_axis(ys, idx, axis=1)


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _weighted_votes(top_sim, top_y, k, temperature, num_classes):
  """DINO's vote over the k best of the running top-k_max (padding: weight 0)."""
  weights = jnp.exp(top_sim[:, :k] / temperature)           # exp(-inf) = 0
  onehot = jax.nn.one_hot(top_y[:, :k], num_classes)        # label -1: all zeros
  return jnp.einsum("qk,qkc->qc", weights, onehot)


def _l2n(x):
  x = np.asarray(x, np.float32).reshape(len(x), -1)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _accuracy(votes: np.ndarray, y: np.ndarray) -> Tuple[int, int]:
  order = np.argsort(-votes, axis=1)
  return int((order[:, 0] == y).sum()), int((order[:, :5] == y[:, None]).any(1).sum())


class KnnAccumulator:
  """Running top-`k_max` neighbours of every test feature over streamed train batches.

  `add(train_f, train_y)` with batches of any size; `votes(k)` at
  the end. At most `block` train rows are held
  (`buffered_rows`), merged `chunk` queries at a time.
  """

  def __init__(self, test_f, num_classes: int, k_max: int, temperature: float = 0.07,
               block: int = 8192, chunk: int = 1024):
    self.test_f = _l2n(test_f)
    self.num_classes, self.k_max, self.temperature = num_classes, int(k_max), temperature
    self.block, self.chunk = int(block), int(chunk)
    q = len(self.test_f)
    pad = (-q) % self.chunk if q > self.chunk else 0
    self._queries = [jnp.asarray(c) for c in np.split(
        np.concatenate([self.test_f, np.zeros((pad, self.test_f.shape[1]), np.float32)]),
        max(1, (q + pad) // self.chunk))]
    shape = lambda c: (len(c), self.k_max)
    self._top = [(jnp.full(shape(c), -jnp.inf, jnp.float32), jnp.full(shape(c), -1, jnp.int32))
                 for c in self._queries]
    self._buf_f, self._buf_y = [], []
    self.buffered_rows = 0          # train rows held, never more than `block`
    self.num_train = 0              # train rows merged so far
    self.blocks_merged = 0

  def add(self, train_f, train_y):
    train_f, train_y = _l2n(train_f), np.asarray(train_y, np.int32)
    start = 0
    while start < len(train_f):     # cut at the block boundary: the buffer never exceeds it
      take = min(self.block - self.buffered_rows, len(train_f) - start)
      self._buf_f.append(train_f[start:start + take])
      self._buf_y.append(train_y[start:start + take])
      self.buffered_rows += take
      start += take
      if self.buffered_rows == self.block:
        self._flush()

  def _flush(self):
    if not self.buffered_rows:
      return
    f, y = np.concatenate(self._buf_f), np.concatenate(self._buf_y)
    n, pad = len(f), self.block - len(f)       # a short last block is padded (one compile)
    f = np.concatenate([f, np.zeros((pad, f.shape[1]), np.float32)])
    y = np.concatenate([y, np.full((pad,), -1, np.int32)])
    valid = jnp.asarray(np.arange(self.block) < n)
    f, y = jnp.asarray(f), jnp.asarray(y)
    self._top = [_merge(s, l, q, f, y, valid, self.k_max)
                 for (s, l), q in zip(self._top, self._queries)]
    self._buf_f, self._buf_y, self.buffered_rows = [], [], 0
    self.num_train += n
    self.blocks_merged += 1

  def votes(self, k: int) -> np.ndarray:
    """[Q, C] weighted votes of the k nearest (all of them if fewer were seen)."""
    self._flush()
    if not 1 <= k <= self.k_max:
      raise ValueError(f"k={k} must be in 1..{self.k_max} (the accumulator's k_max).")
    out = [np.asarray(_weighted_votes(s, l, k, self.temperature, self.num_classes))
           for s, l in self._top]
    return np.concatenate(out)[:len(self.test_f)]


def knn_accuracy(train_f, train_y, test_f, test_y, num_classes: int, k: int = 20,
                 temperature: float = 0.07, chunk: int = 1024, ks: Sequence[int] = (),
                 block: int = 8192):
  """Returns {"top1", "top5"} in percent at k, plus top1_k<k> / top5_k<k> for `ks`.

  In-memory features, `chunk` queries at a time, blockwise over the train
  set (`block` rows at a time). k above the number of train examples: all.
  """
  n, test_y = len(train_f), np.asarray(test_y)
  wanted = {"": min(k, n), **{f"_k{x}": min(x, n) for x in ks}}   # key suffix -> clamped k
  hits = {name: [0, 0] for name in wanted}
  block = max(1, min(block, n))
  progress = Progress(f"kNN (k={min(k, n)}, {n} train)", len(test_f), unit="queries")
  for s in range(0, len(test_f), chunk):
    acc = KnnAccumulator(test_f[s:s + chunk], num_classes, max(wanted.values()), temperature,
                         block, chunk)
    for b in range(0, n, block):
      acc.add(train_f[b:b + block], train_y[b:b + block])
    y = test_y[s:s + chunk]
    for name, kk in wanted.items():
      t1, t5 = _accuracy(acc.votes(kk), y)
      hits[name][0] += t1
      hits[name][1] += t5
    progress.update(len(y))
  q = len(test_f)
  return {f"top{i}{name}": 100.0 * h[j] / q for name, h in hits.items()
          for j, i in enumerate((1, 5))}


def streaming_knn(train_batches: Iterable[Tuple[np.ndarray, np.ndarray]], test_f, test_y,
                  num_classes: int, k: int = 20, temperature: float = 0.07,
                  ks: Sequence[int] = (), block: int = 8192, chunk: int = 1024):
  """`knn_accuracy` for train features that arrive in batches (an iterator
  of (features, labels), e.g. computed on the fly): at most `block` train
  rows are held at any time. k values above the number of train examples
  count all of them (as `knn_accuracy`'s clamp does)."""
  acc = KnnAccumulator(test_f, num_classes, max([k] + list(ks)), temperature, block, chunk)
  for f, y in train_batches:
    acc.add(f, y)
  acc.votes(1)     # flush the last block
  n = acc.num_train
  if n == 0:
    raise ValueError("streaming kNN: the train batches held no example.")
  out = {}
  for name, kk in {"": k, **{f"_k{x}": x for x in ks}}.items():
    t1, t5 = _accuracy(acc.votes(min(kk, n)), np.asarray(test_y))
    out[f"top1{name}"], out[f"top5{name}"] = 100.0 * t1 / len(test_y), 100.0 * t5 / len(test_y)
  return out
