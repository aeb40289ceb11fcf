"""End-to-end fine-tuning as a job of the one trainer (method "finetune").

The encoder starts from the export `config.encoder` and trains with a fresh
head (`finetune.head`: "linear" on GAP / CLS, or 000's tran-1 decoder), the
model of the protocol "finetune" (`evaluate/finetune.py: Classifier`). The
recipe pieces are MAE's fine-tuning (MAE App. A.1 "End-to-end fine-tuning",
Tab. 9; timm):
- layer-wise lr decay (`optim.layer_decay`, BEiT / MAE `param_groups_lrd`),
  AdamW, warm-up + cosine, no weight decay on norms / biases / tokens;
- RandomResizedCrop + flip per example in tf.data (`single_crop` view, from
  the full-size image), then on device per batch: RandAugment
  (`finetune.randaug` = (magnitude, std), timm "rand-m9-mstd0.5-inc1"),
  random erasing (`finetune.random_erase`, timm reprob), Mixup / CutMix
  (`finetune.mixup` / `cutmix` alphas, one lambda per batch, CutMix chosen
  with `finetune.switch_prob`, timm `Mixup` "batch" mode) with label
  smoothing (`finetune.label_smoothing`), drop path (`finetune.drop_path`).
The fine-tuned encoder is exported like a pre-training run's (`<workdir>/export`),
the eval split is scored by `predict` (top-1 / top-5).

Deviations, named: those of the augmentations in `ops/batch_augment.py`
(RandAugment ops on float images, one random-erasing attempt; Mixup /
CutMix draw their lambda and box with jax.random inside the step, timm: numpy
on the host, which keeps the loss a pure function of (params, batch, rng)).
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax import checkpoint as ckpt_lib
from ssl_jax import config_check
from ssl_jax import models
from ssl_jax.evaluate import decoder_probe
from ssl_jax.evaluate import finetune as ft
from ssl_jax.evaluate import segmentation_data
from ssl_jax.methods import METHODS
from ssl_jax.methods.base import EncoderSpec, Method, MethodVars, fixed_view, scalar_metrics
from ssl_jax.methods.linear_probe import frozen_encoder
from ssl_jax.ops import batch_augment
from ssl_jax.registry import check_choice


def encoder_model_cfg(config):
  """The export's model config with the fine-tuning drop path."""
  cfg = dict(frozen_encoder(config).model_cfg)
  if config.finetune.drop_path:
    cfg["drop_path"] = float(config.finetune.drop_path)
  return cfg


def classifier(config) -> ft.Classifier:
  f = config.finetune
  check_choice("finetune.head", f.head, ft.HEADS)
  check_choice("finetune.pool", f.pool, ft.POOLS)
  n = int(f.num_classes)
  try:
    enc = models.build(encoder_model_cfg(config), config.get("compute_dtype", "float32"))
  except TypeError as e:
    raise ValueError(f"encoder {encoder_model_cfg(config).get('name')!r} takes no drop_path; "
                     "set finetune.drop_path=0.") from e
  decoder = tuple(decoder_probe.decoder_kwargs(f.tran1, n).items()) if f.head == "tran1" else None
  return ft.Classifier(enc, n, f.head, f.pool, decoder)


def start_head(config, fresh):
  """`finetune.init_head` (000 App. B.1: "The decoder weights are initialized
  from tran-1 probing"): a decoder_probe job's workdir (the head of its latest
  checkpoint) or a file of `evaluate/decoder_probe.save_params`; else `fresh`."""
  path = config.finetune.get("init_head")
  if not path:
    return fresh
  if config.finetune.head != "tran1":
    raise config_check.ConfigError("finetune.init_head needs finetune.head='tran1'.")
  if os.path.isfile(path):
    head = decoder_probe.load_params(path)
  else:
    head = ckpt_lib.read_params(path)
    if "head" not in head:
      raise config_check.ConfigError(f"finetune.init_head={path!r}: its checkpoint holds "
                                     f"params {sorted(head)}, not a decoder_probe job's 'head'.")
    head = head["head"]
  want = jax.tree.map(lambda x: tuple(x.shape), fresh)
  got = jax.tree.map(lambda x: tuple(np.shape(x)), head)
  if want != got:
    raise config_check.ConfigError(
        f"finetune.init_head={path!r} does not fit finetune.tran1 (width, heads, classes): "
        f"its head has shapes {got}, this job's decoder {want}.")
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), head)


