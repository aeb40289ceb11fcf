"""Resampling a learned position-embedding table to another patch grid,
exactly as the official PyTorch code does at run time, so an imported
DINO / DINOv2 ViT gives the features its own code gives at that size.

- mode "dino" (DINO `interpolate_pos_encoding`, DINOv2 without registers):
  `F.interpolate(mode="bicubic", scale_factor=(g + 0.1) / M)`, i.e. torch's
  cubic convolution (A = -0.75, align_corners=False, border clamped) whose
  source coordinate uses the offset scale M / (g + 0.1) (dino issue #8).
- mode "antialias" (DINOv2 with registers: `interpolate_antialias=True`,
  `interpolate_offset=0`): torch's antialiased bicubic, PIL's filter (Keys
  A = -0.5, support widened by the scale when shrinking, weights normalised).
Both official codes skip interpolation when the grid is unchanged; so does
`resample`.
"""
from typing import Tuple

import numpy as np

MODES = ("dino", "antialias")


def _keys_cubic(x, a):
  x = np.abs(x)
  return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                  np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))


def bicubic_matrix(n_in: int, n_out: int, scale: float, a: float = -0.75) -> np.ndarray:
  """[n_out, n_in] weights of torch's non-antialiased bicubic along one axis;
  `scale` = input spacing per output pixel (in / out, or 1 / scale_factor)."""
  w = np.zeros((n_out, n_in))
  for i in range(n_out):
    src = scale * (i + 0.5) - 0.5                 # cubic: not clamped at 0
    f = int(np.floor(src))
    t = src - f
    for tap, wt in zip(range(-1, 3), _keys_cubic(np.array([t + 1, t, 1 - t, 2 - t]), a)):
      w[i, min(max(f + tap, 0), n_in - 1)] += wt
  return w


def antialias_matrix(n_in: int, n_out: int, scale: float, a: float = -0.5) -> np.ndarray:
  """[n_out, n_in] weights of torch's antialiased bicubic (PIL's resampler)."""
  support = 2.0 * scale if scale >= 1.0 else 2.0
  inv = 1.0 / scale if scale >= 1.0 else 1.0
  w = np.zeros((n_out, n_in))
  for i in range(n_out):
    centre = scale * (i + 0.5)
    lo = max(int(centre - support + 0.5), 0)
    hi = min(int(centre + support + 0.5), n_in)
    js = np.arange(lo, hi)
    wt = _keys_cubic((js - centre + 0.5) * inv, a)
    w[i, js] = wt / wt.sum()
  return w


def resample(table: np.ndarray, src_grid: Tuple[int, int], dst_grid: Tuple[int, int],
             mode: str = "dino", offset: float = 0.1) -> np.ndarray:
  """[src_h * src_w, D] row-major table -> [dst_h * dst_w, D]."""
  if mode not in MODES:
    raise ValueError(f"Unknown position-embedding resampling {mode!r}. Valid: {', '.join(MODES)}.")
  table = np.asarray(table)
  (sh, sw), (dh, dw) = tuple(src_grid), tuple(dst_grid)
  if table.shape[0] != sh * sw:
    raise ValueError(f"a table of {table.shape[0]} positions is not a {sh}x{sw} grid.")
  if (sh, sw) == (dh, dw):
    return table
  if mode == "dino":
    rows = bicubic_matrix(sh, dh, sh / (dh + offset) if offset else sh / dh)
    cols = bicubic_matrix(sw, dw, sw / (dw + offset) if offset else sw / dw)
  else:
    rows, cols = antialias_matrix(sh, dh, sh / dh), antialias_matrix(sw, dw, sw / dw)
  grid = table.reshape(sh, sw, -1).astype(np.float64)
  out = np.einsum("ir,rcd,jc->ijd", rows, grid, cols)
  return out.reshape(dh * dw, -1).astype(table.dtype)
