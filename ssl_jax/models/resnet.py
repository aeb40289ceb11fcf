"""ResNet encoders (He et al. 2016, torchvision v1.5 layout) and the CNN BatchNorm.

ResNet-50 is MoCo-v2's backbone (the baseline of ../shared/papers/000 Tab. 1);
`tiny` is a CIFAR-style ResNet (3x3 stem, no max-pool, one basic block per
stage) for the 32x32 CPU jobs.

`BatchNorm` is shared by every CNN here (Mobile-Former imports it): batch
statistics live in the flax collection "batch_stats". Under `jit` with a
batch sharded over the mesh, the mean over the batch axis is a global mean,
so statistics are those of the global batch. `groups > 1` normalises each of
`groups` equal slices of the batch on its own: MoCo's per-GPU BatchNorm,
needed for shuffling BN (MoCo Sec. 3.3).
"""
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from ssl_jax.registry import check_choice

# torchvision / MoCo initialisation: He-normal on fan-out for convolutions.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last; torch defaults (momentum 0.1, eps 1e-5)."""
  groups: int = 1
  momentum: float = 0.9
  epsilon: float = 1e-5
  scale_init: Any = nn.initializers.ones
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    c = x.shape[-1]
    mean_v = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    var_v = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    scale = self.param("scale", self.scale_init, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    xf = x.astype(jnp.float32)
    if train:
      b = x.shape[0]
      if b % self.groups:
        raise ValueError(f"batch {b} is not divisible into {self.groups} BatchNorm groups.")
      g = xf.reshape(self.groups, b // self.groups, -1, c)
      mean = g.mean(axis=(1, 2))                                   # [groups, C]
      var = jnp.square(g - mean[:, None, None]).mean(axis=(1, 2))
      y = (g - mean[:, None, None]) / jnp.sqrt(var[:, None, None] + self.epsilon)
      y = y.reshape(xf.shape)
      if not self.is_initializing():
        m = self.momentum
        mean_v.value = m * mean_v.value + (1 - m) * mean.mean(0)
        var_v.value = m * var_v.value + (1 - m) * var.mean(0)
    else:
      y = (xf - mean_v.value) / jnp.sqrt(var_v.value + self.epsilon)
    return (y * scale + bias).astype(self.dtype)


def conv(features: int, kernel: int, stride: int = 1, groups: int = 1,
         dtype=jnp.float32, name=None):
  """Bias-free conv with torch's symmetric `kernel // 2` padding."""
  p = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((p, p), (p, p)), feature_group_count=groups,
                 use_bias=False, kernel_init=conv_init, dtype=dtype, name=name)


class BasicBlock(nn.Module):
  width: int
  stride: int = 1
  bn_groups: int = 1
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    bn = lambda n: BatchNorm(self.bn_groups, dtype=self.dtype, name=n)
    c = lambda k, s, n: conv(self.width, k, s, dtype=self.dtype, name=n)
    y = nn.relu(bn("bn1")(c(3, self.stride, "conv1")(x), train))
    y = bn("bn2")(c(3, 1, "conv2")(y), train)
    return nn.relu(y + _shortcut(x, self.width, self.stride, self.bn_groups, self.dtype, train))


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (stride here: v1.5) -> 1x1 x4."""
  width: int
  stride: int = 1
  bn_groups: int = 1
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    bn = lambda n: BatchNorm(self.bn_groups, dtype=self.dtype, name=n)
    c = lambda k, s, n: conv(self.width, k, s, dtype=self.dtype, name=n)
    y = nn.relu(bn("bn1")(c(1, 1, "conv1")(x), train))
    y = nn.relu(bn("bn2")(c(3, self.stride, "conv2")(y), train))
    y = bn("bn3")(conv(self.width * 4, 1, dtype=self.dtype, name="conv3")(y), train)
    return nn.relu(y + _shortcut(x, self.width * 4, self.stride, self.bn_groups, self.dtype, train))


def _shortcut(x, out: int, stride: int, bn_groups: int, dtype, train: bool):
  if stride == 1 and x.shape[-1] == out:
    return x
  y = conv(out, 1, stride, dtype=dtype, name="down_conv")(x)
  return BatchNorm(bn_groups, dtype=dtype, name="down_bn")(y, train)


# variant -> (block, blocks per stage, base width, CIFAR stem)
VARIANTS = {
    "tiny": ("basic", (1, 1, 1, 1), 16, True),
    "18": ("basic", (2, 2, 2, 2), 64, False),
    "34": ("basic", (3, 4, 6, 3), 64, False),
    "50": ("bottleneck", (3, 4, 6, 3), 64, False),
    "101": ("bottleneck", (3, 4, 23, 3), 64, False),
}
BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
  """Returns `feature_map` [B, h, w, C] (the last stage), `patch` [B, h*w, C].

  `last_stride=1` keeps the last stage at 1/16 (QB-Heat's choice for
  Mobile-Former, 000 Sec. 4.2) instead of 1/32.
  """
  variant: str = "50"
  last_stride: int = 2
  bn_groups: int = 1
  num_stages: Optional[int] = None   # keep only the first stages (small test models)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    check_choice("ResNet variant", self.variant, VARIANTS)
    kind, depths, width, cifar_stem = VARIANTS[self.variant]
    depths = depths[:self.num_stages]
    block = BLOCKS[kind]
    x = images.astype(self.dtype)
    if cifar_stem:
      x = conv(width, 3, dtype=self.dtype, name="stem_conv")(x)
    else:
      x = conv(width, 7, 2, dtype=self.dtype, name="stem_conv")(x)
    x = nn.relu(BatchNorm(self.bn_groups, dtype=self.dtype, name="stem_bn")(x, train))
    if not cifar_stem:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for s, n in enumerate(depths):
      first_stride = 1 if s == 0 else (self.last_stride if s == len(depths) - 1 else 2)
      for i in range(n):
        stride = first_stride if i == 0 else 1
        x = block(width * 2 ** s, stride, self.bn_groups, self.dtype,
                  name=f"stage{s + 1}_block{i}")(x, train)
    b, h, w, c = x.shape
    return {"feature_map": x, "patch": x.reshape(b, h * w, c)}

