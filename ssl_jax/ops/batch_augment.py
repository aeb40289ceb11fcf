"""Batched image augmentations in jnp (one jitted step holds them all): timm's
RandAugment "rand-m{M}-mstd{S}-inc1", random erasing, Mixup / CutMix, and a
RandomResizedCrop + flip of the batch itself (the CPU protocols' crops).

Used per batch on device by the fine-tuning and tran-1 probe jobs
(`methods/finetune.py`, `methods/decoder_probe.py`; 002 Tab. S1, 000 Tab.
11 / 12, MAE Tab. 9). Images: RandAugment on [0, 1], erasing and mixing on
the normalised batch.

Deviations from timm, named: Equalize / AutoContrast quantise to 256 levels
like PIL but run per channel on float images; shears are about the image
centre (PIL: the top-left corner, i.e. an extra shift); random erasing makes
one attempt (clipped) instead of up to ten; Mixup / CutMix draw lambda and the
box with jax.random inside the step (timm: numpy on the host);
`random_resized_crop` clips an oversized crop to the image (torchvision
retries, then falls back to a centre crop) and resamples bilinearly.
"""
import math

import jax
import jax.numpy as jnp

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


def random_erasing(key, images, prob: float, area=(0.02, 1 / 3),
                   log_ratio=(math.log(0.3), math.log(1 / 0.3))):
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


def sample_mix(key, mixup_alpha: float, cutmix_alpha: float, size, switch_prob: float = 0.5):
  """timm `Mixup._params_per_batch` + `cutmix_bbox_and_lam` in jnp: one lambda
  per batch; CutMix (chosen with `switch_prob` when both are on) cuts a box of
  area 1 - lambda around a uniform centre, clipped to the image, lambda
  corrected to the clipped area; lam = 1 (no mixing) when both are off.
  The dict `mix_batch` takes."""
  h, w = size
  k_sw, k_mix, k_cut, k_y, k_x = jax.random.split(key, 5)
  if cutmix_alpha > 0 and mixup_alpha > 0:
    use_cut = jax.random.uniform(k_sw) < switch_prob
  else:
    use_cut = jnp.asarray(cutmix_alpha > 0)
  lam_mix = (jax.random.beta(k_mix, mixup_alpha, mixup_alpha) if mixup_alpha > 0
             else jnp.ones(()))
  cut = (jnp.sqrt(1.0 - jax.random.beta(k_cut, cutmix_alpha, cutmix_alpha))
         if cutmix_alpha > 0 else jnp.zeros(()))
  ch, cw = jnp.floor(h * cut).astype(jnp.int32), jnp.floor(w * cut).astype(jnp.int32)
  cy, cx = jax.random.randint(k_y, (), 0, h), jax.random.randint(k_x, (), 0, w)
  y0, y1 = jnp.clip(cy - ch // 2, 0, h), jnp.clip(cy + ch // 2, 0, h)
  x0, x1 = jnp.clip(cx - cw // 2, 0, w), jnp.clip(cx + cw // 2, 0, w)
  lam_cut = 1.0 - ((y1 - y0) * (x1 - x0)).astype(jnp.float32) / float(h * w)
  box = jnp.where(use_cut, jnp.stack([y0, y1, x0, x1]), 0)
  return {"lam": jnp.where(use_cut, lam_cut, lam_mix).astype(jnp.float32), "cut": use_cut,
          "box": box.astype(jnp.int32)}
