"""CR2PQ heads (004 Sec. 3.2): the positional query predictor and the global projector.

`PositionalQueryPredictor` turns positions into predictions: one learnable
mask placeholder per query position, a position-aware cross-attention onto
the encoded tokens of view A (Eq. 8), then the light decoder g (Tab. 5: two
transformer blocks) and a linear map to the teacher's width (Eq. 9).
The global projector g' of Eq. 10 is `layers.Mlp` (two linears and a GELU).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ssl_jax.models import layers
from ssl_jax.ops import posemb
from ssl_jax.registry import check_choice

# How a query learns where it is (004 Tab. 6): rotated in every attention
# (RoPE), or an additive embedding of its coordinates (sin-cos / 2-layer MLP).
QUERY_POSITIONS = ("rope", "sincos", "mlp")


class PositionalQueryPredictor(nn.Module):
  """Predicts target tokens at `query_coords` from `context` tokens.

  context [B, Nk, D] with context_coords [B, Nk, 2]; query_coords [B, Nq, 2];
  every coordinate is in units of one patch of the context view (Eq. 3-4).
  Returns [B, Nq, target_dim].
  """
  num_heads: int
  target_dim: int
  depth: int = 2
  mlp_ratio: float = 4.0
  query_pos: str = "rope"
  rope_freqs: str = "axial"     # ops/rope.py FREQUENCIES
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, context, context_coords, query_coords, *, train: bool = False):
    check_choice("CR2PQ query position", self.query_pos, QUERY_POSITIONS)
    b, nq = query_coords.shape[:2]
    width = context.shape[-1]
    # h_mask of Eq. 8: the same placeholder at every query; only its position
    # (the rotation below) tells the queries apart.
    h_mask = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, width))
    x = jnp.broadcast_to(h_mask, (b, nq, width)).astype(self.dtype)
    if self.query_pos == "sincos":          # Tab. 6 "continuous sin-cos"
      x = x + posemb.sincos_2d(query_coords, width).astype(self.dtype)
    elif self.query_pos == "mlp":           # Tab. 6 "learnable": 2-layer MLP (h, w) -> D
      x = x + layers.Mlp(width, width, dtype=self.dtype, name="query_pos_mlp")(
          query_coords.astype(self.dtype))
    rope = self.query_pos == "rope"
    # Eq. 8: R_rela(rp_B) (h_mask W_Q) against R_rot(rp_A) (h_A W_K).
    x, _ = layers.Attention(self.num_heads, dtype=self.dtype, rope_freqs=self.rope_freqs,
                            name="cross_attn")(
        x, context.astype(self.dtype),
        q_coords=query_coords if rope else None,
        k_coords=context_coords if rope else None)
    # Decoder g; its self-attention keeps the queries' own (relative) positions.
    for i in range(self.depth):
      x, _, _ = layers.Block(self.num_heads, self.mlp_ratio, dtype=self.dtype,
                             rope_freqs=self.rope_freqs, name=f"block{i}")(
                                 x, train=train, coords=query_coords if rope else None)
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
    return nn.Dense(self.target_dim, dtype=self.dtype, kernel_init=layers.dense_init,
                    name="pred")(x)
