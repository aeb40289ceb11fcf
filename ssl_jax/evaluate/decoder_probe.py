"""Decoder probing "tran-1" (000 Sec. 5, App. B.1 Tab. 11).

One transformer block of its own width over the frozen encoder's patch tokens,
then global average pooling and a linear classifier; only the decoder trains.
Works on any encoder's `patch` tokens (ViT tokens, or a CNN's flattened
feature map), so ViTs and CNNs are compared with the same decoder.

Tab. 11 recipe: AdamW, base lr 5e-4 (lr = base * batch / 256), weight decay
0.1, batch 4096, cosine decay with 10 warm-up epochs, 200 epochs,
RandAug(9, 0.5), label smoothing 0.1, dropout 0.1 (MF-285M) / 0.2 (larger),
random erasing 0 / 0.25 (MF-3.7G); decoder width 192 / 384 / 768 for
MF-285M / 1.0G / 3.7G (App. B.1).

Not stated by 000, chosen here and named: the input projection to the decoder
width, fixed 2D sin-cos position embeddings added before the block (without
them the block would be blind to layout), heads = width / 64, a LayerNorm
before pooling, dropout before the classifier, AdamW betas (0.9, 0.999).
With `augment=False` (the CPU default) features are computed once without
augmentation and cached, which makes probing cheap but drops RandAug.
"""
import os
from typing import Any, Dict

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax import optim
from ssl_jax import sharding
from ssl_jax.models import layers
from ssl_jax.ops import posemb as posemb_lib
from ssl_jax.progress import Progress
from ssl_jax.registry import check_choice


# 000 App. B.1: decoder width per Mobile-Former size; Tab. 11: dropout, random erase.
TAB11_SIZES = {"mf285m": (192, 0.1, 0.0), "mf1g": (384, 0.2, 0.0), "mf3.7g": (768, 0.2, 0.25)}


def tab11(size: str = "mf285m") -> Dict[str, Any]:
  """The tran-1 probing recipe of 000 Tab. 11 as a config dict."""
  width, dropout, erase = TAB11_SIZES[check_choice("tran-1 size", size, TAB11_SIZES)]
  return dict(width=width, num_heads=0, mlp_ratio=4.0, dropout=dropout, posemb="sincos2d",
              block=-1, augment=True, epochs=200, warmup_epochs=10.0, batch_size=4096,
              base_lr=5e-4, min_lr=0.0, weight_decay=0.1, label_smoothing=0.1,
              randaug=(9, 0.5), random_erase=erase, crop_scale=(0.08, 1.0), hflip=True)


def token_grid(n: int, image_hw=None):
  """(rows, cols) of n row-major patch tokens: square, or with the aspect of
  an image of size image_hw."""
  h, w = image_hw or (1, 1)
  rows = int(round(np.sqrt(n * h / w)))
  cols = n // max(rows, 1)
  if rows < 1 or rows * cols != n or abs(rows * w - cols * h) > max(h, w) * 0.5 / max(rows, cols):
    shape = "a square grid" if image_hw is None else f"a grid of a {h}x{w} image's aspect"
    raise ValueError(f"{n} tokens do not form {shape}; pass grid=(rows, cols).")
  return rows, cols


class Tran1Decoder(nn.Module):
  """Patch tokens [B, N, C] -> logits [B, num_classes]."""
  num_classes: int
  width: int = 192
  num_heads: int = 0            # 0: width // 64
  mlp_ratio: float = 4.0
  dropout: float = 0.1
  posemb: str = "sincos2d"      # sincos2d | none

  @nn.compact
  def __call__(self, tokens, *, train: bool = False, grid=None):
    check_choice("tran-1 posemb", self.posemb, ("sincos2d", "none"))
    grid = grid or token_grid(tokens.shape[1])
    x = nn.Dense(self.width, kernel_init=layers.dense_init, name="embed")(tokens)
    if self.posemb == "sincos2d":
      x = x + posemb_lib.sincos_2d(jnp.asarray(posemb_lib.grid_coords(*grid)), self.width)
    heads = self.num_heads or max(1, self.width // 64)
    x, _, _ = layers.Block(heads, self.mlp_ratio, name="block")(x, train=train)
    x = nn.LayerNorm(epsilon=1e-6, name="norm")(x).mean(axis=1)     # global pooling
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.truncated_normal(0.01),
                    name="head")(x)


def decoder_kwargs(cfg, num_classes: int) -> Dict[str, Any]:
  return dict(num_classes=num_classes, width=cfg.width, num_heads=cfg.get("num_heads", 0),
              mlp_ratio=cfg.get("mlp_ratio", 4.0), dropout=cfg.dropout,
              posemb=cfg.get("posemb", "sincos2d"))


def decoder_from_config(cfg, num_classes: int) -> Tran1Decoder:
  return Tran1Decoder(**decoder_kwargs(cfg, num_classes))


def smoothed_targets(labels, num_classes: int, smoothing: float):
  """timm's label smoothing: off = s / K, on = 1 - s + s / K."""
  off = smoothing / num_classes
  return jax.nn.one_hot(labels, num_classes) * (1.0 - smoothing) + off


