"""Analysis metrics against closed-form cases, and the "analyze" protocol end
to end on a tiny ViT."""
import itertools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_jax import export, models
from ssl_jax import analysis
from ssl_jax.analysis import attention_maps, attention_stats, cka, photos, spatial_corr


def test_unbiased_hsic_is_the_u_statistic():
  """Song et al. (2012): HSIC_1 = mean over distinct (i, j, q, r) of
  k_ij l_ij + k_ij l_qr - 2 k_ij l_iq."""
  rng = np.random.default_rng(0)
  k, l = cka.gram(rng.normal(size=(6, 3))), cka.gram(rng.normal(size=(6, 5)))
  terms = [k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
           for i, j, q, r in itertools.permutations(range(6), 4)]
  assert cka.hsic_unbiased(k, l) == pytest.approx(np.mean(terms), rel=1e-10)
  with pytest.raises(ValueError, match="at least 4"):
    cka.hsic_unbiased(k[:3, :3], l[:3, :3])


def test_cka_invariances():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(64, 12))
  q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
  assert cka.cka(x, x) == pytest.approx(1.0)
  assert cka.cka(x, x @ q) == pytest.approx(1.0)             # orthogonal transform
  assert cka.cka(x, -3.7 * x) == pytest.approx(1.0)          # isotropic scaling
  assert cka.cka(x, x * np.geomspace(1, 100, 12)) < 0.95     # not any linear map
  assert abs(cka.cka(x, rng.normal(size=(64, 12)))) < 0.15   # independent: ~0 (unbiased)


def test_minibatch_cka_averages_hsic_over_batches():
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(40, 6)), rng.normal(size=(40, 4))
  b = b + a[:, :4]
  acc = cka.MinibatchCKA(2, 1)
  halves = [slice(0, 20), slice(20, 40)]
  for s in halves:
    acc.update([a[s], 2 * a[s]], [b[s]])
  res = acc.result()
  num = sum(cka.hsic_unbiased(cka.gram(a[s]), cka.gram(b[s])) for s in halves)
  den = np.sqrt(sum(cka.hsic_unbiased(cka.gram(a[s]), cka.gram(a[s])) for s in halves) *
                sum(cka.hsic_unbiased(cka.gram(b[s]), cka.gram(b[s])) for s in halves))
  assert res[0, 0] == pytest.approx(num / den) and res[1, 0] == pytest.approx(res[0, 0])


def test_attention_distance_entropy_closed_forms():
  g = attention_stats.patch_distances(3, 4, patch_size=16)
  assert g[0, 1] == 16 and g[0, 5] == pytest.approx(16 * np.sqrt(2))
  n = 12
  uniform = jnp.full((1, 2, n, n), 1.0 / n)
  np.testing.assert_allclose(attention_stats.attention_distance(uniform, g), g.mean(), rtol=1e-6)
  np.testing.assert_allclose(attention_stats.attention_entropy(uniform), np.log(n), rtol=1e-6)
  onehot = jnp.eye(n)[None, None]
  np.testing.assert_allclose(attention_stats.attention_entropy(onehot), 0.0, atol=1e-6)
  np.testing.assert_allclose(attention_stats.attention_distance(onehot, g), 0.0, atol=1e-6)
  to_first = jnp.zeros((1, 1, n, n)).at[..., 0].set(1.0)     # every query looks at patch 0
  np.testing.assert_allclose(attention_stats.attention_distance(to_first, g), g[:, 0].mean(),
                             rtol=1e-6)


def test_attention_nmi_closed_forms():
  rng = np.random.default_rng(3)
  n = 16
  p = rng.dirichlet(np.ones(n))
  independent = jnp.broadcast_to(jnp.asarray(p, jnp.float32), (1, 1, n, n))
  np.testing.assert_allclose(attention_stats.attention_nmi(independent), 0.0, atol=1e-5)
  np.testing.assert_allclose(attention_stats.attention_nmi(jnp.eye(n)[None, None]), 1.0, rtol=1e-5)
  # Two blocks of 8 queries each attending uniformly to their own block:
  # I = log 2, H(Q) = log 16, H(K) = log 16.
  block = np.kron(np.eye(2), np.full((8, 8), 1 / 8))
  np.testing.assert_allclose(attention_stats.attention_nmi(jnp.asarray(block)[None, None]),
                             np.log(2) / np.log(16), rtol=1e-5)


