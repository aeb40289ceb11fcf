"""Shapes and dtypes of the ViT and the MAE decoder."""
import chex
import jax
import jax.numpy as jnp
import pytest

from ssl_jax import models
from ssl_jax.ops import masking


def _vit(dtype="float32", **kw):
  cfg = dict(name="vit", variant="Ti", width=48, depth=3, num_heads=4, patch_size=8)
  cfg.update(kw)
  return models.build(cfg, dtype)


def test_vit_shapes_and_returns():
  m = _vit()
  x = jnp.ones((2, 32, 32, 3))
  params = m.init(jax.random.PRNGKey(0), x)
  out = m.apply(params, x, return_hidden=True, return_attn=True)
  chex.assert_shape(out["cls"], (2, 48))
  chex.assert_shape(out["patch"], (2, 16, 48))
  assert len(out["hidden"]) == len(out["normed"]) == len(out["attn"]) == 3
  chex.assert_shape(out["attn"][0], (2, 4, 17, 17))
  chex.assert_trees_all_close(out["attn"][1].sum(-1), jnp.ones((2, 4, 17)), atol=1e-5)
  assert out["cls"].dtype == jnp.float32


def test_vit_visible_tokens_only():
  m = _vit()
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
  params = m.init(jax.random.PRNGKey(0), x)
  tm = masking.random_masking(jax.random.PRNGKey(2), 2, 16, 0.75)
  out = m.apply(params, x, keep_idx=tm.keep_idx)
  chex.assert_shape(out["patch"], (2, 4, 48))


def test_vit_bfloat16_compute_keeps_fp32_params():
  m = _vit("bfloat16")
  x = jnp.ones((2, 32, 32, 3))
  params = m.init(jax.random.PRNGKey(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  assert m.apply(params, x)["patch"].dtype == jnp.bfloat16


@pytest.mark.parametrize("variant,width,depth", [("Ti", 192, 12), ("S", 384, 12), ("B", 768, 12), ("L", 1024, 24)])
def test_vit_variants_param_count(variant, width, depth):
  m = models.build(dict(name="vit", variant=variant, patch_size=16))
  shapes = jax.eval_shape(m.init, jax.random.PRNGKey(0), jnp.ones((1, 224, 224, 3)))
  n = sum(x.size for x in jax.tree.leaves(shapes))
  # 12*d^2 per block + patch embedding: ViT-Ti 5.5M, S 21.7M, B 85.8M, L 303M (timm, no head).
  expected = depth * (12 * width ** 2 + 13 * width) + 16 * 16 * 3 * width + 4 * width
  assert abs(n - expected) / expected < 0.01, (n, expected)


def test_mae_decoder_shape():
  dec = models.build(dict(name="mae_decoder", width=32, depth=1, num_heads=4, patch_dim=8 * 8 * 3))
  tm = masking.random_masking(jax.random.PRNGKey(2), 2, 16, 0.75)
  tokens = jnp.ones((2, 5, 48))
  params = dec.init(jax.random.PRNGKey(0), tokens, tm.restore_idx, (4, 4))
  out = dec.apply(params, tokens, tm.restore_idx, (4, 4))
  chex.assert_shape(out, (2, 16, 192))


def test_unknown_variant_lists_valid_ones():
  with pytest.raises(ValueError, match="Valid choices: Ti, S, B, L"):
    models.build(dict(name="vit", variant="XL"))
