"""Random token masking: the MAE per-sample shuffle (MAE Sec. 3, `random_masking`)."""
from typing import NamedTuple

import jax
import jax.numpy as jnp


class TokenMask(NamedTuple):
  keep_idx: jnp.ndarray     # [B, K] indices of visible tokens, ascending noise
  mask: jnp.ndarray         # [B, N] 1.0 where the token is removed
  restore_idx: jnp.ndarray  # [B, N] unshuffle: gather [visible; masked] -> original order


def num_visible(num_tokens: int, mask_ratio: float) -> int:
  if not 0.0 <= mask_ratio < 1.0:
    raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}.")
  return int(num_tokens * (1 - mask_ratio))


def random_masking(rng, batch: int, num_tokens: int, mask_ratio: float) -> TokenMask:
  """Every sample keeps exactly `num_tokens * (1 - mask_ratio)` tokens."""
  keep = num_visible(num_tokens, mask_ratio)
  noise = jax.random.uniform(rng, (batch, num_tokens))
  shuffle = jnp.argsort(noise, axis=1)        # small noise is kept
  restore = jnp.argsort(shuffle, axis=1)
  keep_idx = shuffle[:, :keep]
  mask = jnp.ones((batch, num_tokens)).at[:, :keep].set(0.0)
  mask = jnp.take_along_axis(mask, restore, axis=1)
  return TokenMask(keep_idx, mask, restore)


def gather_tokens(x: jnp.ndarray, idx: jnp.ndarray) -> jnp.ndarray:
  """x [B, N, ...], idx [B, K] -> [B, K, ...]."""
  idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=1)
