"""k-means visual tokenizer: one code per patch = the nearest centroid of its
(dataset-normalised) pixels. Stands in for BEiT's DALL-E dVAE (a named
deviation): like the dVAE it maps each patch to one of `vocab_size` discrete
codes from the image alone, but it is a flat codebook, not a learned encoder
with context.

Fitting is deterministic under a seed: k-means++ seeding from a seeded numpy
generator, then a fixed number of Lloyd iterations in float64.
"""
import jax.numpy as jnp
import numpy as np

from ssl_jax.ops import patches as patches_lib


def _kmeans_pp(x, k, rng):
  centres = [x[rng.integers(len(x))]]
  d2 = ((x - centres[0]) ** 2).sum(1)
  for _ in range(1, k):
    probs = d2 / d2.sum() if d2.sum() > 0 else np.full(len(x), 1.0 / len(x))
    centres.append(x[rng.choice(len(x), p=probs)])
    d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
  return np.stack(centres)


def _assign(x, c, chunk=65536):
  out = np.empty(len(x), np.int64)
  cc = (c ** 2).sum(1)
  for s in range(0, len(x), chunk):
    xs = x[s:s + chunk]
    out[s:s + chunk] = np.argmin(cc[None] - 2.0 * xs @ c.T, 1)
  return out


def fit(vectors: np.ndarray, vocab_size: int, seed: int = 0, iters: int = 20) -> np.ndarray:
  """vectors [M, d] -> centroids [vocab_size, d] (float32)."""
  x = np.asarray(vectors, np.float64)
  if len(x) < vocab_size:
    raise ValueError(f"k-means needs at least vocab_size={vocab_size} vectors, got {len(x)}.")
  rng = np.random.default_rng(seed)
  c = _kmeans_pp(x, vocab_size, rng)
  for _ in range(iters):
    a = _assign(x, c)
    sums = np.zeros_like(c)
    np.add.at(sums, a, x)
    counts = np.bincount(a, minlength=vocab_size)[:, None]
    c = np.where(counts > 0, sums / np.maximum(counts, 1), c)   # empty clusters keep their centre
  return c.astype(np.float32)


def fit_images(images: np.ndarray, patch_size: int, vocab_size: int, seed: int = 0,
               iters: int = 20) -> np.ndarray:
  """Centroids of every patch of `images` [N, H, W, C] (normalised)."""
  vec = np.asarray(patches_lib.patchify(jnp.asarray(images), patch_size))
  return fit(vec.reshape(-1, vec.shape[-1]), vocab_size, seed, iters)


def encode(params, images, patch_size: int):
  """images [B, H, W, C] -> codes int32 [B, N]: nearest centroid per patch."""
  c = jnp.asarray(params["centroids"], jnp.float32)
  x = patches_lib.patchify(images.astype(jnp.float32), patch_size)
  d2 = jnp.sum(c ** 2, -1) - 2.0 * jnp.einsum("bnd,kd->bnk", x, c)
  return jnp.argmin(d2, -1).astype(jnp.int32)


def tokenizer(patch_size: int, arrays):
  from ssl_jax.tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top
  centroids = arrays["centroids"]
  return Tokenizer(kind="kmeans", vocab_size=int(centroids.shape[0]), patch_size=patch_size,
                   params={"centroids": centroids},
                   encode=lambda params, images: encode(params, images, patch_size))
