"""MaskFeat HOG against a loop-by-loop numpy HOG (pySlowFast's HOGLayerC recipe)."""
import math

import numpy as np
import pytest

from ssl_jax.ops import hog as hog_lib


def numpy_hog(img, nbins=9, cell=8, window=16):
  """img [H, W, C] -> [H/cell, W/cell, C, nbins], written pixel by pixel."""
  h, w, c = img.shape
  pad = np.pad(img.astype(np.float64), ((1, 1), (1, 1), (0, 0)), mode="reflect")
  sobel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float64)
  n = (np.arange(window) - (window - 1) / 2) / (window // 2)
  g = np.exp(-0.5 * n ** 2)
  gk = np.outer(g, g)
  gk /= gk.sum()
  out = np.zeros((h // cell, w // cell, c, nbins))
  for ch in range(c):
    for i in range(h):
      for j in range(w):
        patch = pad[i:i + 3, j:j + 3, ch]
        gx = (sobel * patch).sum()
        gy = (sobel.T * patch).sum()
        mag = math.hypot(gx, gy) * gk[i % window, j % window]
        b = math.floor(math.atan2(gx, gy) / math.pi * nbins) % nbins
        out[i // cell, j // cell, ch, b] += mag
  norm = np.sqrt((out ** 2).sum(-1, keepdims=True))
  return out / np.maximum(norm, 1e-12)


def _image(size, seed=0):
  """A synthetic image with edges in every direction: rings + a ramp + noise."""
  yy, xx = np.mgrid[:size, :size] / size
  rings = np.sin(12 * np.hypot(yy - 0.4, xx - 0.6))
  rng = np.random.default_rng(seed)
  return np.stack([rings, xx - yy, rng.normal(size=(size, size))], -1).astype(np.float32)


@pytest.mark.parametrize("size,cell,window", [(32, 8, 16), (16, 2, 4)])
def test_hog_equals_numpy_reference(size, cell, window):
  img = _image(size)
  got = np.asarray(hog_lib.hog(img[None], cell=cell, window=window))[0]
  want = numpy_hog(img, cell=cell, window=window)
  assert got.shape == (size // cell, size // cell, 3, 9)
  np.testing.assert_allclose(got, want, atol=2e-5)
  np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-5)


def test_patch_targets_hold_108_values_in_patch_order():
  img = _image(32, seed=1)[None]
  t = np.asarray(hog_lib.hog_patch_targets(img, 16))            # MaskFeat: 16 px patches
  assert t.shape == (1, 4, 108)
  ref = numpy_hog(img[0], cell=8, window=16)                     # [4, 4, 3, 9] cells
  # patch (row 1, col 0) = cells rows 2-3, cols 0-1
  np.testing.assert_allclose(t[0, 2], ref[2:4, 0:2].reshape(-1), atol=2e-5)
  small = np.asarray(hog_lib.hog_patch_targets(img, 4))          # 32 px, patch 4: 2 px cells
  assert small.shape == (1, 64, 108)
  with pytest.raises(ValueError, match="divisible"):
    hog_lib.hog(img[:, :30, :30], cell=8, window=16)
