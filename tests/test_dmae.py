"""D-MAE / D²-MAE (002 Sec. 5): distillation losses, teacher isolation, D² gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssl_jax import export, models
from ssl_jax.methods import dmae, mae
from ssl_jax.methods import get as get_method
from ssl_jax.ops import distill, masking
from tests.conftest import config_module

# Tiny teacher / student with different width and head count (h=4 vs h'=2).
_TEACHER = dict(name="vit", variant="Ti", width=32, depth=2, num_heads=4, patch_size=2)
_STUDENT = dict(name="vit", variant="Ti", width=16, depth=2, num_heads=2, patch_size=2)


def _config_module():
  return config_module("dmae.py")


def _batch(n=4, seed=0):
  images = jax.random.normal(jax.random.PRNGKey(seed), (n, 8, 8, 3))
  return {"image": images, "label": jnp.zeros((n,), jnp.int32)}


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
  module = models.build(_TEACHER)
  variables = jax.jit(module.init)(jax.random.PRNGKey(42), _batch()["image"])
  return export.save(str(tmp_path_factory.mktemp("teacher") / "export"), _TEACHER, variables)


@pytest.fixture(scope="module")
def d2_vars(teacher_path):
  """D²-MAE variables: decoder at layer 1 of 3, extra attention block."""
  config = _config(teacher_path)
  return jax.jit(lambda rng, batch: dmae.init(rng, batch, config))(
      jax.random.PRNGKey(0), _batch())


def _config(teacher_path, variant="d2mae_cpu", **dmae_overrides):
  c = _config_module().get_config(variant)
  c.model = dict(_STUDENT)
  c.mae.decoder = dict(width=8, depth=1, num_heads=2)
  c.dmae.teacher = teacher_path
  if variant.startswith("d2"):
    c.dmae.decoder_layer = 1     # 2-block student: block 2 lies above layer k
  for k, v in dmae_overrides.items():
    c.dmae[k] = v
  return c


def test_default_pairs_equal_relative_depth():
  assert distill.default_pairs(12, 12, (0.25, 0.5, 0.75, 1.0)) == (
      (3, 3), (6, 6), (9, 9), (12, 12))
  assert distill.default_pairs(24, 12, (0.5, 1.0)) == ((12, 6), (24, 12))
  with pytest.raises(ValueError, match="student layer 13"):
    distill.check_pairs(((12, 13),), 12, 12, "attention")


def test_mapping_shapes_for_different_width_and_heads(teacher_path):
  config = _config(teacher_path, "dmae_cpu", rep_fractions=(1.0,))
  vars_ = jax.eval_shape(lambda rng: dmae.init(rng, _batch(), config), jax.random.PRNGKey(0))
  mix = vars_.params["distill"]["attn_mixing"]
  proj = vars_.params["distill"]["rep_projection"]
  assert set(mix) == {"t2_s2"} and set(proj) == {"t2_s2"}
  chex.assert_shape(mix["t2_s2"], (4, 2))      # M in R^{h x h'}, Eq. 5
  chex.assert_shape(proj["t2_s2"], (16, 32))   # N in R^{d' x d}, Eq. 6
  # A mapping of the wrong orientation is rejected with a clear message.
  a_t, a_s = jnp.zeros((1, 4, 5, 5)), jnp.zeros((1, 2, 5, 5))
  with pytest.raises(ValueError, match="head-mixing"):
    distill.attention_loss(a_t, a_s, jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match="projection"):
    distill.representation_loss(jnp.zeros((1, 5, 32)), jnp.zeros((1, 5, 16)), jnp.zeros((32, 16)))


def test_attention_loss_zero_for_identical_maps_and_identity_mixing():
  a = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5, 5))
  eye = jnp.eye(3)
  assert float(distill.attention_loss(a, a, eye)) == 0.0
  assert float(distill.attention_loss(a, a, eye[::-1])) > 1e-3     # permuted heads
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 6))
  assert float(distill.representation_loss(x, x, jnp.eye(6))) == 0.0
  assert float(distill.representation_loss(x, x, 2 * jnp.eye(6))) > 1e-3


def test_attention_logits_match_the_vit_blocks():
  """The recomputed logits are the block's own: softmax gives the ViT's `attn`."""
  module = models.build(_STUDENT)

  @jax.jit
  def probs(images):
    variables = module.init(jax.random.PRNGKey(0), images)
    out = module.apply(variables, images, return_hidden=True, return_attn=True)
    recomputed = [jax.nn.softmax(dmae._block_attention(
        module, variables["params"][f"block{i}"], out["normed"][i]), -1)
                  for i in range(module.depth)]
    return recomputed, out["attn"]

  recomputed, attn = probs(_batch()["image"])
  for i in range(_STUDENT["depth"]):
    np.testing.assert_allclose(recomputed[i], attn[i], atol=1e-6)


def _norm(tree):
  return float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)))


def test_d2_blocks_above_decoder_layer_learn_from_distillation_only(teacher_path, d2_vars):
  # Student of 2 blocks, decoder at layer 1: block 2 (`block1`) and the extra
  # attention block above it may only be trained by distillation.
  config = _config(teacher_path)

  @jax.jit
  def grads(params, constants):
    def parts(p, c):
      metrics = dmae.loss(p, {}, c, _batch(), jax.random.PRNGKey(1), 0, config)[1][0]
      return jnp.stack([metrics["recon_loss"], metrics["attn_loss"]])
    _, vjp = jax.vjp(parts, params, constants)
    return vjp(jnp.array([1.0, 0.0])), vjp(jnp.array([0.0, 1.0]))

  (g_recon, _), (g_distill, g_teacher) = grads(d2_vars.params, d2_vars.constants)
  above = lambda g: [g["encoder"]["block1"], g["distill"]["extra_block"]]
  for sub in above(g_recon):
    assert _norm(sub) == 0.0
  for sub in above(g_distill):
    assert _norm(sub) > 0.0
  # Every parameter of the last block is trained by distillation (its MLP too).
  assert _norm(g_distill["encoder"]["block1"]["mlp"]) > 0.0
  # Reconstruction still trains the blocks up to layer k and the decoder.
  assert _norm(g_recon["encoder"]["block0"]) > 0.0
  assert _norm(g_recon["decoder"]) > 0.0
  # The teacher never receives a gradient.
  assert _norm(g_teacher) == 0.0


def test_teacher_bitwise_unchanged_and_absent_from_params(teacher_path, d2_vars):
  config = _config(teacher_path)
  vars_ = d2_vars
  tx = optax.adamw(1e-2, weight_decay=0.05)
  opt_state = tx.init(vars_.params)

  @jax.jit
  def step(params, opt_state, constants, batch, rng):
    (l, (metrics, _)), g = jax.value_and_grad(dmae.loss, has_aux=True)(
        params, vars_.state, constants, batch, rng, 0, config)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, l, metrics

  params, losses = vars_.params, []
  for i in range(3):
    params, opt_state, l, metrics = step(params, opt_state, vars_.constants, _batch(seed=i),
                                         jax.random.PRNGKey(i))
    losses.append(float(l))
  assert np.all(np.isfinite(losses)) and losses[0] != losses[-1]
  assert float(metrics["attn_loss"]) > 0.0 and float(metrics["recon_loss"]) > 0.0
  # Both losses are summed (weights 1 by default).
  np.testing.assert_allclose(losses[-1], metrics["attn_loss"] + metrics["recon_loss"], rtol=1e-5)
  fresh = export.load(teacher_path).variables
  # params / state hold the student, its decoder and the mappings: no teacher.
  assert set(params) == {"encoder", "decoder", "distill"} and vars_.state == {}
  mae_params = jax.eval_shape(
      lambda rng: mae.init(rng, _batch(), config), jax.random.PRNGKey(0)).params
  chex.assert_trees_all_equal_shapes(params["encoder"], mae_params["encoder"])
  chex.assert_trees_all_equal_shapes(params["decoder"], mae_params["decoder"])
  assert set(params["distill"]) == {"attn_mixing", "extra_block"}
  n_teacher = sum(x.size for x in jax.tree.leaves(fresh))
  n_distill = sum(x.size for x in jax.tree.leaves(params["distill"]))
  assert n_distill < n_teacher / 10
  # The export is the student ViT alone.
  spec = get_method("dmae").encoder(config)
  assert spec.model == _STUDENT
  out = models.build(spec.model).apply(spec.variables(params, {}), _batch()["image"])
  chex.assert_shape(out["patch"], (4, 16, 16))


def _logits(h, block):
  """q k^T / sqrt(d_h) per head from a block's first-LN output, in numpy."""
  q = np.einsum("bld,dhe->blhe", h, block["attn"]["query"]["kernel"]) + block["attn"]["query"]["bias"]
  k = np.einsum("bld,dhe->blhe", h, block["attn"]["key"]["kernel"]) + block["attn"]["key"]["bias"]
  return np.einsum("bqhe,bkhe->bhqk", q, k) / np.sqrt(q.shape[-1])


