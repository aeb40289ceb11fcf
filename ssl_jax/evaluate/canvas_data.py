"""Multi-object canvases from Fashion-MNIST items: the toy stand-in for the
COCO / ADE20K images of 001 (Sec. 4, Tab. 1, App. A).

Each canvas is black (Fashion-MNIST's background) with 2-3 garments, each
cropped to its foreground, rescaled so its longer side is drawn from
`scale` (pixels) and pasted at a random position. Later items occlude earlier
ones; placements whose box overlaps an earlier box by more than `max_iou`
are redrawn, so every item stays visible. Ground truth per canvas:
- `instance_masks` [S, S]: 0 background, k = the k-th item (1-based);
- `class_masks` [S, S]: 0 background, garment class + 1 (11 classes, as
  segmentation_data's "fashion_mnist_fg");
- `boxes` [M, 4]: (y0, x0, y1, x1) in pixels, the tight box of the item's
  visible pixels, end-exclusive; `labels` [M]; unused slots are -1.
Train canvases take items from the Fashion-MNIST train split, test canvases
from the test split. Everything is a function of the seed.

Registered as the dense-probe dataset "fashion_mnist_canvas".
"""
import dataclasses
import functools
from typing import Tuple

import numpy as np

from ssl_jax.evaluate import segmentation_data

FG_THRESHOLD = 32            # uint8 intensity above which an item pixel is foreground
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530   # as ssl_jax.data.sources (train statistics)
NUM_CLASSES = 11             # background + 10 garments


@dataclasses.dataclass
class Canvas:
  images: np.ndarray           # u8 [N, S, S, 3]
  instance_masks: np.ndarray   # i32 [N, S, S]
  class_masks: np.ndarray      # i32 [N, S, S]
  boxes: np.ndarray            # f32 [N, M, 4] (y0, x0, y1, x1), -1 padding
  labels: np.ndarray           # i32 [N, M], -1 padding

  def normalised(self) -> np.ndarray:
    """f32 images normalised as the Fashion-MNIST pre-training data."""
    return ((self.images.astype(np.float32) / 255.0 - FMNIST_MEAN) / FMNIST_STD)


def box_iou(a, b) -> np.ndarray:
  """IoU between boxes a [..., 4] and b [..., 4] (y0, x0, y1, x1), broadcast."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  ih = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
  iw = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
  inter = ih * iw
  area = lambda x: np.clip(x[..., 2] - x[..., 0], 0, None) * np.clip(x[..., 3] - x[..., 1], 0, None)
  return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def mask_box(mask: np.ndarray) -> np.ndarray:
  """Tight (y0, x0, y1, x1) end-exclusive box of a boolean mask's True pixels."""
  rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
  return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], np.float32)


def _item(image28: np.ndarray, side: int) -> np.ndarray:
  """One garment cropped to its foreground, longer side resized to `side` px."""
  from skimage import transform  # pylint: disable=g-import-not-at-top
  fg = image28 > FG_THRESHOLD
  if not fg.any():                                     # a faint item: keep all of it
    fg = np.ones_like(fg)
  y0, x0, y1, x1 = mask_box(fg).astype(int)
  crop = image28[y0:y1, x0:x1].astype(np.float32)
  h, w = crop.shape
  f = side / max(h, w)
  out = transform.resize(crop, (max(1, round(h * f)), max(1, round(w * f))), order=1,
                         anti_aliasing=f < 1, preserve_range=True)
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def make_canvases(items: np.ndarray, item_labels: np.ndarray, num: int, image_size: int = 32,
                  num_items: Tuple[int, int] = (2, 3), scale: Tuple[int, int] = (10, 18),
                  max_iou: float = 0.2, seed: int = 0) -> Canvas:
  """`num` canvases of `image_size` px from `items` (u8 [K, 28, 28] garments)."""
  lo, hi = int(num_items[0]), int(num_items[1])
  if not 1 <= lo <= hi:
    raise ValueError(f"num_items must be (min, max) with 1 <= min <= max, got {num_items}.")
  if not 1 <= scale[0] <= scale[1] <= image_size:
    raise ValueError(f"scale {scale} (item side in px) must lie in [1, image_size={image_size}].")
  rng = np.random.default_rng(seed)
  images = np.zeros((num, image_size, image_size), np.uint8)
  inst = np.zeros((num, image_size, image_size), np.int32)
  cls = np.zeros((num, image_size, image_size), np.int32)
  boxes = np.full((num, hi, 4), -1, np.float32)
  labels = np.full((num, hi), -1, np.int32)
  for n in range(num):
    placed = []                                        # (box, item index)
    for _ in range(rng.integers(lo, hi + 1)):
      k = int(rng.integers(len(items)))
      patch = _item(items[k], int(rng.integers(scale[0], scale[1] + 1)))
      h, w = patch.shape
      for _ in range(50):                              # redraw heavy overlaps
        t, l = rng.integers(0, image_size - h + 1), rng.integers(0, image_size - w + 1)
        box = np.array([t, l, t + h, l + w], np.float32)
        if all(box_iou(box, b) <= max_iou for b, _ in placed):
          break
      else:
        continue                                       # no room: fewer items
      fg = patch > FG_THRESHOLD
      j = len(placed) + 1
      region = (slice(t, t + h), slice(l, l + w))
      images[n][region] = np.where(fg, patch, images[n][region])
      inst[n][region] = np.where(fg, j, inst[n][region])
      cls[n][region] = np.where(fg, item_labels[k] + 1, cls[n][region])
      placed.append((box, k))
    j = 0
    for i, (_, k) in enumerate(placed):                # boxes of the visible pixels
      m = inst[n] == i + 1
      if not m.any():
        continue
      inst[n][m] = j + 1
      boxes[n, j], labels[n, j] = mask_box(m), item_labels[k]
      j += 1
  return Canvas(np.repeat(images[..., None], 3, -1), inst, cls, boxes, labels)


@functools.lru_cache(maxsize=4)
def fashion_mnist_canvases(split: str, num: int, image_size: int = 32,
                           num_items: Tuple[int, int] = (2, 3), scale: Tuple[int, int] = (10, 18),
                           max_iou: float = 0.2, seed: int = 0) -> Canvas:
  """Canvases of one Fashion-MNIST split (memoised: the random-init twin and
  the other canvas protocols reuse them). The test split uses seed + 1."""
  from ssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  images, labels = sources.load_fashion_mnist(split)
  items = images[:, 2:30, 2:30, 0]                     # undo the 32x32 padding
  return make_canvases(items, labels, num, image_size, tuple(num_items), tuple(scale), max_iou,
                       seed + (split != "train"))


def canvas_kwargs(cfg) -> dict:
  """The canvas options a protocol's config section may set."""
  keys = ("image_size", "num_items", "scale", "max_iou", "seed")
  out = {k: cfg[k] for k in keys if cfg.get(k) is not None}
  for k in ("num_items", "scale"):
    if k in out:
      out[k] = tuple(int(v) for v in out[k])
  return out


@segmentation_data.SEG_SOURCES.register("fashion_mnist_canvas")
def canvas_segmentation(cfg, num_train: int = 3000, num_test: int = 1000, **unused):
  """Semantic masks of the canvases (class = garment + 1, 0 background)."""
  del unused
  kw = canvas_kwargs(cfg)
  tr = fashion_mnist_canvases("train", int(num_train), **kw)
  te = fashion_mnist_canvases("test", int(num_test), **kw)
  return segmentation_data.SegData(tr.normalised(), tr.class_masks, te.normalised(),
                                   te.class_masks, NUM_CLASSES)
