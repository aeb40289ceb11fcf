"""MoCo v2: InfoNCE against the queue, queue update, momentum key encoder."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_jax import config_defaults
from ssl_jax.methods import mocov2


def _config(bn_groups=2, queue_size=8):
  c = config_defaults.base_config()
  c.method = "mocov2"
  c.model = dict(name="resnet", variant="tiny", num_stages=2)   # small graph, fast compile
  c.mocov2 = ml_collections.ConfigDict(dict(dim=8, mlp_hidden=16, queue_size=queue_size,
                                            momentum=0.99, temperature=0.2, bn_groups=bn_groups))
  c.batch_size = 4
  return c


def _batch(n=4, seed=0):
  a, b = jax.random.split(jax.random.PRNGKey(seed))
  return {"view_a": jax.random.normal(a, (n, 32, 32, 3)),
          "view_b": jax.random.normal(b, (n, 32, 32, 3))}


def test_infonce_matches_numpy():
  rng = np.random.default_rng(0)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  q, k = unit(rng.normal(size=(4, 8))), unit(rng.normal(size=(4, 8)))
  queue = unit(rng.normal(size=(16, 8)))
  logits = np.concatenate([(q * k).sum(-1, keepdims=True), q @ queue.T], 1) / 0.2
  want = np.mean(np.log(np.exp(logits).sum(1)) - logits[:, 0])
  got, acc = mocov2.infonce(jnp.asarray(q), jnp.asarray(k), jnp.asarray(queue), 0.2)
  assert float(got) == pytest.approx(want, rel=1e-5)
  assert float(acc) == pytest.approx(np.mean(logits.argmax(1) == 0))


def test_enqueue_replaces_oldest_and_wraps():
  queue = jnp.zeros((6, 2))
  keys = jnp.arange(6.0).reshape(3, 2) + 1
  q1, p1 = mocov2.enqueue(queue, jnp.int32(0), keys)
  np.testing.assert_array_equal(np.asarray(q1[:3]), np.asarray(keys))
  assert int(p1) == 3 and not np.asarray(q1[3:]).any()
  q2, p2 = mocov2.enqueue(q1, p1, keys * 10)
  np.testing.assert_array_equal(np.asarray(q2[3:]), np.asarray(keys * 10))
  assert int(p2) == 0


def test_queue_size_must_hold_whole_batches():
  config = _config(queue_size=6)
  with pytest.raises(ValueError, match="multiple of the per-step batch 4"):
    jax.eval_shape(lambda: mocov2.init(jax.random.PRNGKey(0), _batch(), config))


def test_jitted_step_queue_and_momentum_update():
  config = _config(bn_groups=1)     # global BN: shuffling must not change any key
  batch = _batch()
  mvars = jax.jit(lambda r, b: mocov2.init(r, b, config))(jax.random.PRNGKey(1), batch)
  assert mvars.state["queue"].shape == (8, 8)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(mvars.state["queue"]), axis=1), 1.0,
                             rtol=1e-5)

  @jax.jit
  def step(params, state, batch, rng):
    (l, (metrics, new_state)), grads = jax.value_and_grad(
        lambda p: mocov2.loss(p, state, {}, batch, rng, 0, config), has_aux=True)(params)
    # Keys the key encoder gives without shuffling, for the unshuffle check.
    enc, head = mocov2.build_modules(config)
    key_vars = state["key"]
    keys, _ = mocov2._embed(  # pylint: disable=protected-access
        enc, head, key_vars["params"], key_vars["batch_stats"], batch["view_b"], True)
    return l, metrics, new_state, grads, keys

  l, metrics, new_state, grads, keys = step(mvars.params, mvars.state, batch, jax.random.PRNGKey(2))
  assert np.isfinite(float(l)) and 0.0 <= float(metrics["contrastive_acc"]) <= 1.0
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  assert np.abs(np.asarray(grads["encoder"]["stem_conv"]["kernel"])).max() > 0
  # The batch's keys (un-shuffled) replace the oldest queue entries; the rest stay.
  np.testing.assert_allclose(np.asarray(new_state["queue"][:4]), np.asarray(keys), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(new_state["queue"][4:]),
                                np.asarray(mvars.state["queue"][4:]))
  assert int(new_state["queue_ptr"]) == 4
  # Query and key encoders keep their own BN statistics.
  qm = np.asarray(new_state["batch_stats"]["stem_bn"]["mean"])
  km = np.asarray(new_state["key"]["batch_stats"]["stem_bn"]["mean"])
  assert not np.allclose(qm, km)
  # Momentum update (MoCo Eq. 2) of key params towards the query params.
  params = jax.tree.map(lambda p: p + 1.0, mvars.params)
  upd = mocov2.update(new_state, params, 0, config)
  got = np.asarray(upd["key"]["params"]["head"]["fc2"]["bias"])
  want = 0.99 * np.asarray(new_state["key"]["params"]["head"]["fc2"]["bias"]) + \
      0.01 * np.asarray(params["head"]["fc2"]["bias"])
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # Only the query encoder is exported.
  variables = mocov2.encoder(config).variables(mvars.params, new_state)
  assert set(variables) == {"params", "batch_stats"} and "head" not in variables["params"]


def _non_involution_rng(n):
  """A key whose permutation of n is not its own inverse (the loss draws the
  shuffle with `jax.random.permutation(rng, n)`)."""
  for seed in range(100):
    rng = jax.random.PRNGKey(seed)
    perm = np.asarray(jax.random.permutation(rng, n))
    if not np.array_equal(perm[perm], np.arange(n)):
      return rng, perm
  raise AssertionError("no non-involutive permutation found")


@pytest.mark.parametrize("bn_groups", [1, 2])
def test_shuffle_bn_keys_are_unshuffled_with_the_inverse_permutation(bn_groups):
  """Keys enqueued by the loss equal the key encoder run on the shuffled
  batch and put back with the inverse permutation, for a permutation that is
  not an involution (so `k[perm]` instead of the inverse fails), with global
  BN and with MoCo's per-group shuffling BN (2 groups of 4). Break tried:
  `k[perm]` (applying the shuffle again) fails. With groups the shuffle must
  matter: the keys differ from those of the unshuffled batch."""
  config = _config(bn_groups=bn_groups, queue_size=8)
  config.batch_size = 8
  a, b = jax.random.split(jax.random.PRNGKey(5))
  batch = {"view_a": jax.random.normal(a, (8, 16, 16, 3)),
           "view_b": jax.random.normal(b, (8, 16, 16, 3))}
  mvars = jax.jit(lambda r, x: mocov2.init(r, x, config))(jax.random.PRNGKey(1), batch)
  rng, perm = _non_involution_rng(8)

  @jax.jit
  def run(state):
    _, (_, new_state) = mocov2.loss(mvars.params, state, {}, batch, rng, 0, config)
    enc, head = mocov2.build_modules(config)
    kv = state["key"]
    embed = lambda x: mocov2._embed(enc, head, kv["params"], kv["batch_stats"], x, True)[0]  # pylint: disable=protected-access
    return new_state["queue"], embed(batch["view_b"][perm]), embed(batch["view_b"])

  queue, shuffled_keys, plain_keys = map(np.asarray, run(mvars.state))
  want = shuffled_keys[np.argsort(perm)]       # key of example i = row j with perm[j] = i
  np.testing.assert_allclose(queue, want, atol=1e-5)
  if bn_groups > 1:
    assert not np.allclose(queue, plain_keys, atol=1e-3)
  else:
    np.testing.assert_allclose(queue, plain_keys, atol=1e-5)
