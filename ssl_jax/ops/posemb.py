"""2D sin-cos position embeddings of (possibly real-valued) patch coordinates.

Same layout as MAE's `get_2d_sincos_pos_embed`: the first half of the
channels encodes the column, the second half the row; each half is
[sin(pos * omega), cos(pos * omega)] with omega = 1 / 10000^(2i / (D/2)).
"""
import jax.numpy as jnp
import numpy as np


def grid_coords(grid_h: int, grid_w: int) -> np.ndarray:
  """[grid_h*grid_w, 2] integer (row, col) coordinates, row-major order."""
  r, c = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
  return np.stack([r.reshape(-1), c.reshape(-1)], -1).astype(np.float32)


def sincos_2d(coords: jnp.ndarray, width: int) -> jnp.ndarray:
  """coords [..., 2] (row, col) -> [..., width]."""
  if width % 4:
    raise ValueError(f"2D sin-cos embedding needs width divisible by 4, got {width}.")
  dim = width // 2
  omega = 1.0 / 10000 ** (jnp.arange(dim // 2, dtype=jnp.float32) / (dim / 2.0))
  def emb(pos):
    out = pos[..., None].astype(jnp.float32) * omega
    return jnp.concatenate([jnp.sin(out), jnp.cos(out)], -1)
  return jnp.concatenate([emb(coords[..., 1]), emb(coords[..., 0])], -1)