def train_probe(train_inputs, train_labels, num_classes: int, cfg, encoder=None,
                augment_fn=None, mesh=None, seed: int = 0):
  """Trains a Tran1Decoder; returns (decoder, params, mean loss of the last epoch).

  train_inputs: cached patch features [N, L, C] (encoder None), or
  normalised images that the frozen `encoder` turns into the patch tokens of
  `cfg.block` after `augment_fn(rng, images)`, inside the jitted step.
  """
  decoder = decoder_from_config(cfg, num_classes)
  n = len(train_inputs)
  mesh = mesh or sharding.make_mesh([("data", -1)])
  n_dev = mesh.devices.size
  batch = max(n_dev, (min(int(cfg.batch_size), n) // n_dev) * n_dev)
  steps_per_epoch = max(1, n // batch)
  total = int(cfg.epochs) * steps_per_epoch
  warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
  peak = cfg.base_lr * batch / 256.0
  schedule = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total, warmup + 1),
                                                cfg.get("min_lr", 0.0))
  tx = optax.adamw(schedule, b1=0.9, b2=0.999, weight_decay=cfg.weight_decay,
                   mask=optim.decay_mask)
  if encoder is None:
    featurize, enc_vars = (lambda v, x: x), {}
  else:
    from ssl_jax.evaluate import features as features_lib  # pylint: disable=g-import-not-at-top
    featurize = features_lib.apply_fn(encoder, "patch", cfg.get("block", -1))
    enc_vars = encoder.variables

  rng = jax.random.PRNGKey(seed)
  params = jax.jit(lambda r, v, x: decoder.init({"params": r}, featurize(v, x))["params"])(
      rng, enc_vars, jnp.asarray(train_inputs[:1]))
  rep = sharding.replicated(mesh)          # committed inputs: the step compiles once
  params, enc_vars = jax.device_put(params, rep), jax.device_put(enc_vars, rep)
  opt_state = jax.device_put(tx.init(params), rep)

  @jax.jit
  def step(params, opt_state, enc_vars, x, y, key):
    k_aug, k_drop = jax.random.split(key)
    if augment_fn is not None:
      x = augment_fn(k_aug, x)
    feats = jax.lax.stop_gradient(featurize(enc_vars, x))
    targets = smoothed_targets(y, num_classes, cfg.label_smoothing)

    def loss_fn(p):
      logits = decoder.apply({"params": p}, feats, train=True, rngs={"dropout": k_drop})
      return optax.softmax_cross_entropy(logits, targets).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  in_sh = sharding.batch_sharding(mesh)
  host_rng = np.random.default_rng(seed)
  labels = np.asarray(train_labels)
  losses = []
  progress = Progress(f"decoder probe ({int(cfg.epochs)} epochs)",
                      int(cfg.epochs) * steps_per_epoch * batch)
  for ep in range(int(cfg.epochs)):
    perm = host_rng.permutation(n)
    losses = []
    for s in range(steps_per_epoch):
      idx = np.sort(perm[s * batch:(s + 1) * batch])
      x = jax.device_put(np.asarray(train_inputs[idx]), in_sh)
      y = jax.device_put(labels[idx], in_sh)
      key = jax.random.fold_in(rng, ep * steps_per_epoch + s)
      params, opt_state, loss = step(params, opt_state, enc_vars, x, y, key)
      losses.append(loss)
      progress.update(batch)
  return decoder, params, float(np.mean(jax.device_get(losses))) if losses else float("nan")


def predict_in_batches(fn, x: np.ndarray, batch_size: int, put=jnp.asarray) -> np.ndarray:
  """fn over fixed-size chunks of x (the last one zero-padded), so `fn`
  compiles once whatever len(x) is."""
  batch_size = min(batch_size, len(x))
  outs = []
  for s in range(0, len(x), batch_size):
    chunk = np.asarray(x[s:s + batch_size])
    pad = batch_size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    out = np.asarray(fn(put(chunk)))
    outs.append(out[:len(out) - pad] if pad else out)
  return np.concatenate(outs)


def accuracy(decoder, params, feats, labels, batch_size: int = 256) -> float:
  """Top-1 (percent) of the decoder on cached patch features."""
  fn = jax.jit(lambda p, x: jnp.argmax(decoder.apply({"params": p}, x, train=False), -1))
  pred = predict_in_batches(lambda x: fn(params, x), feats, batch_size)
  return 100.0 * float(np.mean(pred == np.asarray(labels)))


def probe(config, encoder, data, mesh, cfg=None) -> Dict[str, Any]:
  """Trains and scores the tran-1 probe. Returns metrics plus "decoder",
  "params" for initialising a fine-tuning head."""
  cfg = cfg or config.eval.decoder_probe
  block = cfg.get("block", -1)
  ftr, fte = data.features(encoder, "patch", block, mesh, config.eval.batch_size)
  if cfg.augment:
    from ssl_jax.evaluate import finetune  # pylint: disable=g-import-not-at-top
    from ssl_jax.evaluate import segmentation_data  # pylint: disable=g-import-not-at-top
    mean, std = segmentation_data.pixel_stats(config, data)
    augment_fn = finetune.make_augment(cfg, mean, std)
    decoder, params, loss = train_probe(data.train_images, data.train_labels, data.num_classes,
                                        cfg, encoder, augment_fn, mesh, config.seed)
  else:
    decoder, params, loss = train_probe(ftr, data.train_labels, data.num_classes, cfg,
                                        mesh=mesh, seed=config.seed)
  return {"top1": accuracy(decoder, params, fte, data.test_labels),
          "train_top1": accuracy(decoder, params, ftr, data.train_labels),
          "final_loss": loss, "decoder": decoder, "params": params}


def save_params(params, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as f:
    f.write(flax.serialization.msgpack_serialize(jax.tree.map(np.asarray, params)))
  return path


def load_params(path: str):
  with open(path, "rb") as f:
    return flax.serialization.msgpack_restore(f.read())


def run(config, encoder, data, mesh) -> Dict[str, float]:
  """Protocol "decoder_probe": {"top1", "train_top1", "final_loss"}."""
  res = probe(config, encoder, data, mesh)
  return {k: v for k, v in res.items() if k in ("top1", "train_top1", "final_loss")}
