"""Official DINO / DINOv2 checkpoint layouts through `interop.load_encoder`:
synthetic `.pth` files written without torch, features against a numpy
forward of DINOv2's `DinoVisionTransformer` (LayerScale, registers), and the
position-table interpolation against torch's bicubic formulas."""
import collections

import jax
import numpy as np
import pytest

from ssl_jax import interop, models
from ssl_jax.interop import dinov2, pos_embed
from tests.test_interop import _gelu, _ln, _write_pth

D, DEPTH, HEADS, P, GRID = 32, 2, 4, 4, 5          # checkpoint trained on 20 px (5x5 grid)


def _state_dict(registers=0, layer_scale=True, seed=0):
  """Random weights in the official key layout (DINOv2 hub, block_chunks=0)."""
  rng = np.random.default_rng(seed)
  r = lambda *s: rng.normal(0, 0.2, s).astype(np.float32)
  sd = {"cls_token": r(1, 1, D), "pos_embed": r(1, 1 + GRID * GRID, D),
        "patch_embed.proj.weight": r(D, 3, P, P), "patch_embed.proj.bias": r(D),
        "norm.weight": 1 + r(D), "norm.bias": r(D)}
  if layer_scale:
    sd["mask_token"] = r(1, D)
  if registers:
    sd["register_tokens"] = r(1, registers, D)
  for i in range(DEPTH):
    t = f"blocks.{i}."
    sd.update({t + "norm1.weight": 1 + r(D), t + "norm1.bias": r(D),
               t + "attn.qkv.weight": r(3 * D, D), t + "attn.qkv.bias": r(3 * D),
               t + "attn.proj.weight": r(D, D), t + "attn.proj.bias": r(D),
               t + "norm2.weight": 1 + r(D), t + "norm2.bias": r(D),
               t + "mlp.fc1.weight": r(4 * D, D), t + "mlp.fc1.bias": r(4 * D),
               t + "mlp.fc2.weight": r(D, 4 * D), t + "mlp.fc2.bias": r(D)})
    if layer_scale:       # far from 1, so a dropped LayerScale shows
      sd[t + "ls1.gamma"], sd[t + "ls2.gamma"] = 0.5 + r(D), 0.3 + r(D)
  return sd


