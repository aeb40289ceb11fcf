"""Transformer building blocks shared by every ViT-like model and decoder."""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.ops import rope

Dtype = jnp.dtype

# MAE / timm initialisation: xavier-uniform linears, zero biases.
dense_init = nn.initializers.xavier_uniform()


class DropPath(nn.Module):
  """Stochastic depth per sample (Huang et al.); identity at eval."""
  rate: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool):
    if not train or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
    return x * mask.astype(x.dtype) / keep


class Mlp(nn.Module):
  hidden_dim: int
  out_dim: Optional[int] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    out_dim = self.out_dim or x.shape[-1]
    x = nn.Dense(self.hidden_dim, dtype=self.dtype, kernel_init=dense_init,
                 name="fc1")(x)
    x = nn.gelu(x, approximate=False)
    return nn.Dense(out_dim, dtype=self.dtype, kernel_init=dense_init,
                    name="fc2")(x)


class Attention(nn.Module):
  """Multi-head attention; self-attention when `kv` is None.

  Returns (output, attention probabilities [B, H, Nq, Nk] or None). The
  probabilities feed attention distillation (D-MAE) and the analyses.
  `q_coords` / `k_coords` ([B, N, 2]) switch on 2D RoPE (CR2PQ) with
  `rope_freqs` frequencies (ops/rope.py FREQUENCIES).
  """
  num_heads: int
  dtype: Dtype = jnp.float32
  qkv_bias: bool = True
  rope_freqs: str = "axial"

  @nn.compact
  def __call__(self, x, kv=None, *, q_coords=None, k_coords=None,
               mask=None, return_attn: bool = False):
    dim = x.shape[-1]
    if dim % self.num_heads:
      raise ValueError(f"width {dim} is not divisible by {self.num_heads} heads.")
    head_dim = dim // self.num_heads
    kv = x if kv is None else kv
    # Three projections, not one fused [D, 3D] matmul: fused measured no faster
    # on XLA:CPU (bench/README.md, A/B).
    dense = lambda n: nn.DenseGeneral((self.num_heads, head_dim),
                                      use_bias=self.qkv_bias, dtype=self.dtype,
                                      kernel_init=dense_init, name=n)
    q = dense("query")(x).transpose(0, 2, 1, 3)             # [B, H, Nq, Dh]
    k = dense("key")(kv).transpose(0, 2, 1, 3)
    v = dense("value")(kv).transpose(0, 2, 1, 3)
    q = _rope_trailing(q, q_coords, self.rope_freqs)
    k = _rope_trailing(k, k_coords, self.rope_freqs)
    if not return_attn and mask is None:
      # Softmax normalised after the AV product (as flash attention does): the
      # division runs on [B, H, Nq, Dh], not on [B, H, Nq, Nk], and the scale on
      # q. Same numbers up to rounding; 13% faster unmasked ViT-Ti/16 training
      # step on CPU and a third less step memory (bench/README.md, A/B).
      logits = jnp.einsum("bhqd,bhkd->bhqk", q * (head_dim ** -0.5), k).astype(jnp.float32)
      p = jnp.exp(logits - jax.lax.stop_gradient(logits.max(-1, keepdims=True)))
      out = jnp.einsum("bhqk,bhkd->bhqd", p.astype(v.dtype), v)
      out, attn = (out / p.sum(-1, keepdims=True)).astype(v.dtype), None
    else:
      logits = jnp.einsum("bhqd,bhkd->bhqk", q, k) / jnp.sqrt(head_dim).astype(q.dtype)
      if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
      # Softmax in fp32 keeps bf16 training stable.
      attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
      out = jnp.einsum("bhqk,bhkd->bhqd", attn.astype(v.dtype), v)
    out = out.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], dim)
    out = nn.Dense(dim, dtype=self.dtype, kernel_init=dense_init, name="out")(out)
    return out, (attn if return_attn else None)


def _rope_trailing(x, coords, frequencies: str = "axial"):
  """Rotates the last coords.shape[1] tokens; leading CLS/extra tokens carry
  no position and stay unrotated."""
  if coords is None:
    return x
  n = coords.shape[1]
  if n == x.shape[2]:
    return rope.apply_rope_2d(x, coords, frequencies=frequencies)
  return jnp.concatenate(
      [x[:, :, :-n], rope.apply_rope_2d(x[:, :, -n:], coords, frequencies=frequencies)], 2)


class LayerScale(nn.Module):
  """Per-channel residual-branch scale (CaiT, Touvron et al. 2021, Eq. 1;
  DINOv2's `ls1` / `ls2`, init 1e-5 in its training recipe)."""
  init_value: float = 1e-5

  @nn.compact
  def __call__(self, x):
    gamma = self.param("gamma", nn.initializers.constant(self.init_value), (x.shape[-1],))
    return x * gamma.astype(x.dtype)


class Block(nn.Module):
  """Pre-norm transformer block (ViT / MAE); `layer_scale` (an init value)
  scales both residual branches with LayerScale (DINOv2).

  Returns (x, attn, normed_input): `normed_input` is this block's first
  LayerNorm output, i.e. the normalised representation of the previous block
  that CKA compares (002 Sec. 4.2, Fig. 2).
  """
  num_heads: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Dtype = jnp.float32
  rope_freqs: str = "axial"
  layer_scale: Optional[float] = None

  @nn.compact
  def __call__(self, x, *, train: bool = False, coords=None, mask=None,
               return_attn: bool = False):
    ln = lambda n: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=n)
    h = ln("norm1")(x)
    scale = ((lambda n, y: LayerScale(self.layer_scale, name=n)(y)) if self.layer_scale
             else (lambda n, y: y))
    y, attn = Attention(self.num_heads, dtype=self.dtype, rope_freqs=self.rope_freqs,
                        name="attn")(
        h, q_coords=coords, k_coords=coords, mask=mask, return_attn=return_attn)
    x = x + DropPath(self.drop_path)(scale("ls1", y), train)
    y = Mlp(int(x.shape[-1] * self.mlp_ratio), dtype=self.dtype, name="mlp")(
        ln("norm2")(x))
    x = x + DropPath(self.drop_path)(scale("ls2", y), train)
    return x, attn, h
