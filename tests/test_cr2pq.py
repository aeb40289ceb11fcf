"""CR2PQ (004): relative coordinates, continuous RoPE, positional queries, teachers."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import export, models
from ssl_jax.methods import cr2pq
from ssl_jax.methods import get as get_method
from ssl_jax.models import layers
from ssl_jax.ops import ema, posemb, rope
from tests.conftest import config_module

_STUDENT = dict(name="vit", variant="Ti", width=32, depth=1, num_heads=2, patch_size=4)
# A frozen teacher on a coarser grid (2x2 tokens on 16x16 images vs the student's 4x4).
_TEACHER = dict(name="vit", variant="Ti", width=24, depth=1, num_heads=2, patch_size=8)


def _config_module():
  return config_module("cr2pq.py")


def _config(teacher="ema", **overrides):
  c = _config_module().get_config("vit_tiny")
  c.model = dict(_STUDENT)
  c.cr2pq.teacher = teacher
  c.cr2pq.decoder.depth = 1
  c.cr2pq.projector_hidden_dim = 16
  c.total_steps = 10
  for k, v in overrides.items():
    c.cr2pq[k] = v
  return c


def _batch(n=4, seed=0):
  rng = np.random.RandomState(seed)   # numpy: eager jax.random compiles per op
  return {
      "view_a": jnp.asarray(rng.randn(n, 16, 16, 3), jnp.float32),
      "view_b": jnp.asarray(rng.randn(n, 16, 16, 3), jnp.float32),
      # contained, overlapping, disjoint and equal crops of a 28x28 image
      "box_a": jnp.array([[0, 0, 28, 28], [0, 0, 14, 14], [0, 0, 8, 8], [4, 4, 20, 20]],
                         jnp.float32)[:n],
      "box_b": jnp.array([[7, 7, 14, 14], [7, 3, 14, 14], [18, 20, 8, 8], [4, 4, 20, 20]],
                         jnp.float32)[:n],
      "flip_a": jnp.zeros((n,)), "flip_b": jnp.array([0., 1., 0., 0.])[:n],
      "label": jnp.zeros((n,), jnp.int32),
  }


def _init(c, batch):
  # Jitted: an eager Flax init costs several times its compile on CPU.
  return jax.jit(lambda rng, b: cr2pq.init(rng, b, c))(jax.random.PRNGKey(0), batch)


def _forward(c, v, batch, shapes_only=False):
  f = lambda b: cr2pq._forward(v.params, v.state, v.constants, b, jax.random.PRNGKey(1), c,
                               train=False)
  return jax.eval_shape(f, batch) if shapes_only else jax.jit(f)(batch)


@pytest.fixture(scope="module")
def ema_setup():
  c, batch = _config("ema"), _batch()
  return c, batch, _init(c, batch)


@pytest.fixture(scope="module")
def pixels_setup():
  c, batch = _config("pixels"), _batch()
  return c, batch, _init(c, batch)


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
  module = models.build(_TEACHER)
  variables = jax.jit(module.init)(jax.random.PRNGKey(7), _batch()["view_a"])
  return export.save(str(tmp_path_factory.mktemp("teacher") / "export"), _TEACHER, variables)


# ------------------------------------------------------- relative coordinates (Eq. 3-4)

def _rel(box_a, box_b, grid_a, grid_b, anchor="centre"):
  return np.asarray(cr2pq.relative_coordinates(jnp.array(box_a, jnp.float32),
                                               jnp.array(box_b, jnp.float32),
                                               grid_a, grid_b, anchor))


def test_equal_boxes_give_exactly_a_grid():
  for box, grid in (([3, 5, 21, 17], 4), ([0, 0, 224, 224], 14), ([1.5, 2.25, 9.7, 30.1], 7)):
    got = _rel(box, box, grid, grid)
    want = posemb.grid_coords(grid, grid).reshape(grid, grid, 2)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_rel(box, box, grid, grid, "corner"), want)


def test_containing_crop_hand_computed():
  # A: 32 px, 4 patches of 8 px. B inside A at (8, 16), 16 px, 4 patches of 4 px.
  # B patch m centre: 8 + 4m + 2 px -> (10 + 4m) / 8 - 0.5 = 0.75 + 0.5m.
  got = _rel([0, 0, 32, 32], [8, 16, 16, 16], 4, 4)
  np.testing.assert_allclose(got[:, 0, 0], [0.75, 1.25, 1.75, 2.25], atol=1e-6)
  np.testing.assert_allclose(got[0, :, 1], [1.75, 2.25, 2.75, 3.25], atol=1e-6)
  # Eq. 4 literally (top-left corners): K_A (p_B - p_A) / p_A,h + p_B,h K_A m / (K_B p_A,h).
  corner = _rel([0, 0, 32, 32], [8, 16, 16, 16], 4, 4, "corner")
  np.testing.assert_allclose(corner[:, 0, 0], [1.0, 1.5, 2.0, 2.5], atol=1e-6)
  np.testing.assert_allclose(corner[0, :, 1], [2.0, 2.5, 3.0, 3.5], atol=1e-6)


def test_overlapping_crop_with_different_grids():
  # A: 16 px, 2 patches of 8 px; B at (8, 4), 16 px, 4 patches of 4 px.
  got = _rel([0, 0, 16, 16], [8, 4, 16, 16], 2, 4)
  assert got.shape == (4, 4, 2)
  np.testing.assert_allclose(got[:, 0, 0], [0.75, 1.25, 1.75, 2.25], atol=1e-6)
  np.testing.assert_allclose(got[0, :, 1], [0.25, 0.75, 1.25, 1.75], atol=1e-6)


def test_disjoint_and_preceding_crops():
  # B right-below A, non-square cells (rows 5 px, cols 10 px) in A's 5 px units.
  got = _rel([0, 0, 10, 10], [20, 30, 10, 20], 2, 2)
  np.testing.assert_allclose(got[:, 0, 0], [4.0, 5.0], atol=1e-6)
  np.testing.assert_allclose(got[0, :, 1], [6.5, 8.5], atol=1e-6)
  # B above-left of A: negative coordinates.
  got = _rel([20, 20, 10, 10], [0, 0, 10, 10], 2, 2)
  np.testing.assert_allclose(got[:, 0, 0], [-4.0, -3.0], atol=1e-6)
  np.testing.assert_allclose(got[0, :, 1], [-4.0, -3.0], atol=1e-6)


def test_flipped_view_reads_columns_backwards():
  box = jnp.array([2, 3, 16, 16], jnp.float32)
  got = np.asarray(cr2pq.relative_coordinates(box, cr2pq.signed_box(box, 1.0), 4, 4))
  np.testing.assert_allclose(got[0, :, 1], [3, 2, 1, 0], atol=1e-6)
  np.testing.assert_allclose(got[:, 0, 0], [0, 1, 2, 3], atol=1e-6)
  both = cr2pq.relative_coordinates(cr2pq.signed_box(box, 1.0), cr2pq.signed_box(box, 1.0), 4, 4)
  np.testing.assert_array_equal(np.asarray(both), posemb.grid_coords(4, 4).reshape(4, 4, 2))


# ------------------------------------------------------- continuous 2D RoPE (Eq. 5-7)

@jax.jit
def _logits(q, k, qc, kc):
  return jnp.einsum("bhqd,bhkd->bhqk", rope.apply_rope_2d(q, qc), rope.apply_rope_2d(k, kc))


def test_rope_logits_depend_only_on_coordinate_difference():
  rng = np.random.RandomState(0)
  q = np.float32(rng.randn(2, 3, 5, 16) / 4)
  k = np.float32(rng.randn(2, 3, 7, 16) / 4)
  qc = np.float32(rng.uniform(-3, 9, (2, 5, 2)))
  kc = np.float32(rng.uniform(-3, 9, (2, 7, 2)))
  offset = np.float32(rng.uniform(-6, 6, (2, 1, 2)))   # real-valued, per sample
  base = _logits(q, k, qc, kc)
  np.testing.assert_allclose(_logits(q, k, qc + offset, kc + offset), base, atol=1e-5)
  # Moving only the queries changes the logits: the positions are really used.
  assert np.max(np.abs(_logits(q, k, qc + offset, kc) - base)) > 1e-2


def test_rope_axes_and_frequencies():
  # Eq. 6: first half of a head rotates with the row, second half with the column;
  # theta_t = 10000^(-t / (D/2)), t = 0, 2, ..., D/2 - 2 (D/4 pairs per axis).
  np.testing.assert_allclose(rope.rope_frequencies(16), 10000.0 ** (-np.arange(0, 8, 2) / 8),
                             rtol=1e-6)
  x = np.float32(np.random.RandomState(1).randn(1, 1, 3, 16))
  c = jnp.array([[[0., 0.], [0., 2.5], [1.5, 0.]]])
  out = np.asarray(jax.jit(rope.apply_rope_2d)(x, c))
  np.testing.assert_allclose(out[..., 0, :], x[..., 0, :], atol=1e-6)          # origin: identity
  np.testing.assert_allclose(out[..., 1, :8], x[..., 1, :8], atol=1e-6)        # column move
  assert np.max(np.abs(out[..., 1, 8:] - x[..., 1, 8:])) > 1e-3
  np.testing.assert_allclose(out[..., 2, 8:], x[..., 2, 8:], atol=1e-6)        # row move
  # A pair (x0, x1) is the complex number x0 + i x1 multiplied by e^{i theta m}.
  z = (x[0, 0, 2, 0] + 1j * x[0, 0, 2, 1]) * np.exp(1j * 1.5)
  np.testing.assert_allclose([out[0, 0, 2, 0], out[0, 0, 2, 1]], [z.real, z.imag], atol=1e-5)


def test_attention_with_rope_is_translation_invariant():
  attn = layers.Attention(num_heads=2)
  # 3x3 patches, no CLS: an unrotated CLS sees absolute key positions.
  x = np.float32(np.random.RandomState(2).randn(2, 9, 16))
  coords = jnp.broadcast_to(jnp.asarray(posemb.grid_coords(3, 3)), (2, 9, 2))
  params = jax.jit(lambda c: attn.init(jax.random.PRNGKey(3), x, q_coords=c, k_coords=c))(coords)
  run = jax.jit(lambda c: attn.apply(params, x, q_coords=c, k_coords=c)[0])
  np.testing.assert_allclose(run(coords + jnp.array([2.37, -5.11])), run(coords), atol=1e-5)
  assert np.max(np.abs(run(coords * 1.5) - run(coords))) > 1e-3


# ------------------------------------------------------- positional queries (Eq. 8)

def test_queries_at_a_coordinates_peak_at_matching_keys():
  # Zero-content query vs keys of one shared content: the RoPE logit
  # sum_t |c_t|^2 cos(theta_t (m - h)) peaks exactly where the query's
  # rotation equals the key's, i.e. at the key of the same position.
  box_a = jnp.array([0, 0, 32, 32], jnp.float32)
  coords_a = jnp.asarray(posemb.grid_coords(8, 8))[None]
  content = np.float32(np.random.RandomState(4).randn(16))
  k = jnp.broadcast_to(content, (1, 1, 64, 16))

  def argmax_keys(box_b, grid_b):
    qc = cr2pq.relative_coordinates(box_a, box_b, 8, grid_b).reshape(1, -1, 2)
    q = jnp.broadcast_to(content, (1, 1, qc.shape[1], 16))
    return np.asarray(jnp.argmax(_logits(q, k, qc, coords_a)[0, 0], axis=-1))

  np.testing.assert_array_equal(argmax_keys(box_a, 8), np.arange(64))
  # B = A's patches rows 2-5, cols 3-6 on a 4x4 grid: query (m, n) -> key (2+m, 3+n).
  m, n = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
  np.testing.assert_array_equal(argmax_keys(jnp.array([8, 12, 16, 16.]), 4),
                                ((2 + m) * 8 + 3 + n).reshape(-1))


def test_method_queries_for_equal_crops_are_the_encoder_grid(ema_setup):
  c, batch, v = ema_setup
  # The EMA teacher shares the student's 4x4 grid, so K_B = K_A.
  shapes = _forward(c, v, batch, shapes_only=True)
  assert shapes[1].shape == shapes[2].shape == (4, 16, 2)
  same = dict(batch, box_b=batch["box_a"], flip_b=batch["flip_a"])
  query_coords = np.asarray(cr2pq.query_coordinates(same, (4, 4), (4, 4), c))
  np.testing.assert_array_equal(query_coords, np.broadcast_to(posemb.grid_coords(4, 4), (4, 16, 2)))
  # Example 1 of `_batch` has B flipped: its columns come out mirrored.
  flipped = cr2pq.query_coordinates(batch, (4, 4), (4, 4), c)
  assert float(flipped[1, 1, 1]) < float(flipped[1, 0, 1])


# ------------------------------------------------------- teachers and objectives (Eq. 9-10)

def _check_step(c, batch, v=None):
  """One jitted value_and_grad w.r.t. params, state and constants; returns
  (vars, gradients w.r.t. the teacher's state and constants)."""
  v = _init(c, batch) if v is None else v
  f = lambda p, s, k: cr2pq.loss(p, s, k, batch, jax.random.PRNGKey(1), 3, c)
  (l, (metrics, _)), (grads, state_grads, const_grads) = jax.jit(
      jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))(v.params, v.state, v.constants)
  assert np.isfinite(float(l)) and float(l) > 0
  np.testing.assert_allclose(
      float(l), float(metrics["patch_loss"] + c.cr2pq.global_weight * metrics["global_loss"]),
      rtol=1e-5)
  chex.assert_trees_all_equal_shapes(grads, v.params)
  for part in ("encoder", "predictor", "projector"):
    assert float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(grads[part]))) > 0, part
  return v, state_grads, const_grads


