"""Multi-object canvases and the box probe: determinism, masks vs boxes,
FCOS targets and decoding, NMS and AP on hand cases, the probe learning
boxes from features that hold them, and both canvas protocols end to end."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_jax import evaluate, export, models, sharding
from ssl_jax.evaluate import EvalData, box_probe, canvas_data, dense_probe
from tests.conftest import config_module


def _items(n=40, seed=0):
  """Synthetic 28x28 'garments': bright filled ellipses of random size."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:28, :28]
  out = np.zeros((n, 28, 28), np.uint8)
  for i in range(n):
    ry, rx = rng.integers(6, 13, 2)
    out[i] = np.where(((yy - 14) / ry) ** 2 + ((xx - 14) / rx) ** 2 <= 1, 200, 0)
  return out, rng.integers(0, 10, n).astype(np.int32)


@functools.lru_cache()
def _canvas(seed=0, num=32):
  items, labels = _items()
  return canvas_data.make_canvases(items, labels, num, image_size=32, seed=seed)


def test_canvas_is_deterministic_under_its_seed():
  a, b, c = _canvas(0), canvas_data.make_canvases(*_items(), 32, image_size=32, seed=0), _canvas(1)
  for f in ("images", "instance_masks", "class_masks", "boxes", "labels"):
    np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
  assert not np.array_equal(a.instance_masks, c.instance_masks)


def test_masks_match_boxes_and_labels():
  cv = _canvas()
  counts = (cv.labels >= 0).sum(1)
  assert counts.min() >= 2 and counts.max() <= 3 and len(set(counts)) == 2
  for n in range(len(cv.images)):
    inst, cls = cv.instance_masks[n], cv.class_masks[n]
    assert inst.max() == counts[n]
    np.testing.assert_array_equal(inst == 0, cls == 0)
    np.testing.assert_array_equal(inst == 0, cv.images[n, ..., 0] <= canvas_data.FG_THRESHOLD)
    for k in range(counts[n]):
      m = inst == k + 1
      np.testing.assert_array_equal(canvas_data.mask_box(m), cv.boxes[n, k])
      assert np.all(cls[m] == cv.labels[n, k] + 1)
    # Items were drawn at 10-18 px: boxes can only shrink (occlusion).
    sides = cv.boxes[n, :counts[n], 2:] - cv.boxes[n, :counts[n], :2]
    assert sides.max() <= 18 and sides.min() >= 1


def test_fashion_mnist_canvas_is_a_dense_probe_dataset():
  cfg = ml_collections.ConfigDict(dict(dataset="fashion_mnist_canvas", image_size=32, seed=0,
                                       source_kwargs=dict(num_train=16, num_test=8)))
  seg = dense_probe.segmentation_data.load(cfg)
  assert seg.num_classes == 11 and seg.train_images.shape == (16, 32, 32, 3)
  assert set(np.unique(seg.test_masks)) <= set(range(11)) and seg.test_masks.max() > 0
  cv = canvas_data.fashion_mnist_canvases("test", 8, image_size=32, seed=0)
  np.testing.assert_array_equal(seg.test_masks, cv.class_masks)
  assert not np.array_equal(cv.instance_masks,
                            canvas_data.fashion_mnist_canvases("train", 8, 32).instance_masks)


# --- FCOS targets, decoding, NMS, AP --------------------------------------------


def test_targets_pick_the_smallest_box_and_decode_back():
  centres = box_probe.patch_centres((4, 4), (16, 16))             # 2, 6, 10, 14
  boxes = np.array([[[0, 0, 16, 16], [4, 4, 12, 8], [-1, -1, -1, -1]]], np.float32)
  obj, dist = box_probe.assign_targets(boxes, centres)
  assert obj.sum() == 16                                          # all inside the big box
  p = 1 * 4 + 1                                                   # centre (6, 6): small box
  np.testing.assert_allclose(dist[0, p], [6 - 4, 6 - 4, 8 - 6, 12 - 6])   # l, t, r, b
  np.testing.assert_allclose(dist[0, 0], [2, 2, 14, 14])
  # FCOS Eq. 3 centre-ness: 1 at a box's centre, sqrt(min/max ratios) elsewhere.
  np.testing.assert_allclose(box_probe.centerness(dist[0, p]), np.sqrt(2 / 6))
  assert box_probe.centerness(np.array([3.0, 5.0, 3.0, 5.0])) == pytest.approx(1.0)
  dec = box_probe.decode(dist[0], centres, (16, 16))
  np.testing.assert_allclose(dec[p], boxes[0, 1])
  np.testing.assert_allclose(dec[0], boxes[0, 0])
  # A centre exactly on an edge is not inside (FCOS: all distances > 0).
  obj, _ = box_probe.assign_targets(np.array([[[2, 2, 7, 7]]], np.float32), centres)
  assert obj.sum() == 1


