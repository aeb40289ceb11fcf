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
  params = lm.init(jax.random.PRNGKey(seed))["params"]
  return params, lm.apply({"params": params})


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
  full = qbheat.predict_full_map(z, {"corner": deltas}, CORNER_LAYOUT)
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

