"""End-to-end fine-tuning (002 App. A.1 Tab. S1; 000 App. B.1 Tab. 12).

Recipe pieces, each on device in jnp so one jitted step holds them all:
- AdamW + linear warm-up + cosine, lr = base_lr * batch / 256, no weight
  decay on norms / biases / tokens (`ssl_jax.optim.decay_mask`);
- layer-wise lr decay (BEiT / MAE `param_groups_lrd`): block i gets
  decay^(depth - i), the patch embedding / tokens decay^(depth + 1), the rest
  (final norm, head) 1; the block index is read from the param path `block{i}`;
- RandomResizedCrop + flip, RandAugment (timm "rand-m{M}-mstd{S}-inc1"),
  random erasing, Mixup / CutMix with label smoothing (timm `Mixup`: lambda
  and the box drawn on the host per batch, the mixing on device), drop-path;
- head: linear on GAP of patch tokens or on CLS, or the tran-1 decoder
  (000 Tab. 12), optionally initialised from a tran-1 probe ("probe") or a
  saved probe (`decoder_probe.save_params`).

Deviations, named: augmentations act on the dataset's eval-view images (crop
then resize back to the same size) rather than on the full-size originals;
Equalize / AutoContrast quantise to 256 levels like PIL but run per channel
on float images; shears are about the image centre (PIL: the top-left
corner, i.e. an extra shift); random erasing makes one attempt (clipped) instead of up to
ten; timm ignores colour jitter when RandAugment is on, so Tab. S1's
"colorjitter 0.3" is not applied either; GAP pools the final-LayerNorm
tokens (MAE pools first, then applies fc_norm).
"""
import math
from typing import Any, Callable, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax import models
from ssl_jax import optim
from ssl_jax import sharding
from ssl_jax.evaluate import decoder_probe
from ssl_jax.progress import Progress
from ssl_jax.registry import check_choice

# ----------------------------------------------------------------------------
# Augmentations (batched, jnp)
# ----------------------------------------------------------------------------


def random_resized_crop(key, images, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=True):
  """Per-image crop (area fraction ~ U(scale), log-uniform aspect, clipped to
  the image) resized back to the input size, then a random horizontal flip."""
  b, h, w, c = images.shape
  ka, kr, kt, kl, kf = jax.random.split(key, 5)
  area = jax.random.uniform(ka, (b,), minval=scale[0], maxval=scale[1])
  logr = jax.random.uniform(kr, (b,), minval=math.log(ratio[0]), maxval=math.log(ratio[1]))
  ch = jnp.clip(jnp.sqrt(area / jnp.exp(logr)) * h, 1.0, h)
  cw = jnp.clip(jnp.sqrt(area * jnp.exp(logr)) * w, 1.0, w)
  top = jax.random.uniform(kt, (b,)) * (h - ch)
  left = jax.random.uniform(kl, (b,)) * (w - cw)

  def one(img, t, l, hh, ww):
    s = jnp.stack([h / hh, w / ww])
    return jax.image.scale_and_translate(img, (h, w, c), (0, 1), s, -jnp.stack([t, l]) * s,
                                         "linear", antialias=True)
  out = jax.vmap(one)(images, top, left, ch, cw)
  if hflip:
    flip = jax.random.bernoulli(kf, 0.5, (b, 1, 1, 1))
    out = jnp.where(flip, out[:, :, ::-1], out)
  return out


def _gray(x):
  return (x @ jnp.asarray([0.299, 0.587, 0.114], x.dtype))[..., None]


def _blend(degenerate, x, factor):
  """PIL ImageEnhance: degenerate + factor * (image - degenerate)."""
  return jnp.clip(degenerate + factor * (x - degenerate), 0.0, 1.0)


