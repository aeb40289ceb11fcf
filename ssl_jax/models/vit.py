"""Vision Transformer encoder (Dosovitskiy et al.; MAE's variant with CLS token).

One module serves every ViT method: MAE feeds only the visible tokens
(`keep_idx`), D-MAE reads every block's attention maps and hidden states, and
CR2PQ swaps absolute position embeddings for continuous 2D RoPE (`posemb`).
"""
from typing import Any, Dict, Optional

import flax.linen as nn
import jax.numpy as jnp

from ssl_jax.models import layers
from ssl_jax.ops import masking, posemb as posemb_lib
from ssl_jax.registry import check_choice

# width, depth, heads (ViT paper Tab. 1; Ti from DeiT). 002 Sec. 3.1 uses 12
# heads for ViT-Tiny: set `num_heads=12` in the config (Tab. S3).
VARIANTS = {
    "Ti": dict(width=192, depth=12, num_heads=3),
    "S": dict(width=384, depth=12, num_heads=6),
    "B": dict(width=768, depth=12, num_heads=12),
    "L": dict(width=1024, depth=24, num_heads=16),
}
POSEMBS = ("sincos2d", "learn", "rope", "none")


def variant_kwargs(variant: str, **overrides) -> Dict[str, Any]:
  check_choice("ViT variant", variant, VARIANTS)
  kw = dict(VARIANTS[variant])
  kw.update({k: v for k, v in overrides.items() if v is not None})
  return kw


class ViT(nn.Module):
  """ViT with K prefix tokens (CLS + K-1 proxies / registers); returns a dict.

  Output keys: `cls` [B, D] (prefix token 0), `prefix` [B, K, D] and `patch`
  [B, N, D] after the final LayerNorm; `hidden` (every block's output, prefix
  tokens first), `normed` (every block's first-LN input, the CKA
  representation), `attn` ([B, H, L, L] per block) on request.
  `num_prefix` > 1 adds `proxy_tokens` [1, K-1, D] after `cls_token`
  (SemanticMIM's [PROXY] tokens, 003 Sec. 4.1; timm's `reg_tokens` layout):
  like CLS they carry no position embedding.
  """
  width: int = 192
  depth: int = 12
  num_heads: int = 3
  mlp_ratio: float = 4.0
  patch_size: int = 16
  drop_path: float = 0.0
  posemb: str = "sincos2d"
  num_prefix: int = 1
  dtype: Any = jnp.float32

  def setup_check(self):
    check_choice("ViT posemb", self.posemb, POSEMBS)
    if self.num_prefix < 1:
      raise ValueError(f"ViT num_prefix must be >= 1 (the CLS token), got {self.num_prefix}.")

  @nn.compact
  def __call__(self, images, *, train: bool = False, keep_idx=None,
               coords=None, mask=None, return_hidden: bool = False,
               return_attn: bool = False, num_blocks: Optional[int] = None):
    """images [B, H, W, C]; keep_idx [B, K] visible patch indices (MAE);
    coords [B, N, 2] real-valued patch coordinates for RoPE / sin-cos
    (default: the integer grid); mask [B, N] (1 = masked): those patch
    embeddings become a learned `mask_token` before position embeddings are
    added (BEiT Sec. 2.3, SimMIM Sec. 3.1; the parameter exists once the
    model is initialised with a mask); num_blocks runs only the first blocks."""
    self.setup_check()
    p = self.patch_size
    b, h, w, _ = images.shape
    if h % p or w % p:
      raise ValueError(f"image {h}x{w} is not divisible by patch size {p}.")
    gh, gw = h // p, w // p
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID",
                dtype=self.dtype, kernel_init=layers.dense_init,
                name="patch_embed")(images.astype(self.dtype))
    x = x.reshape(b, gh * gw, self.width)
    if mask is not None:
      mask_token = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, self.width))
      x = jnp.where(mask.astype(bool)[..., None], mask_token.astype(x.dtype), x)
    if coords is None:
      coords = jnp.broadcast_to(jnp.asarray(posemb_lib.grid_coords(gh, gw)), (b, gh * gw, 2))

    if self.posemb == "sincos2d":
      x = x + posemb_lib.sincos_2d(coords, self.width).astype(x.dtype)
    elif self.posemb == "learn":
      pe = self.param("pos_embedding", nn.initializers.normal(0.02),
                      (1, gh * gw, self.width))
      x = x + pe.astype(x.dtype)

    if keep_idx is not None:
      x = masking.gather_tokens(x, keep_idx)
      coords = masking.gather_tokens(coords, keep_idx)

    k = self.num_prefix
    prefix = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, self.width))
    if k > 1:
      proxies = self.param("proxy_tokens", nn.initializers.normal(0.02), (1, k - 1, self.width))
      prefix = jnp.concatenate([prefix, proxies], 1)
    x = jnp.concatenate([jnp.broadcast_to(prefix, (b, k, self.width)).astype(x.dtype), x], 1)
    rope_coords = coords if self.posemb == "rope" else None

    hidden, normed, attns = [], [], []
    depth = self.depth if num_blocks is None else num_blocks
    for i in range(depth):
      x, attn, n = layers.Block(
          self.num_heads, self.mlp_ratio,
          drop_path=self.drop_path * i / max(self.depth - 1, 1),
          dtype=self.dtype, name=f"block{i}")(
              x, train=train, coords=rope_coords, return_attn=return_attn)
      if return_hidden:
        hidden.append(x)
        normed.append(n)
      if return_attn:
        attns.append(attn)
    out = {}
    if num_blocks is None or num_blocks == self.depth:
      x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
    out.update(cls=x[:, 0], prefix=x[:, :k], patch=x[:, k:], tokens=x)
    if return_hidden:
      out.update(hidden=hidden, normed=normed)
    if return_attn:
      out["attn"] = attns
    return out

