"""SemanticMIM (003): MIM with [PROXY] tokens between image and mask tokens.

Per layer, self-attention + MLP over [K proxies, visible image tokens] (Eq. 3),
then cross-attention + MLP from the [MASK] tokens to [proxies of that layer's
output, mask tokens] (Eq. 4): models/proxy_mim.py. Proxies are the ViT's K
prefix tokens (`config.model.num_prefix`, 8 by default; 003 Sec. 4.1), carry
no position embedding and no loss. The loss is the wrapped baseline's
(`config.mim.target`: "pixel" = SimMIM, "hog" = MaskFeat, "token" = BEiT;
methods/mim.py) on the mask-token outputs only (Sec. 4.1). Drop-path acts on
both streams. Export: the image stream, a plain ViT with K prefix tokens.
"""
import jax
import jax.numpy as jnp

from ssl_jax import models
from ssl_jax.methods import METHODS, mim
from ssl_jax.methods.base import EncoderSpec, Method, MethodVars, fixed_view, scalar_metrics
from ssl_jax.models import proxy_mim, vit
from ssl_jax.ops import masking, mim_masks, patches


def build_model(config) -> proxy_mim.ProxyMIM:
  cfg = dict(config.model)
  if cfg.pop("name") != "vit":
    raise ValueError("SemanticMIM wraps a ViT: set config.model.name = 'vit'.")
  kw = vit.variant_kwargs(cfg.pop("variant", "B"), **cfg)
  dtype = models.DTYPES[config.get("compute_dtype", "float32")]
  return proxy_mim.ProxyMIM(dtype=dtype, **kw)


def _split(rng, images, config):
  grid = patches.grid_shape(images, config.model.patch_size)
  mask = mim_masks.draw(rng, images.shape[0], grid, config.mim.mask)
  visible, masked = mim_masks.split_indices(mask, mim_masks.masked_count(grid, config.mim.mask))
  return visible, masked


def init(rng, batch, config):
  constants = mim.load_constants(config)
  model = build_model(config)
  images = batch["image"]
  r_model, r_head = jax.random.split(rng)
  # Shapes are all init needs: the last M patches stand in for a drawn mask.
  grid = patches.grid_shape(images, config.model.patch_size)
  n, m = grid[0] * grid[1], mim_masks.masked_count(grid, config.mim.mask)
  idx = jnp.broadcast_to(jnp.arange(n), (images.shape[0], n))
  visible, masked = idx[:, :n - m], idx[:, n - m:]
  head = mim.Head(mim.target_dim(config, constants), dtype=model.dtype)

  @jax.jit
  def init_params(r_model, r_head, images):
    params = model.init(r_model, images, visible, masked)["params"]
    feats = model.apply({"params": params}, images, visible, masked)["mask"]
    return {"model": params, "head": head.init(r_head, feats)["params"]}
  return MethodVars(params=init_params(r_model, r_head, images), state={}, constants=constants)


def loss(params, state, constants, batch, rng, step, config):
  del step
  model = build_model(config)
  head = mim.Head(mim.target_dim(config, constants), dtype=model.dtype)
  images = batch["image"]
  r_mask, r_drop = jax.random.split(rng)
  visible, masked = _split(r_mask, images, config)
  out = model.apply({"params": params["model"]}, images, visible, masked, train=True,
                    rngs={"dropout": r_drop})
  pred = head.apply({"params": params["head"]}, out["mask"])
  target = masking.gather_tokens(mim.make_targets(images, config, constants), masked)
  l = mim.target_loss(config.mim.target, pred, target, jnp.ones(masked.shape))
  return l, (scalar_metrics(mim_loss=l), state)


def encoder(config):
  """The image stream only: a ViT with K prefix tokens (cross stream dropped)."""
  build_model(config)                       # validates config.model
  return EncoderSpec(model=dict(config.model),
                     variables=lambda params, state: {"params": params["model"]["encoder"]})


METHODS.register("semanticmim", Method(views=fixed_view("single_crop"), init=init, loss=loss,
                                       encoder=encoder))
