"""Per-head attention statistics: distance, entropy (002 Eq. 2-4) and
query-key normalised mutual information (001 App. A.1, after Park et al. 2023).

Attention is taken between patch tokens: leading CLS / extra tokens have no
spatial position, so they are dropped and each query's row is renormalised
over the patch keys (as MAE-Lite's analyser and Park et al.'s code do).
"""
import json
import os
from typing import Dict, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.ops import posemb


def patch_distances(grid_h: int, grid_w: int, patch_size: float = 1.0) -> np.ndarray:
  """G of Eq. (2): Euclidean distance between patch centres, [N, N], in pixels
  when patch_size is the patch side (ViT's "mean attention distance")."""
  c = posemb.grid_coords(grid_h, grid_w).astype(np.float64) * patch_size
  return np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1))


def patch_attention(attn, num_patches: int):
  """[B, H, L, L] -> [B, H, N, N] among the trailing N patch tokens, rows
  renormalised to sum to one."""
  a = attn[..., -num_patches:, -num_patches:]
  return a / jnp.maximum(a.sum(-1, keepdims=True), 1e-12)


def attention_distance(attn, distances):
  """Eq. (2) + (4): d_h = mean_j sum_i A_h[j, i] G[j, i]; attn [B, H, N, N]
  (rows = queries) -> [B, H]."""
  return jnp.einsum("bhqk,qk->bhq", attn, jnp.asarray(distances, attn.dtype)).mean(-1)


def attention_entropy(attn, eps: float = 1e-12):
  """Eq. (3) + (4): e_h = mean_j -sum_i A_h[j, i] log A_h[j, i] (nats) -> [B, H]."""
  return -(attn * jnp.log(attn + eps)).sum(-1).mean(-1)


def attention_nmi(attn, eps: float = 1e-12):
  """Normalised mutual information between query and key positions -> [B, H].

  p(q) uniform, p(k | q) = attention, p(k) = mean_q p(k | q);
  NMI = I(Q; K) / sqrt(H(Q) H(K)) (Strehl & Ghosh 2002, as Park et al. 2023).
  """
  n_q = attn.shape[-2]
  p_k = attn.mean(-2)                                            # [B, H, K]
  mi = (attn * (jnp.log(attn + eps) - jnp.log(p_k[..., None, :] + eps))).sum((-1, -2)) / n_q
  h_q = jnp.log(float(n_q))
  h_k = -(p_k * jnp.log(p_k + eps)).sum(-1)
  return mi / jnp.sqrt(h_q * jnp.maximum(h_k, eps))


def _grid(out, images):
  from ssl_jax.evaluate import decoder_probe  # pylint: disable=g-import-not-at-top
  if "feature_map" in out:
    return out["feature_map"].shape[1:3]
  return decoder_probe.token_grid(out["patch"].shape[1], images.shape[1:3])


def head_statistics(encoder, batches: Iterable[np.ndarray], patch_size: int = None) -> Dict[str, np.ndarray]:
  """Mean over images of each head's distance (pixels), entropy and NMI.

  Returns {"distance", "entropy", "nmi"}: arrays [depth, heads].
  """
  patch_size = patch_size or getattr(encoder.module, "patch_size", None) or 1

  @jax.jit
  def stats(variables, images, distances):
    out = encoder.module.apply(variables, images, train=False, return_attn=True)
    n = out["patch"].shape[1]
    per_layer = []
    for a in out["attn"]:
      a = patch_attention(a.astype(jnp.float32), n)
      per_layer.append(jnp.stack([attention_distance(a, distances).sum(0),
                                  attention_entropy(a).sum(0),
                                  attention_nmi(a).sum(0)]))
    return jnp.stack(per_layer)                                   # [depth, 3, H]

  total, count, dist = None, 0, None
  for images in batches:
    images = jnp.asarray(images)
    if dist is None:
      probe = jax.eval_shape(lambda v, x: encoder.module.apply(v, x, train=False, return_attn=True),
                             encoder.variables, images)
      if "attn" not in probe:
        raise ValueError("attention statistics need an encoder that returns `attn` (a ViT).")
      dist = patch_distances(*_grid(probe, images), patch_size)
    s = np.asarray(stats(encoder.variables, images, dist), np.float64)
    total = s if total is None else total + s
    count += len(images)
  if not count:
    raise ValueError("head_statistics got no image batches.")
  mean = total / count
  return {"distance": mean[:, 0], "entropy": mean[:, 1], "nmi": mean[:, 2]}


def plot_boxes(stats_by_model: Dict[str, np.ndarray], ylabel: str, path: str):
  """002 Fig. 5: per-layer box plots over heads, one colour per model."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = list(stats_by_model)
  depth = max(v.shape[0] for v in stats_by_model.values())
  width = 0.8 / len(names)
  fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * depth * len(names)), 3.4), dpi=120)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for m, name in enumerate(names):
    vals = np.asarray(stats_by_model[name])
    pos = np.arange(1, vals.shape[0] + 1) + (m - (len(names) - 1) / 2) * width
    c = colors[m % len(colors)]
    ax.boxplot(list(vals), positions=pos, widths=width * 0.9, patch_artist=True,
               boxprops=dict(facecolor=c, alpha=0.5, edgecolor=c),
               medianprops=dict(color=c), whiskerprops=dict(color=c),
               capprops=dict(color=c), flierprops=dict(markeredgecolor=c, markersize=3))
    ax.plot([], [], color=c, lw=6, alpha=0.5, label=name)
  ax.set_xticks(np.arange(1, depth + 1))
  ax.set_xticklabels([str(i) for i in range(1, depth + 1)])
  ax.set_xlabel("block")
  ax.set_ylabel(ylabel)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def save(stats_by_model: Dict[str, Dict[str, np.ndarray]], out_dir: str) -> Dict[str, str]:
  """stats_by_model: name -> head_statistics(...). Writes one JSON and one PNG
  per statistic."""
  os.makedirs(out_dir, exist_ok=True)
  files = {}
  path = os.path.join(out_dir, "attention_stats.json")
  with open(path, "w") as f:
    json.dump({m: {k: np.asarray(v).tolist() for k, v in s.items()}
               for m, s in stats_by_model.items()}, f)
  files["json"] = path
  labels = {"distance": "attention distance (pixels)", "entropy": "attention entropy (nats)",
            "nmi": "query-key NMI"}
  for key, label in labels.items():
    files[key] = plot_boxes({m: s[key] for m, s in stats_by_model.items()}, label,
                            os.path.join(out_dir, f"attention_{key}.png"))
  return files
