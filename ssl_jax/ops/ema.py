"""Exponential moving average teachers (BYOL / MoCo / DINO momentum encoders)."""
import jax
import jax.numpy as jnp


def ema_update(teacher, student, momentum):
  """teacher <- m * teacher + (1 - m) * student, leaf by leaf."""
  return jax.tree.map(lambda t, s: momentum * t + (1.0 - momentum) * s.astype(t.dtype),
                      teacher, student)


def cosine_momentum(step, total_steps, base: float, final: float = 1.0):
  """BYOL / DINO schedule: momentum rises from `base` to `final` by a half cosine."""
  frac = jnp.clip(step / jnp.maximum(total_steps, 1), 0.0, 1.0)
  return final - (final - base) * (jnp.cos(jnp.pi * frac) + 1.0) / 2.0
