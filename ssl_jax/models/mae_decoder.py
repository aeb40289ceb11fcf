"""MAE decoder (He et al. 2022, Sec. 3): mask tokens + fixed posemb + blocks."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ssl_jax.models import layers
from ssl_jax.ops import masking, posemb


class MAEDecoder(nn.Module):
  """Maps [CLS; visible] encoder tokens to per-patch pixel predictions."""
  width: int = 512
  depth: int = 8
  num_heads: int = 16
  mlp_ratio: float = 4.0
  patch_dim: int = 768          # p * p * C, the reconstruction target size
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, restore_idx, grid_hw, *, train: bool = False):
    """tokens [B, 1+K, D_enc]; restore_idx [B, N]; returns [B, N, patch_dim]."""
    b, n = restore_idx.shape
    x = nn.Dense(self.width, dtype=self.dtype, kernel_init=layers.dense_init,
                 name="embed")(tokens)
    mask_token = self.param("mask_token", nn.initializers.normal(0.02),
                            (1, 1, self.width))
    num_masked = n - (x.shape[1] - 1)
    x_ = jnp.concatenate(
        [x[:, 1:], jnp.broadcast_to(mask_token, (b, num_masked, self.width)).astype(x.dtype)], 1)
    x_ = masking.gather_tokens(x_, restore_idx)   # unshuffle
    pe = posemb.sincos_2d(jnp.asarray(posemb.grid_coords(*grid_hw)), self.width)
    x = jnp.concatenate([x[:, :1], x_ + pe.astype(x.dtype)], 1)      # CLS: no posemb
    for i in range(self.depth):
      x, _, _ = layers.Block(self.num_heads, self.mlp_ratio, dtype=self.dtype,
                             name=f"block{i}")(x, train=train)
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
    x = nn.Dense(self.patch_dim, dtype=self.dtype, kernel_init=layers.dense_init,
                 name="pred")(x)
    return x[:, 1:]
