"""Mobile-Former encoders (Chen et al., CVPR 2022) as used by QB-Heat.

Widths are ../shared/papers/000 Tab. 8 (App. B.1): 6 global tokens, a 3x3
stem, one lite bottleneck ("bneck-lite", MicroNet), 11 Mobile-Former blocks,
the last stage kept at 1/16 (000 Sec. 4.2) and a 1x1 conv output. Block
internals follow the public Mobile-Former reference (AAboys/MobileFormer,
`dna_blocks.py`): Mobile->Former is a light cross attention with the feature
map as keys and values unprojected, the Former is post-norm attention (keys =
values = tokens) plus a 2x FFN, Former->Mobile projects the tokens to keys
and values, and the Mobile sub-block uses dynamic ReLU whose coefficients
come from the first global token.

Output dict (docs/ARCHITECTURE.md): `feature_map` [B, h, w, C] (the 1x1 conv
output), `patch` [B, h*w, C], `tokens` [B, 6, D] (global tokens after the
last Mobile->Former), and `cls` [B, C + D]: Tab. 8's "pool concat" (pooled
map, h-swish, concatenated with token 0), the classifier input of the
reference and the representation the paper probes linearly.
"""
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models import layers
from ssl_jax.models.resnet import BatchNorm, conv
from ssl_jax.registry import check_choice

# Reference init: linear layers N(0, 0.01), zero bias.
dense_init = nn.initializers.normal(0.01)

# Tab. 8: (block, #exp, #out, stride) after the stem; "lite" = bneck-lite,
# "mf_down" = M-F with stride 2, "mf" = M-F. The MF-1.0G M-F-down row of the
# stage at 1/16 is garbled in the PDF (it repeats "288 96"); widths there are
# half of MF-3.7G's like every other row (576, 176).
VARIANTS = {
    "285M": dict(token_dim=192, stem=16, out=720, blocks=(
        ("lite", 32, 16, 1),
        ("mf_down", 96, 28, 2), ("mf", 84, 28, 1),
        ("mf_down", 168, 48, 2), ("mf", 144, 48, 1), ("mf", 144, 48, 1),
        ("mf_down", 240, 80, 2), ("mf", 320, 88, 1), ("mf", 480, 88, 1),
        ("mf", 528, 120, 1), ("mf", 720, 120, 1), ("mf", 720, 120, 1)),),
    "1.0G": dict(token_dim=256, stem=32, out=1440, blocks=(
        ("lite", 64, 32, 1),
        ("mf_down", 192, 56, 2), ("mf", 168, 56, 1),
        ("mf_down", 336, 96, 2), ("mf", 288, 96, 1), ("mf", 288, 96, 1),
        ("mf_down", 576, 176, 2), ("mf", 704, 176, 1), ("mf", 704, 176, 1),
        ("mf", 1056, 240, 1), ("mf", 1440, 240, 1), ("mf", 1440, 240, 1)),),
    "3.7G": dict(token_dim=256, stem=64, out=2880, blocks=(
        ("lite", 128, 64, 1),
        ("mf_down", 384, 112, 2), ("mf", 336, 112, 1),
        ("mf_down", 672, 192, 2), ("mf", 576, 192, 1), ("mf", 576, 192, 1),
        ("mf_down", 1152, 352, 2), ("mf", 1408, 352, 1), ("mf", 1408, 352, 1),
        ("mf", 2112, 480, 1), ("mf", 2880, 480, 1), ("mf", 2880, 480, 1)),),
    # CPU-sized (not in the paper): stride 4 so a 16x16 quarter of a 32x32
    # image gives a 4x4 map, still splittable into 2x2 centre sub-blocks.
    "tiny": dict(token_dim=64, stem=8, out=192, blocks=(
        ("lite", 16, 8, 1),
        ("mf_down", 48, 16, 2), ("mf", 48, 16, 1),
        ("mf", 96, 32, 1), ("mf", 128, 32, 1)),),
}
NUM_TOKENS = 6            # Tab. 8 / Sec. 4.2
BRIDGE_HEADS = 2          # Mobile<->Former heads (reference `attn_num_heads`)
FORMER_HEADS = 4          # reference GlobalBlock default
DOWN_SECOND_EXPANSION = 4 # M-F-down: dw 3x3 (x#exp) -> pw -> dw 3x3 (x4) -> pw


