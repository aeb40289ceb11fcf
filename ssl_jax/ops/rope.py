"""Continuous 2D rotary position embedding (CR2PQ, 004 Eq. 5-7).

Half of each head's channels rotate with the row coordinate, the other half
with the column coordinate. Coordinates are real-valued, so a patch centre of
one crop expressed in another crop's grid (a fraction of a patch) rotates
exactly; with integer grid coordinates this is the usual discrete 2D RoPE.
"""
import jax.numpy as jnp


# How the D/4 per-axis frequencies are spaced (`rope_frequencies`).
FREQUENCIES = ("axial", "cr2pq")


def rope_frequencies(head_dim: int, base: float = 10000.0, kind: str = "axial") -> jnp.ndarray:
  """Per-pair frequencies for one axis; each axis owns head_dim/4 rotation pairs.

  "axial": base^(-2i / (head_dim/2)), i = 0..head_dim/4-1, i.e. 1D RoPE over
  each axis's head_dim/2 channels (RoFormer's spacing per axis; EVA-02,
  RoPE-Mixed "axial"), reaching down to ~1/base.
  "cr2pq": 004 Sec. 3.2, theta_t = base^(-t / (D_head/2)), t = 0..D_head/4-1:
  the same count at half the log-spacing, reaching only ~1/sqrt(base).
  (The paper interleaves row / column pairs, Eq. 5; which channels carry
  which axis is a fixed permutation the learned W_Q, W_K absorb, so only the
  frequencies are an option.)
  """
  if head_dim % 4:
    raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {head_dim}.")
  if kind not in FREQUENCIES:
    raise ValueError(f"Unknown RoPE frequencies {kind!r}. Valid: {', '.join(FREQUENCIES)}.")
  half = head_dim // 2
  pairs = jnp.arange(head_dim // 4, dtype=jnp.float32)
  step = 2.0 if kind == "axial" else 1.0
  return base ** (-step * pairs / half)


def _rotate(x: jnp.ndarray, angles: jnp.ndarray) -> jnp.ndarray:
  """Rotates consecutive channel pairs (x0, x1) of x by `angles`."""
  x0, x1 = x[..., 0::2], x[..., 1::2]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  r0 = x0 * cos - x1 * sin
  r1 = x0 * sin + x1 * cos
  return jnp.stack([r0, r1], axis=-1).reshape(x.shape)


def apply_rope_2d(x: jnp.ndarray, coords: jnp.ndarray,
                  base: float = 10000.0, frequencies: str = "axial") -> jnp.ndarray:
  """Rotates x [B, H, N, D] by 2D coordinates coords [B, N, 2] (row, col).

  Tokens without a position (CLS, registers) are given NaN-free zeros by the
  caller; a zero coordinate is the identity rotation. `frequencies`: see
  `rope_frequencies`.
  """
  head_dim = x.shape[-1]
  freqs = rope_frequencies(head_dim, base, frequencies)    # [D/4]
  coords = coords.astype(jnp.float32)
  ang_r = coords[..., 0:1] * freqs                         # [B, N, D/4]
  ang_c = coords[..., 1:2] * freqs
  ang_r, ang_c = ang_r[:, None], ang_c[:, None]            # broadcast heads
  half = head_dim // 2
  xf = x.astype(jnp.float32)
  out = jnp.concatenate(
      [_rotate(xf[..., :half], ang_r), _rotate(xf[..., half:], ang_c)], -1)
  return out.astype(x.dtype)