def _affine(x, matrix, offset, fill: float = 0.5):
  """Bilinear sample of x [H, W, C] at matrix @ (p - centre) + centre + offset
  for every output pixel p; outside pixels read `fill` (timm fills grey)."""
  h, w, _ = x.shape
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  sy = matrix[0, 0] * (yy - cy) + matrix[0, 1] * (xx - cx) + cy + offset[0]
  sx = matrix[1, 0] * (yy - cy) + matrix[1, 1] * (xx - cx) + cx + offset[1]
  y0, x0 = jnp.floor(sy), jnp.floor(sx)
  out = 0.0
  for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
    yi, xi = y0 + dy, x0 + dx
    wgt = (1.0 - jnp.abs(sy - yi)) * (1.0 - jnp.abs(sx - xi))
    ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
    v = x[jnp.clip(yi, 0, h - 1).astype(jnp.int32), jnp.clip(xi, 0, w - 1).astype(jnp.int32)]
    out = out + wgt[..., None] * jnp.where(ok[..., None], v, fill)
  return out


def _equalize(x):
  """PIL ImageOps.equalize per channel on 256 levels."""
  def channel(c):
    q = jnp.clip(jnp.round(c * 255.0), 0, 255).astype(jnp.int32)
    hist = jnp.bincount(q.ravel(), length=256)
    last = hist[jnp.max(jnp.where(hist > 0, jnp.arange(256), 0))]
    step = (hist.sum() - last) // 255
    lut = jnp.clip((jnp.cumsum(hist) - hist + step // 2) // jnp.maximum(step, 1), 0, 255)
    return jnp.where(step > 0, lut[q], q).astype(jnp.float32) / 255.0
  return jnp.stack([channel(x[..., i]) for i in range(x.shape[-1])], -1)


def _autocontrast(x):
  lo = x.min((0, 1), keepdims=True)
  hi = x.max((0, 1), keepdims=True)
  return jnp.where(hi > lo, (x - lo) / jnp.maximum(hi - lo, 1e-6), x)


def _sharpness_degenerate(x):
  """PIL's SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, border unchanged."""
  k = jnp.asarray([[1, 1, 1], [1, 5, 1], [1, 1, 1]], x.dtype) / 13.0
  sm = jax.vmap(lambda c: jax.scipy.signal.convolve2d(c, k, mode="same"), -1, -1)(x)
  inner = jnp.zeros(x.shape[:2], bool).at[1:-1, 1:-1].set(True)[..., None]
  return jnp.where(inner, sm, x)


def _geometry(op, m, s):
  """(matrix, offset) of the five geometric ops (timm levels): 0 Rotate
  (30 deg), 1 ShearX / 2 ShearY (0.3), 3 TranslateXRel / 4 TranslateYRel
  (0.45 of the side, applied by the caller)."""
  a = jnp.deg2rad(s * m / 10.0 * 30.0)
  sh = s * m / 10.0 * 0.3
  t = s * m / 10.0 * 0.45
  eye = jnp.eye(2)
  # Rows map (y, x) of an output pixel to its source: ShearX reads x + sh * y.
  mats = jnp.stack([jnp.asarray([[jnp.cos(a), -jnp.sin(a)], [jnp.sin(a), jnp.cos(a)]]),
                    jnp.asarray([[1.0, 0.0], [sh, 1.0]]), jnp.asarray([[1.0, sh], [0.0, 1.0]]),
                    eye, eye])
  offs = jnp.stack([jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), jnp.asarray([0.0, t]),
                    jnp.asarray([t, 0.0])])
  return mats[op], offs[op]


def _posterize(x, m):
  shift = 8 - (4 - jnp.floor(m / 10.0 * 4)).astype(jnp.int32)
  q = jnp.clip(jnp.floor(x * 255.0), 0, 255).astype(jnp.int32)
  return ((q >> shift) << shift).astype(jnp.float32) / 255.0


def _color_ops():
  """timm's _RAND_INCREASING_TRANSFORMS without the geometric ones:
  (x in [0,1], magnitude in [0,10], sign) -> x, timm's `*_increasing` levels."""
  f = lambda m, s: 1.0 + s * m / 10.0 * 0.9               # enhance factor
  return [
      lambda x, m, s: _autocontrast(x),
      lambda x, m, s: _equalize(x),
      lambda x, m, s: 1.0 - x,                                               # Invert
      lambda x, m, s: _posterize(x, m),
      lambda x, m, s: jnp.where(x * 255.0 >= 256.0 - jnp.floor(m / 10.0 * 256.0), 1.0 - x, x),
      lambda x, m, s: jnp.where(x < 128 / 255.0,                             # SolarizeAdd
                                jnp.clip(x + jnp.floor(m / 10.0 * 110.0) / 255.0, 0.0, 1.0), x),
      lambda x, m, s: _blend(jnp.broadcast_to(_gray(x), x.shape), x, f(m, s)),   # Color
      lambda x, m, s: _blend(_gray(x).mean(), x, f(m, s)),                   # Contrast
      lambda x, m, s: _blend(jnp.zeros_like(x), x, f(m, s)),                 # Brightness
      lambda x, m, s: _blend(_sharpness_degenerate(x), x, f(m, s)),          # Sharpness
  ]


NUM_COLOR_OPS, NUM_GEOMETRY_OPS = 10, 5
OP_NAMES = ("AutoContrast", "Equalize", "Invert", "PosterizeIncreasing", "SolarizeIncreasing",
            "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
            "SharpnessIncreasing", "Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


def apply_op(x, op, m, s):
  """RandAugment op number `op` (see OP_NAMES) on one image in [0, 1]. The
  five geometric ops share one affine warp, so a vmapped batch compiles one."""
  h, w, _ = x.shape
  color = jax.lax.switch(jnp.clip(op, 0, NUM_COLOR_OPS - 1), _color_ops(), x, m, s)
  g = jnp.clip(op - NUM_COLOR_OPS, 0, NUM_GEOMETRY_OPS - 1)
  mat, off = _geometry(g, m, s)
  off = off * jnp.asarray([h, w], jnp.float32)
  return jnp.where(op < NUM_COLOR_OPS, color, _affine(x, mat, off))


def rand_augment(key, images, num_ops: int = 2, magnitude: float = 9.0, magnitude_std: float = 0.5,
                 prob: float = 0.5):
  """timm RandAugment "rand-m{magnitude}-mstd{std}-inc1" on images in [0, 1]:
  `num_ops` ops drawn with replacement, each applied with probability `prob`
  at magnitude ~ N(magnitude, std) clipped to [0, 10]."""
  def layer(x, kk):
    k_op, k_p, k_m, k_s = jax.random.split(kk, 4)
    op = jax.random.randint(k_op, (), 0, len(OP_NAMES))
    m = jnp.clip(magnitude + magnitude_std * jax.random.normal(k_m), 0.0, 10.0)
    s = jnp.where(jax.random.bernoulli(k_s), 1.0, -1.0)
    return jnp.where(jax.random.uniform(k_p) < prob, apply_op(x, op, m, s), x), None

  def one(k, x):
    return jax.lax.scan(layer, x, jax.random.split(k, num_ops))[0]
  return jax.vmap(one)(jax.random.split(key, images.shape[0]), images)


def random_erasing(key, images, prob: float, area=(0.02, 1 / 3), log_ratio=(math.log(0.3), math.log(1 / 0.3))):
  """timm RandomErasing(mode="pixel") on normalised images: a box filled with
  N(0, 1) noise, one attempt clipped to the image."""
  b, h, w, _ = images.shape
  kp, ka, kr, kt, kl, kn = jax.random.split(key, 6)
  a = jax.random.uniform(ka, (b,), minval=area[0], maxval=area[1]) * h * w
  r = jnp.exp(jax.random.uniform(kr, (b,), minval=log_ratio[0], maxval=log_ratio[1]))
  eh = jnp.clip(jnp.sqrt(a * r), 1, h)
  ew = jnp.clip(jnp.sqrt(a / r), 1, w)
  top = jax.random.uniform(kt, (b,)) * (h - eh)
  left = jax.random.uniform(kl, (b,)) * (w - ew)
  ys, xs = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
  box = ((ys >= top[:, None, None]) & (ys < (top + eh)[:, None, None]) &
         (xs >= left[:, None, None]) & (xs < (left + ew)[:, None, None]))
  box = box & jax.random.bernoulli(kp, prob, (b, 1, 1))
  return jnp.where(box[..., None], jax.random.normal(kn, images.shape, images.dtype), images)


def sample_mix(rng: np.random.Generator, mixup_alpha: float, cutmix_alpha: float,
               size, switch_prob: float = 0.5) -> Dict[str, np.ndarray]:
  """timm `Mixup._params_per_batch` + `cutmix_bbox_and_lam`, on the host:
  one lambda per batch; CutMix (chosen with `switch_prob` when both are on)
  cuts a box of area 1 - lambda around a uniform centre, clips it to the
  image and corrects lambda to the clipped area. lam = 1: no mixing."""
  h, w = size
  lam, box = 1.0, (0, 0, 0, 0)
  use_cut = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < switch_prob)
  if use_cut:
    cut = np.sqrt(1.0 - rng.beta(cutmix_alpha, cutmix_alpha))
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = rng.integers(h), rng.integers(w)
    y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
    x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
    box = (y0, y1, x0, x1)
    lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
  elif mixup_alpha > 0:
    lam = float(rng.beta(mixup_alpha, mixup_alpha))
  return {"lam": np.float32(lam), "cut": np.bool_(use_cut), "box": np.asarray(box, np.int32)}


def mix_batch(images, targets, mix):
  """Mixes the batch with its flip (timm "batch" mode): blend by lam, or
  paste `box` from the flipped images; targets blend by lam either way."""
  _, h, w, _ = images.shape
  flipped = images[::-1]
  y0, y1, x0, x1 = mix["box"][0], mix["box"][1], mix["box"][2], mix["box"][3]
  ys, xs = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  inside = ((ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1))[None, :, :, None]
  lam = mix["lam"]
  images = jnp.where(mix["cut"], jnp.where(inside, flipped, images),
                     lam * images + (1.0 - lam) * flipped)
  return images, lam * targets + (1.0 - lam) * targets[::-1]


def make_augment(cfg, mean, std) -> Callable:
  """(key, normalised images) -> augmented normalised images, per `cfg`:
  crop_scale, hflip, randaug (None or (magnitude, std)), random_erase."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  randaug = cfg.get("randaug")

  def augment(key, images):
    k_crop, k_ra, k_er = jax.random.split(key, 3)
    x = random_resized_crop(k_crop, images, tuple(cfg.get("crop_scale", (0.08, 1.0))),
                            hflip=cfg.get("hflip", True))
    if randaug:
      x01 = jnp.clip(x * std + mean, 0.0, 1.0)
      x = (rand_augment(k_ra, x01, magnitude=randaug[0], magnitude_std=randaug[1]) - mean) / std
    if cfg.get("random_erase", 0.0):
      x = random_erasing(k_er, x, cfg.random_erase)
    return x
  return augment

# Layer-wise lr decay: ssl_jax/optim.py (shared with the fine-tuning job).
layer_decay_scales = optim.layer_decay_scales
scale_by_tree = optim.scale_by_tree

# ----------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------

HEADS = ("linear", "tran1")
POOLS = ("gap", "cls")


class Classifier(nn.Module):
  """Encoder + head; params {"encoder": ..., "head": ...}."""
  encoder: nn.Module
  num_classes: int
  head: str = "linear"
  pool: str = "gap"
  decoder: Any = None           # Tran1Decoder kwargs (tuple of items) for head="tran1"

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    out = self.encoder(images, train=train)
    if self.head == "tran1":
      fmap = out.get("feature_map")
      grid = tuple(fmap.shape[1:3]) if fmap is not None else None
      return decoder_probe.Tran1Decoder(**dict(self.decoder), name="head")(
          out["patch"], train=train, grid=grid)
    if self.pool == "cls":
      if out.get("cls") is None:
        raise ValueError("pool='cls' needs an encoder with a CLS token; use pool='gap'.")
      feat = out["cls"]
    else:
      feat = out["patch"].mean(axis=1)
    # MAE fine-tuning: head trunc_normal(std=2e-5), zero bias.
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.truncated_normal(2e-5),
                    name="head")(feat)


def _encoder_module(encoder, drop_path: float):
  if not drop_path:
    return encoder.module
  try:
    return models.build(dict(encoder.model_cfg, drop_path=drop_path))
  except TypeError as e:
    raise ValueError(f"encoder {encoder.model_cfg.get('name')!r} takes no drop_path; "
                     "set finetune.drop_path=0.") from e


def init_head(model: Classifier, enc_vars, images, rng):
  """Head params alone: the encoder is only traced for its output shapes."""
  out = jax.eval_shape(lambda v, x: model.encoder.apply(v, x, train=False), enc_vars, images)
  if model.head == "tran1":
    tokens = jnp.zeros(out["patch"].shape, jnp.float32)
    head = decoder_probe.Tran1Decoder(**dict(model.decoder))
    return jax.jit(head.init)(rng, tokens)["params"]
  feat = out["cls"] if model.pool == "cls" and out.get("cls") is not None else out["patch"]
  head = nn.Dense(model.num_classes, kernel_init=nn.initializers.truncated_normal(2e-5))
  return head.init(rng, jnp.zeros((1, feat.shape[-1]), jnp.float32))["params"]


def finetune(encoder, train_images, train_labels, test_images, test_labels, num_classes: int,
             cfg, mean, std, mesh=None, seed: int = 0, head_params=None) -> Dict[str, float]:
  """Fine-tunes encoder + head; returns {"top1", "train_loss"} (percent, mean
  loss of the last epoch)."""
  check_choice("finetune.head", cfg.head, HEADS)
  check_choice("finetune.pool", cfg.pool, POOLS)
  mesh = mesh or sharding.make_mesh([("data", -1)])
  decoder = (tuple(decoder_probe.decoder_kwargs(cfg.tran1, num_classes).items())
             if cfg.head == "tran1" else None)
  model = Classifier(_encoder_module(encoder, cfg.drop_path), num_classes, cfg.head, cfg.pool,
                     decoder)
  n = len(train_images)
  n_dev = mesh.devices.size
  batch = max(n_dev, (min(int(cfg.batch_size), n) // n_dev) * n_dev)
  steps_per_epoch = max(1, n // batch)
  total = int(cfg.epochs) * steps_per_epoch
  warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
  schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.base_lr * batch / 256.0, warmup,
                                                max(total, warmup + 1), cfg.min_lr)

  rng = jax.random.PRNGKey(seed)
  enc_vars = dict(encoder.variables)
  if head_params is None:
    head_params = init_head(model, enc_vars, jnp.asarray(train_images[:1]), rng)
  params = {"encoder": enc_vars["params"], "head": head_params}
  state = {k: {"encoder": v} for k, v in enc_vars.items() if k != "params"}
  tx = optax.chain(
      optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay,
                  mask=optim.decay_mask),
      scale_by_tree(layer_decay_scales(params, cfg.layer_decay)))
  # Committed, replicated inputs keep the step's signature fixed: one compile.
  rep = sharding.replicated(mesh)
  params, state = jax.device_put(params, rep), jax.device_put(state, rep)
  opt_state = jax.device_put(tx.init(params), rep)
  augment = make_augment(cfg, mean, std)
  mutable = list(state)

  @jax.jit
  def step(params, opt_state, state, x, y, mix, key):
    k_aug, k_drop = jax.random.split(key)
    x = augment(k_aug, x)
    t = decoder_probe.smoothed_targets(y, num_classes, cfg.label_smoothing)
    x, t = mix_batch(x, t, mix)

    def loss_fn(p):
      out = model.apply({"params": p, **state}, x, train=True, rngs={"dropout": k_drop},
                        mutable=mutable or False)
      logits, new_state = out if mutable else (out, state)
      return optax.softmax_cross_entropy(logits, t).mean(), new_state
    (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, dict(new_state), loss

  in_sh = sharding.batch_sharding(mesh)
  host_rng = np.random.default_rng(seed)
  labels = np.asarray(train_labels)
  losses = []
  progress = Progress(f"fine-tune ({int(cfg.epochs)} epochs)", total * batch)
  for ep in range(int(cfg.epochs)):
    perm, losses = host_rng.permutation(n), []
    for s in range(steps_per_epoch):
      idx = np.sort(perm[s * batch:(s + 1) * batch])
      x = jax.device_put(np.asarray(train_images[idx]), in_sh)
      y = jax.device_put(labels[idx], in_sh)
      mix = sample_mix(host_rng, cfg.mixup, cfg.cutmix, x.shape[1:3])
      params, opt_state, state, loss = step(params, opt_state, state, x, y, mix,
                                            jax.random.fold_in(rng, ep * steps_per_epoch + s))
      losses.append(loss)
      progress.update(batch)

  predict = jax.jit(lambda p, st, x: jnp.argmax(model.apply({"params": p, **st}, x, train=False), -1))
  preds = decoder_probe.predict_in_batches(lambda x: predict(params, state, x), test_images,
                                           batch, put=lambda c: jax.device_put(c, in_sh))
  top1 = 100.0 * float(np.mean(preds == np.asarray(test_labels)))
  return {"top1": top1,
          "train_loss": float(np.mean(jax.device_get(losses))) if losses else float("nan")}


def tab_s1() -> Dict[str, Any]:
  """002 App. A.1 Tab. S1 (ViT-Tiny on IN1K). Not in the table, from MAE-Lite's
  fine-tuning recipe: layer decay 0.85 (002 tunes it per model), min lr 1e-6,
  GAP (002 Sec. 3.1), random erasing 0."""
  return dict(head="linear", pool="gap", drop_path=0.0, epochs=300, warmup_epochs=5.0,
              batch_size=1024, base_lr=1e-3, min_lr=1e-6, b1=0.9, b2=0.999, weight_decay=0.05,
              layer_decay=0.85, label_smoothing=0.0, mixup=0.2, cutmix=0.0, randaug=(10, 0.5),
              random_erase=0.0, crop_scale=(0.08, 1.0), hflip=True, init_head=None,
              tran1=decoder_probe.tab11("mf285m"))


# 000 Tab. 12 per Mobile-Former size: (layer decay, epochs, mixup, cutmix).
TAB12_SIZES = {"mf285m": (0.90, 200, 0.0, 0.0), "mf1g": (0.90, 150, 0.2, 0.25),
               "mf3.7g": (0.85, 100, 0.8, 1.0)}


def tab12(size: str = "mf285m") -> Dict[str, Any]:
  """000 App. B.1 Tab. 12: encoder + tran-1 decoder initialised from tran-1
  probing (dropout 0.2 in the decoder)."""
  decay, epochs, mixup, cutmix = TAB12_SIZES[check_choice("fine-tune size", size, TAB12_SIZES)]
  tran1 = decoder_probe.tab11(size)
  tran1["dropout"] = 0.2
  return dict(head="tran1", pool="gap", drop_path=0.0, epochs=epochs, warmup_epochs=5.0,
              batch_size=512, base_lr=5e-4, min_lr=0.0, b1=0.9, b2=0.999, weight_decay=0.05,
              layer_decay=decay, label_smoothing=0.1, mixup=mixup, cutmix=cutmix,
              randaug=(9, 0.5), random_erase=0.25, crop_scale=(0.08, 1.0), hflip=True,
              init_head="probe", tran1=tran1)


def run(config, encoder, data, mesh) -> Dict[str, float]:
  """Protocol "finetune". `finetune.init_head`: None, "probe" (train a tran-1
  probe first and start from it, 000 App. B.1) or a path written by
  `decoder_probe.save_params`."""
  from ssl_jax.evaluate import segmentation_data  # pylint: disable=g-import-not-at-top
  cfg = config.eval.finetune
  check_choice("finetune.head", cfg.head, HEADS)
  mean, std = segmentation_data.pixel_stats(config, data)
  head_params, extra = None, {}
  init = cfg.get("init_head")
  if init:
    if cfg.head != "tran1":
      raise ValueError("finetune.init_head needs finetune.head='tran1'.")
    if init == "probe":
      res = decoder_probe.probe(config, encoder, data, mesh, cfg.tran1)
      head_params, extra = res["params"], {"probe_top1": res["top1"]}
    else:
      head_params = decoder_probe.load_params(init)
  res = finetune(encoder, data.train_images, data.train_labels, data.test_images,
                 data.test_labels, data.num_classes, cfg, mean, std, mesh, config.seed,
                 head_params)
  res.update(extra)
  return res
