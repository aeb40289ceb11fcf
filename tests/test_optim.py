"""Optimizer and step pieces against hand-written formulas: warm-up + cosine
lr, global-norm clipping, the weight-decay mask, gradient accumulation."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssl_jax import config_defaults, models, optim, train
from ssl_jax.methods.base import Method, MethodVars, scalar_metrics


def _config(**optim_kw):
  c = config_defaults.base_config()
  c.batch_size = 512
  c.optim.update(optim_kw)
  return c


def test_warmup_cosine_schedule_values():
  """MAE App. A.1: lr = base_lr * batch / 256, linear warm-up from 0, then a
  half cosine to min_lr at the last step. Breaks tried: peak without the
  batch / 256 scaling fails."""
  c = _config(base_lr=1e-3, min_lr=1e-5, warmup_epochs=2.0)
  total, per_epoch = 100, 5          # 10 warm-up steps
  lr = optim.lr_schedule(c, total, per_epoch)
  peak, w = 1e-3 * 512 / 256, 10
  for s in (0, 1, 5, 9, 10, 11, 40, 77, 99, 100):
    if s < w:
      want = peak * s / w
    else:
      want = 1e-5 + (peak - 1e-5) * 0.5 * (1 + math.cos(math.pi * (s - w) / (total - w)))
    assert float(lr(s)) == pytest.approx(want, rel=1e-5, abs=1e-9), s
  # warmup_steps overrides warmup_epochs.
  c.optim.warmup_steps = 4
  assert float(optim.lr_schedule(c, total, per_epoch)(2)) == pytest.approx(peak / 2, rel=1e-6)


def test_clip_grad_norm_scales_the_gradient_before_the_optimizer():
  """optim.clip_grad_norm = 1 with a gradient of global norm 10: SGD moves by
  lr * g / 10. Break tried: dropping the clip from the chain (moves 10x): fails."""
  c = _config(name="sgd", momentum=0.0, weight_decay=0.0, base_lr=0.5, warmup_steps=0,
              clip_grad_norm=1.0)
  tx, schedule = optim.make_optimizer(c, 10, 1)
  params = {"w": jnp.ones((2, 3)), "b": jnp.zeros((3,))}
  g = {"w": jnp.full((2, 3), 3.0), "b": jnp.array([4.0, -4.0, 4.0])}
  norm = float(optax.tree.norm(g))
  assert norm > 1.0
  updates, _ = tx.update(g, tx.init(params), params)
  lr0 = float(schedule(0))
  for k in g:
    np.testing.assert_allclose(np.asarray(updates[k]), -lr0 * np.asarray(g[k]) / norm, rtol=1e-6)
  # Below the threshold nothing is scaled.
  small = jax.tree.map(lambda x: x / (2 * norm), g)
  updates, _ = tx.update(small, tx.init(params), params)
  np.testing.assert_allclose(np.asarray(updates["w"]), -lr0 * np.asarray(small["w"]), rtol=1e-6)


def test_weight_decay_mask_on_a_real_vit_and_in_the_adamw_step():
  """Decay exactly the ndim > 1 kernels, never norms, biases, the learnt
  position table or the CLS token (MAE's param_groups_lrd / timm's
  no_weight_decay). A zero-gradient AdamW step then multiplies exactly those
  by (1 - lr * wd). The break this test caught in the real code: the per-head
  q/k/v biases ([heads, head_dim], ndim 2) were decayed (fixed in optim.py)."""
  module = models.build(dict(name="vit", variant="Ti", width=16, depth=1, num_heads=2,
                             patch_size=4, posemb="learn"))
  params = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"]
  params = jax.tree.map(lambda s: jnp.full(s.shape, 2.0, s.dtype), params)
  mask = optim.decay_mask(params)
  flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(mask)}
  decayed = sorted(k for k, v in flat.items() if v)
  assert decayed == sorted(
      [f"['block0']['attn']['{n}']['kernel']" for n in ("query", "key", "value", "out")] +
      ["['block0']['mlp']['fc1']['kernel']", "['block0']['mlp']['fc2']['kernel']",
       "['patch_embed']['kernel']"]), decayed
  assert not flat["['pos_embedding']"] and not flat["['cls_token']"]

  c = _config(base_lr=0.1 * 256 / 512, weight_decay=0.05, warmup_steps=0)
  tx, _ = optim.make_optimizer(c, 10, 1)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  for (path, p), m in zip(jax.tree_util.tree_leaves_with_path(new), jax.tree.leaves(mask)):
    want = 2.0 * (1 - 0.1 * 0.05) if m else 2.0
    np.testing.assert_allclose(np.asarray(p), want, rtol=1e-6, err_msg=jax.tree_util.keystr(path))


def _regression_method():
  """A deterministic per-example loss: accumulation must equal the full batch."""
  def init(rng, batch, config):
    return MethodVars({"w": jax.random.normal(rng, (4, 2))}, {"seen": jnp.zeros(())}, {})

  def loss(params, state, constants, batch, rng, step, config):
    err = batch["image"] @ params["w"] - batch["target"]
    l = jnp.mean(err ** 2)
    return l, (scalar_metrics(mse=l), {"seen": state["seen"] + batch["image"].shape[0]})

  return Method(views=lambda c: "single_crop", init=init, loss=loss, encoder=None)


@pytest.mark.parametrize("accum", [2, 4])
def test_gradient_accumulation_equals_the_full_batch(accum):
  """Same step with the batch of 8 split into `accum` micro-batches: equal
  loss, gradient norm, parameters and AdamW moments. Break tried: summing
  micro-batch gradients without dividing by `accum` (the Adam update is
  scale-invariant, but grad_norm and the moments are not) fails."""
  method = _regression_method()
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.normal(size=(8, 4)), jnp.float32),
           "target": jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)}
  results = []
  for a in (1, accum):
    c = _config(grad_accum_steps=a, warmup_steps=0, base_lr=0.1)
    tx, schedule = optim.make_optimizer(c, 10, 1)
    mv = method.init(jax.random.PRNGKey(0), batch, c)
    state = {"step": jnp.zeros((), jnp.int32), "params": mv.params,
             "opt_state": tx.init(mv.params), "method_state": mv.state,
             "bad_step": jnp.full((), -1, jnp.int32)}
    new_state, m = jax.jit(train.make_train_step(method, c, tx, schedule))(state, {}, batch)
    results.append((new_state, m))
  (full, mf), (acc, ma) = results
  np.testing.assert_allclose(float(ma["loss"]), float(mf["loss"]), rtol=1e-6)
  np.testing.assert_allclose(float(ma["grad_norm"]), float(mf["grad_norm"]), rtol=1e-5)
  for a, b in zip(jax.tree.leaves((acc["params"], acc["opt_state"])),
                  jax.tree.leaves((full["params"], full["opt_state"]))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  assert float(acc["method_state"]["seen"]) == float(full["method_state"]["seen"]) == 8.0
