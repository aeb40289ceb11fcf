"""Semantic-segmentation data for the dense linear probe, as in-memory arrays.

Sources (`config.eval.dense_probe.dataset`):
- "fashion_mnist_fg": the embedded Fashion-MNIST; a pixel's class is the
  garment class + 1 where the (padded 32x32) image is non-zero, 0 elsewhere
  (11 classes): a real-image task whose mask is a known function of the image.
- "synthetic_shapes": random coloured rectangles on a noisy background, the
  class of a pixel being the colour of the rectangle covering it (tests).
- any tfds dataset with a mask feature; known ones in `TFDS_MASKS` (e.g.
  oxford_iiit_pet, scene_parse150 = ADE20K, voc/2012 style layouts), others
  via `mask_key` / `num_classes` / `ignore_index` / `label_offset`.

Also `pixel_stats`: the normalisation (mean, std) of the classification data
of `config.data`, which on-device augmentations need to undo.
"""
import dataclasses
from typing import Optional, Tuple

import numpy as np

from ssl_jax.registry import Registry

SEG_SOURCES = Registry("segmentation dataset")
IGNORE = 255

# tfds name -> (mask feature, num classes, label offset, ignore value after offset)
TFDS_MASKS = {
    # trimap 1 pet, 2 background, 3 boundary -> 0, 1, ignore
    "oxford_iiit_pet": ("segmentation_mask", 2, -1, 2),
    # ADE20K: 0 "other" is ignored, 150 classes 1..150 -> 0..149
    "scene_parse150": ("annotation", 150, -1, -1),
}


@dataclasses.dataclass
class SegData:
  train_images: np.ndarray     # f32 [N, H, W, 3], normalised
  train_masks: np.ndarray      # i32 [N, H, W], IGNORE where unlabelled
  test_images: np.ndarray
  test_masks: np.ndarray
  num_classes: int
  ignore_index: int = IGNORE


def _normalise(images_u8, mean, std):
  x = images_u8.astype(np.float32) / 255.0
  return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


@SEG_SOURCES.register("synthetic_shapes")
def synthetic_shapes(cfg, num_train: int = 256, num_test: int = 64, image_size: int = 32,
                     num_classes: int = 3, seed: int = 0, **unused) -> SegData:
  """Background (class 0) is dark noise; each of up to two rectangles has one
  of num_classes - 1 colours, and its pixels take that colour's class."""
  del cfg, unused
  rng = np.random.default_rng(seed)
  palette = np.array([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9], [0.9, 0.9, 0.1],
                      [0.1, 0.9, 0.9], [0.9, 0.1, 0.9]], np.float32)
  if num_classes - 1 > len(palette):
    raise ValueError(f"synthetic_shapes supports up to {len(palette) + 1} classes.")

  def make(n):
    img = rng.uniform(0.0, 0.25, (n, image_size, image_size, 3)).astype(np.float32)
    mask = np.zeros((n, image_size, image_size), np.int32)
    for i in range(n):
      for _ in range(2):
        c = rng.integers(1, num_classes)
        h, w = rng.integers(image_size // 4, image_size // 2 + 1, 2)
        t, l = rng.integers(0, image_size - h + 1), rng.integers(0, image_size - w + 1)
        img[i, t:t + h, l:l + w] = palette[c - 1] + rng.normal(0, 0.05, 3)
        mask[i, t:t + h, l:l + w] = c
    return (img - 0.5) / 0.25, mask

  xtr, ytr = make(num_train)
  xte, yte = make(num_test)
  return SegData(xtr, ytr, xte, yte, num_classes)


@SEG_SOURCES.register("fashion_mnist_fg")
def fashion_mnist_fg(cfg, max_train: Optional[int] = None, max_test: Optional[int] = None,
                     **unused) -> SegData:
  del cfg, unused
  from ssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  out = []
  for split, cap in (("train", max_train), ("test", max_test)):
    images, labels = sources.load_fashion_mnist(split)
    images, labels = images[:cap], labels[:cap]
    mask = np.where(images[..., 0] > 0, labels[:, None, None] + 1, 0).astype(np.int32)
    out += [_normalise(images, (0.2860,) * 3, (0.3530,) * 3), mask]
  return SegData(*out, num_classes=11)


def _resize_pair(image, mask, size: int):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  img = tf.image.resize(tf.cast(image, tf.float32) / 255.0, (size, size), method="bilinear",
                        antialias=True)
  m = tf.image.resize(mask[..., None] if mask.shape.rank == 2 else mask, (size, size),
                      method="nearest")[..., 0]
  return tf.clip_by_value(img, 0.0, 1.0), tf.cast(m, tf.int32)


def tfds_source(name: str, cfg, split: str, max_examples: Optional[int]) -> Tuple[np.ndarray, np.ndarray, int]:
  """(images f32 normalised, masks i32, num_classes) of one tfds split."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from ssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  key, num_classes, offset, ignore = TFDS_MASKS.get(
      name, (cfg.get("mask_key"), cfg.get("num_classes"), cfg.get("label_offset", 0),
             cfg.get("ignore_value", -1)))
  if key is None or num_classes is None:
    raise ValueError(f"tfds dataset {name!r} is not in TFDS_MASKS ({', '.join(TFDS_MASKS)}): "
                     "set dense_probe.mask_key and dense_probe.num_classes.")
  ds = tfds.load(name, split=split, data_dir=cfg.get("data_dir"))
  if max_examples:
    ds = ds.take(max_examples)
  size = int(cfg.image_size)
  ds = ds.map(lambda ex: _resize_pair(ex["image"], ex[key], size))
  images, masks = [], []
  for im, m in ds.batch(256).as_numpy_iterator():
    images.append(im)
    masks.append(m)
  images, masks = np.concatenate(images), np.concatenate(masks)
  masks = masks + offset
  masks = np.where((masks == ignore) | (masks < 0) | (masks >= num_classes), IGNORE, masks)
  mean, std = np.asarray(sources.IMAGENET_MEAN), np.asarray(sources.IMAGENET_STD)
  return ((images - mean) / std).astype(np.float32), masks.astype(np.int32), num_classes


def load(cfg) -> SegData:
  """cfg: the `config.eval.dense_probe` ConfigDict."""
  name = cfg.dataset
  if name in SEG_SOURCES:
    kw = dict(cfg.get("source_kwargs", {}) or {})
    return SEG_SOURCES.get(name)(cfg, **kw)
  tfds_name = name[len("tfds:"):] if name.startswith("tfds:") else name
  xtr, ytr, n = tfds_source(tfds_name, cfg, cfg.train_split, cfg.get("max_train_examples"))
  xte, yte, _ = tfds_source(tfds_name, cfg, cfg.eval_split, cfg.get("max_eval_examples"))
  return SegData(xtr, ytr, xte, yte, n)


def pixel_stats(config, data=None):
  """(mean, std) the classification images were normalised with."""
  if data is not None and getattr(data, "mean", None) is not None:
    return tuple(data.mean), tuple(data.std)
  from ssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  src = sources.get_source(config.data, config.data.eval_split)
  return tuple(src.mean), tuple(src.std)