def dinov2_forward(sd, images, patch_pos):
  """DinoVisionTransformer.forward_features in numpy: tokens after `norm`.
  `patch_pos` [N, D]: the (interpolated) patch slots of pos_embed."""
  w = sd["patch_embed.proj.weight"]
  b, h, wd, c = images.shape
  x = images.transpose(0, 3, 1, 2).reshape(b, c, h // P, P, wd // P, P)
  x = x.transpose(0, 2, 4, 1, 3, 5).reshape(b, -1, c * P * P) @ w.reshape(D, -1).T
  x = x + sd["patch_embed.proj.bias"]
  pos = np.concatenate([sd["pos_embed"][0, :1], patch_pos])
  x = np.concatenate([np.broadcast_to(sd["cls_token"], (b, 1, D)), x], 1) + pos
  if "register_tokens" in sd:          # after the position embedding, no position
    reg = np.broadcast_to(sd["register_tokens"], (b,) + sd["register_tokens"].shape[1:])
    x = np.concatenate([x[:, :1], reg, x[:, 1:]], 1)
  ls = lambda t, n, y: y * sd[t + n + ".gamma"] if t + n + ".gamma" in sd else y
  for i in range(DEPTH):
    t = f"blocks.{i}."
    y = _ln(x, sd[t + "norm1.weight"], sd[t + "norm1.bias"])
    qkv = (y @ sd[t + "attn.qkv.weight"].T + sd[t + "attn.qkv.bias"])
    qkv = qkv.reshape(b, -1, 3, HEADS, D // HEADS).transpose(2, 0, 3, 1, 4)
    logits = qkv[0] @ qkv[1].transpose(0, 1, 3, 2) / np.sqrt(D // HEADS)
    a = np.exp(logits - logits.max(-1, keepdims=True))
    o = ((a / a.sum(-1, keepdims=True)) @ qkv[2]).transpose(0, 2, 1, 3).reshape(b, -1, D)
    x = x + ls(t, "ls1", o @ sd[t + "attn.proj.weight"].T + sd[t + "attn.proj.bias"])
    y = _gelu(_ln(x, sd[t + "norm2.weight"], sd[t + "norm2.bias"]) @ sd[t + "mlp.fc1.weight"].T
              + sd[t + "mlp.fc1.bias"])
    x = x + ls(t, "ls2", y @ sd[t + "mlp.fc2.weight"].T + sd[t + "mlp.fc2.bias"])
  return _ln(x, sd["norm.weight"], sd["norm.bias"])


def _write(tmp_path, monkeypatch, sd, name="dinov2_vits14_pretrain.pth"):
  path = str(tmp_path / name)
  _write_pth(path, lambda tensor: collections.OrderedDict(
      (k, tensor(v)) for k, v in sd.items()), monkeypatch)
  return path


def _tokens(enc, images):
  return np.asarray(jax.jit(enc.module.apply)(enc.variables, images)["tokens"])


def _images(size, n=2):
  return np.random.default_rng(1).normal(size=(n, size, size, 3)).astype(np.float32)


# --- torch's bicubic, written per output pixel from ATen's formulas ---------------


def _torch_bicubic_2d(table, out_hw, scales, a=-0.75):
  """F.interpolate(mode="bicubic", align_corners=False) on [h, w, D], one
  output pixel at a time: 4x4 taps, clamped reads (UpSampleBicubic2d.cpp)."""
  def coeffs(t):
    c1 = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1
    c2 = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return [c2(t + 1), c1(t), c1(1 - t), c2(2 - t)]
  h, w, d = table.shape
  out = np.zeros(out_hw + (d,))
  for i in range(out_hw[0]):
    for j in range(out_hw[1]):
      sy, sx = scales[0] * (i + 0.5) - 0.5, scales[1] * (j + 0.5) - 0.5
      fy, fx = int(np.floor(sy)), int(np.floor(sx))
      cy, cx = coeffs(sy - fy), coeffs(sx - fx)
      for m in range(4):
        for n in range(4):
          yy, xx = min(max(fy - 1 + m, 0), h - 1), min(max(fx - 1 + n, 0), w - 1)
          out[i, j] += cy[m] * cx[n] * table[yy, xx]
  return out


def test_bicubic_matches_torch_formulas():
  # 1-D by hand from ATen's coefficients (A = -0.75): [0, 1] upsampled to 4.
  up = pos_embed.bicubic_matrix(2, 4, 0.5) @ np.array([0.0, 1.0])
  np.testing.assert_allclose(up, [-0.10546875, 0.2265625, 0.7734375, 1.10546875])
  table = np.random.default_rng(0).normal(size=(GRID * GRID, 3))
  for dst in ((3, 3), (7, 4), (8, 8)):
    got = pos_embed.resample(table, (GRID, GRID), dst, "dino")
    scales = tuple(GRID / (g + 0.1) for g in dst)          # DINO's offset kludge
    ref = _torch_bicubic_2d(table.reshape(GRID, GRID, 3), dst, scales)
    np.testing.assert_allclose(got, ref.reshape(-1, 3), atol=1e-12)
  # Identity grid: untouched (both official codes skip the interpolation).
  assert pos_embed.resample(table, (GRID, GRID), (GRID, GRID)) is table
  with pytest.raises(ValueError, match="Valid: dino, antialias"):
    pos_embed.resample(table, (GRID, GRID), (3, 3), "bilinear")


def test_antialiased_bicubic_is_pils_filter():
  # [0, 1, 2, 3] shrunk to 2 (scale 2, support 4, Keys A = -0.5): output 0
  # has taps 0..3 at distances (j - 0.5) / 2 -> weights k(.25), k(.25),
  # k(.75), k(1.25) = .8671875, .8671875, .2265625, -.0703125, normalised.
  w = np.array([0.8671875, 0.8671875, 0.2265625, -0.0703125])
  got = pos_embed.antialias_matrix(4, 2, 2.0) @ np.arange(4.0)
  assert got[0] == pytest.approx(w @ np.arange(4.0) / w.sum())
  assert got[1] == pytest.approx(3.0 - got[0])                      # mirror symmetry
  const = np.ones((GRID * GRID, 2))
  for dst in ((2, 2), (9, 9)):
    np.testing.assert_allclose(pos_embed.resample(const, (GRID, GRID), dst, "antialias"), 1.0)


# --- checkpoints -------------------------------------------------------------------


@pytest.mark.parametrize("registers", [0, 4])
def test_dinov2_checkpoint_features_match_the_reference(tmp_path, monkeypatch, registers):
  sd = _state_dict(registers)
  path = _write(tmp_path, monkeypatch, sd)
  monkeypatch.setitem(dinov2.DINOV2_HEADS, D, HEADS)       # width 32 -> 4 heads, as 384 -> 6
  enc = interop.load_encoder(path, image_size=GRID * P)    # the checkpoint's own grid
  assert enc.model_cfg["layer_scale"] and enc.model_cfg["num_prefix"] == 1 + registers
  assert "mask_token" in enc.info["unused_keys"] and "pos_embed_grid" not in enc.info
  p = enc.variables["params"]
  np.testing.assert_array_equal(p["pos_embedding"][0], sd["pos_embed"][0, 1:])
  np.testing.assert_array_equal(p["block1"]["ls2"]["gamma"], sd["blocks.1.ls2.gamma"])
  x = _images(GRID * P)
  ref = dinov2_forward(sd, x, sd["pos_embed"][0, 1:])
  np.testing.assert_allclose(_tokens(enc, x), ref, atol=2e-4)
  out = jax.jit(enc.module.apply)(enc.variables, x)
  assert out["patch"].shape == (2, GRID * GRID, D)                 # registers are not patches
  np.testing.assert_allclose(np.asarray(out["cls"]), ref[:, 0], atol=2e-4)
  if registers:
    assert out["prefix"][:, 1:].shape == (2, registers, D)
  # Dropping LayerScale changes the features: the test sees it.
  no_ls = dinov2_forward({k: v for k, v in sd.items() if ".ls" not in k}, x, sd["pos_embed"][0, 1:])
  assert np.abs(no_ls - ref).max() > 1e-2


@pytest.mark.parametrize("registers,size", [(0, 12), (4, 32)])
def test_dinov2_position_table_is_interpolated_to_the_grid_in_use(tmp_path, monkeypatch,
                                                                   registers, size):
  sd = _state_dict(registers, seed=3)
  path = _write(tmp_path, monkeypatch, sd)
  enc = dinov2.encoder_from_checkpoint(path, image_size=size, num_heads=HEADS)
  g = size // P
  assert enc.info["pos_embed_grid"] == {"checkpoint": [GRID, GRID], "resampled": [g, g]}
  mode = "antialias" if registers else "dino"            # the hub entries' settings
  table = pos_embed.resample(sd["pos_embed"][0, 1:], (GRID, GRID), (g, g), mode)
  x = _images(size)
  np.testing.assert_allclose(_tokens(enc, x), dinov2_forward(sd, x, table), atol=2e-4)
  with pytest.raises(ValueError, match="multiple of the checkpoint's patch size 4"):
    dinov2.encoder_from_checkpoint(path, image_size=30, num_heads=HEADS)


def test_dino_v1_checkpoint_with_resampling(tmp_path, monkeypatch):
  """dino_deitsmall16_pretrain.pth layout: no LayerScale, no mask token."""
  sd = _state_dict(layer_scale=False, seed=5)
  path = _write(tmp_path, monkeypatch, sd, "dino_deitsmall16_pretrain.pth")
  enc = dinov2.encoder_from_checkpoint(path, image_size=28, num_heads=HEADS)
  assert not enc.model_cfg.get("layer_scale") and "ls1" not in enc.variables["params"]["block0"]
  table = pos_embed.resample(sd["pos_embed"][0, 1:], (GRID, GRID), (7, 7), "dino")
  x = _images(28)
  np.testing.assert_allclose(_tokens(enc, x), dinov2_forward(sd, x, table), atol=2e-4)


def test_chunked_blocks_and_swiglu(tmp_path, monkeypatch):
  sd = _state_dict(seed=7)
  # block_chunks=1 (FSDP training checkpoints): every block under chunk 0.
  chunked = {k.replace("blocks.", "blocks.0.", 1): v for k, v in sd.items()}
  assert "blocks.0.1.ls1.gamma" in chunked
  cfg, variables, _ = dinov2.from_dinov2(chunked, num_heads=HEADS)
  cfg2, variables2, _ = dinov2.from_dinov2(sd, num_heads=HEADS)
  assert cfg == cfg2
  jax.tree.map(np.testing.assert_array_equal, variables, variables2)
  swiglu = {k.replace("mlp.fc1", "mlp.w12"): v for k, v in sd.items()}
  with pytest.raises(ValueError, match="SwiGLU"):
    dinov2.from_dinov2(swiglu, num_heads=HEADS)


def test_layer_scale_is_a_vit_option():
  cfg = dict(name="vit", width=16, depth=1, num_heads=2, patch_size=4, layer_scale=1e-5,
             num_prefix=3)
  module = models.build(cfg)
  v = jax.eval_shape(module.init, jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3), np.float32))
  blk = v["params"]["block0"]
  assert blk["ls1"]["gamma"].shape == (16,) and blk["ls2"]["gamma"].shape == (16,)
  assert v["params"]["proxy_tokens"].shape == (1, 2, 16)
  real = jax.jit(module.init)(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3), np.float32))
  np.testing.assert_allclose(real["params"]["block0"]["ls1"]["gamma"], 1e-5)
  plain = models.build(dict(cfg, layer_scale=None, num_prefix=1))
  pv = jax.eval_shape(plain.init, jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3), np.float32))
  assert "ls1" not in pv["params"]["block0"] and "proxy_tokens" not in pv["params"]


