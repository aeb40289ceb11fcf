"""001's position field: bilinear sampling by crop box and flip, the scale /
translation augmentation, and the export that bakes the field."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import models
from ssl_jax.methods import posfield
from tests.conftest import config_module


@pytest.fixture(scope="module")
def cfg():
  c = config_module("posfield.py").get_config("tiny")
  c.posfield.scale_dist = "const"          # s = 1
  c.total_steps = 6
  return c


def _field(shape=(5, 7, 3), seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def _batch(global_boxes, flips, hw=(16.0, 16.0), local_boxes=None):
  b = len(global_boxes)
  out = {"global_crops": jnp.zeros((b, 2, 16, 16, 3)),
         "global_boxes": jnp.asarray(global_boxes, jnp.float32),
         "global_flips": jnp.asarray(flips, jnp.float32),
         "image_hw": jnp.tile(jnp.asarray(hw, jnp.float32)[None], (b, 1))}
  if local_boxes is not None:
    out.update(local_crops=jnp.zeros((b, 1, 8, 8, 3)),
               local_boxes=jnp.asarray(local_boxes, jnp.float32),
               local_flips=jnp.zeros((b, 1)))
  return out


def test_bilinear_sampling_matches_numpy_with_corners_on_image_corners():
  field = _field()
  yx = np.array([[0.0, 0.0], [1.0, 1.0], [0.3, 0.8], [0.55, 0.1]], np.float32)
  got = np.asarray(posfield.sample_field(field, jnp.asarray(yx)))
  f = np.asarray(field)
  want = []
  for y, x in yx:
    u, v = y * 4, x * 6
    u0, v0 = min(int(u), 3), min(int(v), 5)
    du, dv = u - u0, v - v0
    want.append((1 - du) * (1 - dv) * f[u0, v0] + (1 - du) * dv * f[u0, v0 + 1]
                + du * (1 - dv) * f[u0 + 1, v0] + du * dv * f[u0 + 1, v0 + 1])
  np.testing.assert_allclose(got, np.stack(want), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[0], f[0, 0], rtol=1e-6)
  np.testing.assert_allclose(got[1], f[-1, -1], rtol=1e-6)


def test_full_crop_reproduces_baked_flip_reverses_half_crop_reads_half(cfg):
  tree = {posfield.FIELD: _field((16, 16, 32), seed=1)}
  full = [0.0, 0.0, 16.0, 16.0]
  # Crop 0: the whole image, unflipped / flipped / the left half; crop 1 the
  # whole image (so the enclosing rectangle is the image and s = 1 keeps it).
  rng = jax.random.PRNGKey(0)
  pos_full, _ = posfield.positions(tree, _batch([[full, full]], [[0, 0]]), rng, cfg)
  pos_flip, _ = posfield.positions(tree, _batch([[full, full]], [[1, 0]]), rng, cfg)
  pos_half, _ = posfield.positions(tree, _batch([[[0, 0, 16, 8], full]], [[0, 0]]), rng, cfg)
  g = 16 // cfg.model["patch_size"]
  baked = np.asarray(posfield.baked_pos_embedding(tree[posfield.FIELD], (g, g)))[0]
  np.testing.assert_allclose(np.asarray(pos_full[0, 0]), baked, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(pos_flip[0, 0]).reshape(g, g, -1),
                             baked.reshape(g, g, -1)[:, ::-1], rtol=1e-6)
  wide = np.asarray(posfield.baked_pos_embedding(tree[posfield.FIELD], (g, 2 * g)))[0]
  np.testing.assert_allclose(np.asarray(pos_half[0, 0]).reshape(g, g, -1),
                             wide.reshape(g, 2 * g, -1)[:, :g], rtol=1e-5, atol=1e-6)
  # Without field sampling (Tab. 3 ablation) every crop reads the full field.
  off = cfg.copy_and_resolve_references()
  off.posfield.field_sampling = False
  pos_off, _ = posfield.positions(tree, _batch([[[0, 0, 16, 8], full]], [[1, 0]]), rng, off)
  np.testing.assert_allclose(np.asarray(pos_off[0, 0]), baked, rtol=1e-6)


def test_scale_translation_augmentation_keeps_layout_and_reaches_area_s(cfg):
  c = cfg.copy_and_resolve_references()
  c.posfield.scale_dist = "beta"
  rng = np.random.default_rng(2)
  b = 64
  tl = rng.uniform(0, 0.5, size=(b, 3, 2))
  hw = rng.uniform(0.1, 0.5, size=(b, 3, 2))
  boxes = jnp.asarray(np.concatenate([tl, hw], -1), jnp.float32)
  key = jax.random.PRNGKey(3)
  g_new, l_new = posfield.scale_translate([boxes[:, :2], boxes[:, 2:]], key, c)
  new = np.concatenate([np.asarray(g_new), np.asarray(l_new)], 1)
  old = np.asarray(boxes)
  enc = lambda x: (x[..., 0].min(1), x[..., 1].min(1), (x[..., 0] + x[..., 2]).max(1),
                   (x[..., 1] + x[..., 3]).max(1))
  t0, l0, b0, r0 = enc(old)
  t1, l1, b1, r1 = enc(new)
  assert (t1 >= -1e-6).all() and (l1 >= -1e-6).all() and (b1 <= 1 + 1e-6).all() and (r1 <= 1 + 1e-6).all()
  k = (b1 - t1) / (b0 - t0)
  np.testing.assert_allclose((r1 - l1) / (r0 - l0), k, rtol=1e-4)    # one scale per image
  np.testing.assert_allclose(new[..., 2] / old[..., 2], k[:, None] * np.ones((1, 3)), rtol=1e-4)
  s = np.asarray(posfield.draw_scale(jax.random.split(key, 3)[0], b, c))
  assert (s >= 0.2).all() and (s <= 1.0).all() and abs(s.mean() - (0.2 + 0.8 * 2 / 7)) < 0.06
  area = (b1 - t1) * (r1 - l1)
  fits = np.maximum(b0 - t0, r0 - l0) * np.sqrt(s / ((b0 - t0) * (r0 - l0))) <= 1.0
  np.testing.assert_allclose(area[fits], s[fits], rtol=1e-4)
  assert fits.mean() > 0.5


def test_export_bakes_field_and_reproduces_training_features(cfg):
  from ssl_jax import methods  # pylint: disable=g-import-not-at-top
  method = methods.get("posfield")
  full = [0.0, 0.0, 32.0, 32.0]
  batch = _batch([[full, full]] * 2, [[0, 0]] * 2, hw=(32.0, 32.0))
  batch["global_crops"] = jax.random.normal(jax.random.PRNGKey(4), (2, 2, 16, 16, 3))
  mvars = method.init(jax.random.PRNGKey(5), batch, cfg)
  # Make the teacher differ from the student: the export must read the teacher.
  state = dict(mvars.state, teacher=jax.tree.map(lambda x: x + 0.01, mvars.state["teacher"]))
  teacher = state["teacher"]
  t_mod = models.build(posfield.dino.model_config(cfg, train=False))
  gpos, _ = posfield.positions(teacher, batch, jax.random.PRNGKey(6), cfg)
  images = batch["global_crops"][:, 0]
  want = t_mod.apply({"params": teacher["encoder"]}, images, pos=gpos[:, 0])
  spec = method.encoder(cfg)
  assert spec.model["posemb"] == "learn"
  enc = models.build(spec.model)
  variables = spec.variables(mvars.params, state)
  assert "mask_token" not in variables["params"]
  got = enc.apply(variables, images)
  np.testing.assert_allclose(np.asarray(got["cls"]), np.asarray(want["cls"]), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(got["patch"]), np.asarray(want["patch"]),
                             rtol=1e-5, atol=1e-5)


def test_posfield_needs_a_vit_without_its_own_positions(cfg):
  from ssl_jax import methods  # pylint: disable=g-import-not-at-top
  bad = cfg.copy_and_resolve_references()
  bad.model["posemb"] = "learn"
  with pytest.raises(ValueError, match="posemb = 'none'"):
    methods.get("posfield").loss(None, None, None, {}, None, 0, bad)


@pytest.mark.parametrize("content_prob", [0.0, 1.0])
def test_one_sided_masking_ratio_gives_finite_loss(cfg, content_prob):
  """001 Tab. 5b's 0:100 (and 100:0) runs: one masked-patch term has no
  masked token in the batch; its Sinkhorn-Knopp targets must be zeros, not
  0 / 0 (the 0:100 suite row stopped at step 1 on NaN before the fix)."""
  from ssl_jax import methods  # pylint: disable=g-import-not-at-top
  c = cfg.copy_and_resolve_references()
  c.posfield.content_prob = content_prob
  c.dino.centering = "sinkhorn_knopp"
  method = methods.get("posfield")
  full = [0.0, 0.0, 32.0, 32.0]
  batch = _batch([[full, full]] * 2, [[0, 0]] * 2, hw=(32.0, 32.0),
                 local_boxes=[[[0.0, 0.0, 16.0, 16.0]]] * 2)
  batch["global_crops"] = jax.random.normal(jax.random.PRNGKey(4), (2, 2, 16, 16, 3))
  mvars = method.init(jax.random.PRNGKey(5), batch, c)
  loss_fn = lambda p: method.loss(p, mvars.state, None, batch, jax.random.PRNGKey(7), 0, c)[0]
  loss, grads = jax.value_and_grad(loss_fn)(mvars.params)
  assert np.isfinite(float(loss))
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
