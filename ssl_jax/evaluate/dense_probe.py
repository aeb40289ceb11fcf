"""Dense linear probe: a 1x1 convolution on frozen patch features, trained for
semantic segmentation and scored by mIoU (003 Sec. 4.2, Tab. 6, following
Leopart, Ziegler & Asano 2022).

Recipe (003 Tab. 6, partly garbled; the unreadable cells are taken from
Leopart's linear_finetune.py): frozen features of the 6th block at 448x448,
bilinearly upsampled to 100x100 masks for training, 1x1 conv, cross-entropy
ignoring unlabelled pixels, SGD (momentum 0.9) lr 0.01, no weight decay,
step decay x0.1 after 20 of 25 epochs, batch 120; evaluation upsamples to
the full mask resolution.

A 1x1 conv and bilinear upsampling are both linear and per-channel, so the
conv is applied at feature resolution and its logits upsampled: identical to
Leopart's order, num_classes channels instead of C to upsample.
"""
import os
from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax.evaluate import canvas_data  # noqa: F401  registers dataset "fashion_mnist_canvas"
from ssl_jax.evaluate import decoder_probe
from ssl_jax.progress import Progress
from ssl_jax.evaluate import features as features_lib
from ssl_jax.evaluate import segmentation_data


def confusion_matrix(pred, target, num_classes: int, ignore_index: int = segmentation_data.IGNORE):
  """[num_classes, num_classes] counts, rows = target, cols = prediction."""
  pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
  valid = (target != ignore_index) & (target >= 0) & (target < num_classes)
  return np.bincount(num_classes * target[valid] + pred[valid],
                     minlength=num_classes ** 2).reshape(num_classes, num_classes)


def mean_iou(conf: np.ndarray) -> Dict[str, float]:
  """IoU_c = TP / (TP + FP + FN), averaged over classes that occur in the
  targets or predictions; also pixel accuracy."""
  conf = np.asarray(conf, np.float64)
  tp = np.diag(conf)
  union = conf.sum(0) + conf.sum(1) - tp
  present = union > 0
  iou = np.where(present, tp / np.maximum(union, 1), np.nan)
  return {"miou": float(np.nanmean(iou)) if present.any() else 0.0,
          "pixel_acc": float(tp.sum() / max(conf.sum(), 1)),
          "iou": iou}


def _grid_features(encoder, images, block, batch_size, mesh):
  """[N, gh, gw, C] frozen patch features of `block`."""
  f = features_lib.extract(encoder, images, "patch", block, batch_size, mesh)
  gh, gw = decoder_probe.token_grid(f.shape[1], images.shape[1:3])
  return f.reshape(len(f), gh, gw, f.shape[-1])


def _upsample(logits, size):
  b, _, _, c = logits.shape
  return jax.image.resize(logits, (b, size[0], size[1], c), "bilinear")


def _resize_masks(masks, size):
  """Nearest-neighbour mask resize (Leopart resizes targets with NEAREST)."""
  h, w = masks.shape[1:]
  if (h, w) == tuple(size):
    return masks
  rows = (np.arange(size[0]) * h / size[0]).astype(int)
  cols = (np.arange(size[1]) * w / size[1]).astype(int)
  return masks[:, rows][:, :, cols]


