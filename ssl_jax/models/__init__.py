"""Model registry: `build({"name": "vit", "variant": "Ti", ...})` -> flax Module.

Encoders return a dict of features (see `ViT`): `patch` [B, N, D] always,
`cls` [B, D] where the model has one, `feature_map` [B, h, w, C] for CNNs.
Evaluation and export rely only on this contract.
"""
from typing import Any, Mapping

import jax.numpy as jnp

from ssl_jax.registry import Registry

MODELS = Registry("model")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build(model_cfg: Mapping[str, Any], dtype: str = "float32"):
  """Builds a registered model from a config mapping holding `name`."""
  cfg = dict(model_cfg)
  if "name" not in cfg:
    raise ValueError(f"model config needs a 'name'; valid names: {', '.join(MODELS.names())}.")
  if dtype not in DTYPES:
    raise ValueError(f"Unknown compute dtype {dtype!r}. Valid: {', '.join(DTYPES)}.")
  return MODELS.get(cfg.pop("name"))(dtype=DTYPES[dtype], **cfg)


def _register_builtin():
  from ssl_jax.models import vit, mae_decoder  # pylint: disable=g-import-not-at-top

  def build_vit(variant: str = "Ti", **kw):
    return vit.ViT(**vit.variant_kwargs(variant, **kw))

  MODELS.register("vit", build_vit)
  MODELS.register("mae_decoder", mae_decoder.MAEDecoder)
  from ssl_jax.models import mobile_former, resnet  # pylint: disable=g-import-not-at-top
  MODELS.register("mobile_former", mobile_former.MobileFormer)
  MODELS.register("resnet", resnet.ResNet)
  from ssl_jax.models import pixels  # pylint: disable=g-import-not-at-top
  MODELS.register("pixels", pixels.Pixels)   # raw-pixel reference row of the results suite


_register_builtin()
