"""Continuous 2D rotary position embedding (CR2PQ, 004 Eq. 5-7).

Half of each head's channels rotate with the row coordinate, the other half
with the column coordinate. Coordinates are real-valued, so a patch centre of
one crop expressed in another crop's grid (a fraction of a patch) rotates
exactly; with integer grid coordinates this is the usual discrete 2D RoPE.
"""
import jax.numpy as jnp


def rope_frequencies(head_dim: int, base: float = 10000.0) -> jnp.ndarray:
  """Per-pair frequencies for one axis: base^(-t / (head_dim/2)), t = 0,2,...

  Each axis owns head_dim/2 channels, i.e. head_dim/4 rotation pairs (Eq. 6).
  """
  if head_dim % 4:
    raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {head_dim}.")
  half = head_dim // 2
  t = jnp.arange(0, half, 2, dtype=jnp.float32)
  return base ** (-t / half)


def _rotate(x: jnp.ndarray, angles: jnp.ndarray) -> jnp.ndarray:
  """Rotates consecutive channel pairs (x0, x1) of x by `angles`."""
  x0, x1 = x[..., 0::2], x[..., 1::2]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  r0 = x0 * cos - x1 * sin
  r1 = x0 * sin + x1 * cos
  return jnp.stack([r0, r1], axis=-1).reshape(x.shape)


def apply_rope_2d(x: jnp.ndarray, coords: jnp.ndarray,
                  base: float = 10000.0) -> jnp.ndarray:
  """Rotates x [B, H, N, D] by 2D coordinates coords [B, N, 2] (row, col).

  Tokens without a position (CLS, registers) are given NaN-free zeros by the
  caller; a zero coordinate is the identity rotation.
  """
  head_dim = x.shape[-1]
  freqs = rope_frequencies(head_dim, base)                 # [D/4]
  coords = coords.astype(jnp.float32)
  ang_r = coords[..., 0:1] * freqs                         # [B, N, D/4]
  ang_c = coords[..., 1:2] * freqs
  ang_r, ang_c = ang_r[:, None], ang_c[:, None]            # broadcast heads
  half = head_dim // 2
  xf = x.astype(jnp.float32)
  out = jnp.concatenate(
      [_rotate(xf[..., :half], ang_r), _rotate(xf[..., half:], ang_c)], -1)
  return out.astype(x.dtype)