def dense_linear_probe(train_f, train_masks, test_f, test_masks, num_classes: int,
                       epochs: int = 25, lr: float = 0.01, momentum: float = 0.9,
                       weight_decay: float = 0.0, drop_at: int = 20, batch_size: int = 120,
                       train_mask_size: int = 100, ignore_index: int = segmentation_data.IGNORE,
                       seed: int = 0) -> Dict[str, float]:
  """train_f / test_f [N, gh, gw, C] frozen features; masks [N, H, W]."""
  train_f = jnp.asarray(train_f, jnp.float32)
  c = train_f.shape[-1]
  tsize = (train_mask_size, train_mask_size)
  ytr = jnp.asarray(_resize_masks(np.asarray(train_masks), tsize))
  n = len(train_f)
  batch_size = min(batch_size, n)
  steps_per_epoch = max(1, n // batch_size)
  schedule = optax.piecewise_constant_schedule(lr, {drop_at * steps_per_epoch: 0.1})
  tx = optax.chain(optax.add_decayed_weights(weight_decay) if weight_decay else optax.identity(),
                   optax.sgd(schedule, momentum=momentum))
  # torch Conv2d(C, K, 1) default init: U(-1/sqrt(C), 1/sqrt(C)).
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  bound = 1.0 / np.sqrt(c)
  params = {"w": jax.random.uniform(k1, (c, num_classes), minval=-bound, maxval=bound),
            "b": jax.random.uniform(k2, (num_classes,), minval=-bound, maxval=bound)}
  opt_state = tx.init(params)

  def logits_fn(p, f):
    return jnp.einsum("bhwc,ck->bhwk", f, p["w"]) + p["b"]

  def loss_fn(p, f, y):
    logits = _upsample(logits_fn(p, f), tsize)
    valid = y != ignore_index
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, y, 0))
    return jnp.sum(ce * valid) / jnp.maximum(valid.sum(), 1)

  @jax.jit
  def epoch(carry, perm):
    def step(cr, idx):
      p, s = cr
      loss, g = jax.value_and_grad(loss_fn)(p, train_f[idx], ytr[idx])
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), loss
    batches = perm[:steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)
    return jax.lax.scan(step, carry, batches)

  rng = np.random.default_rng(seed)
  carry, losses = (params, opt_state), None
  progress = Progress(f"dense probe ({epochs} epochs)", epochs * steps_per_epoch * batch_size)
  for _ in range(epochs):
    carry, losses = epoch(carry, jnp.asarray(rng.permutation(n)))
    progress.update(steps_per_epoch * batch_size)
  params = carry[0]

  test_masks = np.asarray(test_masks)
  full = test_masks.shape[1:]
  predict = jax.jit(lambda p, f: jnp.argmax(_upsample(logits_fn(p, f), full), -1))
  pred = decoder_probe.predict_in_batches(
      lambda f: predict(params, f), np.asarray(test_f, np.float32), 64)
  conf = confusion_matrix(pred, test_masks, num_classes, ignore_index)
  res = mean_iou(conf)
  return {"miou": 100.0 * res["miou"], "pixel_acc": 100.0 * res["pixel_acc"],
          "final_loss": float(np.mean(np.asarray(losses)))}


def probe_encoder(encoder, seg: segmentation_data.SegData, cfg, mesh=None) -> Dict[str, float]:
  """Extracts frozen features of `cfg.block` and trains / scores the probe."""
  bs = int(cfg.get("feature_batch_size", 256))
  ftr = _grid_features(encoder, seg.train_images, cfg.block, bs, mesh)
  fte = _grid_features(encoder, seg.test_images, cfg.block, bs, mesh)
  return dense_linear_probe(
      ftr, seg.train_masks, fte, seg.test_masks, seg.num_classes, epochs=cfg.epochs,
      lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, drop_at=cfg.drop_at,
      batch_size=cfg.batch_size, train_mask_size=cfg.train_mask_size,
      ignore_index=seg.ignore_index, seed=cfg.get("seed", 0))


_SEG_CACHE = {}


def tab6() -> Dict[str, Any]:
  """003 Tab. 6 (PascalVOC, 6th block, 448 px, 100 px training masks). VOC
  masks are not in tfds, so the default dataset is oxford_iiit_pet."""
  return dict(dataset="oxford_iiit_pet", train_split="train", eval_split="test",
              image_size=448, block=5, epochs=25, lr=0.01, momentum=0.9, weight_decay=0.0,
              drop_at=20, batch_size=120, train_mask_size=100, feature_batch_size=64,
              max_train_examples=None, max_eval_examples=None, data_dir=None, seed=0)


def run(config, encoder, data, mesh) -> Dict[str, float]:
  """Protocol "dense_probe": `data` (classification EvalData) is not used; the
  segmentation set comes from `config.eval.dense_probe.dataset` (e.g.
  "fashion_mnist_canvas": the multi-object canvases of canvas_data)."""
  del data
  cfg = config.eval.dense_probe
  key = (cfg.dataset, cfg.get("image_size"), cfg.get("max_train_examples"),
         cfg.get("max_eval_examples"), repr(cfg.get("source_kwargs")))
  if key not in _SEG_CACHE:          # the random-init twin reuses the arrays
    _SEG_CACHE.clear()
    _SEG_CACHE[key] = segmentation_data.load(cfg)
  return probe_encoder(encoder, _SEG_CACHE[key], cfg, mesh)
