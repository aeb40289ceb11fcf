"""Patchify / unpatchify and the MAE pixel targets (shared by every MIM method)."""
import einops
import jax.numpy as jnp


def grid_shape(images: jnp.ndarray, patch_size: int):
  """(rows, cols) of the patch grid of [B, H, W, C] images."""
  return images.shape[1] // patch_size, images.shape[2] // patch_size


def patchify(images: jnp.ndarray, patch_size: int) -> jnp.ndarray:
  """[B, H, W, C] -> [B, N, p*p*C], row-major patches, (p, q, c) inside (MAE)."""
  b, h, w, c = images.shape
  if h % patch_size or w % patch_size:
    raise ValueError(f"image {h}x{w} is not divisible by patch size {patch_size}.")
  return einops.rearrange(images, "b (h p) (w q) c -> b (h w) (p q c)",
                          p=patch_size, q=patch_size)


def unpatchify(patches: jnp.ndarray, patch_size: int, grid_h: int, grid_w: int,
               channels: int = 3) -> jnp.ndarray:
  return einops.rearrange(patches, "b (h w) (p q c) -> b (h p) (w q) c",
                          h=grid_h, w=grid_w, p=patch_size, q=patch_size,
                          c=channels)


def normalized_pixel_targets(patches: jnp.ndarray, eps: float = 1e-6) -> jnp.ndarray:
  """Per-patch standardised pixels: MAE's `norm_pix_loss` target (MAE Sec. 4)."""
  mean = patches.mean(axis=-1, keepdims=True)
  var = patches.var(axis=-1, keepdims=True, ddof=1)   # torch .var is unbiased
  return (patches - mean) / jnp.sqrt(var + eps)


def masked_mse(pred: jnp.ndarray, target: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Mean over masked patches of the per-patch MSE (MAE loss; mask 1 = removed)."""
  per_patch = jnp.mean(jnp.square(pred.astype(jnp.float32) - target), axis=-1)
  return jnp.sum(per_patch * mask) / jnp.maximum(jnp.sum(mask), 1.0)
