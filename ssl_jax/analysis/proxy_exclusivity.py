"""Proxy exclusivity (003 Fig. 9): where each [PROXY] token looks, on average.

For each prefix token k (CLS + proxies) of one block, its attention to the
patch tokens is averaged over heads and over many images, renormalised over
patches -> a [gh, gw] map. 003 observes near-exclusive regions; we summarise
that as the mean pairwise cosine between the K maps (1: all proxies look at
the same place; lower: more exclusive).
"""
import json
import os
from typing import Dict, Iterable

import jax
import jax.numpy as jnp
import numpy as np


def mean_pairwise_cosine(maps: np.ndarray) -> float:
  """maps [K, ...] -> mean cosine similarity over the K(K-1)/2 pairs."""
  m = np.asarray(maps, np.float64).reshape(len(maps), -1)
  if len(m) < 2:
    raise ValueError("proxy exclusivity needs at least 2 prefix tokens (model.num_prefix >= 2).")
  m = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
  cos = m @ m.T
  iu = np.triu_indices(len(m), 1)
  return float(cos[iu].mean())


def proxy_maps(encoder, batches: Iterable[np.ndarray], block: int = -1) -> np.ndarray:
  """[K, gh, gw]: each prefix token's mean attention over patches at `block`."""

  @jax.jit
  def per_batch(variables, images):
    out = encoder.module.apply(variables, images, train=False, return_attn=True)
    n = out["patch"].shape[1]
    a = out["attn"][block].astype(jnp.float32)                    # [B, H, L, L]
    k = a.shape[-1] - n
    rows = a[:, :, :k, k:]                                        # prefix queries -> patch keys
    rows = rows / jnp.maximum(rows.sum(-1, keepdims=True), 1e-12)
    return rows.mean(1).sum(0)                                    # [K, N], summed over images

  total, count, shape = None, 0, None
  for images in batches:
    images = jnp.asarray(images)
    s = np.asarray(per_batch(encoder.variables, images), np.float64)
    total = s if total is None else total + s
    count += len(images)
    shape = images.shape[1:3]
  if not count:
    raise ValueError("proxy_maps got no image batches.")
  p = encoder.module.patch_size
  return (total / count).reshape(-1, shape[0] // p, shape[1] // p)


def exclusivity(encoder, batches, block: int = -1) -> Dict[str, object]:
  maps = proxy_maps(encoder, batches, block)
  return {"maps": maps, "mean_pairwise_cosine": mean_pairwise_cosine(maps)}


def save(result: Dict[str, object], out_dir: str, name: str = "proxy_exclusivity") -> Dict[str, str]:
  """JSON + a row of heatmaps (Fig. 9)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  maps = np.asarray(result["maps"])
  jpath = os.path.join(out_dir, f"{name}.json")
  with open(jpath, "w") as f:
    json.dump({"mean_pairwise_cosine": result["mean_pairwise_cosine"], "maps": maps.tolist()}, f)
  fig, axes = plt.subplots(1, len(maps), figsize=(1.6 * len(maps), 1.8), dpi=120, squeeze=False)
  for k, ax in enumerate(axes[0]):
    ax.imshow(maps[k], cmap="viridis")
    ax.set_title("cls" if k == 0 else f"proxy {k}", fontsize=7)
    ax.axis("off")
  fig.suptitle(f"mean pairwise cosine {result['mean_pairwise_cosine']:.3f}", fontsize=8)
  fig.tight_layout()
  ppath = os.path.join(out_dir, f"{name}.png")
  fig.savefig(ppath)
  plt.close(fig)
  return {"json": jpath, "png": ppath}