def test_layer_scale_survives_the_timm_safetensors_round_trip(tmp_path, monkeypatch):
  """train.py's timm export must keep LayerScale (timm's ls1 / ls2.gamma)."""
  from ssl_jax.interop import timm_vit  # pylint: disable=g-import-not-at-top
  path = _write(tmp_path, monkeypatch, _state_dict(seed=9))
  enc = dinov2.encoder_from_checkpoint(path, num_heads=HEADS)
  out = timm_vit.export_encoder(enc, str(tmp_path / "ls.safetensors"), image_size=GRID * P)
  back = interop.load_encoder(out)
  assert back.model_cfg["layer_scale"]
  x = _images(GRID * P)
  np.testing.assert_allclose(_tokens(back, x), _tokens(enc, x), atol=1e-6)
  reg = dinov2.encoder_from_checkpoint(_write(tmp_path, monkeypatch, _state_dict(2), "r.pth"),
                                       num_heads=HEADS)
  # Registers are prefix tokens: timm's `reg_tokens` layout round-trips them.
  assert timm_vit.exportable(reg.model_cfg)
  out = timm_vit.export_encoder(reg, str(tmp_path / "reg.safetensors"), image_size=GRID * P)
  np.testing.assert_allclose(_tokens(interop.load_encoder(out), x), _tokens(reg, x), atol=1e-6)