def test_ema_teacher_step_and_no_gradient(ema_setup):
  c, batch, v = ema_setup
  _, state_grads, _ = _check_step(c, batch, v)
  assert jax.tree.leaves(state_grads)
  chex.assert_trees_all_close(state_grads, jax.tree.map(jnp.zeros_like, v.state))


def test_frozen_teacher_on_coarser_grid(teacher_path):
  c, batch = _config("frozen", teacher_path=teacher_path), _batch()
  v, _, const_grads = _check_step(c, batch)
  assert v.state == {}
  assert v.params["predictor"]["pred"]["kernel"].shape[-1] == _TEACHER["width"]
  assert jax.tree.leaves(const_grads)
  chex.assert_trees_all_close(const_grads, jax.tree.map(jnp.zeros_like, v.constants))
  # K_B is the teacher's 2x2 grid (004 Sec. 4.2), unless a query grid is asked for.
  _, _, qc, tokens, _ = _forward(c, v, batch, shapes_only=True)
  assert qc.shape == (4, 4, 2) and tokens.shape == (4, 4, _TEACHER["width"])
  c.cr2pq.query_grid = 4
  _, _, qc, tokens, _ = _forward(c, v, batch, shapes_only=True)
  assert qc.shape == (4, 16, 2) and tokens.shape == (4, 16, _TEACHER["width"])