def _split_heads(x, heads):
  return x.reshape(x.shape[:-1] + (heads, x.shape[-1] // heads))


class DynamicReLU(nn.Module):
  """Dynamic ReLU (Chen et al. 2020): max(a1 x, a2 x) per channel, with
  a1 in [0, 2], a2 in [-1, 1] predicted from global token 0."""
  token_dim: int
  reduction: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, tokens):
    c = x.shape[-1]
    h = nn.Dense(self.token_dim // self.reduction, kernel_init=dense_init,
                 dtype=self.dtype, name="fc1")(tokens[:, 0])
    h = nn.Dense(2 * c, kernel_init=dense_init, dtype=self.dtype, name="fc2")(nn.relu(h))
    h = jax.nn.hard_sigmoid(h)[:, None, None, :]
    a1 = (h[..., :c] - 0.5) * 2.0 + 1.0
    a2 = (h[..., c:] - 0.5) * 2.0
    return jnp.maximum(x * a1, x * a2)


class MobileToFormer(nn.Module):
  """Tokens attend to the feature map; keys = values = the unprojected map.
  Dynamic: the attended values are gated by h_sigmoid(W t) * 2 (reference)."""
  token_dim: int
  heads: int = BRIDGE_HEADS
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, tokens, train: bool):
    b, h, w, c = features.shape
    q = _split_heads(nn.Dense(c, kernel_init=dense_init, dtype=self.dtype, name="q")(tokens),
                     self.heads)                                  # [B, T, H, c/H]
    kv = _split_heads(features.reshape(b, h * w, c), self.heads)  # [B, N, H, c/H]
    logits = jnp.einsum("bthd,bnhd->bhtn", q, kv) * (c // self.heads) ** -0.5
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(kv.dtype)
    out = jnp.einsum("bhtn,bnhd->bthd", attn, kv).reshape(b, -1, c)
    gate = jax.nn.hard_sigmoid(
        nn.Dense(c, kernel_init=dense_init, dtype=self.dtype, name="gate")(tokens)) * 2.0
    out = nn.Dense(self.token_dim, kernel_init=dense_init, dtype=self.dtype,
                   name="proj")(out * gate)
    tokens = tokens + layers.DropPath(self.drop_path)(out, train)
    return nn.LayerNorm(dtype=self.dtype, name="norm")(tokens)


class Former(nn.Module):
  """Post-norm token self-attention (keys = values = tokens) + 2x FFN."""
  heads: int = FORMER_HEADS
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, train: bool):
    b, t, d = tokens.shape
    q = _split_heads(nn.Dense(d, kernel_init=dense_init, dtype=self.dtype, name="q")(tokens),
                     self.heads)
    kv = _split_heads(tokens, self.heads)
    logits = jnp.einsum("bthd,bshd->bhts", q, kv) * (d // self.heads) ** -0.5
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(kv.dtype)
    out = jnp.einsum("bhts,bshd->bthd", attn, kv).reshape(b, t, d)
    out = nn.Dense(d, kernel_init=dense_init, dtype=self.dtype, name="proj")(out)
    tokens = nn.LayerNorm(dtype=self.dtype, name="norm1")(
        tokens + layers.DropPath(self.drop_path)(out, train))
    y = nn.Dense(2 * d, kernel_init=dense_init, dtype=self.dtype, name="ffn1")(tokens)
    y = nn.Dense(d, kernel_init=dense_init, dtype=self.dtype, name="ffn2")(
        nn.gelu(y, approximate=False))
    return nn.LayerNorm(dtype=self.dtype, name="norm2")(tokens + y)


class FormerToMobile(nn.Module):
  """Every pixel (unprojected query) attends to the projected tokens."""
  heads: int = BRIDGE_HEADS
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, tokens, train: bool):
    b, h, w, c = features.shape
    k = _split_heads(nn.Dense(c, kernel_init=dense_init, dtype=self.dtype, name="k")(tokens),
                     self.heads)
    v = _split_heads(nn.Dense(c, kernel_init=dense_init, dtype=self.dtype, name="v")(tokens),
                     self.heads)
    q = _split_heads(features.reshape(b, h * w, c), self.heads)
    logits = jnp.einsum("bnhd,bthd->bhnt", q, k) * (c // self.heads) ** -0.5
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = jnp.einsum("bhnt,bthd->bnhd", attn, v).reshape(b, h, w, c)
    return features + layers.DropPath(self.drop_path)(out, train)


class LiteBottleneck(nn.Module):
  """bneck-lite (MicroNet): depthwise 3x3 expanding to #exp, ReLU6, pw-linear."""
  expand: int
  out: int
  stride: int = 1
  bn_groups: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    bn = lambda n: BatchNorm(self.bn_groups, dtype=self.dtype, name=n)
    y = conv(self.expand, 3, self.stride, groups=x.shape[-1], dtype=self.dtype, name="dw")(x)
    y = jax.nn.relu6(bn("bn_dw")(y, train))
    y = bn("bn_pw")(conv(self.out, 1, dtype=self.dtype, name="pw")(y), train)
    return y + x if self.stride == 1 and x.shape[-1] == self.out else y


class MobileFormerBlock(nn.Module):
  """Mobile->Former, Former, Mobile (dynamic ReLU), Former->Mobile.

  Mobile sub-block: stride 1 is an inverted bottleneck (pw #exp, dw 3x3, pw);
  stride 2 (M-F-down) is dw 3x3 s2 (#exp) -> pw -> dw 3x3 (4x) -> pw with an
  inner residual, as in the reference `DnaBlock3`.
  """
  expand: int
  out: int
  stride: int
  token_dim: int
  drop_path: float = 0.0
  bn_groups: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, tokens, train: bool):
    kw = dict(dtype=self.dtype)
    bn = lambda n: BatchNorm(self.bn_groups, name=n, **kw)
    dyrelu = lambda n: DynamicReLU(self.token_dim, name=n, **kw)
    tokens = MobileToFormer(self.token_dim, drop_path=self.drop_path, name="mobile_to_former",
                            **kw)(x, tokens, train)
    tokens = Former(drop_path=self.drop_path, name="former", **kw)(tokens, train)
    if self.stride == 1:
      y = dyrelu("act1")(bn("bn1")(conv(self.expand, 1, name="pw1", **kw)(x), train), tokens)
      y = bn("bn2")(conv(self.expand, 3, groups=self.expand, name="dw", **kw)(y), train)
      y = dyrelu("act2")(y, tokens)
      y = bn("bn3")(conv(self.out, 1, name="pw2", **kw)(y), train)
      if x.shape[-1] == self.out:
        y = x + layers.DropPath(self.drop_path)(y, train)
    else:
      y = conv(self.expand, 3, self.stride, groups=x.shape[-1], name="dw1", **kw)(x)
      y = dyrelu("act1")(bn("bn1")(y, train), tokens)
      y = bn("bn2")(conv(self.out, 1, name="pw1", **kw)(y), train)
      hidden = self.out * DOWN_SECOND_EXPANSION
      z = bn("bn3")(conv(hidden, 3, groups=self.out, name="dw2", **kw)(y), train)
      z = dyrelu("act3")(z, tokens)
      z = bn("bn4")(conv(self.out, 1, name="pw2", **kw)(z), train)
      y = y + layers.DropPath(self.drop_path)(z, train)
    y = FormerToMobile(drop_path=self.drop_path, name="former_to_mobile", **kw)(y, tokens, train)
    return y, tokens


