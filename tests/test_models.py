"""The ViT and the MAE decoder: values against references built from their
own blocks, shapes, dtypes and exact parameter counts."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import models
from ssl_jax.models import layers
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


def _mae_sincos(gh, gw, d):
  """MAE's get_2d_sincos_pos_embed in numpy: first half columns, second half rows."""
  def one(pos, dim):
    omega = 1.0 / 10000 ** (np.arange(dim // 2) / (dim / 2.0))
    out = pos.reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(out), np.cos(out)], 1)
  rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
  return np.concatenate([one(cols.astype(np.float64), d // 2), one(rows.astype(np.float64), d // 2)], 1)


def _patch_embed(images, kernel, bias, p):
  """Conv p x p stride p == per-patch (row, col, channel) vector @ kernel."""
  b, h, w, c = images.shape
  x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c) @ kernel.reshape(-1, kernel.shape[-1]) + bias


def _layer_norm(x, scale, bias, eps=1e-6):
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * scale + bias


def _blocks(params, x, depth, heads):
  """The model's own transformer blocks on a token sequence we build."""
  for i in range(depth):
    x = layers.Block(heads).apply({"params": params[f"block{i}"]}, jnp.asarray(x))[0]
  return np.asarray(x)


def test_masked_vit_equals_blocks_on_gathered_tokens_with_their_positions():
  """MAE encoder on the visible patches: embed all patches, add the position
  embedding of each patch's own grid cell, then keep the visible ones (MAE
  `forward_encoder`), prepend CLS and run the blocks. Break tried: adding the
  position embedding after gathering (positions 0..K-1 of a 1 x K grid) fails."""
  m = models.build(dict(name="vit", variant="Ti", width=32, depth=1, num_heads=2, patch_size=4))
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
  params = m.init(jax.random.PRNGKey(0), x)["params"]
  tm = masking.random_masking(jax.random.PRNGKey(2), 2, 16, 0.75)
  got = m.apply({"params": params}, x, keep_idx=tm.keep_idx)
  p = jax.tree.map(np.asarray, params)
  tokens = _patch_embed(np.asarray(x), p["patch_embed"]["kernel"], p["patch_embed"]["bias"], 4)
  tokens = tokens + _mae_sincos(4, 4, 32)[None]
  keep = np.asarray(tm.keep_idx)
  visible = np.stack([tokens[i, keep[i]] for i in range(2)])
  seq = np.concatenate([np.broadcast_to(p["cls_token"], (2, 1, 32)), visible], 1)
  seq = _blocks(params, seq, 1, 2)
  want = _layer_norm(seq, p["norm"]["scale"], p["norm"]["bias"])
  np.testing.assert_allclose(np.asarray(got["tokens"]), want, rtol=1e-4, atol=1e-4)
  chex.assert_shape(got["patch"], (2, 4, 32))


def test_mae_decoder_places_tokens_at_their_patches():
  """MAE `forward_decoder`: embed, append mask tokens, unshuffle, add the
  decoder's sin-cos table (not to CLS), blocks, norm, predict, drop CLS. The
  reference scatters visible token j to patch keep_idx[j] directly, without
  `restore_idx`. Break tried: skipping the unshuffle fails."""
  dec = models.build(dict(name="mae_decoder", width=32, depth=1, num_heads=2, patch_dim=48))
  tm = masking.random_masking(jax.random.PRNGKey(2), 2, 16, 0.75)
  tokens = jax.random.normal(jax.random.PRNGKey(3), (2, 5, 24))
  params = dec.init(jax.random.PRNGKey(0), tokens, tm.restore_idx, (4, 4))["params"]
  params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(9), a.shape),
                        params)   # a mask token and biases that are not ~0
  got = np.asarray(dec.apply({"params": params}, tokens, tm.restore_idx, (4, 4)))
  p = jax.tree.map(np.asarray, params)
  x = np.asarray(tokens) @ p["embed"]["kernel"] + p["embed"]["bias"]
  full = np.broadcast_to(p["mask_token"], (2, 16, 32)).copy()
  keep = np.asarray(tm.keep_idx)
  for i in range(2):
    full[i, keep[i]] = x[i, 1:]
  seq = np.concatenate([x[:, :1], full + _mae_sincos(4, 4, 32)[None]], 1)
  seq = _layer_norm(_blocks(params, seq, 1, 2), p["norm"]["scale"], p["norm"]["bias"])
  want = (seq @ p["pred"]["kernel"] + p["pred"]["bias"])[:, 1:]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_vit_bfloat16_compute_keeps_fp32_params():
  m = _vit("bfloat16")
  x = jnp.ones((2, 32, 32, 3))
  params = m.init(jax.random.PRNGKey(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  assert m.apply(params, x)["patch"].dtype == jnp.bfloat16


@pytest.mark.parametrize("variant,width,depth,total", [
    ("Ti", 192, 12, 5_486_592), ("S", 384, 12, 21_590_016), ("B", 768, 12, 85_647_360),
    ("L", 1024, 24, 303_099_904)])
def test_vit_variants_param_count(variant, width, depth, total):
  """Exact: per block 2 LayerNorms (4d), qkv (3d^2 + 3d), proj (d^2 + d), MLP
  (8d^2 + 5d); patch embedding 16*16*3*d + d, CLS d, final LayerNorm 2d (no
  learnt position table: sin-cos). The totals are timm's
  vit_{tiny,small,base,large}_patch16_224 (5,717,416 / 22,050,664 / 86,567,656
  / 304,326,632) less the 1000-class head (1001 d) and the learnt 197 x d
  pos_embed. A missing bias, LayerNorm or block anywhere fails."""
  m = models.build(dict(name="vit", variant=variant, patch_size=16))
  shapes = jax.eval_shape(m.init, jax.random.PRNGKey(0), jnp.ones((1, 224, 224, 3)))
  n = sum(x.size for x in jax.tree.leaves(shapes))
  d = width
  expected = depth * (12 * d * d + 13 * d) + (16 * 16 * 3 * d + d) + d + 2 * d
  assert n == expected == total, (n, expected, total)


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
