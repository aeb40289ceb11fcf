"""Crop geometry: RandomResizedCrop boxes against torchvision's sampler, and the
two-crop boxes and flips of the real pipeline reaching CR2PQ's coordinates."""
import math

import numpy as np
import pytest
import tensorflow as tf

from ssl_jax.data import augment, pipeline, sources
from ssl_jax.methods import cr2pq
from ssl_jax.sharding import batch_sharding, make_mesh
from tests.conftest import config_module


def _torchvision_boxes(rng, n, height, width, scale, ratio):
  """torchvision RandomResizedCrop.get_params, in numpy."""
  out = []
  area = height * width
  for _ in range(n):
    for _ in range(10):
      target = area * rng.uniform(*scale)
      aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
      w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
      if 0 < w <= width and 0 < h <= height:
        out.append((rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w))
        break
    else:
      in_ratio = width / height
      if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
      elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
      else:
        w, h = width, height
      out.append(((height - h) // 2, (width - w) // 2, h, w))
  return np.array(out, np.float64)


def _stats(boxes, height, width):
  top, left, h, w = boxes.T
  return {"area": h * w / (height * width), "log_aspect": np.log(w / h),
          "centre_y": (top + h / 2) / height, "centre_x": (left + w / 2) / width,
          "fallback": np.mean((h == height) & (w == width))}


@pytest.mark.parametrize("height,width,scale,ratio", [
    (120, 200, (0.08, 1.0), (3 / 4, 4 / 3)),   # BYOL / CR2PQ
    (200, 120, (0.2, 1.0), (0.5, 3.0)),        # asymmetric ratio: h / w swaps show
])
def test_random_resized_crop_box_statistics_match_torchvision(height, width, scale, ratio):
  """2000 boxes from our stateless sampler against 4000 from torchvision's
  algorithm: in bounds, and the same area, log-aspect and centre quantiles.
  Breaks tried: a uniform (not log-uniform) aspect, swapping h and w, and
  `top = 0` (no random position): each fails."""
  seeds = tf.random.experimental.stateless_split(tf.constant([3, 4], tf.int64), 2000)
  sample = tf.function(lambda s: tf.map_fn(
      lambda x: augment.random_resized_crop_box(x, height, width, scale, ratio), s,
      fn_output_signature=tf.float32))
  ours = sample(seeds).numpy().astype(np.float64)
  top, left, h, w = ours.T
  assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
  assert (top + h <= height).all() and (left + w <= width).all()
  assert np.array_equal(ours, np.round(ours))
  ref = _torchvision_boxes(np.random.default_rng(0), 4000, height, width, scale, ratio)
  a, b = _stats(ours, height, width), _stats(ref, height, width)
  for key in ("area", "log_aspect", "centre_y", "centre_x"):
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
      qa, qb = np.quantile(a[key], q), np.quantile(b[key], q)
      spread = np.quantile(b[key], 0.9) - np.quantile(b[key], 0.1)
      assert abs(qa - qb) < 0.06 * spread, (key, q, qa, qb)
  assert abs(a["fallback"] - b["fallback"]) < 0.02


# --------------------------------------------------------- two crops -> CR2PQ

_SIZE = 64


def _ramp_source(data_cfg, split, process_index=0, process_count=1):
  """One 64x64 image whose red / green channels are 4 x (row, col): every
  pixel of a view tells where in the original it came from."""
  del data_cfg, split, process_index, process_count
  r, c = np.meshgrid(np.arange(_SIZE), np.arange(_SIZE), indexing="ij")
  img = np.stack([4 * r, 4 * c, np.full_like(r, 128)], -1).astype(np.uint8)
  images = np.stack([img] * 16)
  make = lambda seed=None: tf.data.Dataset.from_tensor_slices(
      {"image": images, "label": np.zeros(16, np.int64)})
  return sources.Source(make, 16, 1, (0.5,) * 3, (0.25,) * 3, encoded=False)


def _origin(view, patch):
  """[B, g, g, 2] original (row, col) of each patch's centre, from the ramp."""
  x = view * 0.25 + 0.5                                # undo the normalisation
  rc = x[..., :2] * 255.0 / 4.0                        # original row, col of each pixel
  b, s, _, _ = rc.shape
  g = s // patch
  return rc.reshape(b, g, patch, g, patch, 2).mean((2, 4))


def test_two_crop_boxes_and_flips_reach_cr2pq_coordinates(monkeypatch):
  """A batch from the real TrainIterator (two_crops, crops + flips): for every
  patch of view B, CR2PQ's query coordinate (from the recorded boxes and
  flips) is where that content sits in view A's patch grid, measured from the
  pixels themselves. Break tried: dropping the flips (`_box` returning the
  unsigned box) fails."""
  monkeypatch.setattr(sources, "get_source", _ramp_source)
  c = config_module("cr2pq.py").get_config("tiny")
  c.data.augment = "mae"               # crops and flips only: pixel values keep positions
  c.data.crop_scale = (0.3, 1.0)
  c.data.image_size = 16
  it = pipeline.TrainIterator(c, "two_crops", batch_sharding(make_mesh([("data", 1)],
                                                                    _one_device())))
  batch = {k: np.asarray(v) for k, v in next(it).items()}
  assert {"box_a", "box_b", "flip_a", "flip_b"} <= set(batch)
  flips = np.concatenate([batch["flip_a"], batch["flip_b"]])
  assert 0 < flips.sum() < len(flips), "want flipped and unflipped views in the batch"
  p = c.model.patch_size
  coords = np.asarray(cr2pq.query_coordinates(batch, (4, 4), (4, 4), c)).reshape(-1, 4, 4, 2)
  origin_a, origin_b = _origin(batch["view_a"], p), _origin(batch["view_b"], p)
  for i in range(len(coords)):
    # A's grid is affine in the original: fit row / col from A's own patches.
    ka = np.arange(4)
    a_row = np.polyfit(ka, origin_a[i, :, :, 0].mean(1), 1)
    a_col = np.polyfit(ka, origin_a[i, :, :, 1].mean(0), 1)
    want_r = (origin_b[i, ..., 0] - a_row[1]) / a_row[0]
    want_c = (origin_b[i, ..., 1] - a_col[1]) / a_col[0]
    np.testing.assert_allclose(coords[i, ..., 0], want_r, atol=0.2, err_msg=f"example {i} rows")
    np.testing.assert_allclose(coords[i, ..., 1], want_c, atol=0.2, err_msg=f"example {i} cols")


def _one_device():
  import jax  # pylint: disable=g-import-not-at-top
  return jax.devices()[:1]
