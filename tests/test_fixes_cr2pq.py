"""CR2PQ review fixes (issue 11): flips with either coordinate anchor, the
paper's RoPE frequency formula as an option."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import models
from ssl_jax.methods import cr2pq
from ssl_jax.ops import rope
from tests.conftest import config_module


def _rel(box_a, box_b, grid_a, grid_b, anchor):
  return np.asarray(cr2pq.relative_coordinates(jnp.asarray(box_a, jnp.float32),
                                               jnp.asarray(box_b, jnp.float32),
                                               grid_a, grid_b, anchor))


def _flip(box):
  return np.asarray(cr2pq.signed_box(jnp.asarray(box, jnp.float32), 1.0))


@pytest.mark.parametrize("anchor", cr2pq.COORD_ANCHORS)
def test_flipped_crop_coordinates_are_the_mirrored_unflipped_ones(anchor):
  """Flipped B's column j shows B's pixels of column K_B-1-j, so it must sit
  where that unflipped column sits; a flipped A mirrors A's column axis."""
  rng = np.random.default_rng(0)
  for _ in range(6):
    box_a = [*rng.uniform(0, 20, 2), *rng.uniform(6, 30, 2)]
    box_b = [*rng.uniform(0, 20, 2), *rng.uniform(6, 30, 2)]
    ga, gb = (int(rng.integers(2, 6)), int(rng.integers(2, 6))), (3, int(rng.integers(2, 6)))
    plain = _rel(box_a, box_b, ga, gb, anchor)
    flip_b = _rel(box_a, _flip(box_b), ga, gb, anchor)
    np.testing.assert_allclose(flip_b, plain[:, ::-1], atol=1e-4)
    flip_a = _rel(_flip(box_a), box_b, ga, gb, anchor)
    np.testing.assert_allclose(flip_a[..., 0], plain[..., 0], atol=1e-4)
    np.testing.assert_allclose(flip_a[..., 1], ga[1] - 1 - plain[..., 1], atol=1e-4)
    both = _rel(_flip(box_a), _flip(box_b), ga, gb, anchor)
    np.testing.assert_allclose(both[..., 1], ga[1] - 1 - plain[:, ::-1, 1], atol=1e-4)


def test_corner_anchor_flip_hand_computed():
  # A = B = 16 px wide at x = 0, 4 patches of 4 px, B flipped. Corner anchor:
  # flipped column j shows original patch 3 - j, whose top-left corner is
  # 4 (3 - j) px -> A coordinate 3 - j (the old code gave 4 - j).
  got = _rel([0, 0, 16, 16], _flip([0, 0, 16, 16]), 4, 4, "corner")
  np.testing.assert_allclose(got[0, :, 1], [3, 2, 1, 0], atol=1e-6)


def test_method_query_coordinates_follow_flip_flags():
  c = config_module("cr2pq.py").get_config("vit_tiny")
  c.cr2pq.coord_anchor = "corner"
  boxes = jnp.array([[2, 3, 20, 16], [5, 1, 12, 24]], jnp.float32)
  batch = {"box_a": boxes[:1].repeat(2, 0), "box_b": boxes[1:].repeat(2, 0),
           "flip_a": jnp.zeros(2), "flip_b": jnp.array([0.0, 1.0])}
  q = np.asarray(cr2pq.query_coordinates(batch, (4, 4), (3, 5), c)).reshape(2, 3, 5, 2)
  np.testing.assert_allclose(q[1], q[0][:, ::-1], atol=1e-5)


# ---------------------------------------------------------------- RoPE frequencies

def _angles(head_dim, coord, kind):
  """Rotation angle of every channel pair, read off by rotating unit vectors."""
  d = head_dim
  eye = jnp.eye(d, dtype=jnp.float32)[None, None]                # [1, 1, D, D]: token i = e_i
  coords = jnp.broadcast_to(jnp.asarray(coord, jnp.float32), (1, d, 2))
  out = np.asarray(rope.apply_rope_2d(eye, coords, frequencies=kind))[0, 0]
  ev = np.arange(0, d, 2)
  return np.arctan2(out[ev, ev + 1], out[ev, ev])              # e_{2p} -> (cos, sin)


