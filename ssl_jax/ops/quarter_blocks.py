"""QB-Heat quarter-block masking (../shared/papers/000 Sec. 4.1-4.2, Fig. 4).

One quarter of the image (half height, half width) is visible; the rest is
masked. At a *corner* the visible quarter predicts the other three quarters
over a translation of half the image (dx = W/2, dy = H/2). At the *centre*
(offsets H/4, W/4) the quarter is split into four sub-blocks, each predicting
its three outer neighbours over a quarter of the image (dx = W/4, dy = H/4).

Everything is expressed on the 4x4 grid of sub-blocks of side H/4 x W/4
(pixels or feature cells): every sub-block of the full grid is a translation
of one visible sub-block in one of 9 directions (dy, dx) in {-1, 0, 1}^2
(0, 0: the visible sub-block itself), so corner and centre samples of one
batch share one gather (`assemble`).
"""
from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp

from ssl_jax.registry import check_choice

POSITIONS = ("corner", "centre", "mixed")
# Visible corner quarter per id: (row, col) in the 2x2 quarter grid.
CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))
# The 9 translation directions (dy, dx), y down, x right; index = (dy+1)*3 + dx+1.
DIRECTIONS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
IDENTITY = DIRECTIONS.index((0, 0))


def direction_index(dy, dx):
  return (dy + 1) * 3 + (dx + 1)


class Layout(NamedTuple):
  """Where each sample's visible quarter sits."""
  centre: jnp.ndarray   # [B] bool: centre position (translation 1/4) vs corner (1/2)
  corner: jnp.ndarray   # [B] int32 in 0..3 (CORNERS); unused where `centre`


def sample_layout(rng, batch: int, position: str = "mixed") -> Layout:
  """Random corner per sample; "mixed" puts the first half of the batch at a
  corner and the second half at the centre (Sec. 4.1: mixing corner and
  centre in a batch is best, Tab. 2a)."""
  check_choice("qbheat position", position, POSITIONS)
  corner = jax.random.randint(rng, (batch,), 0, len(CORNERS), dtype=jnp.int32)
  if position == "corner":
    centre = jnp.zeros((batch,), bool)
  elif position == "centre":
    centre = jnp.ones((batch,), bool)
  else:
    centre = jnp.arange(batch) >= batch // 2
  return Layout(centre, corner)


def _check_grid(height: int, width: int, what: str):
  if height % 4 or width % 4:
    raise ValueError(
        f"{what} {height}x{width} must be a multiple of 4 on both sides for quarter "
        "blocks split into centre sub-blocks (000 App. B.1 uses 256x256 images, so a "
        "16x16 feature map).")


def origin_cells(layout: Layout) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Top-left of the visible quarter in sub-block units (0..2) -> ([B], [B])."""
  corners = jnp.asarray(CORNERS, jnp.int32)[layout.corner]     # [B, 2]
  top = jnp.where(layout.centre, 1, 2 * corners[:, 0])
  left = jnp.where(layout.centre, 1, 2 * corners[:, 1])
  return top, left


def crop(x: jnp.ndarray, top: jnp.ndarray, left: jnp.ndarray, size: Tuple[int, int]):
  """Per-sample crop: x [B, H, W, C], top/left [B] -> [B, size[0], size[1], C]."""
  c = x.shape[-1]
  return jax.vmap(lambda im, t, l: jax.lax.dynamic_slice(im, (t, l, 0), (*size, c)))(
      x, top, left)


def crop_quarters(images: jnp.ndarray, layout: Layout) -> jnp.ndarray:
  """The visible quarter of every image: [B, H, W, C] -> [B, H/2, W/2, C]."""
  _, h, w, _ = images.shape
  _check_grid(h, w, "image")
  top, left = origin_cells(layout)
  return crop(images, top * (h // 4), left * (w // 4), (h // 2, w // 2))


def cell_plan(layout: Layout) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """For every sub-block (r, c) of the full 4x4 grid: which visible sub-block
  (index 2*row + col inside the quarter) it is translated from, and the
  direction index of the translation. Returns ([B, 4, 4], [B, 4, 4]) int32.

  Corner: sub-block (r, c) lies in quarter (r//2, c//2), a translation of the
  visible quarter by (r//2 - qy, c//2 - qx) half-images; its source is the
  same sub-block (r%2, c%2) of the visible quarter. Centre: the nearest
  visible sub-block, one quarter-image step away.
  """
  rc = jnp.arange(4, dtype=jnp.int32)
  top, left = origin_cells(layout)

  is_centre = layout.centre[:, None]

  def axis_plan(origin):                                     # origin [B] -> src, dir [B, 4]
    o = origin[:, None]
    centre_src = jnp.clip(rc[None] - 1, 0, 1)
    centre_dir = rc[None] - 1 - centre_src
    corner_src = jnp.broadcast_to(rc[None] % 2, (o.shape[0], 4))
    corner_dir = rc[None] // 2 - o // 2
    return (jnp.where(is_centre, centre_src, corner_src),
            jnp.where(is_centre, centre_dir, corner_dir))

  src_r, dir_r = axis_plan(top)
  src_c, dir_c = axis_plan(left)
  source = 2 * src_r[:, :, None] + src_c[:, None, :]
  direction = direction_index(dir_r[:, :, None], dir_c[:, None, :])
  return source, direction


def assemble(per_direction: jnp.ndarray, layout: Layout) -> jnp.ndarray:
  """Re-assembles the full map from translations of the visible quarter.

  per_direction [B, 9, h, w, D]: the visible quarter as predicted for each
  of the 9 DIRECTIONS (IDENTITY = the quarter itself). Returns [B, 2h, 2w, D].
  """
  b, n_dir, h, w, d = per_direction.shape
  if n_dir != len(DIRECTIONS):
    raise ValueError(f"need {len(DIRECTIONS)} directions, got {n_dir}.")
  _check_grid(2 * h, 2 * w, "full map")
  cells = per_direction.reshape(b, n_dir, 2, h // 2, 2, w // 2, d)
  cells = cells.transpose(0, 1, 2, 4, 3, 5, 6).reshape(b, n_dir * 4, h // 2, w // 2, d)
  source, direction = cell_plan(layout)
  idx = (direction * 4 + source).reshape(b, 16)
  out = jnp.take_along_axis(cells, idx[:, :, None, None, None], axis=1)
  out = out.reshape(b, 4, 4, h // 2, w // 2, d).transpose(0, 1, 3, 2, 4, 5)
  return out.reshape(b, 2 * h, 2 * w, d)


def masked_grid(layout: Layout, grid_h: int, grid_w: int) -> jnp.ndarray:
  """[B, grid_h * grid_w] float, 1.0 outside the visible quarter (the loss mask)."""
  _check_grid(grid_h, grid_w, "patch grid")
  top, left = origin_cells(layout)
  rows = jnp.arange(grid_h) // (grid_h // 4)
  cols = jnp.arange(grid_w) // (grid_w // 4)
  in_r = (rows[None] >= top[:, None]) & (rows[None] < top[:, None] + 2)
  in_c = (cols[None] >= left[:, None]) & (cols[None] < left[:, None] + 2)
  visible = in_r[:, :, None] & in_c[:, None, :]
  return (~visible).reshape(layout.centre.shape[0], grid_h * grid_w).astype(jnp.float32)
