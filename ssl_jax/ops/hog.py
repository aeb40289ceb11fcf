"""Histograms of oriented gradients as MaskFeat defines them (Wei et al. 2022,
Sec. 3 and App. A; the `HOGLayerC` of pySlowFast), and MaskFeat's per-patch targets.

Per RGB channel (no max over channels): Sobel gradients on the reflect-padded
image, magnitude weighted by a Gaussian window tiled over the image, hard-
assigned to 9 unsigned orientation bins of 20 degrees
(`floor(atan2(gx, gy) / pi * 9) mod 9`), summed over cells, and L2-normalised per (cell, channel)
histogram. On 224 px with ViT-B/16: cells of 8x8 pixels, a 16x16 window, so
each 16x16 patch holds 2x2 cells x 3 channels x 9 bins = 108 values.

Small images (our choice, named): `cell = patch_size // 2` and
`window = patch_size`, so every patch keeps MaskFeat's 2x2 cells and 108
values; on 32 px Fashion-MNIST with patch 4 that is 2x2-pixel cells and a
4x4 window (std 2, as MaskFeat's std = window // 2).
"""
import math

import jax.numpy as jnp

# Sobel kernel of HOGLayerC (x: columns); y is its transpose. Applied as a
# cross-correlation, like torch's conv2d.
SOBEL_X = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))


def gaussian_window(size: int, std: float) -> jnp.ndarray:
  """MaskFeat's `get_gkern`: outer product of exp(-n^2/2) over centred,
  std-scaled indices, normalised to sum one. [size, size]."""
  n = (jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2.0) / std
  g = jnp.exp(-0.5 * n ** 2)
  k = g[:, None] * g[None, :]
  return k / k.sum()


def hog(images: jnp.ndarray, *, nbins: int = 9, cell: int = 8, window: int = 16,
        eps: float = 1e-12) -> jnp.ndarray:
  """images [B, H, W, C] -> [B, H/cell, W/cell, C, nbins], L2-normalised over bins."""
  b, h, w, c = images.shape
  if h % cell or w % cell or h % window or w % window:
    raise ValueError(f"HOG needs image sides divisible by the cell ({cell}) and the Gaussian "
                     f"window ({window}); got {h}x{w}.")
  x = jnp.pad(images.astype(jnp.float32), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
  kx = jnp.asarray(SOBEL_X)
  shifted = [[x[:, a:a + h, bb:bb + w] for bb in range(3)] for a in range(3)]
  gx = sum(kx[a, bb] * shifted[a][bb] for a in range(3) for bb in range(3))
  gy = sum(kx[bb, a] * shifted[a][bb] for a in range(3) for bb in range(3))
  mag = jnp.sqrt(gx ** 2 + gy ** 2)
  # HOGLayerC's argument order, atan2(gx, gy): phase in [-nbins, nbins].
  phase = jnp.arctan2(gx, gy) / math.pi * nbins
  bins = jnp.mod(jnp.floor(phase).astype(jnp.int32), nbins)
  gk = jnp.tile(gaussian_window(window, window // 2), (h // window, w // window))
  mag = mag * gk[None, :, :, None]
  hist = (bins[..., None] == jnp.arange(nbins)).astype(jnp.float32) * mag[..., None]
  hist = hist.reshape(b, h // cell, cell, w // cell, cell, c, nbins).sum((2, 4))
  norm = jnp.sqrt(jnp.sum(hist ** 2, -1, keepdims=True))
  return hist / jnp.maximum(norm, eps)           # torch F.normalize(p=2, dim=bins)


def hog_patch_targets(images: jnp.ndarray, patch_size: int, *, nbins: int = 9,
                      cell: int = None, window: int = None) -> jnp.ndarray:
  """MaskFeat targets: [B, N, (patch/cell)^2 * C * nbins] (108 for 2x2 cells of
  RGB), row-major patches; inside a patch (cell row, cell col, channel, bin)."""
  cell = cell or max(patch_size // 2, 1)
  window = window or patch_size
  if patch_size % cell:
    raise ValueError(f"HOG cell {cell} must divide the patch size {patch_size}.")
  hg = hog(images, nbins=nbins, cell=cell, window=window)       # [B, h', w', C, bins]
  b, hh, ww, c, _ = hg.shape
  r = patch_size // cell
  hg = hg.reshape(b, hh // r, r, ww // r, r, c, nbins).transpose(0, 1, 3, 2, 4, 5, 6)
  return hg.reshape(b, (hh // r) * (ww // r), r * r * c * nbins)
