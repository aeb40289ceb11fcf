"""Checkpoint imports a stranger hands over (issue 12, items 7 and 9): a
safetensors file's own tables win over its metadata, broken weights are
refused by name; an unprepared tfds name fails in seconds saying what to do."""
import os
import time

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from ssl_jax import config_defaults
from ssl_jax.data import sources
from ssl_jax.interop import timm_vit
from tests.test_interop import _encoder


def _rewrite(tmp_path, edit):
  """Our sin-cos ViT exported to safetensors, one tensor edited, metadata kept."""
  enc = _encoder(posemb="sincos2d")
  path = str(tmp_path / "vit.safetensors")
  timm_vit.save_safetensors(path, enc.variables["params"], enc.model_cfg, (4, 4))
  with safe_open(path, framework="numpy") as f:
    meta, sd = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
  assert '"posemb": "sincos2d"' in meta["ssl_jax_model"]
  edit(sd)
  save_file(sd, path, metadata=meta)
  return path, sd


def test_pos_embed_in_file_wins_over_sincos_metadata(tmp_path):
  def tune(sd):                       # e.g. fine-tuned embeddings
    sd["pos_embed"] = sd["pos_embed"] + np.linspace(0, 1, sd["pos_embed"].size,
                                                    dtype=np.float32).reshape(sd["pos_embed"].shape)
  path, sd = _rewrite(tmp_path, tune)
  cfg, variables, _ = timm_vit.load_safetensors(path)
  assert cfg["posemb"] == "learn"
  np.testing.assert_array_equal(variables["params"]["pos_embedding"][0], sd["pos_embed"][0, 1:])
  path, _ = _rewrite(tmp_path, lambda sd: None)     # untouched: stays fixed sin-cos
  assert timm_vit.load_safetensors(path)[0]["posemb"] == "sincos2d"


def test_non_finite_weights_are_refused_by_name(tmp_path):
  def poison(sd):
    sd["blocks.1.mlp.fc1.weight"][0, 0] = np.nan
    sd["norm.bias"][3] = np.inf
  path, _ = _rewrite(tmp_path, poison)
  with pytest.raises(ValueError, match=r"NaN/Inf weights in 2 tensors: blocks.1.mlp.fc1.weight, "
                                       r"norm.bias"):
    timm_vit.load_safetensors(path)


def test_cut_qkv_is_a_clear_error(tmp_path):
  def cut(sd):
    sd["blocks.0.attn.qkv.weight"] = np.ascontiguousarray(sd["blocks.0.attn.qkv.weight"][:-1])
  path, _ = _rewrite(tmp_path, cut)
  with pytest.raises(ValueError, match=r"blocks.0.attn.qkv.weight / .bias have shapes "
                                       r"\(95, 32\) / \(96,\); .* needs \(96, 32\)"):
    timm_vit.load_safetensors(path)


def test_unprepared_tfds_name_fails_in_seconds_with_what_to_do(tmp_path, monkeypatch):
  monkeypatch.delenv(sources.DOWNLOAD_ENV, raising=False)
  c = config_defaults.base_config()
  c.data.name = "mnist"
  c.data.data_dir = str(tmp_path / "tfds")
  t0 = time.time()
  with pytest.raises(sources.DatasetNotPreparedError,
                     match=r"'mnist' is not prepared in .*tfds build mnist.*data.data_dir.*"
                           r"SSL_JAX_TFDS_DOWNLOAD=1.*data.name=fashion_mnist"):
    sources.get_source(c.data, "train")
  assert time.time() - t0 < 60
  assert not os.path.exists(tmp_path / "tfds" / "downloads")     # nothing was attempted
  c.data.name = "imagenet2012"                     # manual-download dataset, no manual_dir
  with pytest.raises(sources.DatasetNotPreparedError, match="set data.manual_dir"):
    sources.get_source(c.data, "train")
