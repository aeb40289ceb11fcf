"""Block-wise masks: exact counts, per-image ratios, and block shape (masked
patches have masked neighbours far more often than a random mask)."""
import jax
import numpy as np

from ssl_jax.ops import block_mask as bm


def _neighbour_rate(m):
  """Fraction of masked patches with a masked 4-neighbour."""
  hits = 0
  for (i, j) in zip(*np.nonzero(m)):
    nb = [(i + a, j + b) for a, b in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    hits += any(0 <= p < m.shape[0] and 0 <= q < m.shape[1] and m[p, q] for p, q in nb)
  return hits / max(1, m.sum())


def test_exact_count_and_blocky():
  m = np.asarray(bm.block_mask(jax.random.PRNGKey(0), 64, (14, 14), 0.4, min_block=16))
  assert m.shape == (64, 196)
  np.testing.assert_array_equal(m.sum(1), round(0.4 * 196))
  blocky = np.mean([_neighbour_rate(r.reshape(14, 14)) for r in m])
  rng = np.random.default_rng(0)
  rand = np.zeros((64, 196))
  for r in rand:
    r[rng.choice(196, 78, replace=False)] = 1
  random_rate = np.mean([_neighbour_rate(r.reshape(14, 14)) for r in rand])
  assert blocky > random_rate + 0.1, (blocky, random_rate)


def test_per_image_ratio_counts():
  m, ratios = bm.block_mask_per_image_ratio(jax.random.PRNGKey(1), 32, (8, 8), (0.1, 0.5))
  m, ratios = np.asarray(m), np.asarray(ratios)
  assert ((ratios >= 0.1) & (ratios <= 0.5)).all()
  np.testing.assert_array_equal(m.sum(1), np.round(ratios * 64))
  assert len(set(m.sum(1).tolist())) > 3   # ratios really differ per image


def test_bad_ratio_names_range():
  import pytest
  with pytest.raises(ValueError, match="ratio"):
    bm.block_mask(jax.random.PRNGKey(0), 2, (4, 4), 1.0)