def test_distillation_losses_are_the_mse_against_the_exported_teacher(teacher_path):
  """After 3 AdamW steps (the method's new state carried along), Eq. 5 and
  Eq. 6 equal MSEs written out in numpy with the teacher read fresh from its
  export: A_t vs M A_s on the pre-softmax maps of the last layers, X_t vs X_s N
  on the final-LN tokens, both over the student's visible patches. A teacher
  that trains or drifts, an L1 or a summed loss, or a teacher that sees all
  patches fails. Break tried: jnp.mean(jnp.abs(...)) in attention_loss fails."""
  config = _config(teacher_path, "dmae_cpu", rep_fractions=(1.0,))
  mv = jax.jit(lambda r, b: dmae.init(r, b, config))(jax.random.PRNGKey(0), _batch())
  tx = optax.adamw(1e-2, weight_decay=0.05)

  @jax.jit
  def step(params, state, opt_state, batch, rng):
    (_, (_, new_state)), g = jax.value_and_grad(dmae.loss, has_aux=True)(
        params, state, mv.constants, batch, rng, 0, config)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), new_state, opt_state

  params, state, opt_state = mv.params, mv.state, tx.init(mv.params)
  for i in range(3):
    params, state, opt_state = step(params, state, opt_state, _batch(seed=i), jax.random.PRNGKey(i))
  batch, rng = _batch(seed=9), jax.random.PRNGKey(9)
  total, (metrics, _) = jax.jit(lambda p, s: dmae.loss(p, s, mv.constants, batch, rng, 0, config))(
      params, state)

  # The same visible patches the loss drew (MAE masking from the first key).
  keep = masking.random_masking(jax.random.split(rng)[0], 4, 16, 0.75).keep_idx
  teacher = export.load(teacher_path)
  t_out = teacher.module.apply(teacher.variables, batch["image"], keep_idx=keep, return_hidden=True)
  student = models.build(_STUDENT)
  s_out = student.apply({"params": params["encoder"]}, batch["image"], keep_idx=keep,
                        return_hidden=True)
  tp = jax.tree.map(np.asarray, teacher.variables["params"])
  sp = jax.tree.map(np.asarray, params)
  a_t = _logits(np.asarray(t_out["normed"][1]), tp["block1"])            # [4, 4 heads, 5, 5]
  a_s = _logits(np.asarray(s_out["normed"][1]), sp["encoder"]["block1"])  # [4, 2 heads, 5, 5]
  diff = a_t - np.einsum("ts,bsqk->btqk", sp["distill"]["attn_mixing"]["t2_s2"], a_s)
  want_attn = np.mean(diff ** 2)
  rdiff = np.asarray(t_out["tokens"]) - np.asarray(s_out["tokens"]) @ sp["distill"]["rep_projection"]["t2_s2"]
  want_rep = np.mean(rdiff ** 2)
  assert float(metrics["attn_loss"]) == pytest.approx(want_attn, rel=1e-4)
  assert float(metrics["rep_loss"]) == pytest.approx(want_rep, rel=1e-4)
  assert float(total) == pytest.approx(
      float(metrics["recon_loss"]) + want_attn + want_rep, rel=1e-4)
  # Non-vacuous: L1 and summed versions give other numbers here.
  assert abs(np.mean(np.abs(diff)) - want_attn) > 1e-3 * want_attn
  assert diff.size > 1 and rdiff.size > 1


