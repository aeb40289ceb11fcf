"""SemanticMIM's dual-stream encoder (003 Sec. 3.3, Fig. 4b).

Image stream = a plain ViT (`encoder`, models/vit.py) over [K proxy tokens,
visible image tokens] (Eq. 3): the proxies are the ViT's K prefix tokens
(003 Sec. 4.1: "we initialize multiple [CLS] tokens and use them as the
[PROXY] tokens"), with no position embedding. Mask stream, per layer i
(Eq. 4): cross-attention whose queries are the [MASK] tokens and whose
keys/values are [proxies output by image block i, mask tokens entering layer
i], then an MLP. Image and mask tokens never see each other; the proxies are
the only path. The cross stream (`cross{i}`, `mask_token`, `mask_norm`) is a
pre-training plugin: export keeps `params["encoder"]`, a ViT with K prefix tokens.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ssl_jax.models import layers, vit
from ssl_jax.ops import masking, posemb as posemb_lib


class CrossBlock(nn.Module):
  """Pre-norm cross-attention + MLP block of the mask stream (Eq. 4)."""
  num_heads: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h_mask, h_proxy, *, train: bool = False, return_attn: bool = False):
    ln = lambda n: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=n)
    q = ln("norm1")(h_mask)
    kv = jnp.concatenate([ln("norm_proxy")(h_proxy), q], 1)     # [PROXY^{i+1}, MASK^i]
    y, attn = layers.Attention(self.num_heads, dtype=self.dtype, name="attn")(
        q, kv, return_attn=return_attn)
    x = h_mask + layers.DropPath(self.drop_path)(y, train)
    y = layers.Mlp(int(x.shape[-1] * self.mlp_ratio), dtype=self.dtype, name="mlp")(ln("norm2")(x))
    return x + layers.DropPath(self.drop_path)(y, train), attn


class ProxyMIM(nn.Module):
  """Returns {"image": the ViT's output dict over [proxies, visible patches],
  "mask": [B, M, D] normed mask-token outputs, "cross_attn": per-layer
  [B, H, M, K + M] maps (on request)}."""
  width: int = 192
  depth: int = 12
  num_heads: int = 3
  mlp_ratio: float = 4.0
  patch_size: int = 16
  drop_path: float = 0.0
  posemb: str = "sincos2d"
  num_prefix: int = 8
  dtype: Any = jnp.float32

  def vit_config(self):
    return dict(name="vit", width=self.width, depth=self.depth, num_heads=self.num_heads,
                mlp_ratio=self.mlp_ratio, patch_size=self.patch_size, drop_path=self.drop_path,
                posemb=self.posemb, num_prefix=self.num_prefix)

  @nn.compact
  def __call__(self, images, visible_idx, masked_idx, *, train: bool = False,
               return_attn: bool = False, zero_proxies: bool = False):
    """visible_idx [B, N-M], masked_idx [B, M] (ops/mim_masks.split_indices).
    zero_proxies (a diagnostic): the mask stream sees zeros instead of the
    proxies, cutting its only path to the image."""
    if self.posemb not in ("sincos2d", "learn"):
      raise ValueError(f"SemanticMIM supports posemb sincos2d | learn, got {self.posemb!r}.")
    encoder = vit.ViT(width=self.width, depth=self.depth, num_heads=self.num_heads,
                      mlp_ratio=self.mlp_ratio, patch_size=self.patch_size,
                      drop_path=self.drop_path, posemb=self.posemb, num_prefix=self.num_prefix,
                      dtype=self.dtype, name="encoder")
    img = encoder(images, train=train, keep_idx=visible_idx, return_hidden=True,
                  return_attn=return_attn)
    b, h, w, _ = images.shape
    gh, gw = h // self.patch_size, w // self.patch_size
    if self.posemb == "sincos2d":
      pos = posemb_lib.sincos_2d(posemb_lib.grid_coords(gh, gw), self.width)[None]
    else:
      pos = encoder.variables["params"]["pos_embedding"]        # the image stream's table
    pos = masking.gather_tokens(jnp.broadcast_to(pos, (b, gh * gw, self.width)), masked_idx)
    token = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, self.width))
    x = (token + pos).astype(self.dtype)                          # [MASK] + its position
    k = self.num_prefix
    cross_attn = []
    for i in range(self.depth):
      proxies = img["hidden"][i][:, :k]                           # h_[PROXY]^{i+1}
      if zero_proxies:
        proxies = jnp.zeros_like(proxies)
      x, a = CrossBlock(self.num_heads, self.mlp_ratio,
                        drop_path=self.drop_path * i / max(self.depth - 1, 1),
                        dtype=self.dtype, name=f"cross{i}")(
                            x, proxies, train=train, return_attn=return_attn)
      cross_attn.append(a)
    out = {"image": img, "mask": nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="mask_norm")(x),
           "mask_hidden": x}
    if return_attn:
      out["cross_attn"] = cross_attn
    return out
