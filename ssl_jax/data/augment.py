"""Stateless tf.image augmentations: every random draw comes from an explicit
seed derived from (run seed, example index), so a resumed run sees exactly the
same crops as an uninterrupted one."""
import math

import tensorflow as tf


def split_seed(seed, n: int):
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def random_resized_crop_box(seed, height, width, scale, ratio):
  """Samples a crop box (top, left, h, w) like torchvision's RandomResizedCrop.

  Ten tries of (area, log-uniform aspect) then the central fallback crop, as
  torchvision does, so crops on ImageNet match the MAE / BYOL recipes.
  """
  h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  area = h_f * w_f
  seeds = tf.random.experimental.stateless_split(seed, 4)
  tries = 10
  target = area * tf.random.stateless_uniform([tries], seeds[0], scale[0], scale[1])
  log_r = tf.random.stateless_uniform([tries], seeds[1], math.log(ratio[0]), math.log(ratio[1]))
  aspect = tf.exp(log_r)
  w = tf.round(tf.sqrt(target * aspect))
  h = tf.round(tf.sqrt(target / aspect))
  ok = (w > 0) & (h > 0) & (w <= w_f) & (h <= h_f)
  u_top = tf.random.stateless_uniform([tries], seeds[2])
  u_left = tf.random.stateless_uniform([tries], seeds[3])
  top = tf.floor(u_top * (h_f - h + 1))
  left = tf.floor(u_left * (w_f - w + 1))
  # Fallback: central crop with the ratio clamped into range.
  in_ratio = w_f / h_f
  fw = tf.where(in_ratio < ratio[0], w_f, tf.where(in_ratio > ratio[1], tf.round(h_f * ratio[1]), w_f))
  fh = tf.where(in_ratio < ratio[0], tf.round(w_f / ratio[0]), h_f)
  fallback = tf.stack([tf.floor((h_f - fh) / 2), tf.floor((w_f - fw) / 2), fh, fw])
  cands = tf.stack([top, left, h, w], axis=1)
  first = tf.argmax(tf.cast(ok, tf.int32))
  return tf.where(tf.reduce_any(ok), cands[first], fallback)


def crop_and_resize(image, box, size: int, method: str = "bicubic"):
  """image uint8 [H, W, C], box (top, left, h, w) -> float32 [size, size, C] in [0, 1]."""
  box_i = tf.cast(box, tf.int32)
  crop = tf.image.crop_to_bounding_box(image, box_i[0], box_i[1], box_i[2], box_i[3])
  crop = tf.image.resize(tf.cast(crop, tf.float32) / 255.0, (size, size), method=method,
                         antialias=True)
  return tf.clip_by_value(crop, 0.0, 1.0)


def maybe_flip(image, seed, prob: float = 0.5):
  flip = tf.random.stateless_uniform([], seed) < prob
  return tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image), flip


def _apply_with_prob(fn, image, seed, prob):
  if prob <= 0.0:
    return image
  s1, s2 = split_seed(seed, 2)
  return tf.cond(tf.random.stateless_uniform([], s1) < prob, lambda: fn(image, s2), lambda: image)


def color_jitter(image, seed, brightness, contrast, saturation, hue):
  """torchvision ColorJitter semantics on [0, 1] images, fixed op order."""
  s = split_seed(seed, 4)
  if brightness:
    f = tf.random.stateless_uniform([], s[0], 1 - brightness, 1 + brightness)
    image = image * f
  if contrast:
    f = tf.random.stateless_uniform([], s[1], 1 - contrast, 1 + contrast)
    mean = tf.reduce_mean(tf.image.rgb_to_grayscale(image))
    image = (image - mean) * f + mean
  if saturation:
    f = tf.random.stateless_uniform([], s[2], 1 - saturation, 1 + saturation)
    gray = tf.image.rgb_to_grayscale(image)
    image = (image - gray) * f + gray
  image = tf.clip_by_value(image, 0.0, 1.0)
  if hue:
    image = tf.image.stateless_random_hue(image, hue, s[3])
  return tf.clip_by_value(image, 0.0, 1.0)


def grayscale(image, seed):
  del seed
  return tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, 3])


def gaussian_blur(image, seed, sigma_range=(0.1, 2.0)):
  """Kernel ~10% of the image side (SimCLR / BYOL)."""
  size = image.shape[0] or tf.shape(image)[0]
  radius = max(1, int(size * 0.1) // 2) if isinstance(size, int) else 11
  sigma = tf.random.stateless_uniform([], seed, *sigma_range)
  x = tf.cast(tf.range(-radius, radius + 1), tf.float32)
  k = tf.exp(-(x ** 2) / (2.0 * sigma ** 2))
  k = k / tf.reduce_sum(k)
  c = image.shape[-1]
  kh = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, c, 1])
  kw = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, c, 1])
  x = image[None]
  pad = [[0, 0], [radius, radius], [radius, radius], [0, 0]]
  x = tf.pad(x, pad, mode="REFLECT")
  x = tf.nn.depthwise_conv2d(x, kh, [1, 1, 1, 1], "VALID")
  x = tf.nn.depthwise_conv2d(x, kw, [1, 1, 1, 1], "VALID")
  return x[0]


def solarize(image, seed, threshold=0.5):
  del seed
  return tf.where(image < threshold, image, 1.0 - image)


# name -> per-view settings (BYOL Tab. 6: view 1 / view 2; MoCo v2 = SimCLR-style).
# "dino": DINO's DataAugmentationDINO (main_dino.py), views = global 1, global 2,
# every local crop: blur p = 1.0 / 0.1 / 0.5, solarize only on global 2 (p 0.2).
COLOR_RECIPES = {
    "mae": None,
    "byol": [dict(jitter=0.8, gray=0.2, blur=1.0, solarize=0.0),
             dict(jitter=0.8, gray=0.2, blur=0.1, solarize=0.2)],
    "mocov2": [dict(jitter=0.8, gray=0.2, blur=0.5, solarize=0.0)] * 2,
    "dino": [dict(jitter=0.8, gray=0.2, blur=1.0, solarize=0.0),
             dict(jitter=0.8, gray=0.2, blur=0.1, solarize=0.2),
             dict(jitter=0.8, gray=0.2, blur=0.5, solarize=0.0)],
}
JITTER = {"byol": (0.4, 0.4, 0.2, 0.1), "mocov2": (0.4, 0.4, 0.4, 0.1),
          "dino": (0.4, 0.4, 0.2, 0.1)}


def color_augment(image, seed, recipe: str, view: int):
  """`view` indexes the recipe's per-view settings (the last one repeats)."""
  settings = COLOR_RECIPES[recipe]
  if settings is None:
    return image
  p = settings[min(view, len(settings) - 1)]
  s = split_seed(seed, 4)
  jitter = JITTER[recipe]
  image = _apply_with_prob(lambda im, sd: color_jitter(im, sd, *jitter), image, s[0], p["jitter"])
  image = _apply_with_prob(grayscale, image, s[1], p["gray"])
  image = _apply_with_prob(gaussian_blur, image, s[2], p["blur"])
  return _apply_with_prob(solarize, image, s[3], p["solarize"])
