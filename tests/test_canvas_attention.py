"""001 Fig. 6 number (own- vs other-instance attention) on hand-built
attention maps, patch instance ids, and the canvas analysis on a tiny ViT."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import export, models
from ssl_jax.analysis import attention_stats, instance_attention

# A 2x2 patch grid: patches 0, 1 on instance 1, patch 2 on instance 2, patch 3 background.
INST = np.array([[1, 1, 2, 0]], np.int32)
HEAD_A = np.array([[0.5, 0.2, 0.1, 0.2],      # own 0.7, other 0.1, background 0.2
                   [0.1, 0.3, 0.4, 0.2],      # own 0.4, other 0.4
                   [0.25, 0.25, 0.3, 0.2],    # instance 2: own 0.3, other 0.5
                   [0.4, 0.3, 0.2, 0.1]],     # background query: not counted
                  np.float32)


def _stats(attn, inst=INST):
  return instance_attention.summarise(np.asarray(
      instance_attention.instance_mass_sums(jnp.asarray(attn), jnp.asarray(inst))))


def test_instance_masses_on_a_hand_built_map():
  s = _stats(HEAD_A[None, None])
  assert s["own"] == pytest.approx((0.7 + 0.4 + 0.3) / 3)
  assert s["other"] == pytest.approx((0.1 + 0.4 + 0.5) / 3)
  assert s["background"] == pytest.approx(0.2)
  # Per patch: own 0.7/2, 0.4/2, 0.3/1; other 0.1/1, 0.4/1, 0.5/2.
  assert s["contrast"] == pytest.approx(((0.35 + 0.2 + 0.3) / 3) / ((0.1 + 0.4 + 0.25) / 3))


def test_heads_are_averaged_and_uniform_attention_is_instance_blind():
  uniform = np.full((4, 4), 0.25, np.float32)
  s_u = _stats(uniform[None, None])
  assert s_u["contrast"] == pytest.approx(1.0)
  assert s_u["own"] == pytest.approx((0.5 + 0.5 + 0.25) / 3)
  both = _stats(np.stack([HEAD_A, uniform])[None])
  s_a = _stats(HEAD_A[None, None])
  for k in ("own", "other", "background"):
    assert both[k] == pytest.approx((s_a[k] + s_u[k]) / 2)
  # Attention confined to the own instance: no other-instance mass.
  own_only = np.array([[.5, .5, 0, 0], [.5, .5, 0, 0], [0, 0, 1, 0], [.25] * 4], np.float32)
  s = _stats(own_only[None, None])
  assert s["own"] == pytest.approx(1.0) and s["other"] == 0.0 and s["contrast"] > 1e6


def test_prefix_tokens_are_dropped_before_the_masses():
  """A CLS row / column (as a ViT returns) is removed and rows renormalised."""
  full = np.zeros((5, 5), np.float32)
  full[1:, 1:] = HEAD_A * 0.5
  full[:, 0] = 0.5
  a = attention_stats.patch_attention(jnp.asarray(full[None, None]), 4)
  s, ref = _stats(a), _stats(HEAD_A[None, None])
  for k in instance_attention.KEYS:
    assert s[k] == pytest.approx(ref[k], rel=1e-5)


def test_patch_instances_take_the_majority():
  m = np.zeros((1, 4, 4), np.int32)
  m[0, :2, :2] = [[1, 1], [1, 0]]         # patch 0: 3 of 4 pixels instance 1
  m[0, :2, 2:] = [[2, 2], [0, 0]]         # patch 1: tie 2 vs 0 -> 0 (lower id)
  m[0, 2:, :2] = [[2, 2], [2, 1]]         # patch 2: instance 2
  np.testing.assert_array_equal(instance_attention.patch_instances(m, (2, 2)), [[1, 0, 2, 0]])
  with pytest.raises(ValueError, match="does not tile"):
    instance_attention.patch_instances(np.zeros((1, 5, 5), np.int32), (2, 2))


def test_canvas_analysis_on_a_tiny_vit(tmp_path):
  cfg_model = dict(name="vit", variant="Ti", width=32, depth=2, num_heads=2, patch_size=4)
  module = models.build(cfg_model)
  variables = jax.jit(module.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
  enc = export.Encoder(module, variables, cfg_model, {})
  cfg = dict(num_images=16, batch_size=8, scale=(5, 8))
  res, files = instance_attention.canvas_analysis({"encoder": enc}, 16, cfg, str(tmp_path))
  for k in ("own", "other", "background"):
    assert 0.0 <= res[f"canvas_inst_{k}_last"] <= 1.0
  total = sum(res[f"canvas_inst_{k}_last"] for k in ("own", "other", "background"))
  assert total == pytest.approx(1.0, abs=1e-4)
  assert res["canvas_inst_contrast_last"] > 0 and res["canvas_attn_nmi_last"] >= 0
  with open(files["json"]) as f:
    per_block = json.load(f)["encoder"]
  assert len(per_block["own"]) == 2 and os.path.exists(files["png"])