def test_pixel_teacher_step(pixels_setup):
  c, batch, v = pixels_setup
  _check_step(c, batch, v)
  assert v.params["predictor"]["pred"]["kernel"].shape[-1] == 4 * 4 * 3


def test_discrete_rope_ablation_predicts_masked_cells(pixels_setup):
  # Tab. 6 "discrete": one view, 75% of A's 16 cells masked -> 12 queries.
  # Same parameters as the continuous model: only the views and queries change.
  _, batch, v = pixels_setup
  c = _config("pixels", pos_encoding="rope_discrete")
  context, _, qc, tokens, query_targets = _forward(c, v, batch)
  assert context.shape[1] == 4 and qc.shape == (4, 12, 2) and tokens.shape[1] == 16
  # Query targets are the teacher tokens at the masked cells' own positions.
  idx = (qc[..., 0] * 4 + qc[..., 1]).astype(jnp.int32)
  np.testing.assert_array_equal(query_targets, jnp.take_along_axis(tokens, idx[..., None], 1))


@pytest.mark.parametrize("pos", ["sincos_continuous", "learnable", "sincos_discrete"])
def test_additive_position_ablations_trace(pos):
  # Shapes only (no compile): these differ from the tested paths in the query embedding.
  c, batch = _config("ema", pos_encoding=pos), _batch()
  v = jax.eval_shape(lambda b: cr2pq.init(jax.random.PRNGKey(0), b, c), batch)
  f = lambda p, s, k: cr2pq.loss(p, s, k, batch, jax.random.PRNGKey(1), 0, c)
  (l, _), grads = jax.eval_shape(jax.value_and_grad(f, has_aux=True),
                                 v.params, v.state, v.constants)
  assert l.shape == () and jax.tree.structure(grads) == jax.tree.structure(v.params)
  assert get_method("cr2pq").encoder(c).model["posemb"] == cr2pq.POS_ENCODINGS[pos].encoder_posemb


