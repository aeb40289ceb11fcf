"""timm / PyTorch interop: layouts against a reference timm forward written in
numpy, safetensors and .pth round trips, the restricted unpickler."""
import argparse
import collections
import functools
import io
import os
import pickle
import sys
import types
import zipfile

import jax
import numpy as np
import pytest

from ssl_jax import export, models
from ssl_jax.interop import timm_vit, torch_pickle

CFG = dict(name="vit", variant="Ti", width=32, depth=2, num_heads=4, patch_size=4)
IMAGES = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)


@functools.lru_cache()
def _cached_encoder(posemb):
  cfg = dict(CFG, posemb=posemb)
  module = models.build(cfg)
  variables = jax.jit(module.init)(jax.random.PRNGKey(1), IMAGES[:1])
  if posemb == "learn":    # non-trivial learned embeddings
    p = variables["params"]
    p["pos_embedding"] = np.asarray(p["pos_embedding"]) + 0.3
  return export.Encoder(module, jax.tree.map(np.asarray, variables), cfg, {"image_size": 16})


def _encoder(posemb):
  return _cached_encoder(posemb)


_APPLY = {}


def _apply(module, variables, images):
  """One compiled forward per architecture, shared by the tests."""
  if module not in _APPLY:
    _APPLY[module] = jax.jit(module.apply)
  return _APPLY[module](variables, images)


def _ln(x, w, b):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-6) * w + b


