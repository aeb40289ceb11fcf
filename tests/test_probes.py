"""Decoder probe, dense probe and fine-tuning: metrics on hand-computed cases,
recipe pieces, and each protocol learning a learnable synthetic task with a
frozen (or fine-tuned) random-init tiny ViT."""
import functools
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_jax import export, models, sharding
from ssl_jax.evaluate import EvalData, decoder_probe, dense_probe, finetune, segmentation_data
from ssl_jax.ops import batch_augment
from tests.conftest import config_module

CFG = dict(name="vit", variant="Ti", width=32, depth=2, num_heads=4, patch_size=4)


@functools.lru_cache()
def _encoder(size=16):
  module = models.build(CFG)
  variables = jax.jit(module.init)(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
  return export.Encoder(module, variables, CFG, {})


def _one_device_mesh():
  return sharding.make_mesh([("data", 1)], jax.devices()[:1])


def _squares(n, seed, by="quadrant"):
  """16x16 noise with a bright 4x4 square; the label is the square's quadrant
  (needs spatial fusion) or its colour (needs none)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(0, 0.3, (n, 16, 16, 3)).astype(np.float32)
  y = rng.integers(0, 4, n).astype(np.int32)
  colours = np.eye(4, 3, dtype=np.float32) * 2 + np.array([[0, 0, 0]] * 3 + [[2, 2, 2]])
  for i in range(n):
    if by == "quadrant":
      r, c = divmod(int(y[i]), 2)
      t, l = r * 8 + rng.integers(0, 5), c * 8 + rng.integers(0, 5)
      x[i, t:t + 4, l:l + 4] += 2.0
    else:
      t, l = rng.integers(0, 13, 2)
      x[i, t:t + 4, l:l + 4] = colours[y[i]]
  return x, y


def _config(**eval_sections):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = dict(name="synthetic")
  c.eval = dict(batch_size=96, output_dir=None, **eval_sections)
  return c


# --- metrics -------------------------------------------------------------------


def test_miou_on_a_known_confusion():
  conf = np.array([[3, 1, 0], [2, 4, 0], [0, 0, 0]])     # class 2 never occurs
  res = dense_probe.mean_iou(conf)
  assert res["miou"] == pytest.approx((3 / 6 + 4 / 7) / 2)
  assert res["pixel_acc"] == pytest.approx(7 / 10)
  target = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 255])
  pred = np.array([0, 0, 0, 1, 0, 0, 1, 1, 1, 1, 2])
  np.testing.assert_array_equal(dense_probe.confusion_matrix(pred, target, 3), conf)


# --- dense probe -----------------------------------------------------------------


def test_dense_probe_segments_synthetic_shapes():
  """Mask = colour of the rectangle covering a pixel; 3 classes."""
  c = _config(dense_probe=dict(
      dataset="synthetic_shapes", source_kwargs=dict(num_train=192, num_test=48, image_size=16),
      block=0, epochs=12, lr=0.1, momentum=0.9, weight_decay=0.0, drop_at=10, batch_size=32,
      train_mask_size=16, feature_batch_size=48))
  res = dense_probe.run(c, _encoder(), None, _one_device_mesh())
  assert res["miou"] > 60.0, res                       # chance (uniform guess) ~ 20
  assert res["pixel_acc"] > 80.0, res


def test_segmentation_sources_name_valid_choices():
  with pytest.raises(ValueError, match="mask_key"):
    segmentation_data.tfds_source("mnist", ml_collections.ConfigDict({"image_size": 16}), "test", 1)


# --- tran-1 decoder probe ------------------------------------------------------------


def test_tran1_decoder_reads_any_patch_tokens():
  dec = decoder_probe.Tran1Decoder(num_classes=5, width=16, posemb="sincos2d")
  tokens = jnp.ones((2, 12, 7))                      # e.g. a CNN's 3x4 map, 7 channels
  logits = jax.jit(lambda t: dec.apply(dec.init(jax.random.PRNGKey(0), t, grid=(3, 4)), t,
                                      grid=(3, 4)))(tokens)
  assert logits.shape == (2, 5)
  with pytest.raises(ValueError, match="square grid"):
    dec.init(jax.random.PRNGKey(0), tokens)


# --- fine-tuning recipe pieces ----------------------------------------------------------


def test_layer_decay_follows_block_index():
  enc = _encoder()
  params = {"encoder": enc.variables["params"], "head": {"kernel": jnp.zeros((32, 4))}}
  s = finetune.layer_decay_scales(params, 0.5)
  # 2 blocks: embeddings 0.5^3, block0 0.5^2, block1 0.5, norm / head 1.
  assert s["encoder"]["patch_embed"]["kernel"] == s["encoder"]["cls_token"] == 0.125
  assert s["encoder"]["block0"]["attn"]["query"]["kernel"] == 0.25
  assert s["encoder"]["block1"]["mlp"]["fc2"]["bias"] == 0.5
  assert s["encoder"]["norm"]["scale"] == s["head"]["kernel"] == 1.0
  assert set(jax.tree.leaves(finetune.layer_decay_scales({"encoder": {"conv": 1.0}}, 0.5))) == {1.0}


def test_mixup_and_cutmix_mix_targets_like_images():
  x = jnp.stack([jnp.zeros((8, 8, 1)), jnp.ones((8, 8, 1))])
  t = jax.nn.one_hot(jnp.array([0, 1]), 2)
  mix = jax.jit(batch_augment.mix_batch)
  keys = iter(jax.random.split(jax.random.PRNGKey(0), 8))
  for mixup, cutmix in ((0.0, 1.0), (0.2, 0.0)):
    params = batch_augment.sample_mix(next(keys), mixup, cutmix, (8, 8))
    assert bool(params["cut"]) == (cutmix > 0) and 0.0 <= float(params["lam"]) <= 1.0
    mx, mt = mix(x, t, params)
    # Image 0 took 1 - lam of image 1's pixels (a box, or a blend): so does its target.
    np.testing.assert_allclose(mt[0, 1], float(mx[0].mean()), rtol=1e-5)
    np.testing.assert_allclose(mt.sum(-1), 1.0, rtol=1e-6)
  y0, y1, x0, x1 = np.asarray(batch_augment.sample_mix(next(keys), 0.0, 1.0, (8, 8))["box"])
  assert 0 <= y0 <= y1 <= 8 and 0 <= x0 <= x1 <= 8
  assert float(batch_augment.sample_mix(next(keys), 0.0, 0.0, (8, 8))["lam"]) == 1.0  # off
  sm = decoder_probe.smoothed_targets(jnp.array([2]), 4, 0.1)
  np.testing.assert_allclose(sm, [[0.025, 0.025, 0.925, 0.025]], rtol=1e-6)


def test_randaugment_ops_keep_range_and_identities():
  x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (12, 12, 3)), jnp.float32)
  ops = jnp.arange(len(batch_augment.OP_NAMES))
  apply = jax.jit(jax.vmap(batch_augment.apply_op, in_axes=(None, 0, None, None)))
  outs = apply(x, ops, 9.0, -1.0)
  assert outs.shape == (15, 12, 12, 3)
  assert float(outs.min()) >= 0.0 and float(outs.max()) <= 1.0
  np.testing.assert_allclose(outs[2], 1.0 - x)                           # Invert
  assert len({float(jnp.abs(o - x).sum()) for o in outs}) == 15          # all ops differ
  level0 = apply(x, ops, 0.0, 1.0)
  for i in range(6, 15):                   # enhance factor 1, zero angle / shear / shift
    np.testing.assert_allclose(level0[i], x, atol=1e-5, err_msg=batch_augment.OP_NAMES[i])
  shifted = apply(x, ops, 10.0 / 0.45 / 12.0, 1.0)[13]                 # TranslateX by 1 px
  np.testing.assert_allclose(shifted[:, :-1], x[:, 1:], atol=1e-5)
  np.testing.assert_allclose(shifted[:, -1], 0.5, atol=1e-6)             # grey fill
  batch = jax.jit(batch_augment.rand_augment)(jax.random.PRNGKey(0), jnp.stack([x] * 4))
  assert batch.shape == (4, 12, 12, 3) and not np.allclose(batch[0], batch[1])


def test_finetune_protocol_runs_as_jobs_from_the_tran1_probe(tmp_path):
  """000's pipeline through the protocol "finetune" (`init_head="probe"`):
  a tran-1 probe job on the frozen encoder, then encoder + decoder
  fine-tuned from its head (Tab. 12) with drop path, Mixup, random erasing,
  crops and layer-wise lr decay, both as trainer jobs in sub-workdirs of
  `eval.output_dir` (2k embedded Fashion-MNIST images at 16 px). The probe
  is stopped early (1 epoch) so the fine-tune has room to improve, and
  must; a rerun of the same protocol call resumes the finished jobs (no
  new training step) and gives the same numbers."""
  c = _config(finetune=None)
  c.data = dict(name="fashion_mnist", train_split="train", eval_split="test", image_size=16)
  c.eval.update(max_train_examples=2048, max_eval_examples=500, output_dir=str(tmp_path))
  probe_cfg = decoder_probe.tab11("mf285m")
  probe_cfg.update(width=32, augment=False, epochs=1, warmup_epochs=0, batch_size=64,
                   base_lr=2e-2, dropout=0.0)
  ft = finetune.tab12("mf285m")
  ft.update(tran1=probe_cfg, epochs=3, warmup_epochs=0.5, batch_size=64, base_lr=5e-3,
            drop_path=0.1, mixup=0.2, cutmix=0.0, randaug=None, random_erase=0.25,
            crop_scale=(0.8, 1.0), hflip=False, layer_decay=0.75)
  c.eval.finetune = ft
  # The jobs stream `c.data`; of the protocol's `data` they read the size and classes.
  data = types.SimpleNamespace(train_labels=np.zeros(2048, np.int32), num_classes=10)
  res = finetune.run(c, _encoder(), data, _one_device_mesh())
  # Measured: probe 29.2, fine-tuned 51.4.
  assert res["top1"] > res["probe_top1"] + 10.0 and res["top1"] > 40.0, res   # chance 10
  assert np.isfinite(res["train_loss"])
  again = finetune.run(c, _encoder(), data, _one_device_mesh())
  assert again == res, (again, res)
  c.eval.finetune.head = "mlp"
  with pytest.raises(ValueError, match="Valid choices"):
    finetune.run(c, _encoder(), data, _one_device_mesh())


@pytest.mark.parametrize("name,variants", [
    # Their ImageNet variants are trainer jobs: tests/test_eval_jobs.py.
    ("decoder_probe", ("cpu",)),
    ("finetune", ("cpu",)),
    ("dense_probe", ("cpu", "tab6")),
    ("analyze", ("cpu", "in1k"))])
def test_eval_configs_build(name, variants):
  mod = config_module(f"eval/{name}.py")
  for v in variants:
    c = mod.get_config(v)
    assert c.mode == "eval" and tuple(c.eval.protocols) == (name,) and name in c.eval
  with pytest.raises(ValueError, match="Valid"):
    mod.get_config("nope")
