"""DINO projection head (DINO Sec. 3.1 / App.; iBOT and DINOv2 reuse it).

MLP (`num_layers` linears, hidden 2048, GELU, no BatchNorm) -> bottleneck 256
-> L2 normalisation -> weight-normalised linear (no bias) to K prototypes.
Weight normalisation (Salimans & Kingma): column k of the last layer is
g_k * v_k / ||v_k||; DINO fixes g = 1 (`norm_last_layer`, the default),
otherwise g is learned (`last_layer_g`, initialised to 1 as DINO does).
Freezing the last layer during the first epoch is the optimizer's job
(`optim.frozen`, regex "last_layer"), since it must also skip weight decay.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# DINO `_init_weights`: truncated normal (std 0.02) linears, zero biases.
_trunc_normal = nn.initializers.truncated_normal(0.02)


def l2_normalize(x, eps: float = 1e-12):
  """torch.nn.functional.normalize(x, dim=-1)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def column_norms(v):
  """||v[:, k]|| as [1, K], summed by a ones-row matmul over v * v.

  The same sums as `jnp.linalg.norm(v, axis=0, keepdims=True)`, but XLA:CPU
  fused that column reduction into the logits' dot and recomputed it per tile:
  6.9 of a DINO step's 7.6 s (ViT-Ti/16, 2 x 224 + 8 x 96 crops, K = 65536,
  batch 2; bench/README.md). HIGHEST: TPUs would otherwise sum in bf16 passes.
  """
  return jnp.sqrt(jnp.matmul(jnp.ones((1, v.shape[0]), jnp.float32),
                             jnp.square(v.astype(jnp.float32)),
                             precision=jax.lax.Precision.HIGHEST))


class WeightNormDense(nn.Module):
  """y = x @ (g * v / ||v||_col), no bias (DINO's `last_layer`)."""
  features: int
  learn_norm: bool = False     # DINO norm_last_layer=True <=> learn_norm=False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    v = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
    w = v / jnp.maximum(column_norms(v), 1e-12).astype(v.dtype)
    if self.learn_norm:
      w = w * self.param("g", nn.initializers.ones, (self.features,))
    return jnp.dot(x.astype(self.dtype), w.astype(self.dtype))


class DINOHead(nn.Module):
  out_dim: int = 65536
  hidden_dim: int = 2048
  bottleneck_dim: int = 256
  num_layers: int = 3
  norm_last_layer: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.num_layers < 1:
      raise ValueError(f"DINO head num_layers must be >= 1, got {self.num_layers}.")
    for i in range(self.num_layers - 1):
      x = nn.Dense(self.hidden_dim, dtype=self.dtype, kernel_init=_trunc_normal,
                   name=f"mlp{i}")(x)
      x = nn.gelu(x, approximate=False)
    x = nn.Dense(self.bottleneck_dim, dtype=self.dtype, kernel_init=_trunc_normal,
                 name=f"mlp{self.num_layers - 1}")(x)
    # Normalise in fp32: the prototypes' logits are cosines (|logit| <= 1 when g = 1).
    x = l2_normalize(x.astype(jnp.float32))
    out = WeightNormDense(self.out_dim, learn_norm=not self.norm_last_layer,
                          dtype=self.dtype, name="last_layer")(x)
    return out.astype(jnp.float32)