def test_cr2pq_frequencies_are_the_papers_theta_t():
  """004 Sec. 3.2: theta_t = 10000^(-t / (D_head/2)), t = 0..D_head/4 - 1, for
  each axis; the axial default is base^(-2t / (D_head/2))."""
  d = 32
  t = np.arange(d // 4)
  np.testing.assert_allclose(rope.rope_frequencies(d, kind="cr2pq"),
                             10000.0 ** (-t / (d / 2)), rtol=1e-6)
  np.testing.assert_allclose(rope.rope_frequencies(d, kind="axial"),
                             10000.0 ** (-2 * t / (d / 2)), rtol=1e-6)
  # Rotations actually applied: row m = 0.7 turns the first half's pair t by
  # theta_t m, column n = 0.3 the second half's pair t by theta_t n.
  theta = 10000.0 ** (-t / (d / 2))
  ang = _angles(d, [0.7, 0.3], "cr2pq")
  np.testing.assert_allclose(ang[:d // 4], 0.7 * theta, atol=1e-5)
  np.testing.assert_allclose(ang[d // 4:], 0.3 * theta, atol=1e-5)
  with pytest.raises(ValueError, match="axial, cr2pq"):
    rope.rope_frequencies(d, kind="paper")


def test_rope_freqs_option_reaches_the_encoder_and_the_queries():
  c = config_module("cr2pq.py").get_config("vit_tiny")
  c.model = dict(name="vit", variant="Ti", width=32, depth=1, num_heads=2, patch_size=4)
  assert cr2pq.encoder_model(c)["rope_freqs"] == "axial"
  c.cr2pq.rope_freqs = "cr2pq"
  assert cr2pq.encoder_model(c)["rope_freqs"] == "cr2pq"
  enc = cr2pq.build_encoder(c)
  assert enc.rope_freqs == "cr2pq" and cr2pq.build_predictor(c, enc, 8).rope_freqs == "cr2pq"
  # Same weights, other frequencies: different features (the option is used).
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 3)), jnp.float32)
  variables = jax.jit(enc.init)(jax.random.PRNGKey(0), x)
  axial = models.build(dict(cr2pq.encoder_model(c), rope_freqs="axial"))
  feats = lambda m: jax.jit(m.apply)(variables, x)["patch"]
  diff = jnp.abs(feats(enc) - feats(axial)).max()
  assert float(diff) > 1e-3
  c.cr2pq.rope_freqs = "paper"
  with pytest.raises(ValueError, match="axial, cr2pq"):
    cr2pq.encoder_model(c)


# ---------------------------------------------------------------- symmetric option

def test_symmetric_loss_averages_both_directions():
  c = config_module("cr2pq.py").get_config("vit_tiny")
  c.model = dict(name="vit", variant="Ti", width=32, depth=1, num_heads=2, patch_size=4)
  c.cr2pq.teacher, c.cr2pq.decoder.depth, c.cr2pq.projector_hidden_dim = "pixels", 1, 16
  rng = np.random.default_rng(0)
  batch = {"view_a": jnp.asarray(rng.normal(size=(2, 16, 16, 3)), jnp.float32),
           "view_b": jnp.asarray(rng.normal(size=(2, 16, 16, 3)), jnp.float32),
           "box_a": jnp.array([[0, 0, 28, 28], [2, 3, 14, 20]], jnp.float32),
           "box_b": jnp.array([[7, 7, 14, 14], [0, 5, 20, 16]], jnp.float32),
           "flip_a": jnp.array([0.0, 1.0]), "flip_b": jnp.array([1.0, 0.0]),
           "label": jnp.zeros(2, jnp.int32)}
  swapped = cr2pq.swap_views(batch)
  np.testing.assert_array_equal(swapped["box_a"], batch["box_b"])
  np.testing.assert_array_equal(swapped["flip_b"], batch["flip_a"])
  v = jax.jit(lambda r, b: cr2pq.init(r, b, c))(jax.random.PRNGKey(0), batch)
  key = jax.random.PRNGKey(3)

  def metrics(b, k, symmetric):
    c.cr2pq.symmetric = symmetric
    return jax.jit(lambda p: cr2pq.loss(p, v.state, v.constants, b, k, 0, c))(v.params)

  ab = metrics(batch, key, False)
  ba = metrics(swapped, jax.random.fold_in(key, 1), False)
  both = metrics(batch, key, True)
  for name in ("patch_loss", "global_loss"):
    want = (ab[1][0][name] + ba[1][0][name]) / 2
    np.testing.assert_allclose(both[1][0][name], want, rtol=1e-5)
  assert abs(float(ab[1][0]["patch_loss"] - ba[1][0]["patch_loss"])) > 1e-4   # directions differ
  np.testing.assert_allclose(both[0], both[1][0]["patch_loss"]
                             + c.cr2pq.global_weight * both[1][0]["global_loss"], rtol=1e-5)