def test_patch_attention_drops_prefix_tokens_and_renormalises():
  a = jnp.asarray(np.random.default_rng(4).dirichlet(np.ones(5), size=(1, 1, 5)))
  pa = attention_stats.patch_attention(a, 4)
  assert pa.shape == (1, 1, 4, 4)
  np.testing.assert_allclose(pa.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(pa[0, 0, 0], a[0, 0, 1, 1:] / a[0, 0, 1, 1:].sum(), rtol=1e-6)


def test_spatial_correlation():
  rng = np.random.default_rng(5)
  base = rng.normal(size=(1, 1, 64))
  same = base * np.array([1.0, 2.0, 0.5])[None, :, None] + np.array([0.0, 3.0, -1.0])[None, :, None]
  np.testing.assert_allclose(spatial_corr.spatial_correlation(jnp.asarray(same)), 1.0, rtol=1e-4)
  # Hand case, 3 positions over 4 channels: corr(0,1) = -1, corr(0,2) = corr(1,2) = 0.
  f = jnp.asarray([[[1, -1, 1, -1], [-1, 1, -1, 1], [1, 1, -1, -1]]], jnp.float32)
  np.testing.assert_allclose(spatial_corr.spatial_correlation(f), (2 * 1 + 4 * 0) / 6, rtol=1e-4)
  noise = spatial_corr.spatial_correlation(jnp.asarray(rng.normal(size=(2, 16, 4096))))
  assert float(noise.max()) < 0.05


def test_photos_load():
  for name in photos.PHOTOS:
    img = photos.load(name)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[-1] == 3 and img.shape[0] > 200
  with pytest.raises(ValueError, match="Valid photos"):
    photos.load("lena")


class _Data:
  """The parts of ssl_jax.evaluate.EvalData the analysis reads."""

  def __init__(self, images):
    self.test_images = images
    self.mean, self.std = (0.5,) * 3, (0.25,) * 3


def test_analyze_protocol_writes_figures_and_numbers(tmp_path):
  cfg = dict(name="vit", variant="Ti", width=32, depth=2, num_heads=4, patch_size=8)
  module = models.build(cfg)
  images = np.random.default_rng(6).normal(size=(24, 32, 32, 3)).astype(np.float32)
  enc = export.Encoder(module, jax.jit(module.init)(jax.random.PRNGKey(0), images[:1]), cfg, {})
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.eval = dict(output_dir=str(tmp_path), analyze=dict(
      num_images=24, batch_size=12, references={}, compare_random_init=False, map_blocks=(0, -1),
      photos=("astronaut", "grace_hopper")))
  res = analysis.run(c, enc, _Data(images), None)
  assert set(res) >= {"attn_distance_last", "attn_entropy_last", "attn_nmi_last",
                      "spatial_corr", "cka_diag_vs_encoder"}
  assert res["cka_diag_vs_encoder"] == pytest.approx(1.0, abs=1e-4)   # CKA(X, X) = 1 per layer
  assert 0.0 < res["attn_entropy_last"] <= np.log(16) + 1e-4
  assert 0.0 < res["attn_distance_last"] < 8 * 3 * np.sqrt(2)        # grid 4x4, patch 8
  out = os.path.join(str(tmp_path), f"vit-{analysis.fingerprint(enc)}")
  for f in ("attention_distance.png", "attention_entropy.png", "attention_nmi.png",
            "cka_encoder_vs_encoder.png", "spatial_correlation.png",
            "attention_maps_block0.png", "attention_maps_block1.png"):
    assert os.path.getsize(os.path.join(out, f)) > 1000, f
  with open(os.path.join(out, "attention_maps.json")) as f:
    maps = json.load(f)
  m = np.asarray(maps["maps"]["1"]["cls"])
  assert m.shape == (2, 4, 4) and np.allclose(m.sum((1, 2)), 1.0, atol=1e-4)
  with open(os.path.join(out, "attention_stats.json")) as f:
    stats = json.load(f)
  assert np.asarray(stats["encoder"]["nmi"]).shape == (2, 4)              # [depth, heads]


def test_attention_map_query_index():
  assert attention_maps.query_index((0.0, 0.0), (4, 4)) == 0
  assert attention_maps.query_index((0.99, 0.99), (4, 4)) == 15
  assert attention_maps.query_index((0.5, 0.25), (4, 4)) == 9
