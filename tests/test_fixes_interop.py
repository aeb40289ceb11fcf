"""torchvision ResNet checkpoints (DINO / SimCLR / MoCo ResNet-50 layout) as
frozen teachers through ssl_jax.interop.load_encoder (issue 11 review fix)."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import interop
from ssl_jax.interop import torchvision_resnet
from tests.test_interop import _write_pth


def _official_resnet50_state_dict(seed=0, fc=True):
  """torchvision `resnet50().state_dict()` names and shapes (OIHW convs),
  written out by hand, with random values that keep activations O(1)."""
  rng = np.random.default_rng(seed)
  sd = collections.OrderedDict()

  def conv(name, out, inp, k):
    sd[name + ".weight"] = rng.normal(0, np.sqrt(2.0 / (inp * k * k)),
                                      (out, inp, k, k)).astype(np.float32)

  def bn(name, c, gamma=(0.5, 1.5)):
    sd[name + ".weight"] = rng.uniform(*gamma, c).astype(np.float32)
    sd[name + ".bias"] = rng.normal(0, 0.1, c).astype(np.float32)
    sd[name + ".running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
    sd[name + ".running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
    sd[name + ".num_batches_tracked"] = np.array(1000, np.int64)

  conv("conv1", 64, 3, 7)
  bn("bn1", 64)
  inp = 64
  for layer, (n, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), 1):
    for i in range(n):
      t = f"layer{layer}.{i}."
      conv(t + "conv1", width, inp, 1)
      bn(t + "bn1", width)
      conv(t + "conv2", width, width, 3)
      bn(t + "bn2", width)
      conv(t + "conv3", 4 * width, width, 1)
      bn(t + "bn3", 4 * width, gamma=(0.1, 0.3))
      if i == 0:
        conv(t + "downsample.0", 4 * width, inp, 1)
        bn(t + "downsample.1", 4 * width)
      inp = 4 * width
  if fc:
    sd["fc.weight"] = rng.normal(0, 0.01, (1000, 2048)).astype(np.float32)
    sd["fc.bias"] = np.zeros(1000, np.float32)
  return sd


def _torchvision_forward(sd, x_nchw):
  """torchvision ResNet-50 (v1.5) forward in torch layouts (NCHW, OIHW), eval BN."""
  hi = jax.lax.Precision.HIGHEST

  def conv(x, name, stride, pad):
    return jax.lax.conv_general_dilated(x, jnp.asarray(sd[name + ".weight"]), (stride, stride),
                                        [(pad, pad)] * 2, dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                        precision=hi)

  def bn(x, name):
    p = {k: jnp.asarray(sd[f"{name}.{k}"])[None, :, None, None]
         for k in ("weight", "bias", "running_mean", "running_var")}
    return (x - p["running_mean"]) / jnp.sqrt(p["running_var"] + 1e-5) * p["weight"] + p["bias"]

  x = jax.nn.relu(bn(conv(x_nchw, "conv1", 2, 3), "bn1"))
  x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 3, 3), (1, 1, 2, 2),
                            [(0, 0), (0, 0), (1, 1), (1, 1)])
  for layer, n in enumerate((3, 4, 6, 3), 1):
    for i in range(n):
      t = f"layer{layer}.{i}."
      stride = 2 if (i == 0 and layer > 1) else 1
      out = jax.nn.relu(bn(conv(x, t + "conv1", 1, 0), t + "bn1"))
      out = jax.nn.relu(bn(conv(out, t + "conv2", stride, 1), t + "bn2"))
      out = bn(conv(out, t + "conv3", 1, 0), t + "bn3")
      identity = x
      if t + "downsample.0.weight" in sd:
        identity = bn(conv(x, t + "downsample.0", stride, 0), t + "downsample.1")
      x = jax.nn.relu(out + identity)
  return x


@pytest.fixture(scope="module")
def resnet50_pth(tmp_path_factory):
  sd = _official_resnet50_state_dict()
  path = str(tmp_path_factory.mktemp("tv") / "dino_resnet50_pretrain.pth")
  mp = pytest.MonkeyPatch()
  try:
    _write_pth(path, lambda tensor: collections.OrderedDict(
        (k, tensor(v, "LongStorage" if v.dtype == np.int64 else "FloatStorage"))
        for k, v in sd.items()), mp)
  finally:
    mp.undo()
  return path, sd


def test_torchvision_resnet50_features_equal_the_torch_layout_forward(resnet50_pth):
  path, sd = resnet50_pth
  enc = interop.load_encoder(path)
  assert enc.model_cfg == {"name": "resnet", "variant": "50"}
  assert enc.info["unused_keys"] == ["fc.bias", "fc.weight"]
  images = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
  got = jax.jit(lambda v, x: enc.module.apply(v, x, train=False))(enc.variables, images)
  floats = {k: v for k, v in sd.items() if v.dtype != np.int64}    # jitted: eager ops compile one by one
  want = np.asarray(jax.jit(_torchvision_forward)(floats, images.transpose(0, 3, 1, 2)))
  want = want.transpose(0, 2, 3, 1)                                  # NCHW -> NHWC
  assert got["feature_map"].shape == (2, 2, 2, 2048)
  scale = np.abs(want).max()
  assert scale > 1e-2
  np.testing.assert_allclose(np.asarray(got["feature_map"]), want, atol=2e-4 * scale)
  # The same file through the frozen-teacher loader CR2PQ uses.
  teacher = interop.load_teacher(path)
  jax.tree.map(np.testing.assert_array_equal, teacher.variables, enc.variables)


def test_moco_and_dino_wrappers_and_bad_layouts():
  sd = _official_resnet50_state_dict(fc=False)
  moco = {"module.encoder_q." + k: v for k, v in sd.items()}
  moco.update({"module.encoder_k.conv1.weight": sd["conv1.weight"],
               "module.queue": np.zeros((128, 8), np.float32)})
  from ssl_jax.interop import torch_pickle  # pylint: disable=g-import-not-at-top
  cfg, variables, extras = torchvision_resnet.from_torchvision(
      torch_pickle.state_dict({"state_dict": moco, "epoch": 200}))
  assert cfg["variant"] == "50" and not extras
  np.testing.assert_array_equal(variables["params"]["stage4_block0"]["down_conv"]["kernel"],
                                sd["layer4.0.downsample.0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables["batch_stats"]["stem_bn"]["var"],
                                sd["bn1.running_var"])
  dino = torch_pickle.state_dict({"teacher": {**{"backbone." + k: v for k, v in sd.items()},
                                              "head.mlp.0.weight": np.zeros((4, 2))}})
  assert torchvision_resnet.matches(dino)
  assert list(torchvision_resnet.from_torchvision(dino)[2]) == ["projection_head.mlp.0.weight"]
  broken = {k: v for k, v in sd.items() if not k.startswith("layer2.0.downsample")}
  with pytest.raises(ValueError, match="down_conv"):
    torchvision_resnet.from_torchvision(broken)
  short = {k: v for k, v in sd.items() if not k.startswith("layer3.5.")}
  with pytest.raises(ValueError, match=r"\(3, 4, 5, 3\).*Valid: .*50 \(bottleneck"):
    torchvision_resnet.from_torchvision(short)
  assert not torchvision_resnet.matches({"cls_token": 0, "patch_embed.proj.weight": 0})


def test_resnet50_pth_is_a_cr2pq_frozen_teacher(resnet50_pth):
  """CR2PQ's frozen teacher (004 Tab. 4's DINO ResNet-50 row) from the file:
  the queries follow the teacher's 2x2 map of 2048-d features (traced only)."""
  from ssl_jax.methods import cr2pq  # pylint: disable=g-import-not-at-top
  from tests.conftest import config_module  # pylint: disable=g-import-not-at-top
  path, _ = resnet50_pth
  c = config_module("cr2pq.py").get_config("vit_tiny")
  c.model = dict(name="vit", variant="Ti", width=32, depth=1, num_heads=2, patch_size=16)
  c.cr2pq.teacher, c.cr2pq.teacher_path = "frozen", path
  c.cr2pq.decoder.depth, c.cr2pq.projector_hidden_dim = 1, 16
  n = 2
  batch = {"view_a": jnp.zeros((n, 64, 64, 3)), "view_b": jnp.zeros((n, 64, 64, 3)),
           "box_a": jnp.array([[0, 0, 64, 64]] * n, jnp.float32),
           "box_b": jnp.array([[8, 8, 32, 32]] * n, jnp.float32),
           "flip_a": jnp.zeros(n), "flip_b": jnp.zeros(n), "label": jnp.zeros(n, jnp.int32)}
  v = jax.eval_shape(lambda b: cr2pq.init(jax.random.PRNGKey(0), b, c), batch)
  assert v.params["predictor"]["pred"]["kernel"].shape == (32, 2048)
  assert set(v.constants["teacher"]) == {"params", "batch_stats"}
  loss, (metrics, _) = jax.eval_shape(
      lambda p, s, k, b: cr2pq.loss(p, s, k, b, jax.random.PRNGKey(1), 0, c),
      v.params, v.state, v.constants, batch)
  assert loss.shape == () and metrics["patch_loss"].shape == ()