def test_patch_grid_mismatch_is_rejected(tmp_path):
  cfg = dict(_TEACHER, patch_size=4)
  shapes = jax.eval_shape(models.build(cfg).init, jax.random.PRNGKey(0), _batch()["image"])
  path = export.save(str(tmp_path / "export"), cfg,
                     jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes))
  config = _config(path)
  with pytest.raises(ValueError, match="patch size 4 differs"):
    dmae.init(jax.random.PRNGKey(0), _batch(), config)


def test_missing_teacher_and_bad_layers_are_rejected(teacher_path):
  config = _config(teacher_path)
  config.dmae.teacher = None
  with pytest.raises(ValueError, match="dmae.teacher is not set"):
    dmae.init(jax.random.PRNGKey(0), _batch(), config)
  with pytest.raises(ValueError, match="decoder_layer=7"):
    dmae.init(jax.random.PRNGKey(0), _batch(), _config(teacher_path, decoder_layer=7))


def test_config_variants():
  module = _config_module()
  d2 = module.get_config("d2mae_vit_tiny_in1k")
  assert d2.method == "dmae" and d2.dmae.decoder_layer == 8 and d2.dmae.extra_attn_block
  assert d2.model.num_heads == 12 and d2.model.patch_size == 16
  assert (d2.mae.decoder.width, d2.mae.decoder.depth, d2.mae.decoder.num_heads) == (96, 1, 3)
  d = module.get_config("dmae_cpu")
  assert d.dmae.decoder_layer is None and not d.dmae.extra_attn_block
  assert module.get_config("teacher_cpu").method == "mae"
  assert module.get_config("dmae_vit_small_in1k").model.variant == "S"
  with pytest.raises(ValueError, match="Valid"):
    module.get_config("dmae_vit_huge")


