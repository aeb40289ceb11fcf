"""Layer-wise Centered Kernel Alignment with the minibatch unbiased HSIC.

002 Sec. 4.2, Eq. (1): S(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),
K = X X^T, L = Y Y^T (linear kernels). HSIC is the unbiased estimator of
Song et al. (2012) averaged over minibatches (Nguyen et al. 2021, Eq. 3), so
memory does not grow with the number of images. Each image's representation
of a layer is its flattened patch tokens; layer 0 is the patch embedding and
layer k the normalised output of block k, i.e. the first LayerNorm of block
k+1 (002 Fig. 2), and the final LayerNorm for the last block.
"""
import json
import os
import warnings
from typing import Dict, Iterable, List, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def gram(x) -> np.ndarray:
  """x [n, ...] -> linear-kernel Gram matrix [n, n] in float64 of the
  batch-centred features.

  Centring changes no HSIC (U-centring below removes any K + u1' + 1v'), but
  it removes the cancellation that a large shared offset (e.g. LayerNorm
  biases on every token) causes: with an offset of 1e5 the uncentred
  expanded formula returned a self-HSIC of -1.3e7 for a true value of 28.
  """
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  x = x - x.mean(0, keepdims=True)
  return x @ x.T


# A U-centred Gram whose norm is below this fraction of the Gram's norm is
# round-off: the representation does not vary across the batch.
DEGENERATE_RTOL = 1e-9


def u_centre(k: np.ndarray) -> np.ndarray:
  """U-centring (Szekely & Rizzo 2014, Def. 1): zero diagonal and
  K~_ij - row_i / (n-2) - col_j / (n-2) + sum / ((n-1)(n-2)) off it.

  HSIC_1(K, L) = <U(K), U(L)> / (n(n-3)) (their Prop. 1), so the unbiased
  self-HSIC is a sum of squares: never negative. U(K) at round-off level is
  set to exactly zero (a batch over which the representation is constant).
  """
  n = k.shape[0]
  k = np.array(k, np.float64)
  np.fill_diagonal(k, 0.0)
  row = k.sum(1, keepdims=True)
  col = k.sum(0, keepdims=True)
  u = k - row / (n - 2) - col / (n - 2) + k.sum() / ((n - 1) * (n - 2))
  np.fill_diagonal(u, 0.0)
  if np.linalg.norm(u) <= DEGENERATE_RTOL * np.linalg.norm(k):
    u[:] = 0.0
  return u


def hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:
  """Unbiased HSIC_1 of Song et al. (2012) (Nguyen et al. 2021, Eq. 3).

  HSIC_1 = [tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)),
  K~, L~ the Gram matrices with zeroed diagonals, computed as the inner
  product of the U-centred matrices (equal in exact arithmetic; see
  `u_centre`). Needs n >= 4.
  """
  n = k.shape[0]
  if n < 4:
    raise ValueError(f"unbiased HSIC needs a minibatch of at least 4 examples, got {n}.")
  uk = u_centre(k)
  ul = uk if l is k else u_centre(l)
  return float(np.sum(uk * ul)) / (n * (n - 3))


def _normalise(cross, self_a, self_b) -> np.ndarray:
  """cross / sqrt(self_a self_b); NaN, with a warning, where a self-HSIC is
  not positive (a representation constant over the batch), never the huge
  ratio that dividing by ~0 gives."""
  cross = np.asarray(cross, np.float64)
  self_a = np.asarray(self_a, np.float64).reshape(-1, 1)
  self_b = np.asarray(self_b, np.float64).reshape(1, -1)
  ok = (self_a > 0) & (self_b > 0)
  if not ok.all():
    bad_a = np.flatnonzero(self_a[:, 0] <= 0).tolist()
    bad_b = np.flatnonzero(self_b[0] <= 0).tolist()
    warnings.warn(
        f"CKA undefined: the unbiased self-HSIC is not positive for layers {bad_a} of A "
        f"and {bad_b} of B (a representation that does not vary over the batch); those "
        "entries are NaN. Use more examples per batch or check the features.",
        RuntimeWarning, stacklevel=3)
  with np.errstate(invalid="ignore", divide="ignore"):
    out = cross / np.sqrt(np.where(ok, self_a * self_b, 1.0))
  return np.where(ok, out, np.nan)