class MobileFormer(nn.Module):
  """Mobile-Former encoder; `variant` in VARIANTS (Tab. 8)."""
  variant: str = "285M"
  drop_path: float = 0.0
  bn_groups: int = 1
  depth: Optional[int] = None   # keep only the first `depth` blocks (small test models)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    check_choice("Mobile-Former variant", self.variant, VARIANTS)
    spec = VARIANTS[self.variant]
    td = spec["token_dim"]
    b = images.shape[0]
    kw = dict(bn_groups=self.bn_groups, dtype=self.dtype)
    # Reference: nn.Embedding, i.e. N(0, 1) initial tokens.
    tokens = self.param("tokens", nn.initializers.normal(1.0), (NUM_TOKENS, td))
    tokens = jnp.broadcast_to(tokens.astype(self.dtype), (b, NUM_TOKENS, td))
    x = conv(spec["stem"], 3, 2, dtype=self.dtype, name="stem_conv")(images.astype(self.dtype))
    x = jax.nn.relu6(BatchNorm(self.bn_groups, dtype=self.dtype, name="stem_bn")(x, train))
    blocks: Sequence[Tuple[str, int, int, int]] = spec["blocks"][:self.depth]
    for i, (kind, expand, out, stride) in enumerate(blocks):
      rate = self.drop_path * (i + 1) / len(blocks)
      if kind == "lite":
        x = LiteBottleneck(expand, out, stride, name=f"block{i}", **kw)(x, train)
      else:
        x, tokens = MobileFormerBlock(expand, out, stride, td, rate, name=f"block{i}", **kw)(
            x, tokens, train)
    tokens = MobileToFormer(td, drop_path=self.drop_path, dtype=self.dtype,
                            name="mobile_to_former_last")(x, tokens, train)
    x = conv(spec["out"], 1, dtype=self.dtype, name="out_conv")(x)
    x = jax.nn.relu6(BatchNorm(self.bn_groups, dtype=self.dtype, name="out_bn")(x, train))
    bsz, h, w, c = x.shape
    pooled = jax.nn.hard_swish(x.astype(jnp.float32).mean(axis=(1, 2)))
    cls = jnp.concatenate([pooled, tokens[:, 0].astype(jnp.float32)], -1)
    return {"feature_map": x, "patch": x.reshape(bsz, h * w, c), "tokens": tokens,
            "cls": cls.astype(self.dtype)}
