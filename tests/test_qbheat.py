"""QB-Heat: quarter blocks, linear prediction (Eq. 5, 9, 12), loss, spectra."""
import itertools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_jax import config_defaults, models
from ssl_jax.analysis import qbheat_spectra
from ssl_jax.methods import qbheat
from ssl_jax.ops import quarter_blocks as qb

ALL_LAYOUTS = qb.Layout(centre=jnp.array([False] * 4 + [True]), corner=jnp.array([0, 1, 2, 3, 0]))


def _config(position="mixed", num_explicit=2):
  c = config_defaults.base_config()
  c.method = "qbheat"
  # Tiny Mobile-Former cut to bneck-lite + M-F-down (a stride-1 M-F block adds
  # only compile time): 16x16 quarter -> 4x4 map, 8x8 full map of 4x4-pixel cells.
  c.model = dict(name="mobile_former", variant="tiny", depth=2)
  c.qbheat = ml_collections.ConfigDict(dict(
      position=position, num_explicit=num_explicit, predictor_dim=16,
      decoder=dict(depth=1, num_heads=2), norm_pix_loss=True))
  return c


def _shifted_quarters(x, layout):
  """The visible quarter translated by each direction, cut from the image:
  what a perfect predictor would output (test oracle)."""
  h = x.shape[1]
  top, left = qb.origin_cells(layout)
  step = jnp.where(layout.centre, h // 4, h // 2)
  return jnp.stack([qb.crop(x, top * (h // 4) + dy * step, left * (h // 4) + dx * step,
                            (h // 2, h // 2)) for dy, dx in qb.DIRECTIONS], 1)


def test_quarter_extraction_and_reassembly_are_inverse():
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 16, 16, 3))
  shifted, full, quarters = jax.jit(lambda x: (
      _shifted_quarters(x, ALL_LAYOUTS),
      qb.assemble(_shifted_quarters(x, ALL_LAYOUTS), ALL_LAYOUTS),
      qb.crop_quarters(x, ALL_LAYOUTS)))(x)
  np.testing.assert_array_equal(np.asarray(full), np.asarray(x))
  # The identity direction is exactly the encoder's input.
  np.testing.assert_array_equal(np.asarray(shifted[:, qb.IDENTITY]), np.asarray(quarters))
  for i, (top, left) in enumerate([(0, 0), (0, 8), (8, 0), (8, 8), (4, 4)]):
    np.testing.assert_array_equal(np.asarray(quarters[i]),
                                  np.asarray(x[i, top:top + 8, left:left + 8]))


def test_masked_grid_marks_three_quarters():
  mask = np.asarray(qb.masked_grid(ALL_LAYOUTS, 8, 8)).reshape(5, 8, 8)
  assert (mask.sum(axis=(1, 2)) == 48).all()
  for i, (top, left) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]):
    assert (mask[i, top:top + 4, left:left + 4] == 0).all()


def test_mixed_layout_is_half_corner_half_centre():
  lay = qb.sample_layout(jax.random.PRNGKey(0), 8, "mixed")
  np.testing.assert_array_equal(np.asarray(lay.centre), [False] * 4 + [True] * 4)
  with pytest.raises(ValueError, match="Valid choices"):
    qb.sample_layout(jax.random.PRNGKey(0), 8, "middle")


def _direct(a1, b1, a2, b2, cs, s, num_explicit):
  """Eq. 5 / 9 / 10-12 written out directly (numpy)."""
  eye = np.eye(a1.shape[0])
  if num_explicit == 2:
    a2, b2 = -a1, -b1                                    # Eq. 9
  a, b = {1: a1, -1: a2}, {1: b1, -1: b2}
  out = {}
  for dy, dx in qb.DIRECTIONS:
    if (dy, dx) == (0, 0):
      out[dy, dx] = eye
    elif dy == 0:
      out[dy, dx] = eye + s * a[dx]
    elif dx == 0:
      out[dy, dx] = eye + s * b[dy]
    elif num_explicit == 8:
      out[dy, dx] = eye + np.sqrt(2) * s * cs[dx, dy]
    else:   # average of horizontal-then-vertical and vertical-then-horizontal
      h, v = eye + s * a[dx], eye + s * b[dy]
      out[dy, dx] = (h @ v + v @ h) / 2
  return out


@pytest.mark.parametrize("num_explicit", [2, 4, 8])
def test_direction_matrices_match_eq5_eq9_eq12(num_explicit):
  rng = np.random.default_rng(num_explicit)
  d, s = 6, 0.25
  m = {n: rng.normal(size=(d, d)) for n in ("A1", "B1", "A2", "B2", "C11", "C12", "C21", "C22")}
  cs = {(1, 1): m["C11"], (1, -1): m["C12"], (-1, 1): m["C21"], (-1, -1): m["C22"]}
  got = qbheat.direction_matrices(m, num_explicit, s, xp=np)
  want = _direct(m["A1"], m["B1"], m["A2"], m["B2"], cs, s, num_explicit)
  for k, dirn in enumerate(qb.DIRECTIONS):
    np.testing.assert_allclose(got[k], want[dirn], rtol=1e-12, atol=1e-12)


def test_full_map_prediction_is_eq5_per_quarter():
  """Corner: the right/lower/diagonal quarters are (I + A/2) z, (I + B/2) z, ...
  of the visible quarter; centre: each sub-block's outer neighbours at 1/4."""
  rng = np.random.default_rng(0)
  d = 4
  mats_np = {s: {n: rng.normal(size=(d, d)) * 0.3 for n in ("A1", "B1")}
             for s in qbheat.SCALE_STEPS}
  mats = {s: qbheat.direction_matrices({k: jnp.asarray(v, jnp.float32) for k, v in m.items()}, 2,
                                       qbheat.SCALE_STEPS[s], identity=False)
          for s, m in mats_np.items()}
  z = rng.normal(size=(5, 4, 4, d)).astype(np.float32)
  full = np.asarray(qbheat.predict_full_map(jnp.asarray(z), mats, ALL_LAYOUTS))
  apply = lambda m, v: v @ m.T
  for i, (qy, qx) in enumerate(qb.CORNERS):       # corner samples, 1/2 scale
    want = _direct(mats_np["corner"]["A1"], mats_np["corner"]["B1"], None, None, None, 0.5, 2)
    for py, px in itertools.product((0, 1), (0, 1)):
      got = full[i, 4 * py:4 * py + 4, 4 * px:4 * px + 4]
      np.testing.assert_allclose(got, apply(want[py - qy, px - qx], z[i]), rtol=1e-4, atol=1e-5)
  want = _direct(mats_np["centre"]["A1"], mats_np["centre"]["B1"], None, None, None, 0.25, 2)
  for r, c in itertools.product(range(4), range(4)):   # centre sample, 2x2 sub-blocks of z
    sr, sc = min(max(r - 1, 0), 1), min(max(c - 1, 0), 1)
    src = z[4, 2 * sr:2 * sr + 2, 2 * sc:2 * sc + 2]
    got = full[4, 2 * r:2 * r + 2, 2 * c:2 * c + 2]
    np.testing.assert_allclose(got, apply(want[r - 1 - sr, c - 1 - sc], src), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_run():
  config = _config()
  images = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
  mvars = jax.jit(lambda r, b: qbheat.init(r, b, config))(jax.random.PRNGKey(1), {"image": images})
  return config, images, mvars


def test_only_the_visible_quarter_reaches_the_encoder(tiny_run):
  """With a fixed layout (fixed rng) the whole reconstruction, hence the
  loss's prediction, is unchanged when masked pixels change, and it has zero
  gradient with respect to them. (The loss itself does change: its targets
  are the masked pixels.) Train mode: BN statistics see the quarters only."""
  config, images, mvars = tiny_run
  layout = qb.sample_layout(jax.random.PRNGKey(4), 4, "mixed")

  @jax.jit
  def probe(im):
    recon = lambda x: qbheat.reconstruct(mvars.params, mvars.state, x, layout, config,
                                         train=True)[0]
    pred, vjp = jax.vjp(recon, im)
    return pred, vjp(jnp.ones_like(pred))[0]

  pixel_mask = np.asarray(qb.masked_grid(layout, 32, 32)).reshape(4, 32, 32, 1)
  noise = jax.random.normal(jax.random.PRNGKey(3), images.shape) * 5.0
  changed = images + noise * pixel_mask                 # only masked pixels differ
  pred_a, grad = probe(images)
  pred_b, _ = probe(changed)
  np.testing.assert_array_equal(np.asarray(pred_a), np.asarray(pred_b))
  assert np.abs(np.asarray(grad) * pixel_mask).max() == 0.0
  assert np.abs(np.asarray(grad) * (1 - pixel_mask)).max() > 0.0


def test_jitted_value_and_grad(tiny_run):
  config, images, mvars = tiny_run

  @jax.jit
  def step(params, state, batch, rng):
    return jax.value_and_grad(
        lambda p: qbheat.loss(p, state, {}, batch, rng, 0, config), has_aux=True)(params)

  (l, (_, new_state)), grads = step(mvars.params, mvars.state, {"image": images},
                                    jax.random.PRNGKey(5))
  assert np.isfinite(float(l)) and float(l) > 0
  chex.assert_trees_all_equal_structs(grads, mvars.params)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  for s in ("corner", "centre"):           # both scales learn in a mixed batch
    assert np.abs(np.asarray(grads["head"][f"linear_{s}"]["A1"])).max() > 0
  enc = grads["encoder"]
  # Mobile-Former wiring: gradients reach the global tokens (Mobile->Former),
  # Former->Mobile and the token-driven dynamic ReLU.
  assert np.abs(np.asarray(enc["tokens"])).max() > 0
  assert np.abs(np.asarray(enc["block1"]["former_to_mobile"]["k"]["kernel"])).max() > 0
  assert np.abs(np.asarray(enc["block1"]["act1"]["fc2"]["kernel"])).max() > 0
  for name in ("stem_bn", "out_bn"):      # BN statistics of the quarters come back as state
    assert not np.allclose(np.asarray(new_state["batch_stats"][name]["mean"]),
                           np.asarray(mvars.state["batch_stats"][name]["mean"]))
  # The export is the CNN alone, applicable to whole images.
  spec = qbheat.encoder(config)
  variables = spec.variables(mvars.params, mvars.state)
  assert set(variables) == {"params", "batch_stats"}
  assert "head" not in variables["params"]
  out = jax.eval_shape(models.build(spec.model).apply, variables, images)
  assert out["feature_map"].shape == (4, 8, 8, 192)


@pytest.mark.parametrize("position,num_explicit,scales,names", [
    ("corner", 4, ["corner"], ["A1", "A2", "B1", "B2"]),
    ("centre", 8, ["centre"], ["A1", "A2", "B1", "B2", "C11", "C12", "C21", "C22"]),
])
def test_head_parameters_follow_position_and_models(position, num_explicit, scales, names):
  config = _config(position, num_explicit)
  batch = {"image": jnp.zeros((2, 32, 32, 3))}
  shapes = jax.eval_shape(lambda: qbheat.init(jax.random.PRNGKey(0), batch, config)).params
  linear = sorted(k for k in shapes["head"] if k.startswith("linear_"))
  assert linear == [f"linear_{s}" for s in scales]
  assert sorted(shapes["head"][f"linear_{scales[0]}"]) == names
  assert shapes["head"]["pred"]["kernel"].shape == (16, 4 * 4 * 3)   # 32 / (2 * 4) = 4 px cells


def test_bad_image_size_is_reported():
  with pytest.raises(ValueError, match="multiple of 4"):
    qb.crop_quarters(jnp.zeros((1, 30, 30, 3)), ALL_LAYOUTS)


def test_spectra_numbers_and_plot(tmp_path):
  a = np.diag([1.0, 2.0, 3.0])
  rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])   # eigenvalues +-i, 2
  params = {"head": {"linear_corner": {"A1": 2 * a, "B1": rot},
                     "linear_centre": {"A1": a, "B1": rot}}}
  out = qbheat_spectra.spectra(params)
  assert out["A_corner/energy"] == pytest.approx(12.0)
  assert out["B_centre/energy"] == pytest.approx(4.0)
  assert out["energy_ratio_centre"] == pytest.approx(6.0 / 4.0)         # Eq. 6-7
  assert out["energy_ratio_corner"] == pytest.approx(12.0 / 4.0)
  assert out["B_centre/complex_fraction"] == pytest.approx(2 / 3)
  assert out["A/normalized_spectrum_max_gap"] == pytest.approx(0.0, abs=1e-12)  # same shape
  assert out["A_centre/rank"] == 3.0
  path = qbheat_spectra.plot_spectra(params, str(tmp_path / "fig7.png"))
  assert (tmp_path / "fig7.png").stat().st_size > 1000 and path.endswith(".png")
  with pytest.raises(ValueError, match="linear_"):
    qbheat_spectra.spectra({"head": {}})
