"""View builders: what a method asks the pipeline to make of one image.

A builder maps (decoded uint8 image [H, W, 3], stateless seed, data config)
to a dict of float tensors in [0, 1]; the pipeline normalises every key that
holds an image (names in `IMAGE_KEYS`). Methods pick one by name (`views`).
"""
import tensorflow as tf

from ssl_jax.data import augment
from ssl_jax.registry import Registry, check_choice

VIEWS = Registry("view")
IMAGE_KEYS = ("image", "view_a", "view_b", "global_crops", "local_crops")


def _crop(image, seed, cfg, size=None, scale=None):
  s_box, s_flip = augment.split_seed(seed, 2)
  shape = tf.shape(image)
  box = augment.random_resized_crop_box(s_box, shape[0], shape[1],
                                        tuple(scale or cfg.crop_scale), tuple(cfg.crop_ratio))
  out = augment.crop_and_resize(image, box, size or cfg.image_size, method="bicubic")
  flip = tf.constant(False)
  if cfg.hflip:
    out, flip = augment.maybe_flip(out, s_flip)
  return out, box, flip


@VIEWS.register("single_crop")
def single_crop(image, seed, cfg):
  """RandomResizedCrop (bicubic) + horizontal flip: the MAE recipe."""
  out, _, _ = _crop(image, seed, cfg)
  return {"image": out}


@VIEWS.register("two_crops")
def two_crops(image, seed, cfg):
  """Two independent crops of one image with their boxes (top, left, h, w in
  original pixels) and flip flags; colour augmentation per `cfg.augment`."""
  recipe = check_choice("data.augment", cfg.get("augment", "mae"), augment.COLOR_RECIPES)
  s_a, s_b, c_a, c_b = augment.split_seed(seed, 4)
  out = {}
  for name, s_crop, s_color, view in (("a", s_a, c_a, 0), ("b", s_b, c_b, 1)):
    img, box, flip = _crop(image, s_crop, cfg)
    out[f"view_{name}"] = augment.color_augment(img, s_color, recipe, view)
    out[f"box_{name}"] = tf.cast(box, tf.float32)
    out[f"flip_{name}"] = tf.cast(flip, tf.float32)
  return out


@VIEWS.register("multi_crop")
def multi_crop(image, seed, cfg):
  """DINO multi-crop (DINO Sec. 3.1): 2 global crops of `image_size` (scale
  `crop_scale`) and `num_local_crops` local crops of `local_crop_size` (scale
  `local_crop_scale`), each with its box (top, left, h, w in original pixels)
  and flip flag, stacked per size so each size is one static-shape array:
  `global_crops` [2, S, S, 3], `local_crops` [N, s, s, 3] (absent if N = 0),
  `{global,local}_boxes` [., 4], `{global,local}_flips` [.], and `image_hw`
  [2], the original image's size (the position field of 001 needs it).
  Colour: `data.augment` ("dino": DINO's per-crop probabilities)."""
  recipe = check_choice("data.augment", cfg.get("augment", "dino"), augment.COLOR_RECIPES)
  n_local = int(cfg.get("num_local_crops", 0))
  if n_local < 0:
    raise ValueError(f"data.num_local_crops must be >= 0, got {n_local}.")
  seeds = augment.split_seed(seed, 2 * (2 + n_local))
  out = {}
  groups = (("global", 2, cfg.image_size, cfg.crop_scale),
            ("local", n_local, cfg.get("local_crop_size", 0), cfg.get("local_crop_scale")))
  view = 0
  for name, count, size, scale in groups:
    if count == 0:
      continue
    if not size or scale is None:
      raise ValueError("multi_crop with local crops needs data.local_crop_size and "
                       "data.local_crop_scale (DINO: 96 and (0.05, 0.4)).")
    imgs, boxes, flips = [], [], []
    for _ in range(count):
      img, box, flip = _crop(image, seeds[2 * view], cfg, size, scale)
      imgs.append(augment.color_augment(img, seeds[2 * view + 1], recipe, view))
      boxes.append(tf.cast(box, tf.float32))
      flips.append(tf.cast(flip, tf.float32))
      view += 1
    out[f"{name}_crops"] = tf.stack(imgs)
    out[f"{name}_boxes"] = tf.stack(boxes)
    out[f"{name}_flips"] = tf.stack(flips)
  out["image_hw"] = tf.cast(tf.shape(image)[:2], tf.float32)
  return out


def eval_view(image, size: int):
  """Deterministic eval transform: small images are resized to `size`; large
  ones resized (shorter side size/0.875, bicubic) and centre-cropped."""
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  image = tf.cast(image, tf.float32) / 255.0
  short = tf.minimum(h, w)
  def resize_crop():
    target = tf.cast(tf.round(size / 0.875), tf.int32)
    scale = tf.cast(target, tf.float32) / tf.cast(short, tf.float32)
    nh = tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32)
    nw = tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32)
    im = tf.image.resize(image, (nh, nw), method="bicubic", antialias=True)
    return tf.image.crop_to_bounding_box(im, (nh - size) // 2, (nw - size) // 2, size, size)
  def resize_only():
    return tf.image.resize(image, (size, size), method="bicubic", antialias=True)
  out = tf.cond(short > size, resize_crop, resize_only)
  return tf.clip_by_value(tf.reshape(out, (size, size, 3)), 0.0, 1.0)
