"""Vision Transformer encoder (Dosovitskiy et al.; MAE's variant with CLS token).

One module serves every ViT method: MAE feeds only the visible tokens
(`keep_idx`), D-MAE reads every block's attention maps and hidden states, and
CR2PQ swaps absolute position embeddings for continuous 2D RoPE (`posemb`).
"""
from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models import layers
from ssl_jax.ops import masking, patches as patches_lib, posemb as posemb_lib
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


# Off only for bench/ab_step.py's A/B (the embed-all-then-gather path).
VISIBLE_ONLY_EMBED = True


class ViT(nn.Module):
  """ViT with K prefix tokens (CLS + K-1 proxies / registers); returns a dict.

  Output keys: `cls` [B, D] (prefix token 0), `prefix` [B, K, D] and `patch`
  [B, N, D] after the final LayerNorm; `hidden` (every block's output, prefix
  tokens first), `normed` (every block's first-LN input, the CKA
  representation), `attn` ([B, H, L, L] per block) on request.
  `num_prefix` > 1 adds `proxy_tokens` [1, K-1, D] after `cls_token`:
  SemanticMIM's [PROXY] tokens (003 Sec. 4.1) and DINOv2's register tokens
  (Darcet et al. 2024) alike; timm's `reg_tokens` layout. Like CLS they are
  added after the position embedding and carry none.
  """
  width: int = 192
  depth: int = 12
  num_heads: int = 3
  mlp_ratio: float = 4.0
  patch_size: int = 16
  drop_path: float = 0.0
  posemb: str = "sincos2d"
  rope_freqs: str = "axial"     # posemb "rope": ops/rope.py FREQUENCIES
  # "learn" only: the grid the table is stored at; other grids are bicubically
  # resized (DINO's interpolate_pos_encoding), so local crops share it.
  posemb_grid: Optional[Tuple[int, int]] = None
  layer_scale: Optional[float] = None   # LayerScale init value (DINOv2: 1e-5); None: off
  num_prefix: int = 1                   # CLS + (K-1) proxy / register tokens
  dtype: Any = jnp.float32

  def setup_check(self):
    check_choice("ViT posemb", self.posemb, POSEMBS)
    if self.num_prefix < 1:
      raise ValueError(f"ViT num_prefix must be >= 1 (the CLS token), got {self.num_prefix}.")

  @nn.compact
  def __call__(self, images, *, train: bool = False, keep_idx=None,
               coords=None, return_hidden: bool = False,
               return_attn: bool = False, num_blocks: Optional[int] = None,
               mask=None, pos=None):
    """images [B, H, W, C]; keep_idx [B, K] visible patch indices (MAE);
    coords [B, N, 2] real-valued patch coordinates for RoPE / sin-cos
    (default: the integer grid); num_blocks runs only the first blocks;
    mask [B, N] (1 = masked): those patch embeddings become a learned
    `mask_token` before positions are added (BEiT Sec. 2.3, SimMIM Sec. 3.1,
    iBOT / DINOv2 MIM; the parameter exists once the model is initialised
    with a mask); pos [B, N, D]
    replaces the built-in position embedding (001's sampled position field)."""
    self.setup_check()
    p = self.patch_size
    b, h, w, _ = images.shape
    if h % p or w % p:
      raise ValueError(f"image {h}x{w} is not divisible by patch size {p}.")
    gh, gw = h // p, w // p
    embed = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID",
                    dtype=self.dtype, kernel_init=layers.dense_init, name="patch_embed")
    if coords is None:
      coords = jnp.broadcast_to(jnp.asarray(posemb_lib.grid_coords(gh, gw)), (b, gh * gw, 2))
    # MAE-style encoders (keep_idx, no mask token) embed only the visible
    # patches: the same conv on each gathered p x p patch, so the same numbers
    # as embedding all and gathering after, at a quarter of the work (the
    # patch gather needs no gradient; bench/ab_step.py --variant embed_all).
    embed_visible = keep_idx is not None and mask is None and VISIBLE_ONLY_EMBED
    if embed_visible:
      c, n_keep = images.shape[-1], keep_idx.shape[1]
      visible = masking.gather_tokens(patches_lib.patchify(images, p), keep_idx)
      x = embed(visible.reshape(b * n_keep, p, p, c).astype(self.dtype))
      x = x.reshape(b, n_keep, self.width)
      coords = masking.gather_tokens(coords, keep_idx)
      if pos is not None:
        pos = masking.gather_tokens(pos, keep_idx)
    else:
      x = embed(images.astype(self.dtype)).reshape(b, gh * gw, self.width)
    if mask is not None:
      # BEiT / SimMIM draw it from N(0, 0.02); iBOT / DINOv2 start at zeros.
      token = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, self.width))
      m = mask.astype(x.dtype)[..., None]
      x = x * (1 - m) + token.astype(x.dtype) * m

    if pos is not None:
      x = x + pos.astype(x.dtype)
    elif self.posemb == "sincos2d":
      x = x + posemb_lib.sincos_2d(coords, self.width).astype(x.dtype)
    elif self.posemb == "learn":
      th, tw = self.posemb_grid or (gh, gw)
      pe = self.param("pos_embedding", nn.initializers.normal(0.02),
                      (1, th * tw, self.width))
      if (th, tw) != (gh, gw):
        pe = jax.image.resize(pe.reshape(1, th, tw, self.width), (1, gh, gw, self.width),
                              "bicubic", antialias=False).reshape(1, gh * gw, self.width)
      pe = pe.astype(x.dtype)
      if embed_visible:
        pe = masking.gather_tokens(jnp.broadcast_to(pe, (b,) + pe.shape[1:]), keep_idx)
      x = x + pe

    if keep_idx is not None and not embed_visible:
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
          dtype=self.dtype, rope_freqs=self.rope_freqs, layer_scale=self.layer_scale,
          name=f"block{i}")(
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

