"""The raw-pixel reference "encoder": the flattened (dataset-normalised) image
as its only feature, so kNN / linear probes on raw pixels run through the
same protocol code as every export (the reference row of the results tables).

`cls` [B, H*W*C] and `patch` [B, 1, H*W*C]: `eval.feature` "cls" and "mean"
both give the flattened image. No parameters; its random-init twin is itself.
`save_export(dir)` writes an export folder any eval job reads.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


class Pixels(nn.Module):
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool = False, **unused):
    del train, unused
    flat = images.reshape(images.shape[0], -1).astype(jnp.float32)
    return {"cls": flat, "patch": flat[:, None, :]}


MODEL_CFG = {"name": "pixels"}


def save_export(export_dir: str) -> str:
  """An export of the pixel reference. Orbax needs one array to write, so the
  variables hold an unused scalar (`module.apply` ignores it)."""
  from ssl_jax import export  # pylint: disable=g-import-not-at-top
  return export.save(export_dir, MODEL_CFG, {"params": {"unused": np.zeros((), np.float32)}},
                     info={"method": "pixels", "step": 0})
