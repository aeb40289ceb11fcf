"""SimMIM / MaskFeat / BEiT: losses against numpy, masks, the k-means tokenizer,
1 vs 8 devices."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import methods, sharding, tokenizers
from ssl_jax.methods import mim
from ssl_jax.ops import mim_masks
from ssl_jax.tokenizers import fit as fit_cli
from ssl_jax.tokenizers import kmeans
from tests.conftest import config_module
from tests.test_hog import numpy_hog

NAMES = {"simmim": "tiny", "maskfeat": "tiny", "beit": "tiny"}
IMAGES = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype(np.float32)


@functools.lru_cache()
def _setup(name):
  config = config_module(f"{name}.py").get_config(NAMES[name])
  method = methods.get(name)
  mvars = method.init(jax.random.PRNGKey(0), {"image": IMAGES[:2]}, config)
  return config, method, mvars


def _patchify(x, p):
  b, h, w, c = x.shape
  return x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, p * p * c)


def _numpy_targets(name, config, constants):
  p = config.model.patch_size
  if name == "simmim":
    return _patchify(IMAGES, p)
  if name == "maskfeat":
    cells = np.stack([numpy_hog(im, cell=p // 2, window=p) for im in IMAGES])   # [B, 8, 8, 3, 9]
    b, g = len(IMAGES), 16 // p
    cells = cells.reshape(b, g, 2, g, 2, 3, 9).transpose(0, 1, 3, 2, 4, 5, 6)
    return cells.reshape(b, g * g, 108)
  c = np.asarray(constants["tokenizer"]["centroids"], np.float64)
  x = _patchify(IMAGES, p).astype(np.float64)
  return ((x[:, :, None] - c[None, None]) ** 2).sum(-1).argmin(-1)


def _numpy_loss(name, pred, target, mask):
  pred = np.asarray(pred, np.float64)
  if name == "simmim":
    per = np.abs(pred - target).mean(-1)
  elif name == "maskfeat":
    per = ((pred - target) ** 2).mean(-1)
  else:
    z = pred - pred.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    per = -np.take_along_axis(logp, target[..., None], -1)[..., 0]
  return (per * mask).sum() / mask.sum()


@pytest.mark.parametrize("name", sorted(NAMES))
def test_loss_equals_numpy(name):
  config, method, mvars = _setup(name)
  rng = jax.random.PRNGKey(3)
  l = jax.jit(lambda p, c, b: method.loss(p, mvars.state, c, b, rng, 0, config)[0])(
      mvars.params, mvars.constants, {"image": IMAGES})
  # Recompute the forward with the same mask, then the loss by hand.
  enc, head = mim._modules(config, mvars.constants)  # pylint: disable=protected-access

  @jax.jit
  def forward(params):
    r_mask, _ = jax.random.split(rng)
    mask, _ = mim.draw_mask(r_mask, IMAGES, config)
    feats = enc.apply({"params": params["encoder"]}, IMAGES, mask=mask)["patch"]
    return mask, head.apply({"params": params["head"]}, feats)
  mask, pred = forward(mvars.params)
  mask = np.asarray(mask)
  want = _numpy_loss(name, pred, _numpy_targets(name, config, mvars.constants), mask)
  np.testing.assert_allclose(float(l), want, rtol=2e-5)
  assert mask.sum(1).tolist() == [mim_masks.masked_count((4, 4), config.mim.mask)] * 8
  if name == "beit":   # the head classifies into the tokenizer's vocabulary
    assert pred.shape[-1] == 256


def test_mask_kinds_have_exact_counts_and_shapes():
  rng = jax.random.PRNGKey(0)
  draw = lambda cfg: np.asarray(jax.jit(lambda r: mim_masks.draw(r, 4, (8, 8), cfg))(rng))
  units = draw(dict(kind="units", ratio=0.6, unit=2))
  assert (units.sum(1) == mim_masks.masked_count((8, 8), dict(kind="units", ratio=0.6,
                                                              unit=2))).all()
  grid = units.reshape(4, 4, 2, 4, 2)           # constant inside every 2x2 unit
  assert (grid == grid[:, :, :1, :, :1]).all()
  for kind in ("random", "block"):
    m = draw(dict(kind=kind, ratio=0.4, min_block=4))
    assert (m.sum(1) == 26).all()
  vis, msk = mim_masks.split_indices(jnp.asarray(units), 40)
  assert (np.take_along_axis(units, np.asarray(msk), 1) == 1).all()
  assert (np.take_along_axis(units, np.asarray(vis), 1) == 0).all()
  with pytest.raises(ValueError, match="tile"):
    mim_masks.draw(rng, 1, (8, 8), dict(kind="units", ratio=0.5, unit=3))
  with pytest.raises(ValueError, match="random, units, block"):
    mim_masks.draw(rng, 1, (8, 8), dict(kind="grid", ratio=0.5))


def test_tokenizer_fit_is_deterministic_and_encodes_nearest_centroid(tmp_path):
  x = np.random.default_rng(1).normal(size=(600, 12))
  a, b = kmeans.fit(x, 16, seed=0, iters=5), kmeans.fit(x, 16, seed=0, iters=5)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, kmeans.fit(x, 16, seed=1, iters=5))
  # Lloyd's fixed point: every centroid is the mean of its members (or untouched when empty).
  assign = ((x[:, None] - a[None]) ** 2).sum(-1).argmin(1)
  for k in np.unique(assign)[:4]:
    np.testing.assert_allclose(a[k], x[assign == k].mean(0), atol=0.3)
  # The command on real data, twice with one seed: identical files' contents.
  outs = []
  for i in range(2):
    path = str(tmp_path / f"tok{i}.npz")
    fit_cli.main(["--out", path, "--image_size", "16", "--patch_size", "4", "--vocab_size", "8",
                  "--max_images", "32", "--iters", "3", "--seed", "0"])
    outs.append(tokenizers.load(path))
  np.testing.assert_array_equal(outs[0].params["centroids"], outs[1].params["centroids"])
  tok = outs[0]
  assert (tok.kind, tok.vocab_size, tok.patch_size) == ("kmeans", 8, 4)
  codes = np.asarray(tok.encode(tok.params, IMAGES[:2]))
  c = tok.params["centroids"]
  want = ((_patchify(IMAGES[:2], 4)[:, :, None] - c[None, None]) ** 2).sum(-1).argmin(-1)
  np.testing.assert_array_equal(codes, want)


def test_bad_configs_name_the_problem(tmp_path):
  config, method, _ = _setup("beit")
  with pytest.raises(ValueError, match="reconstructs target 'token'"):
    c = config.copy_and_resolve_references()
    c.mim.target = "pixel"
    method.init(jax.random.PRNGKey(0), {"image": IMAGES[:2]}, c)
  c = config.copy_and_resolve_references()
  c.mim.tokenizer = str(tmp_path / "missing.npz")
  with pytest.raises(FileNotFoundError, match="ssl_jax.tokenizers.fit"):
    method.init(jax.random.PRNGKey(0), {"image": IMAGES[:2]}, c)
  c.model.patch_size = 8
  c.mim.tokenizer = config.mim.tokenizer
  with pytest.raises(ValueError, match="patch size"):
    method.init(jax.random.PRNGKey(0), {"image": IMAGES[:2]}, c)


def one_vs_eight_devices(setup):
  """The jitted loss on 1 device and with the batch sharded over 8."""
  config, method, mvars = setup
  fn = lambda p, c, b: method.loss(p, mvars.state, c, b, jax.random.PRNGKey(5), 0, config)[0]
  one = jax.jit(fn)(mvars.params, mvars.constants, {"image": IMAGES})
  mesh = sharding.make_mesh([("data", 8)])
  rep, bat = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  eight = jax.jit(fn, in_shardings=(rep, rep, bat))(
      jax.device_put(mvars.params, rep), jax.device_put(mvars.constants, rep),
      jax.device_put({"image": IMAGES}, bat))
  np.testing.assert_allclose(float(eight), float(one), rtol=1e-5)


def test_one_vs_eight_devices_same_loss():
  assert len(jax.devices()) == 8, "conftest must simulate 8 CPU devices"
  one_vs_eight_devices(_setup("beit"))        # block masks + frozen tokenizer constants
