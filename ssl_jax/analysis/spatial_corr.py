"""Spatial correlation of output feature maps (000 App. D, Fig. 12).

Per image, Barlow Twins' cross-correlation is taken across spatial positions:
each position's C-dim feature is standardised over channels, C_ij is the
correlation of positions i and j, and the image's score is the mean absolute
off-diagonal entry, 1/(N(N-1)) sum_i sum_{j != i} |C_ij|: near 1 when every
position carries the same feature, near 0 when positions are unrelated.
"""
import json
import os
from typing import Dict, Iterable

import jax
import jax.numpy as jnp
import numpy as np


def spatial_correlation(features, eps: float = 1e-6):
  """features [B, N, C] (N positions) -> [B] mean |off-diagonal correlation|."""
  f = features.astype(jnp.float32)
  f = f - f.mean(-1, keepdims=True)
  f = f / jnp.sqrt((f * f).mean(-1, keepdims=True) + eps)
  c = jnp.einsum("bic,bjc->bij", f, f) / f.shape[-1]
  n = f.shape[1]
  off = jnp.abs(c).sum((-1, -2)) - jnp.abs(jnp.diagonal(c, axis1=-2, axis2=-1)).sum(-1)
  return off / (n * (n - 1))


def encoder_spatial_correlation(encoder, batches: Iterable[np.ndarray]) -> np.ndarray:
  """Scores [num_images] of the encoder's output map (`feature_map` for CNNs,
  patch tokens otherwise)."""
  @jax.jit
  def fn(variables, images):
    out = encoder.module.apply(variables, images, train=False)
    fmap = out.get("feature_map")
    feats = out["patch"] if fmap is None else fmap.reshape(fmap.shape[0], -1, fmap.shape[-1])
    return spatial_correlation(feats)
  scores = [np.asarray(fn(encoder.variables, jnp.asarray(x))) for x in batches]
  if not scores:
    raise ValueError("encoder_spatial_correlation got no image batches.")
  return np.concatenate(scores)


def plot_histogram(scores_by_model: Dict[str, np.ndarray], path: str, bins: int = 40):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(4.6, 3.2), dpi=120)
  edges = np.linspace(0.0, 1.0, bins + 1)
  for name, s in scores_by_model.items():
    ax.hist(np.asarray(s), bins=edges, alpha=0.5, label=f"{name} (mean {np.mean(s):.3f})")
  ax.set_xlabel("spatial correlation (mean |off-diagonal|)")
  ax.set_ylabel("images")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def save(scores_by_model: Dict[str, np.ndarray], out_dir: str) -> Dict[str, str]:
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "spatial_correlation.json")
  with open(path, "w") as f:
    json.dump({m: {"mean": float(np.mean(s)), "scores": np.asarray(s).tolist()}
               for m, s in scores_by_model.items()}, f)
  return {"json": path, "png": plot_histogram(scores_by_model,
                                              os.path.join(out_dir, "spatial_correlation.png"))}