def cka(x, y) -> float:
  """Single-batch linear CKA of two representations of the same n examples;
  NaN (with a warning) when either does not vary over the batch."""
  k, l = gram(x), gram(y)
  return float(_normalise(hsic_unbiased(k, l), hsic_unbiased(k, k), hsic_unbiased(l, l))[0, 0])


class MinibatchCKA:
  """Accumulates HSIC over minibatches for every (layer of A, layer of B) pair.

  CKA_ij = sum_b HSIC(K_i, L_j) / sqrt(sum_b HSIC(K_i, K_i) sum_b HSIC(L_j, L_j))
  (Nguyen et al. 2021, Eq. 4: the minibatch estimator averages each HSIC term).
  """

  def __init__(self, num_a: int, num_b: int):
    self.cross = np.zeros((num_a, num_b))
    self.self_a = np.zeros(num_a)
    self.self_b = np.zeros(num_b)
    self.batches = 0

  def update(self, reps_a: Sequence, reps_b: Sequence):
    """reps_*: per-layer arrays [n, ...] for the same n images."""
    if len(reps_a) != len(self.self_a) or len(reps_b) != len(self.self_b):
      raise ValueError(f"expected {len(self.self_a)} and {len(self.self_b)} layers, "
                       f"got {len(reps_a)} and {len(reps_b)}.")
    grams_b = [gram(r) for r in reps_b]
    for j, l in enumerate(grams_b):
      self.self_b[j] += hsic_unbiased(l, l)
    for i, r in enumerate(reps_a):
      k = gram(r)
      self.self_a[i] += hsic_unbiased(k, k)
      for j, l in enumerate(grams_b):
        self.cross[i, j] += hsic_unbiased(k, l)
    self.batches += 1

  def result(self) -> np.ndarray:
    if not self.batches:
      raise ValueError("MinibatchCKA.result() before any update().")
    return _normalise(self.cross, self.self_a, self.self_b)


def layer_representations(out) -> List[np.ndarray]:
  """Per-layer patch-token representations [B, N*D] from a ViT output dict
  (apply with return_hidden=True).

  Layer 0 is the normalised patch embedding, layer k the normalised output of
  block k (`normed` of block k+1; the final LayerNorm output for the last
  block). Leading CLS / extra tokens are dropped (as MAE-Lite's RepCatcher).
  """
  if "normed" not in out:
    raise ValueError("layer-wise CKA needs an encoder that returns `normed` "
                     "with return_hidden=True (a ViT).")
  n_patch = out["patch"].shape[1]
  layers = list(out["normed"]) + [out["tokens"] if "tokens" in out else out["patch"]]
  return [np.asarray(r[:, r.shape[1] - n_patch:], np.float32).reshape(len(r), -1)
          for r in layers]


def _reps_fn(encoder):
  fn = jax.jit(lambda v, x: encoder.module.apply(v, x, train=False, return_hidden=True))
  return lambda images: layer_representations(fn(encoder.variables, jnp.asarray(images)))


def layerwise_cka(encoder_a, encoder_b, batches: Iterable[np.ndarray]) -> np.ndarray:
  """CKA matrix [layers of A, layers of B] over image minibatches."""
  same = encoder_b is encoder_a
  reps_a = _reps_fn(encoder_a)
  reps_b = reps_a if same else _reps_fn(encoder_b)
  acc = None
  for images in batches:
    ra = reps_a(images)
    rb = ra if same else reps_b(images)
    if acc is None:
      acc = MinibatchCKA(len(ra), len(rb))
    acc.update(ra, rb)
  if acc is None:
    raise ValueError("layerwise_cka got no image batches.")
  return acc.result()


def plot_heatmap(matrix: np.ndarray, path: str, name_a: str = "A", name_b: str = "B"):
  """002 Fig. 3: layer-by-layer similarity, layer 0 = patch embedding."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=120)
  im = ax.imshow(matrix, origin="lower", cmap="magma", vmin=0.0, vmax=1.0)
  ax.set_ylabel(f"layers of {name_a}")
  ax.set_xlabel(f"layers of {name_b}")
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def save(matrix: np.ndarray, out_dir: str, name_a: str, name_b: str) -> Dict[str, str]:
  os.makedirs(out_dir, exist_ok=True)
  stem = os.path.join(out_dir, f"cka_{name_a}_vs_{name_b}")
  with open(stem + ".json", "w") as f:
    json.dump({"a": name_a, "b": name_b, "cka": np.asarray(matrix).tolist()}, f)
  return {"json": stem + ".json", "png": plot_heatmap(matrix, stem + ".png", name_a, name_b)}
