"""QB-Heat review fixes (issue 11): the linear extension z + dx (A z) in
float32 under bf16 compute; spectra against controls and across checkpoints."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.methods import qbheat
from ssl_jax.ops import quarter_blocks as qb

CORNER_LAYOUT = qb.Layout(centre=jnp.array([False] * 4), corner=jnp.array([0, 1, 2, 3]))


def _linear_models(dim=96, seed=0):
  """A1, B1 at the paper's init scale and the head's perturbation matrices."""
  lm = qbheat.LinearModels(dim, 2, qbheat.SCALE_STEPS["corner"])
  params = jax.jit(lm.init)(jax.random.PRNGKey(seed))["params"]
  return params, jax.jit(lm.apply)({"params": params})


def test_direction_perturbations_are_the_matrices_minus_identity():
  rng = np.random.default_rng(0)
  m = {n: rng.normal(size=(5, 5)) for n in ("A1", "B1", "A2", "B2")}
  full = qbheat.direction_matrices(m, 4, 0.25, xp=np)
  delta = qbheat.direction_matrices(m, 4, 0.25, xp=np, identity=False)
  np.testing.assert_allclose(delta + np.eye(5), full, rtol=0, atol=1e-14)


def test_bf16_features_are_extended_by_dx_a_z_in_float32():
  """bf16 projected features z: the right-hand quarter must be z + A z / 2
  (Eq. 5, corner scale) to float32 accuracy. Forming I + A/2 in bf16 (the old
  code) misses dx A z by ~2.5% (new: 3e-7), as the second half checks."""
  params, deltas = _linear_models()
  a = np.asarray(params["A1"], np.float64)
  z = jax.random.normal(jax.random.PRNGKey(1), (4, 4, 4, 96)).astype(jnp.bfloat16)
  full = jax.jit(qbheat.predict_full_map)(z, {"corner": deltas}, CORNER_LAYOUT)
  assert full.dtype == jnp.float32
  z64 = np.asarray(z.astype(jnp.float32), np.float64)
  # Sample 0's visible quarter is the top-left one: its right neighbour is +x.
  got = np.asarray(full[0, :4, 4:], np.float64) - z64[0]
  want = 0.5 * z64[0] @ a.T                                     # dx A z, dx = 1/2
  rel = np.linalg.norm(got - want) / np.linalg.norm(want)
  assert rel < 1e-5, rel
  # The old path: matrices cast to the compute dtype before the product.
  eye_plus = (jnp.eye(96) + deltas[5]).astype(jnp.bfloat16)      # DIRECTIONS[5] = (0, +1)
  assert qb.DIRECTIONS[5] == (0, 1)
  old = np.asarray(jnp.einsum("hwc,dc->hwd", z[0], eye_plus).astype(jnp.float32), np.float64)
  old_rel = np.linalg.norm(old - z64[0] - want) / np.linalg.norm(want)
  assert old_rel > 50 * rel and old_rel > 5e-3, old_rel



# ---------------------------------------------------------------- spectra

from ssl_jax.analysis import qbheat_spectra  # noqa: E402  pylint: disable=g-import-not-at-top


def test_random_control_is_mostly_complex_full_rank_ratio_one():
  """The point of the control: an untrained 96 x 96 matrix already looks
  like the paper's observation (complex eigenvalues, full rank)."""
  c = qbheat_spectra.random_control(96, draws=4)
  assert 0.85 < c["complex_fraction"][0] < 0.96
  assert c["rank"] == (96.0, 0.0)
  assert abs(c["energy_ratio"][0] - 1.0) < 0.05


def test_controls_separate_structured_from_random_matrices():
  rng = np.random.default_rng(0)
  g = rng.normal(size=(32, 32))
  sym = g + g.T                                    # real spectrum
  params = {"head": {"linear_corner": {"A1": sym, "B1": 0.5 * g}}}
  control = qbheat_spectra.random_control(32, draws=4)
  out = qbheat_spectra.against_controls(params, control, draws=16)
  assert out["A_corner/complex_fraction"] == 0.0 and out["A_corner/complex_fraction_z"] < -4
  assert abs(out["B_corner/complex_fraction_z"]) < 4
  assert out["B_corner/energy_vs_random"] == pytest.approx(1.0, abs=0.15)   # unstructured
  eye = {"head": {"linear_corner": {"A1": 3.0 * np.eye(32), "B1": g}}}
  out = qbheat_spectra.against_controls(eye, control, draws=16)
  assert out["A_corner/energy_vs_random"] > 1.3       # all energy in the spectrum
  assert out["frobenius_ratio_corner"] == pytest.approx(
      np.linalg.norm(3.0 * np.eye(32)) / np.linalg.norm(g))


def test_report_over_checkpoints_writes_trend_json_and_png(tmp_path):
  """Three checkpoints with A_t = (1 + t) X, B = Y: the energy ratio's trend
  is exactly (1 + t) E(X) / E(Y)."""
  import json  # pylint: disable=g-import-not-at-top
  from ssl_jax.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  x, y = (rng.normal(0, 0.02, (16, 16)).astype(np.float32) for _ in range(2))
  ckpt = Checkpointer(str(tmp_path / "run"), keep=5)
  for t in (0, 10, 20):
    lm = {"A1": (1 + t) * x, "B1": y}
    ckpt.save(t, {"params": {"head": {"linear_corner": lm, "linear_centre": lm}}}, {"pos": t})
  ckpt.close()
  res = qbheat_spectra.report(str(tmp_path / "run"), str(tmp_path / "out"), draws=2)
  ex = qbheat_spectra.energy(np.linalg.eigvals(x.astype(np.float64)))
  ey = qbheat_spectra.energy(np.linalg.eigvals(y.astype(np.float64)))
  assert res["steps"] == [0, 10, 20]
  np.testing.assert_allclose(res["trend"]["energy_ratio_corner"],
                             [(1 + t) * ex / ey for t in (0, 10, 20)], rtol=1e-4)
  with open(tmp_path / "out" / "qbheat_spectra.json") as f:
    saved = json.load(f)
  assert set(saved["per_step"]) == {"0", "10", "20"}
  assert saved["control"]["rank"][0] == 16.0
  for name in ("qbheat_spectra.png", "qbheat_fig7.png"):
    assert (tmp_path / "out" / name).stat().st_size > 5000


def test_bf16_qbheat_loss_traces_with_a_float32_full_map():
  """The whole head under compute_dtype=bfloat16 (traced only): the float32
  extension feeds the bf16 decoder without dtype errors."""
  from ssl_jax import config_defaults  # pylint: disable=g-import-not-at-top
  c = config_defaults.base_config()
  c.method, c.compute_dtype = "qbheat", "bfloat16"
  c.model = dict(name="mobile_former", variant="tiny", depth=2)
  c.qbheat = dict(position="mixed", num_explicit=2, predictor_dim=16,
                  decoder=dict(depth=1, num_heads=2), norm_pix_loss=True)
  batch = {"image": jnp.zeros((4, 32, 32, 3))}
  v = jax.eval_shape(lambda b: qbheat.init(jax.random.PRNGKey(0), b, c), batch)
  assert v.params["head"]["linear_corner"]["A1"].dtype == jnp.float32
  loss, _ = jax.eval_shape(lambda p, s, b: qbheat.loss(p, s, {}, b, jax.random.PRNGKey(1), 0, c),
                           v.params, v.state, batch)
  assert loss.dtype == jnp.float32 and loss.shape == ()
