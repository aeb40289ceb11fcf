"""CKA (issue 11 review fix): a self-HSIC that is zero or round-off negative
at small batch gives NaN with a warning, never a huge similarity."""
import itertools
import warnings

import numpy as np
import pytest

from ssl_jax.analysis import cka


def _expanded_hsic(k, l):
  """Song et al. (2012) Eq. 5 written out, on exact (centred) inputs."""
  n = len(k)
  k, l = k.copy(), l.copy()
  np.fill_diagonal(k, 0)
  np.fill_diagonal(l, 0)
  one = np.ones(n)
  return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
          - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))


def test_u_centred_hsic_equals_the_expanded_formula():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 5))
  k, l = x @ x.T, y @ y.T                    # uncentred on purpose
  assert cka.hsic_unbiased(k, l) == pytest.approx(_expanded_hsic(k, l), rel=1e-10)
  # Centring the features first changes no HSIC (U-centring removes offsets).
  assert cka.hsic_unbiased(cka.gram(x), cka.gram(y)) == pytest.approx(_expanded_hsic(k, l),
                                                                       rel=1e-10)


def test_three_equal_examples_in_a_batch_of_four_give_nan_not_a_huge_cka():
  """n = 4 with three identical representations: the unbiased self-HSIC is 0
  (the old code divided round-off by 1e-150 and returned -4.4e134)."""
  x = np.array([[0.3, 1.1], [1.7, -0.4], [0.3, 1.1], [0.3, 1.1]])
  y = np.random.default_rng(0).normal(size=(4, 3))
  assert cka.hsic_unbiased(cka.gram(x), cka.gram(x)) == 0.0
  acc = cka.MinibatchCKA(2, 1)
  acc.update([x, y], [y])
  with pytest.warns(RuntimeWarning, match="self-HSIC is not positive for layers \\[0\\]"):
    res = acc.result()
  assert np.isnan(res[0, 0]) and res[1, 0] == pytest.approx(1.0)
  with pytest.warns(RuntimeWarning, match="CKA undefined"):
    assert np.isnan(cka.cka(np.ones((6, 4)), y[:1].repeat(6, 0) + np.arange(6)[:, None]))


def test_large_feature_offset_gives_the_offset_free_value():
  """Tokens with a shared offset of 1e5: the old expanded formula's self-HSIC
  was -1.3e7 (true: ~28) and CKA 1.3e157; now it is the offset-free value."""
  rng = np.random.default_rng(0)
  x = 1e5 + rng.normal(size=(8, 16))
  y = x + 0.5 * rng.normal(size=(8, 16))
  acc = cka.MinibatchCKA(1, 1)
  acc.update([x], [y])
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    res = acc.result()[0, 0]
  xc, yc = x - 1e5, y - 1e5
  want = _expanded_hsic(xc @ xc.T, yc @ yc.T) / np.sqrt(
      _expanded_hsic(xc @ xc.T, xc @ xc.T) * _expanded_hsic(yc @ yc.T, yc @ yc.T))
  assert res == pytest.approx(want, rel=1e-6) and 0.0 < res <= 1.0


def test_self_hsic_is_never_negative():
  """A sum of squares of the U-centred Gram: non-negative for any batch."""
  rng = np.random.default_rng(3)
  for n, d in itertools.product((4, 5, 8), (1, 3)):
    for _ in range(20):
      x = rng.normal(size=(n, d)) * rng.exponential(size=(n, 1)) + 1e4 * rng.normal()
      assert cka.hsic_unbiased(cka.gram(x), cka.gram(x)) >= 0.0
