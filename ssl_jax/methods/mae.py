"""MAE: masked autoencoder pre-training (He et al. 2022).

Encoder sees only the visible 25% of patches; a light decoder with mask tokens
reconstructs the pixels of the masked patches; loss on masked patches only,
against per-patch normalised pixels (MAE Sec. 3 and Tab. 1d, `norm_pix_loss`).
"""
import jax
import jax.numpy as jnp

from ssl_jax import models
from ssl_jax.methods import METHODS
from ssl_jax.methods.base import (EncoderSpec, Method, MethodVars, encoder_params,
                                  fixed_view, scalar_metrics)
from ssl_jax.ops import masking, patches


def encoder_model(config):
  return dict(config.model)


def decoder_model(config, channels: int = 3):
  p = config.model.patch_size
  d = config.mae.decoder
  return dict(name="mae_decoder", width=d.width, depth=d.depth,
              num_heads=d.num_heads, patch_dim=p * p * channels)


def build_modules(config):
  dtype = config.get("compute_dtype", "float32")
  return models.build(encoder_model(config), dtype), models.build(decoder_model(config), dtype)


def init(rng, batch, config):
  enc, dec = build_modules(config)
  images = batch["image"]
  r_enc, r_dec, r_mask = jax.random.split(rng, 3)
  grid = patches.grid_shape(images, config.model.patch_size)
  m = masking.random_masking(r_mask, images.shape[0], grid[0] * grid[1], config.mae.mask_ratio)
  enc_params = enc.init(r_enc, images, keep_idx=m.keep_idx)["params"]
  tokens = enc.apply({"params": enc_params}, images, keep_idx=m.keep_idx)["tokens"]
  dec_params = dec.init(r_dec, tokens, m.restore_idx, grid)["params"]
  return MethodVars(params={"encoder": enc_params, "decoder": dec_params},
                    state={}, constants={})


def reconstruction_loss(pred, images, mask, config):
  """MAE Eq. (MSE on masked patches), normalised-pixel targets if configured."""
  target = patches.patchify(images.astype(jnp.float32), config.model.patch_size)
  if config.mae.norm_pix_loss:
    target = patches.normalized_pixel_targets(target)
  return patches.masked_mse(pred, target, mask)


def loss(params, state, constants, batch, rng, step, config):
  del constants, step
  enc, dec = build_modules(config)
  images = batch["image"]
  r_mask, r_drop = jax.random.split(rng)
  grid = patches.grid_shape(images, config.model.patch_size)
  m = masking.random_masking(r_mask, images.shape[0], grid[0] * grid[1], config.mae.mask_ratio)
  out = enc.apply({"params": params["encoder"]}, images, train=True,
                  keep_idx=m.keep_idx, rngs={"dropout": r_drop})
  pred = dec.apply({"params": params["decoder"]}, out["tokens"], m.restore_idx, grid)
  l = reconstruction_loss(pred, images, m.mask, config)
  return l, (scalar_metrics(recon_loss=l), state)


def encoder(config):
  return EncoderSpec(model=encoder_model(config), variables=encoder_params)



METHODS.register("mae", Method(views=fixed_view("single_crop"), init=init, loss=loss,
                                encoder=encoder))
