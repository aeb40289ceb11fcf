"""SemanticMIM: stream separation, proxies as the only path, export, loss, devices."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import export, methods, models
from ssl_jax.methods import mim
from ssl_jax.methods import semanticmim as smim
from ssl_jax.models import proxy_mim
from ssl_jax.ops import mim_masks
from tests.conftest import config_module
from tests.test_mim_baselines import _patchify, one_vs_eight_devices

K, M = 3, 10
IMAGES = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
MODEL = proxy_mim.ProxyMIM(width=32, depth=2, num_heads=4, patch_size=4, num_prefix=K)


def _indices(seed=0):
  mask = mim_masks.random_mask(jax.random.PRNGKey(seed), 2, 16, M / 16)
  return mim_masks.split_indices(mask, M)


@functools.lru_cache()
def _vars():
  vis, msk = _indices()
  return jax.jit(MODEL.init)(jax.random.PRNGKey(1), IMAGES, vis, msk)


@functools.lru_cache()
def _apply():
  return jax.jit(MODEL.apply, static_argnames=("return_attn", "zero_proxies", "train"))


def _run(images=IMAGES, variables=None, **kw):
  vis, msk = _indices()
  return _apply()(variables or _vars(), images, vis, msk, **kw)


def test_attention_maps_never_join_image_and_mask_tokens():
  out = _run(return_attn=True)
  for a in out["image"]["attn"]:                 # queries/keys: [K proxies, 6 visible patches]
    assert a.shape == (2, 4, K + 6, K + 6)
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
  for a in out["cross_attn"]:                    # queries: M masks; keys: [K proxies, M masks]
    assert a.shape == (2, 4, M, K + M)
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
    assert (a[..., :K].sum(-1) > 1e-3).all()     # every mask query reads the proxies
  # The joint map over [proxies, image, mask]: blocks image<->mask are empty by
  # construction, so all attention mass lies on allowed keys (rows sum to 1 above).


def test_proxies_are_the_only_path_from_image_to_mask_tokens():
  base = _run()
  cut = _run(zero_proxies=True)
  # Zeroing the proxies changes mask-token outputs but not image-token outputs.
  for hb, hc in zip(base["image"]["hidden"], cut["image"]["hidden"]):
    np.testing.assert_array_equal(hb, hc)
  assert np.abs(base["mask"] - cut["mask"]).max() > 1e-3
  # Visible pixels reach the mask tokens only through the proxies ...
  vis, _ = _indices()
  other = IMAGES.copy()
  other += np.random.default_rng(1).normal(size=other.shape).astype(np.float32)
  assert np.abs(_run(other)["mask"] - base["mask"]).max() > 1e-3
  np.testing.assert_allclose(_run(other, zero_proxies=True)["mask"], cut["mask"], atol=1e-6)
  # ... and mask tokens never reach the image stream.
  v = jax.tree.map(np.array, _vars())
  v["params"]["mask_token"] = v["params"]["mask_token"] + np.linspace(-1, 1, 32)
  changed = _run(variables=v)
  np.testing.assert_array_equal(changed["image"]["tokens"], base["image"]["tokens"])
  assert np.abs(changed["mask"] - base["mask"]).max() > 1e-3


def test_drop_path_acts_on_both_streams():
  model = proxy_mim.ProxyMIM(width=32, depth=2, num_heads=4, patch_size=4, num_prefix=K,
                             drop_path=0.9)
  vis, msk = _indices()
  f = jax.jit(lambda r: model.apply(_vars(), IMAGES, vis, msk, train=True, rngs={"dropout": r}))
  a, b = f(jax.random.PRNGKey(0)), f(jax.random.PRNGKey(1))
  assert np.abs(a["image"]["tokens"] - b["image"]["tokens"]).max() > 1e-4
  assert np.abs(a["mask"] - b["mask"]).max() > 1e-4


@pytest.fixture(scope="module")
def semanticmim_setup():
  config = config_module("semanticmim.py").get_config("tiny,pixel")
  method = methods.get("semanticmim")
  images = np.random.default_rng(2).normal(size=(8, 16, 16, 3)).astype(np.float32)
  return config, method, method.init(jax.random.PRNGKey(0), {"image": images[:2]}, config)


def test_export_drops_cross_stream_and_reproduces_image_features(semanticmim_setup, tmp_path):
  config, method, mvars = semanticmim_setup
  spec = method.encoder(config)
  variables = spec.variables(mvars.params, mvars.state)
  path = export.save(str(tmp_path / "export"), spec.model, variables)
  enc = export.load(path)
  names = set(enc.variables["params"])
  assert not any(n.startswith("cross") for n in names) and "mask_norm" not in names
  assert enc.variables["params"]["proxy_tokens"].shape == (1, config.model.num_prefix - 1, 32)
  assert set(mvars.params["model"]) == {"encoder", "cross0", "mask_token", "mask_norm"}
  assert set(mvars.params["model"]["encoder"]) == names
  model = smim.build_model(config)
  vis, msk = _indices()
  train_time = jax.jit(model.apply)({"params": mvars.params["model"]}, IMAGES, vis, msk)
  exported = jax.jit(lambda v, x, k: enc.module.apply(v, x, keep_idx=k))(enc.variables, IMAGES, vis)
  np.testing.assert_allclose(exported["tokens"], train_time["image"]["tokens"], atol=1e-6)
  assert isinstance(enc.module, type(models.build(spec.model)))


def test_loss_is_the_wrapped_target_on_mask_tokens_only(semanticmim_setup):
  config, method, mvars = semanticmim_setup          # target "pixel": SimMIM's l1
  images = np.random.default_rng(3).normal(size=(8, 16, 16, 3)).astype(np.float32)
  rng = jax.random.PRNGKey(7)
  l = jax.jit(lambda p, b: method.loss(p, {}, mvars.constants, b, rng, 0, config)[0])(
      mvars.params, {"image": images})
  model = smim.build_model(config)
  head = mim.Head(48)

  @jax.jit
  def forward(params):
    r_mask, _ = jax.random.split(rng)
    vis, msk = smim._split(r_mask, images, config)  # pylint: disable=protected-access
    out = model.apply({"params": params["model"]}, images, vis, msk)
    return msk, head.apply({"params": params["head"]}, out["mask"])
  msk, pred = forward(mvars.params)
  assert msk.shape == (8, round(16 * 0.6))             # ratio 0.6 (003 Sec. 4.1)
  target = np.take_along_axis(_patchify(images, 4), np.asarray(msk)[..., None], 1)
  np.testing.assert_allclose(float(l), np.abs(np.asarray(pred, np.float64) - target).mean(),
                             rtol=2e-5)


def test_one_vs_eight_devices_same_loss(semanticmim_setup):
  assert len(jax.devices()) == 8, "conftest must simulate 8 CPU devices"
  one_vs_eight_devices(semanticmim_setup)


def test_app_c_formula_reproduces_the_papers_deltas():
  from bench import semanticmim_flops  # pylint: disable=g-import-not-at-top
  train = semanticmim_flops.paper_delta(768, l0=78, l1=8, l2=118)
  infer = semanticmim_flops.paper_delta(768, l0=196, l1=8, l2=0)
  assert round(100 * train, 1) == -2.8 and round(100 * infer, 1) == 3.7
  # Eq. 4's key/value projections over all L1 + L2 tokens, counted in full.
  assert round(100 * semanticmim_flops.counted_delta(768, 78, 8, 118), 1) == 2.3


def test_proxy_exclusivity_maps_and_score(tmp_path):
  from ssl_jax.analysis import proxy_exclusivity as pe  # pylint: disable=g-import-not-at-top
  eye = np.eye(4).reshape(4, 2, 2)
  assert pe.mean_pairwise_cosine(eye) == 0.0                      # disjoint regions
  assert pe.mean_pairwise_cosine(np.ones((3, 2, 2))) == pytest.approx(1.0)
  variables = {"params": _vars()["params"]["encoder"]}
  enc = export.Encoder(models.build(dict(MODEL.vit_config())), variables, {}, {})
  res = pe.exclusivity(enc, [IMAGES[:1], IMAGES[1:]], block=1)
  assert res["maps"].shape == (K, 4, 4)
  out = enc.module.apply(variables, IMAGES, return_attn=True)
  a = np.asarray(out["attn"][1], np.float64)[:, :, :K, K:]
  want = (a / a.sum(-1, keepdims=True)).mean((0, 1)).reshape(K, 4, 4)
  np.testing.assert_allclose(res["maps"], want, atol=1e-6)
  assert res["mean_pairwise_cosine"] == pytest.approx(pe.mean_pairwise_cosine(want))
  files = pe.save(res, str(tmp_path))
  assert os.path.getsize(files["png"]) > 0
