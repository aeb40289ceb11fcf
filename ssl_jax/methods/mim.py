"""The mask-token MIM family shared by SimMIM, MaskFeat, BEiT and SemanticMIM.

Layout (SimMIM Sec. 3, BEiT Sec. 2.3, MaskFeat Sec. 3): masked patch
embeddings are replaced by a learned [MASK] token, the ViT encodes the whole
sequence (CLS + N patches), a linear head maps each output token to the
target and the loss is taken on masked patches only (003 Eq. 1).

`config.mim`: `target` ("pixel" | "hog" | "token"), `mask` ({kind, ratio,
unit, min_block}, ops/mim_masks.py), `tokenizer` (file, for "token"),
`hog` ({nbins}). The three targets and their losses:
- "pixel" (SimMIM Sec. 3.3, Eq. 1): l1 between predicted and raw (dataset-
  normalised) pixels of the masked patches, averaged over their pixels.
- "hog" (MaskFeat Sec. 3 / 4.1): l2 (MSE) to the 108 HOG values of each
  masked patch (ops/hog.py).
- "token" (BEiT Eq. 1): cross-entropy of the head's logits to the visual
  token of each masked patch from a frozen tokenizer (ssl_jax/tokenizers).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ssl_jax import models, tokenizers
from ssl_jax.methods.base import EncoderSpec, Method, MethodVars, fixed_view, scalar_metrics
from ssl_jax.models import layers
from ssl_jax.ops import hog as hog_lib
from ssl_jax.ops import mim_masks, patches
from ssl_jax.registry import check_choice

TARGETS = ("pixel", "hog", "token")


# --- targets and losses (shared with SemanticMIM) ---------------------------------


def load_constants(config):
  """Frozen inputs read from disk: the tokenizer's arrays for target "token"."""
  if check_choice("mim.target", config.mim.target, TARGETS) != "token":
    return {}
  tok = tokenizers.load(config.mim.tokenizer)
  if tok.patch_size != config.model.patch_size:
    raise ValueError(f"tokenizer {config.mim.tokenizer} codes {tok.patch_size}px patches but the "
                     f"model's patch size is {config.model.patch_size}; fit a matching one.")
  return {"tokenizer": tok.params}


def target_dim(config, constants) -> int:
  p, t = config.model.patch_size, config.mim.target
  if t == "pixel":
    return p * p * 3
  if t == "hog":
    cells = 4                                   # 2x2 cells per patch (ops/hog.py)
    return cells * 3 * config.mim.hog.get("nbins", 9)
  return int(constants["tokenizer"]["centroids"].shape[0])


def make_targets(images, config, constants):
  """[B, N, d] regression targets, or [B, N] int codes for "token"."""
  p, t = config.model.patch_size, config.mim.target
  images = jax.lax.stop_gradient(images.astype(jnp.float32))
  if t == "pixel":
    return patches.patchify(images, p)
  if t == "hog":
    return hog_lib.hog_patch_targets(images, p, nbins=config.mim.hog.get("nbins", 9))
  tok = tokenizers.TOKENIZERS.get("kmeans")(p, constants["tokenizer"])
  return tok.encode(constants["tokenizer"], images)


def target_loss(target_kind: str, pred, target, weights):
  """Mean over the weighted (masked) patches of the per-patch loss.
  pred [B, M, d]; target [B, M, d] (or [B, M] codes); weights [B, M]."""
  pred = pred.astype(jnp.float32)
  if target_kind == "pixel":
    per = jnp.abs(pred - target).mean(-1)                                   # SimMIM l1
  elif target_kind == "hog":
    per = jnp.square(pred - target).mean(-1)                                # MaskFeat l2
  else:
    per = optax.softmax_cross_entropy_with_integer_labels(pred, target)    # BEiT CE
  return jnp.sum(per * weights) / jnp.maximum(jnp.sum(weights), 1.0)


class Head(nn.Module):
  """The light linear prediction head (SimMIM's 1x1 conv = per-token linear)."""
  dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.dim, dtype=self.dtype, kernel_init=layers.dense_init, name="proj")(x)


def draw_mask(rng, images, config):
  grid = patches.grid_shape(images, config.model.patch_size)
  return mim_masks.draw(rng, images.shape[0], grid, config.mim.mask), grid


# --- the baseline layout: mask tokens inside the encoder -------------------------


def _modules(config, constants):
  dtype = config.get("compute_dtype", "float32")
  return (models.build(dict(config.model), dtype),
          Head(target_dim(config, constants), dtype=models.DTYPES[dtype]))


def init(rng, batch, config):
  constants = load_constants(config)
  enc, head = _modules(config, constants)
  images = batch["image"]
  r_enc, r_head = jax.random.split(rng)
  # Any mask creates `mask_token`; an all-visible one avoids drawing masks eagerly.
  grid = patches.grid_shape(images, config.model.patch_size)
  mask = jnp.zeros((images.shape[0], grid[0] * grid[1]))

  @jax.jit
  def init_params(r_enc, r_head, images):
    enc_params = enc.init(r_enc, images, mask=mask)["params"]
    tokens = enc.apply({"params": enc_params}, images, mask=mask)["patch"]
    return {"encoder": enc_params, "head": head.init(r_head, tokens)["params"]}
  return MethodVars(params=init_params(r_enc, r_head, images), state={}, constants=constants)


def loss(params, state, constants, batch, rng, step, config):
  del step
  enc, head = _modules(config, constants)
  images = batch["image"]
  r_mask, r_drop = jax.random.split(rng)
  mask, _ = draw_mask(r_mask, images, config)
  out = enc.apply({"params": params["encoder"]}, images, train=True, mask=mask,
                  rngs={"dropout": r_drop})
  pred = head.apply({"params": params["head"]}, out["patch"])
  l = target_loss(config.mim.target, pred, make_targets(images, config, constants), mask)
  return l, (scalar_metrics(mim_loss=l, mask_ratio=mask.mean()), state)


def encoder(config):
  # The exported encoder is the plain ViT; `mask_token` rides along unused.
  return EncoderSpec(model=dict(config.model),
                     variables=lambda params, state: {"params": params["encoder"]})


def method(name: str, target: str, init_fn=init, loss_fn=loss, encoder_fn=encoder) -> Method:
  """The Method record of one family member; its config must ask for `target`."""
  def check(config):
    if config.mim.target != target:
      raise ValueError(f"method {name!r} reconstructs target {target!r} but config.mim.target is "
                       f"{config.mim.target!r}; valid targets: {', '.join(TARGETS)}.")

  def checked_init(rng, batch, config):
    check(config)
    return init_fn(rng, batch, config)

  return Method(views=fixed_view("single_crop"), init=checked_init, loss=loss_fn,
                encoder=encoder_fn)
