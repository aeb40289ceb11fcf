"""DINO-family numerics against hand-written numpy: DINO CE, iBOT patch CE,
KoLeo, Sinkhorn-Knopp, centring, DINO head's weight-normalised layer,
teacher temperature and the optimizer's DINO options."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import config_defaults, optim
from ssl_jax.models import dino_head
from ssl_jax.ops import dino_loss as L

RNG = np.random.default_rng(0)


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _log_softmax(x):
  return np.log(_softmax(x))


def test_dino_cls_loss_matches_algorithm_1():
  v, b, k = 5, 3, 7            # 2 global + 3 local crops
  s = RNG.normal(size=(v, b, k)).astype(np.float32)
  t = RNG.normal(size=(2, b, k)).astype(np.float32)
  centre = RNG.normal(size=(1, k)).astype(np.float32) * 0.1
  q = _softmax((t - centre) / 0.04)
  total, n, kl = 0.0, 0, 0.0
  for iq in range(2):
    for iv in range(v):
      if iv == iq:
        continue
      ce = np.sum(-q[iq] * _log_softmax(s[iv] / 0.1), -1)
      total += ce.mean()
      kl += (ce + np.sum(q[iq] * np.log(q[iq]), -1)).mean()
      n += 1
  probs = L.centred_softmax(jnp.asarray(t), jnp.asarray(centre), 0.04)
  np.testing.assert_allclose(np.asarray(probs), q, rtol=1e-5, atol=1e-6)
  got, got_kl = L.dino_cls_loss(jnp.asarray(s), probs, 0.1)
  assert float(got) == pytest.approx(total / n, rel=1e-5)
  assert float(got_kl) == pytest.approx(kl / n, rel=1e-4)


def test_masked_patch_loss_matches_ibot():
  c, b, n, k = 2, 3, 6, 5
  s = RNG.normal(size=(c, b, n, k)).astype(np.float32)
  t = _softmax(RNG.normal(size=(c, b, n, k)) / 0.07).astype(np.float32)
  mask = (RNG.uniform(size=(c, b, n)) < 0.4).astype(np.float32)
  mask[0, 1] = 0.0             # an unmasked image counts as 0 in the mean
  want = 0.0
  for i in range(c):
    ce = np.sum(-t[i] * _log_softmax(s[i] / 0.1), -1)             # [B, N]
    want += (np.sum(ce * mask[i], -1) / np.maximum(mask[i].sum(-1), 1.0)).mean()
  got = L.masked_patch_loss(jnp.asarray(s), jnp.asarray(t), jnp.asarray(mask), 0.1)
  assert float(got) == pytest.approx(want / c, rel=1e-5)


def test_koleo_matches_numpy():
  x = RNG.normal(size=(6, 4)).astype(np.float32)
  xn = x / np.linalg.norm(x, axis=-1, keepdims=True)
  d = xn @ xn.T
  np.fill_diagonal(d, -1)
  nn_idx = d.argmax(1)
  dist = np.linalg.norm(xn - xn[nn_idx] + 1e-8, axis=-1)
  want = -np.log(dist + 1e-8).mean()
  assert float(L.koleo(jnp.asarray(x))) == pytest.approx(want, rel=1e-5)
  # Spreading the points lowers it; a duplicate point blows it up.
  assert float(L.koleo(jnp.asarray(np.concatenate([x[:5], x[:1]])))) > want + 5


def _sinkhorn_numpy(logits, temp, iters):
  """DINOv2 `sinkhorn_knopp_teacher`, transcribed (Q is K x B)."""
  q = np.exp(logits / temp).T
  b, k = q.shape[1], q.shape[0]
  q /= q.sum()
  for _ in range(iters):
    q /= q.sum(1, keepdims=True)
    q /= k
    q /= q.sum(0, keepdims=True)
    q /= b
  q *= b
  return q.T


def test_sinkhorn_knopp_matches_dinov2_and_balances_prototypes():
  logits = RNG.normal(size=(12, 5)).astype(np.float64)
  want = _sinkhorn_numpy(logits, 0.5, 3)
  got = np.asarray(L.sinkhorn_knopp(jnp.asarray(logits, jnp.float32), 0.5, 3))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-5)
  many = np.asarray(L.sinkhorn_knopp(jnp.asarray(logits, jnp.float32), 0.5, 50))
  np.testing.assert_allclose(many.mean(0), 1.0 / 5, rtol=1e-3)       # equal prototype use
  # Rows with weight 0 (unmasked patches) are left out and come back as 0.
  w = np.array([1] * 8 + [0] * 4, np.float32)
  got_w = np.asarray(L.sinkhorn_knopp(jnp.asarray(logits, jnp.float32), 0.5, 3, jnp.asarray(w)))
  np.testing.assert_allclose(got_w[:8], _sinkhorn_numpy(logits[:8], 0.5, 3), rtol=1e-4, atol=1e-6)
  assert not got_w[8:].any()


def test_centre_update_is_ema_of_batch_mean():
  c = RNG.normal(size=(1, 4)).astype(np.float32)
  t = RNG.normal(size=(2, 3, 4)).astype(np.float32)
  got = L.update_centre(jnp.asarray(c), jnp.asarray(t), 0.9)
  np.testing.assert_allclose(np.asarray(got), 0.9 * c + 0.1 * t.reshape(-1, 4).mean(0), rtol=1e-6)


def test_teacher_temperature_warmup():
  temps = [float(L.teacher_temperature(s, 10, 0.04, 0.07)) for s in (0, 5, 10, 50)]
  np.testing.assert_allclose(temps, [0.04, 0.055, 0.07, 0.07], rtol=1e-6)
  assert float(L.teacher_temperature(3, 0, 0.04, 0.07)) == pytest.approx(0.07)


def test_weight_normalised_last_layer_and_head():
  layer = dino_head.WeightNormDense(6)
  x = RNG.normal(size=(3, 4)).astype(np.float32)
  p = layer.init(jax.random.PRNGKey(0), x)["params"]
  v = np.asarray(p["kernel"]) * 3.0          # scaling v must not change the output (g = 1)
  want = x @ (v / np.linalg.norm(v, axis=0, keepdims=True))
  got = layer.apply({"params": {"kernel": jnp.asarray(v)}}, x)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
  # The column norms come from a matmul (speed); the gradient is still the textbook one.
  ref = lambda k: jnp.sum(jnp.sin(x @ (k / jnp.linalg.norm(k, axis=0, keepdims=True))))
  ours = lambda k: jnp.sum(jnp.sin(layer.apply({"params": {"kernel": k}}, x)))
  np.testing.assert_allclose(np.asarray(jax.grad(ours)(jnp.asarray(v))),
                             np.asarray(jax.grad(ref)(jnp.asarray(v))), rtol=1e-4, atol=1e-6)
  head = dino_head.DINOHead(out_dim=16, hidden_dim=8, bottleneck_dim=4)
  hp = head.init(jax.random.PRNGKey(1), x)["params"]
  assert set(hp) == {"mlp0", "mlp1", "mlp2", "last_layer"} and "bias" not in hp["last_layer"]
  out = np.asarray(head.apply({"params": hp}, x))
  assert out.shape == (3, 16) and np.abs(out).max() <= 1.0 + 1e-5     # cosines
  learn = dino_head.DINOHead(out_dim=16, hidden_dim=8, bottleneck_dim=4, norm_last_layer=False)
  lp = learn.init(jax.random.PRNGKey(1), x)["params"]
  np.testing.assert_array_equal(np.asarray(lp["last_layer"]["g"]), 1.0)


def _optim_config(**optim_kw):
  c = config_defaults.base_config()
  c.batch_size = 256
  c.optim.update(dict(base_lr=1.0, min_lr=1.0, warmup_steps=0, b1=0.0, b2=0.0))
  c.optim.update(optim_kw)
  return c


def test_frozen_last_layer_gets_no_update_nor_weight_decay_then_trains():
  params = {"head": {"last_layer": {"kernel": jnp.ones((2, 2))}, "mlp0": {"kernel": jnp.ones((2, 2))}}}
  cfg = _optim_config(weight_decay=0.1, frozen=(("last_layer", 1.0),))
  tx, _ = optim.make_optimizer(cfg, total_steps=10, steps_per_epoch=3)
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  for step in range(4):
    upd, state = tx.update(grads, state, params)
    last = np.asarray(upd["head"]["last_layer"]["kernel"])
    if step < 3:
      assert not last.any(), f"step {step}: frozen last layer moved"
    else:
      assert np.abs(last).min() > 0
    assert np.abs(np.asarray(upd["head"]["mlp0"]["kernel"])).min() > 0


def test_cosine_weight_decay_schedule_and_per_param_clipping():
  cfg = _optim_config(weight_decay=0.04, weight_decay_end=0.4)
  wd = optim.weight_decay_schedule(cfg, 100)
  np.testing.assert_allclose([float(wd(0)), float(wd(50)), float(wd(100))], [0.04, 0.22, 0.4],
                             rtol=1e-5)
  # The decay actually applied by the optimizer follows it: zero gradient, lr 1
  # -> update = -wd(step) * param.
  params = {"w": jnp.ones((2, 2))}
  tx, _ = optim.make_optimizer(cfg, total_steps=100, steps_per_epoch=10)
  state = tx.init(params)
  upd, state = tx.update({"w": jnp.zeros((2, 2))}, state, params)
  np.testing.assert_allclose(np.asarray(upd["w"]), -0.04, rtol=1e-4)
  clip = optim.clip_per_param(3.0)
  g = {"a": jnp.full((4,), 10.0), "b": jnp.full((4,), 0.1)}
  out, _ = clip.update(g, clip.init(g))
  assert float(jnp.linalg.norm(out["a"])) == pytest.approx(3.0, rel=1e-4)
  np.testing.assert_allclose(np.asarray(out["b"]), 0.1)        # small ones untouched
  with pytest.raises(ValueError, match="per_param"):
    optim.make_optimizer(_optim_config(clip_grad_norm=3.0, clip_grad_mode="layer"), 10, 1)