def test_d2_export_resets_the_final_norm_trained_on_layer_k(teacher_path, d2_vars):
  """D²-MAE trains `norm` on layer-k tokens; the export resets it to its
  initial value (MAE fine-tuning's fresh fc_norm), D-MAE keeps its own."""
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: x, d2_vars.params)
  enc = dict(params["encoder"])
  enc["norm"] = {"scale": jnp.asarray(rng.uniform(0.5, 2.0, 16), jnp.float32),
                 "bias": jnp.asarray(rng.normal(size=16), jnp.float32)}
  params["encoder"] = enc
  images = _batch()["image"]
  module = models.build(_STUDENT)

  d2 = get_method("dmae").encoder(_config(teacher_path)).variables(params, {})["params"]
  np.testing.assert_array_equal(d2["norm"]["scale"], np.ones(16))
  np.testing.assert_array_equal(d2["norm"]["bias"], np.zeros(16))
  for name in ("patch_embed", "block0", "block1", "cls_token"):
    chex.assert_trees_all_equal(d2[name], enc[name])
  # The exported tokens are the last block's output standardised per token.
  out = jax.jit(lambda v, x: module.apply(v, x, return_hidden=True))({"params": d2}, images)
  last = np.asarray(out["hidden"][-1], np.float64)
  want = (last - last.mean(-1, keepdims=True)) / np.sqrt(last.var(-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(out["tokens"], want, atol=1e-4)

  d1 = get_method("dmae").encoder(_config(teacher_path, variant="dmae_cpu")).variables(
      params, {})["params"]
  chex.assert_trees_all_equal(d1["norm"], enc["norm"])
