"""Multi-crop views (shapes, boxes, flips, determinism) and the DINO family's
masks (block-wise per image ratio with probability, 001's cross-wise)."""
import jax
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from ssl_jax.data import augment, views
from ssl_jax.ops import block_mask
from tests.conftest import config_module


def _cfg(**kw):
  c = ml_collections.ConfigDict(dict(
      image_size=32, crop_scale=(0.4, 1.0), crop_ratio=(3 / 4, 4 / 3), hflip=True,
      augment="dino", num_local_crops=3, local_crop_size=16, local_crop_scale=(0.05, 0.4)))
  c.update(kw)
  return c


def _gradient_image(h=40, w=48):
  """Pixel (r, c) holds (r, c, 0): a crop's content tells where it came from."""
  r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  return np.stack([r * 5, c * 5, np.zeros_like(r)], -1).astype(np.uint8)


def test_multi_crop_shapes_boxes_and_determinism():
  img = _gradient_image()
  cfg = _cfg(augment="mae")          # no colour change: content checks below stay exact
  f = tf.function(lambda s: views.multi_crop(tf.constant(img), s, cfg))
  out = {k: v.numpy() for k, v in f(tf.constant([3, 4], tf.int64)).items()}
  assert out["global_crops"].shape == (2, 32, 32, 3)
  assert out["local_crops"].shape == (3, 16, 16, 3)
  assert out["global_boxes"].shape == (2, 4) and out["local_boxes"].shape == (3, 4)
  assert out["global_flips"].shape == (2,) and out["local_flips"].shape == (3,)
  np.testing.assert_array_equal(out["image_hw"], [40, 48])
  area = 40 * 48
  for name, (lo, hi) in (("global", (0.4, 1.0)), ("local", (0.05, 0.4))):
    boxes = out[f"{name}_boxes"]
    a = boxes[:, 2] * boxes[:, 3] / area
    assert ((a > lo - 0.05) & (a < hi + 0.05)).all(), (name, a)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 40).all()
    assert (boxes[:, 1] + boxes[:, 3] <= 48).all()
    # The crop shows its box: mean row / column intensity matches the box centre,
    # and the column gradient's sign gives the flip.
    for crop, box, flip in zip(out[f"{name}_crops"], boxes, out[f"{name}_flips"]):
      top, left, h, w = box
      assert crop[..., 0].mean() * 255 / 5 == pytest.approx(top + h / 2 - 0.5, abs=1.0)
      assert crop[..., 1].mean() * 255 / 5 == pytest.approx(left + w / 2 - 0.5, abs=1.0)
      slope = crop[:, -1, 1].mean() - crop[:, 0, 1].mean()
      assert (slope < 0) == bool(flip)
  again = f(tf.constant([3, 4], tf.int64))
  np.testing.assert_array_equal(again["local_crops"].numpy(), out["local_crops"])
  other = f(tf.constant([3, 5], tf.int64))
  assert not np.array_equal(other["global_boxes"].numpy(), out["global_boxes"])


def test_multi_crop_without_local_crops_and_bad_config():
  img = tf.constant(_gradient_image())
  out = views.multi_crop(img, tf.constant([1, 2], tf.int64), _cfg(num_local_crops=0))
  assert "local_crops" not in out and out["global_crops"].shape == (2, 32, 32, 3)
  with pytest.raises(ValueError, match="local_crop_size"):
    views.multi_crop(img, tf.constant([1, 2], tf.int64), _cfg(local_crop_size=0))
  with pytest.raises(ValueError, match="Valid choices"):
    views.multi_crop(img, tf.constant([1, 2], tf.int64), _cfg(augment="dinoo"))


def test_dino_colour_recipe_solarizes_only_global_two():
  assert [p["solarize"] for p in augment.COLOR_RECIPES["dino"]] == [0.0, 0.2, 0.0]
  assert [p["blur"] for p in augment.COLOR_RECIPES["dino"]] == [1.0, 0.1, 0.5]


def test_pipeline_batches_multi_crop_normalised():
  from ssl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from ssl_jax import sharding  # pylint: disable=g-import-not-at-top
  c = config_module("dino.py").get_config("tiny")
  mesh = sharding.make_mesh(c.mesh, jax.devices()[:1])
  it = pipeline.TrainIterator(c, "multi_crop", sharding.batch_sharding(mesh))
  batch = next(it)
  assert batch["global_crops"].shape == (8, 2, 16, 16, 3)
  assert batch["local_crops"].shape == (8, 2, 8, 8, 3)
  assert batch["global_boxes"].shape == (8, 2, 4) and batch["image_hw"].shape == (8, 2)
  g = np.asarray(batch["global_crops"])
  assert g.min() < -0.5 and g.max() > 1.0        # (x - 0.286) / 0.353, not [0, 1]


def _squares(m):
  """Fully masked 2x2 squares per masked patch: high for blocks, ~0 for 1-wide crosses."""
  m = m.reshape(-1, 8, 8)
  return (m[:, 1:, 1:] * m[:, :-1, 1:] * m[:, 1:, :-1] * m[:, :-1, :-1]).sum() / m.sum()


def test_block_and_cross_masks_reach_the_drawn_ratio():
  grid, out = (8, 8), {}
  for kind, fn in (("block", block_mask.block_mask_per_image_ratio),
                   ("cross", block_mask.cross_mask_per_image_ratio)):
    masks, ratios = jax.jit(lambda r, fn=fn: fn(r, 64, grid, (0.1, 0.5)))(jax.random.PRNGKey(0))
    masks, ratios = np.asarray(masks), np.asarray(ratios)
    np.testing.assert_array_equal(masks.sum(1), np.round(ratios * 64))
    assert ratios.min() >= 0.1 and ratios.max() <= 0.5 and ratios.std() > 0.05
    out[kind] = _squares(masks)
  # Crosses are thin: far fewer filled 2x2 squares than BEiT blocks.
  assert out["cross"] < out["block"] / 3, out


def test_ibot_masks_half_the_crops():
  from ssl_jax.methods import ibot  # pylint: disable=g-import-not-at-top
  c = config_module("ibot.py").get_config("tiny")
  m = np.asarray(ibot.draw_masks(jax.random.PRNGKey(0), 128, (8, 8), c)[0])
  assert m.shape == (128, 2, 64)
  masked = m.sum(-1) > 0
  assert abs(masked.mean() - 0.5) < 0.1
  r = m.sum(-1)[masked] / 64
  assert r.min() >= 0.09 and r.max() <= 0.51
