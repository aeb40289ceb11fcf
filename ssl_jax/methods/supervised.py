"""Supervised training from scratch: the reference row of every results table
and the CKA reference of 002 Fig. 3 (a supervised ViT of the same size).

The pre-training encoder, unchanged, + a linear classifier on its pooled
feature (`supervised.feature`: "mean" = GAP of the final-LayerNorm patch
tokens, DeiT / MAE fine-tuning's global pool; "cls"), trained with
cross-entropy on the labels the `single_crop` view carries, optional label
smoothing (DeiT: 0.1; Szegedy et al. 2016 Sec. 7). Exported like every
method, so every protocol scores it; its export is the encoder only (the
head is dropped, as a probe must not read the training head).

Models with BatchNorm (Mobile-Former, ResNet) keep their `batch_stats` in
`state` and export them.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ssl_jax import models
from ssl_jax.methods import METHODS
from ssl_jax.methods.base import EncoderSpec, Method, MethodVars, fixed_view, scalar_metrics
from ssl_jax.registry import check_choice


def build_modules(config):
  dtype = config.get("compute_dtype", "float32")
  head = nn.Dense(config.supervised.num_classes, dtype=models.DTYPES[dtype],
                  kernel_init=nn.initializers.zeros)   # DeiT / MAE: zero-ish head init
  return models.build(dict(config.model), dtype), head


def pooled(out, feature: str):
  """The classifier's input: the representation the probes also read."""
  check_choice("supervised.feature", feature, ("mean", "cls"))
  if feature == "cls":
    if "cls" not in out:
      raise ValueError("supervised.feature='cls' needs an encoder with a CLS output; use 'mean'.")
    return out["cls"].astype(jnp.float32)
  return out["patch"].mean(axis=1).astype(jnp.float32)


def init(rng, batch, config):
  enc, head = build_modules(config)
  r_enc, r_head = jax.random.split(rng)
  enc_vars = dict(enc.init(r_enc, batch["image"]))
  out = jax.eval_shape(lambda v, x: pooled(enc.apply(v, x), config.supervised.feature),
                       enc_vars, batch["image"])
  head_params = head.init(r_head, jnp.zeros(out.shape, out.dtype))["params"]
  params = {"encoder": enc_vars.pop("params"), "head": head_params}
  return MethodVars(params=params, state=enc_vars, constants={})


def cross_entropy(logits, labels, num_classes: int, smoothing: float):
  """Mean CE against (1 - eps) one-hot + eps / C (label smoothing)."""
  target = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), target).mean()


def loss(params, state, constants, batch, rng, step, config):
  del constants, step
  s = config.supervised
  enc, head = build_modules(config)
  variables = dict(state, params=params["encoder"])
  if state:                      # BatchNorm statistics (Mobile-Former, ResNet)
    out, new_state = enc.apply(variables, batch["image"], train=True, rngs={"dropout": rng},
                               mutable=list(state))
    new_state = dict(new_state)
  else:
    out = enc.apply(variables, batch["image"], train=True, rngs={"dropout": rng})
    new_state = state
  logits = head.apply({"params": params["head"]}, pooled(out, s.feature))
  labels = batch["label"].astype(jnp.int32)
  l = cross_entropy(logits, labels, s.num_classes, s.label_smoothing)
  acc = jnp.mean(jnp.argmax(logits, -1) == labels)
  return l, (scalar_metrics(ce_loss=l, train_top1=100.0 * acc), new_state)


def encoder(config):
  return EncoderSpec(model=dict(config.model),
                     variables=lambda params, state: dict(state, params=params["encoder"]))


METHODS.register("supervised", Method(views=fixed_view("single_crop"), init=init, loss=loss,
                                      encoder=encoder))
