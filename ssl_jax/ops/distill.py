"""Layer-wise distillation losses of D-MAE (002 Sec. 5.1, Eq. 5-6).

Layers are counted from 1 (the output of block 1) to the depth, as in the
paper (Fig. 9: "3rd, 6th, 9th and 12th layers"); layer 0 is the patch
embedding. Both losses are plain MSEs averaged over every element, CLS token
included (reference: wangsr126/mae-lite `torch.nn.MSELoss()` on full maps).
"""
from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Pair = Tuple[int, int]   # (teacher layer, student layer), both 1-based

# torch's default Conv2d / Linear init, which the reference adapters keep:
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
_torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def default_pairs(teacher_depth: int, student_depth: int,
                  fractions: Sequence[float] = (1.0,)) -> Tuple[Pair, ...]:
  """Pairs at equal relative depth: fraction f -> (round(f*Dt), round(f*Ds)).

  (1.0,) is D-MAE's last-layer pair; (0.25, 0.5, 0.75, 1.0) the sweep of Fig. 9.
  """
  pairs = []
  for f in fractions:
    if not 0.0 < f <= 1.0:
      raise ValueError(f"layer fraction must be in (0, 1], got {f}.")
    pairs.append((max(1, round(f * teacher_depth)), max(1, round(f * student_depth))))
  return tuple(pairs)


def check_pairs(pairs: Sequence[Pair], teacher_layers: int, student_layers: int,
                kind: str, first: int = 1) -> Tuple[Pair, ...]:
  """Validates (teacher, student) layer indices against the valid ranges."""
  out = []
  for pair in pairs:
    if len(pair) != 2:
      raise ValueError(f"{kind} pair {pair!r} must be (teacher layer, student layer).")
    t, s = int(pair[0]), int(pair[1])
    if not first <= t <= teacher_layers:
      raise ValueError(f"{kind} pair {pair!r}: teacher layer {t} is outside "
                       f"[{first}, {teacher_layers}].")
    if not first <= s <= student_layers:
      raise ValueError(f"{kind} pair {pair!r}: student layer {s} is outside "
                       f"[{first}, {student_layers}].")
    out.append((t, s))
  return tuple(out)


def pair_name(pair: Pair) -> str:
  return f"t{pair[0]}_s{pair[1]}"


def init_head_mixing(rng, teacher_heads: int, student_heads: int) -> jnp.ndarray:
  """M in R^{h x h'} of Eq. 5 (the reference's bias-free 1x1 conv over heads)."""
  # Stored [h, h'] as in the paper; fan_in is the student's head count.
  return _torch_default_init(rng, (student_heads, teacher_heads), jnp.float32).T


def init_projection(rng, student_width: int, teacher_width: int) -> jnp.ndarray:
  """N in R^{d' x d} of Eq. 6 (the reference's bias-free Linear d' -> d)."""
  return _torch_default_init(rng, (student_width, teacher_width), jnp.float32)


def attention_loss(teacher_attn: jnp.ndarray, student_attn: jnp.ndarray,
                   head_mixing: jnp.ndarray) -> jnp.ndarray:
  """L_attn = MSE(A_t, M A_s), Eq. 5.

  teacher_attn [B, h, L, L], student_attn [B, h', L, L], head_mixing M [h, h'].
  """
  _check_shape("head-mixing matrix M", head_mixing.shape,
               (teacher_attn.shape[1], student_attn.shape[1]))
  if teacher_attn.shape[2:] != student_attn.shape[2:]:
    raise ValueError(f"teacher attention {teacher_attn.shape} and student attention "
                     f"{student_attn.shape} cover different tokens.")
  mixed = jnp.einsum("ts,bsqk->btqk", head_mixing, student_attn.astype(jnp.float32))
  teacher = jax.lax.stop_gradient(teacher_attn.astype(jnp.float32))
  return jnp.mean(jnp.square(teacher - mixed))


def representation_loss(teacher_rep: jnp.ndarray, student_rep: jnp.ndarray,
                        projection: jnp.ndarray) -> jnp.ndarray:
  """L_rep = MSE(X_t, X_s N), Eq. 6.

  teacher_rep [B, L, d], student_rep [B, L, d'], projection N [d', d].
  """
  _check_shape("projection N", projection.shape,
               (student_rep.shape[-1], teacher_rep.shape[-1]))
  projected = student_rep.astype(jnp.float32) @ projection
  teacher = jax.lax.stop_gradient(teacher_rep.astype(jnp.float32))
  return jnp.mean(jnp.square(teacher - projected))


def _check_shape(name, got, want):
  if tuple(got) != tuple(want):
    raise ValueError(f"{name} has shape {tuple(got)}; teacher/student need {tuple(want)}.")
