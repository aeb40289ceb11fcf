"""Attention maps of chosen queries overlaid on real photos.

For each photo and block: the head-averaged attention over patch keys of the
CLS token, of every other leading token (SemanticMIM [PROXY], registers) and
of chosen query patches, upsampled to the image and drawn over it. The query
patch is outlined; maps are also written as JSON (grid values).
"""
import json
import os
from typing import Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.analysis import photos as photos_lib
from ssl_jax.evaluate import decoder_probe

DEFAULT_QUERIES = ((0.35, 0.5), (0.7, 0.3))   # (row, col) as fractions of the image


def query_index(frac: Tuple[float, float], grid: Tuple[int, int]) -> int:
  """(row, col) fraction -> row-major patch index on the grid."""
  r = min(int(frac[0] * grid[0]), grid[0] - 1)
  c = min(int(frac[1] * grid[1]), grid[1] - 1)
  return r * grid[1] + c


def attention_maps(encoder, images, blocks: Sequence[int],
                   queries: Sequence[Tuple[float, float]] = DEFAULT_QUERIES):
  """images [P, H, W, 3] normalised -> {block: {query name: [P, gh, gw]}}.

  Query names: "cls" for token 0, "token{k}" for other leading tokens,
  "patch(r,c)" for query patches. Maps are head-averaged and sum to one over
  patch keys (leading tokens' keys dropped, rows renormalised).
  """
  out = jax.jit(lambda v, x: encoder.module.apply(v, x, train=False, return_attn=True))(
      encoder.variables, jnp.asarray(images))
  if "attn" not in out:
    raise ValueError("attention maps need an encoder that returns `attn` (a ViT).")
  n = out["patch"].shape[1]
  grid = decoder_probe.token_grid(n, images.shape[1:3])
  depth = len(out["attn"])
  maps = {}
  for b in blocks:
    if not -depth <= b < depth:
      raise ValueError(f"block {b} out of range for an encoder of depth {depth}.")
    a = np.asarray(out["attn"][b], np.float32).mean(1)              # [P, L, L]
    prefix = a.shape[1] - n
    rows = {("cls" if k == 0 else f"token{k}"): a[:, k] for k in range(prefix)}
    for q in queries:
      rows[f"patch({q[0]:.2f},{q[1]:.2f})"] = a[:, prefix + query_index(q, grid)]
    block_maps = {}
    for name, r in rows.items():
      r = r[:, prefix:]
      r = r / np.maximum(r.sum(-1, keepdims=True), 1e-12)
      block_maps[name] = r.reshape(len(r), *grid)
    maps[b % depth] = block_maps
  return maps, grid


def plot(shown: np.ndarray, photo_names, block_maps: Dict[str, np.ndarray], grid, path: str,
         queries=DEFAULT_QUERIES):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib.patches import Rectangle  # pylint: disable=g-import-not-at-top
  names = list(block_maps)
  p, size = len(shown), shown.shape[1]
  fig, axes = plt.subplots(p, len(names) + 1, figsize=(1.8 * (len(names) + 1), 1.8 * p),
                           dpi=110, squeeze=False)
  cell = (size / grid[0], size / grid[1])
  for i in range(p):
    axes[i, 0].imshow(shown[i])
    axes[i, 0].set_ylabel(photo_names[i], fontsize=7)
    for j, name in enumerate(names):
      ax = axes[i, j + 1]
      m = block_maps[name][i]
      up = np.kron(m / max(m.max(), 1e-12), np.ones((int(np.ceil(cell[0])), int(np.ceil(cell[1])))))
      ax.imshow(shown[i])
      ax.imshow(up[:size, :size], cmap="inferno", alpha=0.6, extent=(0, size, size, 0))
      if name.startswith("patch("):
        q = queries[[n for n in names if n.startswith("patch(")].index(name)]
        r = min(int(q[0] * grid[0]), grid[0] - 1)
        c = min(int(q[1] * grid[1]), grid[1] - 1)
        ax.add_patch(Rectangle((c * cell[1], r * cell[0]), cell[1], cell[0],
                               fill=False, edgecolor="cyan", lw=1.2))
      if i == 0:
        ax.set_title(name, fontsize=7)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def save_photo_maps(encoder, out_dir: str, image_size: int, mean, std,
                    blocks: Sequence[int] = (-1,), photo_names=photos_lib.PHOTOS,
                    queries=DEFAULT_QUERIES, tag: str = "") -> Dict[str, str]:
  """Runs the encoder on the sample photos; one PNG per block + one JSON."""
  os.makedirs(out_dir, exist_ok=True)
  shown, inputs = photos_lib.prepare(photo_names, image_size, mean, std)
  maps, grid = attention_maps(encoder, inputs, blocks, queries)
  files = {}
  for b, block_maps in maps.items():
    files[f"block{b}"] = plot(shown, list(photo_names), block_maps, grid,
                              os.path.join(out_dir, f"attention_maps{tag}_block{b}.png"), queries)
  path = os.path.join(out_dir, f"attention_maps{tag}.json")
  with open(path, "w") as f:
    json.dump({"photos": list(photo_names), "grid": list(grid),
               "maps": {str(b): {k: v.tolist() for k, v in bm.items()} for b, bm in maps.items()}},
              f)
  files["json"] = path
  return files
