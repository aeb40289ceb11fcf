"""tran-1 decoder probing as a job of the one trainer (method "decoder_probe";
000 Sec. 5, App. B.1 Tab. 11).

The frozen encoder `config.encoder` (an export or a timm / MAE / DINO
checkpoint) is a method constant, as in `methods/linear_probe.py`: never
trained, never checkpointed, re-read on resume. Its patch tokens (block
`decoder_probe.block`, -1 = the final output; a CNN's flattened feature map)
feed the tran-1 decoder of `evaluate/decoder_probe.py` (one transformer block
of its own width, global pooling, linear classifier); only the decoder
trains (params {"head": ...}), with label-smoothed cross-entropy
(`decoder_probe.label_smoothing`) and decoder dropout.

Input, as Tab. 11 ("RandAug (9, 0.5)", random erase): RandomResizedCrop +
flip per example in tf.data (`single_crop` view, `data.crop_scale`), then per
batch on device RandAugment (`decoder_probe.randaug`) and random erasing
(`decoder_probe.random_erase`): `methods/finetune.py: augment`, the ops of
`ops/batch_augment.py`. The encoder runs on every augmented batch (nothing
cached), so host memory does not depend on the dataset size.
`predict` scores the eval split (`decoder_probe/top1`, `/top5`).

Deviations, named: those of the tran-1 decoder (evaluate/decoder_probe.py:
input projection, sin-cos position embedding, final LayerNorm, heads =
width / 64 are not stated by 000) and of the augmentations
(ops/batch_augment.py); the token grid is taken as square (a CNN's map of
another aspect needs a square input).
"""
import jax
import jax.numpy as jnp
import optax

from ssl_jax.evaluate import decoder_probe as tran1
from ssl_jax.evaluate import features
from ssl_jax.methods import METHODS
from ssl_jax.methods import finetune as finetune_method
from ssl_jax.methods.base import Method, MethodVars, fixed_view, scalar_metrics
from ssl_jax.methods.linear_probe import frozen_encoder


def decoder(config) -> tran1.Tran1Decoder:
  return tran1.decoder_from_config(config.decoder_probe, int(config.decoder_probe.num_classes))


def patch_tokens(config, encoder_vars, images):
  """The frozen encoder's patch tokens [B, N, C], float32, no gradient."""
  fn = features.apply_fn(frozen_encoder(config), "patch", int(config.decoder_probe.block))
  return jax.lax.stop_gradient(fn(jax.lax.stop_gradient(encoder_vars), images))


def init(rng, batch, config):
  enc = frozen_encoder(config)
  tokens = jax.eval_shape(lambda v, x: patch_tokens(config, v, x), enc.variables,
                          batch["image"])
  head = decoder(config).init(rng, jnp.zeros(tokens.shape, jnp.float32))["params"]
  constants = dict(finetune_method.pixel_stats(config), encoder=enc.variables)
  return MethodVars(params={"head": head}, state={}, constants=constants)


def loss(params, state, constants, batch, rng, step, config):
  del step
  f = config.decoder_probe
  k_aug, k_drop = jax.random.split(rng)
  x = finetune_method.augment(k_aug, batch["image"], constants, f)
  tokens = patch_tokens(config, constants["encoder"], x)
  labels = batch["label"].astype(jnp.int32)
  # Tab. 11: label smoothing 0.1 (timm's: off = s / K, on = 1 - s + s / K).
  targets = tran1.smoothed_targets(labels, int(f.num_classes), float(f.label_smoothing))
  logits = decoder(config).apply({"params": params["head"]}, tokens, train=True,
                                 rngs={"dropout": k_drop}).astype(jnp.float32)
  l = optax.softmax_cross_entropy(logits, targets).mean()
  acc = jnp.mean(jnp.argmax(logits, -1) == labels)
  return l, (scalar_metrics(ce_loss=l, train_top1=100.0 * acc), state)


def predict(params, state, constants, batch, config):
  del state
  tokens = patch_tokens(config, constants["encoder"], batch["image"])
  return decoder(config).apply({"params": params["head"]}, tokens, train=False)


METHODS.register("decoder_probe", Method(views=fixed_view("single_crop"), init=init, loss=loss,
                                         encoder=None, predict=predict))
