"""ViT with K prefix tokens (CLS + proxies / registers) and the mask-token input:
timm `reg_tokens` layout, feature selection, export round trips."""
import jax
import numpy as np
import pytest

from ssl_jax import export, models
from ssl_jax.evaluate import features
from ssl_jax.interop import timm_vit
from tests.test_interop import timm_forward

CFG = dict(name="vit", variant="Ti", width=32, depth=2, num_heads=4, patch_size=4, num_prefix=3)
IMAGES = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def enc():
  module = models.build(CFG)
  mask = np.zeros((1, 16), np.float32)
  variables = jax.tree.map(np.asarray, module.init(jax.random.PRNGKey(1), IMAGES[:1], mask=mask))
  return export.Encoder(module, variables, CFG, {"image_size": 16})


@pytest.fixture(scope="module")
def apply(enc):
  return jax.jit(lambda v, x, **kw: enc.module.apply(v, x, **kw), static_argnames=("return_hidden",))


def test_prefix_shapes_and_params(enc, apply):
  p = enc.variables["params"]
  assert p["cls_token"].shape == (1, 1, 32) and p["proxy_tokens"].shape == (1, 2, 32)
  out = apply(enc.variables, IMAGES)
  assert out["tokens"].shape == (2, 3 + 16, 32)
  assert out["prefix"].shape == (2, 3, 32) and out["patch"].shape == (2, 16, 32)
  np.testing.assert_array_equal(out["cls"], out["tokens"][:, 0])
  np.testing.assert_array_equal(out["patch"], out["tokens"][:, 3:])
  with pytest.raises(ValueError, match="num_prefix"):
    models.build(dict(CFG, num_prefix=0)).init(jax.random.PRNGKey(0), IMAGES[:1])


def test_timm_reg_tokens_layout_matches_reference_forward(enc, apply):
  sd = timm_vit.to_timm(enc.variables["params"], enc.model_cfg, (4, 4))
  assert sd["reg_tokens"].shape == (1, 2, 32)
  assert sd["pos_embed"].shape == (1, 3 + 16, 32)          # timm: K prefix slots, zero here
  np.testing.assert_array_equal(sd["pos_embed"][0, :3], 0.0)
  np.testing.assert_allclose(timm_forward(sd, IMAGES, 4), apply(enc.variables, IMAGES)["tokens"],
                             atol=2e-5)
  # A timm model with learned prefix slots, and one without prefix slots
  # (no_embed_class, DINOv2-reg style): both import to the same features.
  sd_slots = dict(sd, pos_embed=sd["pos_embed"].copy())
  sd_slots["pos_embed"][0, :3] = np.linspace(-1, 1, 3 * 32).reshape(3, 32)
  sd_noslot = dict(sd, pos_embed=sd["pos_embed"][:, 3:])
  for state in (sd_slots, sd_noslot):
    cfg, variables, _ = timm_vit.from_timm(state, num_heads=4)
    assert cfg["num_prefix"] == 3
    got = models.build(cfg).apply(variables, IMAGES)["tokens"]
    np.testing.assert_allclose(got, timm_forward(state, IMAGES, 4), atol=2e-5)


def test_safetensors_round_trip_keeps_prefix_tokens(enc, apply, tmp_path):
  path = timm_vit.export_encoder(enc, str(tmp_path))
  back = timm_vit.encoder_from_checkpoint(path)
  assert back.model_cfg["num_prefix"] == 3
  want = apply(enc.variables, IMAGES)["tokens"]
  for name in ("cls_token", "proxy_tokens"):
    np.testing.assert_array_equal(back.variables["params"][name], enc.variables["params"][name])
  np.testing.assert_allclose(apply(back.variables, IMAGES)["tokens"], want, atol=1e-6)


@pytest.mark.parametrize("block", [-1, 0])
def test_feature_selection_with_k_prefix_tokens(enc, apply, block):
  out = apply(enc.variables, IMAGES, return_hidden=True)
  tokens = out["tokens"] if block == -1 else out["hidden"][block]
  want = {"cls": tokens[:, 0], "proxy_mean": tokens[:, :3].mean(1),
          "mean": tokens[:, 3:].mean(1), "patch": tokens[:, 3:]}
  for name, w in want.items():
    np.testing.assert_allclose(features.select(out, name, block), w, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="proxy_mean"):
    features.select(out, "proxies", block)


def test_mask_token_replaces_masked_patch_embeddings(enc, apply):
  """Masked patches' pixels no longer matter; visible ones still do; an
  all-zero mask is the plain forward."""
  v = enc.variables
  mask = np.zeros((2, 16), np.float32)
  mask[:, [0, 5, 6, 15]] = 1.0
  np.testing.assert_allclose(apply(v, IMAGES, mask=np.zeros_like(mask))["tokens"],
                             apply(v, IMAGES)["tokens"], atol=1e-6)
  base = apply(v, IMAGES, mask=mask)["tokens"]
  changed = IMAGES.copy()
  changed[:, 0:4, 0:4] += 3.0                                # patch 0: masked
  np.testing.assert_allclose(apply(v, changed, mask=mask)["tokens"], base, atol=1e-6)
  changed = IMAGES.copy()
  changed[:, 0:4, 4:8] += 3.0                                # patch 1: visible
  assert np.abs(apply(v, changed, mask=mask)["tokens"] - base).max() > 1e-3
  # ... and the learned token is what stands in for them.
  v1 = jax.tree.map(np.copy, v)
  v1["params"]["mask_token"] = v1["params"]["mask_token"] + np.linspace(-1, 1, 32)  # not a uniform shift: LN removes those
  assert np.abs(apply(v1, IMAGES, mask=mask)["tokens"] - base).max() > 1e-3
  np.testing.assert_allclose(apply(v1, IMAGES)["tokens"], apply(v, IMAGES)["tokens"], atol=1e-6)