def test_ema_update_follows_momentum_rule(ema_setup):
  c, _, v = ema_setup
  teacher = jax.device_get(v.state["teacher"])
  student = jax.tree.map(lambda x: x + np.float32(1.0), teacher)   # numpy, no eager jax ops
  step = 4
  # Cosine rise 0.996 -> 1 over c.total_steps = 10 steps.
  m = 1.0 - (1.0 - 0.996) * (np.cos(np.pi * step / c.total_steps) + 1) / 2
  new = jax.jit(lambda s, p: cr2pq.update(s, p, step, c))(
      v.state, dict(v.params, encoder=student))
  want = jax.tree.map(lambda t, s: m * t + (1 - m) * s, teacher, student)
  chex.assert_trees_all_close(jax.device_get(new["teacher"]), want, atol=1e-6)
  # student = teacher + 1, so every weight moved by exactly 1 - m.
  for a, b in zip(jax.tree.leaves(jax.device_get(new["teacher"])), jax.tree.leaves(teacher)):
    np.testing.assert_allclose(a - b, 1 - m, rtol=2e-3)
  assert float(ema.cosine_momentum(c.total_steps, c.total_steps, 0.996)) == 1.0


def test_encoder_spec_is_a_plain_rope_vit(ema_setup):
  c, _, v = ema_setup
  spec = get_method("cr2pq").encoder(c)
  assert spec.model["posemb"] == "rope" and spec.model["patch_size"] == 4
  out = jax.jit(models.build(spec.model).apply)(spec.variables(v.params, v.state),
                                                _batch()["view_a"])
  assert out["patch"].shape == (4, 16, 32)
  assert get_method("cr2pq").views(c) == "two_crops"


def test_bad_choices_name_the_valid_ones(teacher_path):
  with pytest.raises(ValueError, match="rope_continuous"):
    cr2pq.pos_encoding(_config(pos_encoding="rope2d"))
  with pytest.raises(ValueError, match="needs cr2pq.teacher_path"):
    jax.eval_shape(lambda b: cr2pq.init(jax.random.PRNGKey(0), b, _config("frozen")), _batch())
  with pytest.raises(ValueError, match="ema, frozen, pixels"):
    jax.eval_shape(lambda b: cr2pq.init(jax.random.PRNGKey(0), b, _config("momentum")), _batch())
  with pytest.raises(ValueError, match="vit_tiny"):
    _config_module().get_config("vit_huge")
  for variant in ("vit_small_in1k", "vit_base_in1k"):
    c = _config_module().get_config(variant)
    assert c.batch_size == 2048 and c.optim.warmup_epochs == 40
