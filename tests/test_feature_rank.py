"""evaluate/feature_rank.py against hand-made feature matrices and a direct
numpy reading of RankMe (Garrido et al. 2023, Eq. 1)."""
import numpy as np

from ssl_jax.evaluate import feature_rank


def test_rankme_matches_definition_and_limits():
  rng = np.random.default_rng(0)
  f = rng.normal(size=(500, 16)) * np.linspace(1, 3, 16)
  s = np.linalg.svd(f, compute_uv=False)
  p = s / s.sum() + 1e-7
  np.testing.assert_allclose(feature_rank.rankme(f), np.exp(-(p * np.log(p)).sum()), rtol=1e-9)
  # One direction: rank 1; isotropic: close to the dimension; k equal directions: k.
  line = np.outer(rng.normal(size=500), rng.normal(size=16))
  assert abs(feature_rank.rankme(line) - 1.0) < 1e-3
  assert feature_rank.rankme(rng.normal(size=(4000, 16))) > 15.0
  q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
  four = np.zeros((400, 16))
  four[np.arange(400), np.arange(400) % 4] = 1.0
  np.testing.assert_allclose(feature_rank.rankme(four @ q), 4.0, rtol=1e-4)


def test_top_pc_share_and_mean_cos():
  rng = np.random.default_rng(1)
  f = rng.normal(size=(300, 8)) * np.array([10.0] + [1.0] * 7)
  c = f - f.mean(0)
  lam = np.linalg.eigvalsh(c.T @ c)
  np.testing.assert_allclose(feature_rank.top_pc_share(f), lam[-1] / lam.sum(), rtol=1e-9)
  u = f / np.linalg.norm(f, axis=1, keepdims=True)
  g = u @ u.T
  np.testing.assert_allclose(feature_rank.mean_cos(f), g[~np.eye(300, dtype=bool)].mean(),
                             rtol=1e-9)
  # Every image the same vector (plus a whisper): cosine 1, one dominant direction.
  same = np.ones((50, 8)) + 1e-6 * rng.normal(size=(50, 8))
  assert feature_rank.mean_cos(same) > 0.999
  assert feature_rank.rankme(same) < 1.01