def test_nms_suppresses_overlaps_only():
  boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 4]], np.float32)
  keep = box_probe.nms(boxes, np.array([0.9, 0.8, 0.7, 0.95]), 0.5)
  np.testing.assert_array_equal(keep, [3, 0, 2])                  # box 1: IoU 0.81 with 0


def test_average_precision_hand_cases():
  gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32),
        np.array([[0, 5, 30, 15]], np.float32)]
  perfect = [(g, np.array([0.9, 0.8])[:len(g)]) for g in gt]
  assert box_probe.average_precision(perfect, gt, 0.5) == pytest.approx(1.0)
  assert box_probe.matched_iou(perfect, gt) == pytest.approx(1.0)
  # Boxes shifted down 3 px: IoU 70 / 130 = 0.54 for the 10x10 boxes, 270 /
  # 330 = 0.82 for the 30x10 one: AP50 stays 1, AP75 drops (one of three).
  shifted = [(g + np.array([3, 0, 3, 0], np.float32), s) for g, s in perfect]
  assert box_probe.average_precision(shifted, gt, 0.5) == pytest.approx(1.0)
  assert box_probe.average_precision(shifted, gt, 0.75) < 0.5
  assert box_probe.matched_iou(shifted, gt) < 0.8
  # A false positive scored above two true positives, 2 ground truths:
  # precision 1/2 at recall 1/2, 2/3 at recall 1 -> interpolated AP = 2/3.
  g2 = [gt[0]]
  dets = [(np.array([[50, 50, 60, 60], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32),
           np.array([0.9, 0.8, 0.7]))]
  assert box_probe.average_precision(dets, g2, 0.5) == pytest.approx(2 / 3)
  # A duplicate of a matched box is a false positive, not a second match.
  dup = [(np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32), np.array([0.9, 0.8]))]
  assert box_probe.average_precision(dup, g2, 0.5) == pytest.approx(0.5)
  scores = box_probe.score_detections(perfect, gt)
  assert scores["ap"] == pytest.approx(100.0) and scores["ap75"] == pytest.approx(100.0)


def test_probe_recovers_boxes_from_features_that_hold_them():
  """Features = the FCOS targets (+ noise channels): a correct linear probe
  and decoder find nearly every box; a random feature map does not."""
  cv = _canvas(0, 96)
  grid, size = (8, 8), (32, 32)
  centres = box_probe.patch_centres(grid, size)
  obj, dist = box_probe.assign_targets(cv.boxes, centres)
  rng = np.random.default_rng(0)
  feats = np.concatenate([obj[..., None] * 4.0, dist / 8.0, rng.normal(size=obj.shape + (3,))], -1)
  cfg = dict(box_probe.defaults(), epochs=60, lr=1e-2, batch_size=32)
  good = box_probe.box_probe(feats[:64], cv.boxes[:64], feats[64:], cv.boxes[64:], grid, size, cfg)
  noise = rng.normal(size=feats.shape)
  bad = box_probe.box_probe(noise[:64], cv.boxes[:64], noise[64:], cv.boxes[64:], grid, size, cfg)
  assert good["ap50"] > 80 and good["box_miou"] > 70, good
  assert bad["ap50"] < good["ap50"] - 40, (good, bad)


# --- protocols end to end -------------------------------------------------------


def test_canvas_protocols_run_on_an_encoder_and_its_random_twin():
  cfg_model = dict(name="vit", variant="Ti", width=32, depth=1, num_heads=2, patch_size=4)
  module = models.build(cfg_model)
  variables = jax.jit(module.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
  enc = export.Encoder(module, variables, cfg_model, {})
  c = config_module("eval/box_probe.py").get_config("cpu")
  small = dict(image_size=16, scale=(5, 8), num_items=(2, 3))
  c.eval.box_probe.update(num_train=48, num_test=16, epochs=2, **small)
  c.eval.dense_probe.update(train_mask_size=16, epochs=1, drop_at=1, batch_size=16,
                            source_kwargs=dict(num_train=48, num_test=16), **small)
  x = np.zeros((8, 16, 16, 3), np.float32)
  c.eval.compare_random_init = True
  data = EvalData(x, np.zeros(8, np.int32), x, np.zeros(8, np.int32), 10)
  res = evaluate.evaluate(c, enc, sharding.make_mesh([("data", 1)], jax.devices()[:1]), data)
  for k in ("box_probe/ap50", "box_probe/ap", "box_probe/box_miou", "dense_probe/miou"):
    assert 0.0 <= res[k] <= 100.0 and k + "_random_init" in res, res
  with pytest.raises(ValueError, match="Valid: cpu, box"):
    config_module("eval/box_probe.py").get_config("coco")