def init(rng, batch, config):
  model = classifier(config)
  enc_vars = dict(frozen_encoder(config).variables)
  head = start_head(config, ft.init_head(model, enc_vars, batch["image"][:1], rng))
  params = {"encoder": enc_vars.pop("params"), "head": head}
  state = {k: {"encoder": v} for k, v in enc_vars.items()}        # BatchNorm statistics
  return MethodVars(params=params, state=state, constants=pixel_stats(config))


def pixel_stats(config):
  """The pixel mean / std the pipeline normalised with (`augment` constants):
  RandAugment acts on [0, 1] images."""
  mean, std = segmentation_data.pixel_stats(config)
  return {"mean": np.asarray(mean, np.float32), "std": np.asarray(std, np.float32)}


def augment(key, images, constants, f):
  """RandAugment + random erasing on the pipeline's normalised crops; first,
  with `device_crop` = (min, max) area (the protocols' CPU recipes,
  `protocol_jobs.py`), a RandomResizedCrop (+ flip: `device_hflip`) of the
  batch itself, which is then the eval view (no crops in tf.data)."""
  k_ra, k_er = jax.random.split(key)
  x = images
  if f.get("device_crop"):
    x = batch_augment.random_resized_crop(jax.random.fold_in(key, 1), x, tuple(f.device_crop),
                                          hflip=bool(f.get("device_hflip", True)))
  if f.get("randaug"):
    mean, std = constants["mean"], constants["std"]
    x01 = jnp.clip(x * std + mean, 0.0, 1.0)
    x = (batch_augment.rand_augment(k_ra, x01, magnitude=f.randaug[0],
                                    magnitude_std=f.randaug[1]) - mean) / std
  if f.get("random_erase"):
    x = batch_augment.random_erasing(k_er, x, f.random_erase)
  return x


def _apply(model, params, state, images, train: bool, rng=None):
  variables = {"params": params, **state}
  if not train:
    return model.apply(variables, images, train=False), state
  if state:
    logits, new_state = model.apply(variables, images, train=True, rngs={"dropout": rng},
                                    mutable=list(state))
    return logits, dict(new_state)
  return model.apply(variables, images, train=True, rngs={"dropout": rng}), state


def loss(params, state, constants, batch, rng, step, config):
  del step
  f = config.finetune
  model = classifier(config)
  k_aug, k_mix, k_drop = jax.random.split(rng, 3)
  x = augment(k_aug, batch["image"], constants, f)
  labels = batch["label"].astype(jnp.int32)
  targets = decoder_probe.smoothed_targets(labels, model.num_classes, f.label_smoothing)
  mix = batch_augment.sample_mix(k_mix, float(f.mixup), float(f.cutmix), x.shape[1:3],
                   float(f.get("switch_prob", 0.5)))
  x, targets = batch_augment.mix_batch(x, targets, mix)
  logits, new_state = _apply(model, params, state, x, True, k_drop)
  logits = logits.astype(jnp.float32)
  l = optax.softmax_cross_entropy(logits, targets).mean()
  acc = jnp.mean(jnp.argmax(logits, -1) == labels)      # against the unmixed labels
  return l, (scalar_metrics(ce_loss=l, train_top1=100.0 * acc, mix_lam=mix["lam"]), new_state)


def predict(params, state, constants, batch, config):
  del constants
  return _apply(classifier(config), params, state, batch["image"], False)[0]


def encoder(config):
  """The fine-tuned backbone: `params["encoder"]` and its BatchNorm statistics."""
  cfg = dict(frozen_encoder(config).model_cfg)       # exported without drop path
  return EncoderSpec(model=cfg, variables=lambda params, state: dict(
      {k: v["encoder"] for k, v in state.items()}, params=params["encoder"]))


METHODS.register("finetune", Method(views=fixed_view("single_crop"), init=init, loss=loss,
                                    encoder=encoder, predict=predict))