def _gelu(x):
  from scipy.special import erf  # pylint: disable=g-import-not-at-top
  return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def timm_forward(sd, images, heads):
  """timm VisionTransformer.forward_features in numpy (NCHW conv as patch
  matmul, fused qkv, pre-norm blocks, final norm)."""
  w = sd["patch_embed.proj.weight"]                              # [D, C, p, p]
  d, c, p, _ = w.shape
  b, h, wd, _ = images.shape
  x = images.transpose(0, 3, 1, 2).reshape(b, c, h // p, p, wd // p, p)
  x = x.transpose(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)
  x = x @ w.reshape(d, -1).T + sd["patch_embed.proj.bias"]
  # timm _pos_embed: [cls, reg_tokens..., patches]; pos_embed covers the
  # prefix slots too unless it has only the N patch slots (no_embed_class).
  prefix = [sd["cls_token"]] + ([sd["reg_tokens"]] if "reg_tokens" in sd else [])
  prefix = np.concatenate([np.broadcast_to(t, (b,) + t.shape[1:]) for t in prefix], 1)
  if sd["pos_embed"].shape[1] == x.shape[1]:
    x = x + sd["pos_embed"]
  x = np.concatenate([prefix, x], 1)
  if sd["pos_embed"].shape[1] == x.shape[1]:
    x = x + sd["pos_embed"]
  i = 0
  while f"blocks.{i}.norm1.weight" in sd:
    t = f"blocks.{i}."
    y = _ln(x, sd[t + "norm1.weight"], sd[t + "norm1.bias"])
    qkv = (y @ sd[t + "attn.qkv.weight"].T + sd[t + "attn.qkv.bias"])
    qkv = qkv.reshape(b, -1, 3, heads, d // heads).transpose(2, 0, 3, 1, 4)
    logits = qkv[0] @ qkv[1].transpose(0, 1, 3, 2) / np.sqrt(d // heads)
    a = np.exp(logits - logits.max(-1, keepdims=True))
    a = a / a.sum(-1, keepdims=True)
    o = (a @ qkv[2]).transpose(0, 2, 1, 3).reshape(b, -1, d)
    x = x + o @ sd[t + "attn.proj.weight"].T + sd[t + "attn.proj.bias"]
    y = _ln(x, sd[t + "norm2.weight"], sd[t + "norm2.bias"])
    y = _gelu(y @ sd[t + "mlp.fc1.weight"].T + sd[t + "mlp.fc1.bias"])
    x = x + y @ sd[t + "mlp.fc2.weight"].T + sd[t + "mlp.fc2.bias"]
    i += 1
  return _ln(x, sd["norm.weight"], sd["norm.bias"])


def _features(enc, images=IMAGES):
  return np.asarray(_apply(enc.module, enc.variables, images)["tokens"])


def _assert_same_tree(a, b):
  fa = jax.tree_util.tree_flatten_with_path(a)[0]
  fb = jax.tree_util.tree_flatten_with_path(b)[0]
  assert [k for k, _ in fa] == [k for k, _ in fb]
  for (k, x), (_, y) in zip(fa, fb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(k))


@pytest.mark.parametrize("posemb", ["sincos2d", "learn"])
def test_timm_names_and_layouts_match_a_reference_forward(posemb):
  enc = _encoder(posemb=posemb)
  sd = timm_vit.to_timm(enc.variables["params"], enc.model_cfg, (4, 4))
  assert sd["patch_embed.proj.weight"].shape == (32, 3, 4, 4)          # OIHW
  assert sd["blocks.1.attn.qkv.weight"].shape == (96, 32)              # fused [3D, D]
  assert sd["pos_embed"].shape == (1, 17, 32)
  np.testing.assert_array_equal(sd["pos_embed"][0, 0], 0.0)            # MAE's CLS slot
  np.testing.assert_allclose(timm_forward(sd, IMAGES, 4), _features(enc), atol=2e-5)


@pytest.mark.parametrize("posemb", ["sincos2d", "learn"])
def test_safetensors_round_trip_is_exact(tmp_path, posemb):
  enc = _encoder(posemb=posemb)
  path = timm_vit.export_encoder(enc, str(tmp_path))
  assert path.endswith(timm_vit.SAFETENSORS_NAME)
  back = timm_vit.encoder_from_checkpoint(path)
  assert back.model_cfg["posemb"] == posemb
  assert back.model_cfg["num_heads"] == 4                # from metadata, not the width table
  _assert_same_tree(enc.variables, back.variables)
  np.testing.assert_array_equal(_features(enc), _features(back))


def test_learned_cls_slot_is_folded_into_the_cls_token():
  """DINO / timm learn a CLS position embedding; timm adds it to CLS only."""
  enc = _encoder(posemb="learn")
  sd = timm_vit.to_timm(enc.variables["params"], enc.model_cfg)
  sd["pos_embed"] = sd["pos_embed"].copy()
  sd["pos_embed"][0, 0] = np.linspace(-1, 1, 32)
  cfg, variables, extras = timm_vit.from_timm(dict(sd, **{"head.weight": np.zeros((10, 32))}),
                                              num_heads=4)
  assert "head.weight" in extras and cfg["posemb"] == "learn"
  got = np.asarray(_apply(models.build(cfg), variables, IMAGES)["tokens"])
  np.testing.assert_allclose(got, timm_forward(sd, IMAGES, 4), atol=2e-5)


def test_bad_state_dict_names_the_problem():
  with pytest.raises(KeyError, match="pos_embed"):
    timm_vit.from_timm({"cls_token": np.zeros((1, 1, 8)),
                        "patch_embed.proj.weight": np.zeros((8, 3, 2, 2))})
  enc = _encoder(posemb="sincos2d")
  sd = timm_vit.to_timm(enc.variables["params"], enc.model_cfg, (4, 4))
  with pytest.raises(ValueError, match="num_heads"):
    timm_vit.from_timm(sd)                         # width 32: no default head count
  with pytest.raises(ValueError, match="RoPE"):
    timm_vit.to_timm(enc.variables["params"], dict(CFG, posemb="rope"), (4, 4))


# --- .pth files ---------------------------------------------------------------


def _fake_torch(monkeypatch):
  """Minimal `torch` / `torch._utils` modules so the standard pickler writes
  the exact byte stream torch.save writes, with no torch installed."""
  torch = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")

  def _rebuild_tensor_v2(*args):
    raise AssertionError("never called while writing")
  _rebuild_tensor_v2.__module__ = "torch._utils"
  _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  storages = {}
  for name in ("FloatStorage", "BFloat16Storage", "LongStorage"):
    cls = type(name, (), {"__module__": "torch"})
    setattr(torch, name, cls)
    storages[name] = cls
  torch._utils = utils
  monkeypatch.setitem(sys.modules, "torch", torch)
  monkeypatch.setitem(sys.modules, "torch._utils", utils)
  return utils, storages


def _write_pth(path, obj, monkeypatch):
  """torch.save's zip layout: archive/data.pkl + archive/data/<key> buffers."""
  utils, storage_types = _fake_torch(monkeypatch)
  buffers = []

  class Storage:
    def __init__(self, flat, kind):
      self.flat, self.kind, self.key = flat, kind, str(len(buffers))
      buffers.append(self)

  class Tensor:
    def __init__(self, storage, offset, shape, stride):
      self.args = (storage, offset, tuple(shape), tuple(stride), False, collections.OrderedDict())

    def __reduce_ex__(self, protocol):
      return (utils._rebuild_tensor_v2, self.args)

  def tensor(arr, kind="FloatStorage", transpose=False):
    """A contiguous tensor, or (transpose) a strided view of a shared storage."""
    arr = np.asarray(arr)
    if transpose:            # tensor = storage viewed as arr.T, non-contiguous
      st = Storage(np.ascontiguousarray(arr.T).ravel(), kind)
      return Tensor(st, 0, arr.shape, (1, arr.shape[0]))
    st = Storage(np.concatenate([np.zeros(3, arr.dtype), arr.ravel()]), kind)   # offset 3
    strides = [int(np.prod(arr.shape[i + 1:])) for i in range(arr.ndim)]
    return Tensor(st, 3, arr.shape, strides)

  class Pickler(pickle.Pickler):
    def persistent_id(self, o):
      if isinstance(o, Storage):
        return ("storage", storage_types[o.kind], o.key, "cpu", o.flat.size)
      return None

  tree = obj(tensor)
  buf = io.BytesIO()
  Pickler(buf, protocol=2).dump(tree)
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", buf.getvalue())
    zf.writestr("archive/byteorder", "little")
    zf.writestr("archive/version", "3\n")
    for st in buffers:
      zf.writestr(f"archive/data/{st.key}", st.flat.tobytes())
  monkeypatch.undo()


def test_pth_reader_rebuilds_mae_checkpoint_without_torch(tmp_path, monkeypatch):
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  enc = _encoder(posemb="sincos2d")
  sd = timm_vit.to_timm(enc.variables["params"], enc.model_cfg, (4, 4))
  bf16 = np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16)
  path = str(tmp_path / "mae_pretrain.pth")

  def build(tensor):
    model = collections.OrderedDict(
        (k, tensor(v, transpose=(v.ndim == 2 and k.endswith("fc1.weight")))) for k, v in sd.items())
    return {"model": model, "epoch": 399, "args": argparse.Namespace(lr=1.5e-4),
            "extra": {"bf16": tensor(bf16, "BFloat16Storage"),
                      "step": tensor(np.array(7, np.int64), "LongStorage")}}
  _write_pth(path, build, monkeypatch)

  obj = torch_pickle.load(path)
  assert obj["epoch"] == 399 and isinstance(obj["args"], torch_pickle.Opaque)
  assert obj["extra"]["bf16"].dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(obj["extra"]["bf16"].astype(np.float32), bf16.astype(np.float32))
  assert int(obj["extra"]["step"]) == 7
  for k, v in sd.items():
    np.testing.assert_array_equal(obj["model"][k], v, err_msg=k)
  back = timm_vit.encoder_from_checkpoint(path, num_heads=4)
  _assert_same_tree(enc.variables, back.variables)
  np.testing.assert_array_equal(_features(enc), _features(back))


def test_dino_teacher_prefixes_are_stripped():
  enc = _encoder(posemb="learn")
  sd = timm_vit.to_timm(enc.variables["params"], enc.model_cfg)
  ckpt = {"teacher": {**{"backbone." + k: v for k, v in sd.items()},
                      "head.mlp.0.weight": np.zeros((4, 32))},
          "student": {"module.backbone." + k: v for k, v in sd.items()}, "epoch": 1}
  state = torch_pickle.state_dict(ckpt)
  assert "projection_head.mlp.0.weight" in state and "cls_token" in state
  assert set(torch_pickle.state_dict(ckpt, "student")) == set(sd)
  cfg, variables, extras = timm_vit.from_timm(state, num_heads=4)
  assert list(extras) == ["projection_head.mlp.0.weight"]
  _assert_same_tree(enc.variables, variables)
  with pytest.raises(KeyError, match="Valid entries"):
    torch_pickle.state_dict(ckpt, "ema")


def test_unpickler_never_runs_code_from_the_file(tmp_path):
  marker = tmp_path / "pwned"

  class Evil:
    def __reduce__(self):
      return (os.system, (f"touch {marker}",))
  path = str(tmp_path / "evil.pth")
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", pickle.dumps({"x": Evil()}, protocol=2))
  obj = torch_pickle.load(path)
  assert isinstance(obj["x"], torch_pickle.Opaque) and not marker.exists()
  (tmp_path / "legacy.pth").write_bytes(pickle.dumps({"a": 1}))
  with pytest.raises(ValueError, match="zip"):
    torch_pickle.load(str(tmp_path / "legacy.pth"))


FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def _fixture(name):
  return os.path.join(FIXTURES, name + ".pth"), dict(np.load(os.path.join(FIXTURES, name + ".npz")))


@pytest.mark.parametrize("name,key", [("tiny_timm_vit", "model"), ("tiny_torchvision_resnet", None)])
def test_files_written_by_real_torch_save_are_read_exactly(name, key):
  """Files written by real `torch.save` (tests/fixtures/make_torch_fixtures.py,
  torch 2.13): every array equals what the script saved, dtype and shape
  included: a transposed view, an nn.Parameter, two views into one storage at
  an offset, float16 and int64 storages, 0-d tensors. Breaks tried: ignoring
  the storage offset (the qkv bias reads the weight's first values), ignoring
  strides (the transposed fc1 weight comes back transposed): both fail."""
  path, want = _fixture(name)
  obj = torch_pickle.load(path)
  if key:
    assert obj["epoch"] == 7 and isinstance(obj["args"], torch_pickle.Opaque)
  sd = torch_pickle.state_dict(obj)
  assert sorted(sd) == sorted(want)
  for k, v in want.items():
    assert sd[k].dtype == v.dtype and sd[k].shape == v.shape, k
    np.testing.assert_array_equal(sd[k], v, err_msg=k)


def test_real_torch_save_timm_vit_rebuilds_and_matches_timm_forward():
  """The MAE-style fixture read back as an encoder (2 heads: width 8 has no
  default head count): its tokens equal the numpy timm forward on the saved
  arrays."""
  path, sd = _fixture("tiny_timm_vit")
  enc = timm_vit.encoder_from_checkpoint(path, num_heads=2)
  assert enc.model_cfg["width"] == 8 and enc.model_cfg["patch_size"] == 2
  images = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype(np.float32)
  got = np.asarray(enc.module.apply(enc.variables, images)["tokens"])
  np.testing.assert_allclose(got, timm_forward(sd, images, 2),
                             rtol=1e-4, atol=1e-5)
