"""Weight-decay mask (issue 11 review fixes): MAE / timm's rule by default,
MoCo v2's decay-everything, extra no-decay patterns; wired into the optimizer."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssl_jax import config_defaults, models, optim, sharding
from tests.conftest import config_module


def _flat(mask):
  return {sharding.path_str(p): bool(v) for p, v in jax.tree_util.tree_flatten_with_path(mask)[0]}


def _shapes(model_cfg, size=32):
  m = models.build(model_cfg)
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  return jax.eval_shape(m.init, jax.random.PRNGKey(0), x)["params"]


def _qbheat_like_params():
  """Mobile-Former encoder + a QB-Heat head's linear models (shapes only)."""
  return {"encoder": _shapes(dict(name="mobile_former", variant="tiny")),
          "head": {"linear_corner": {"A1": jnp.zeros((8, 8)), "B1": jnp.zeros((8, 8))},
                   "proj": {"kernel": jnp.zeros((4, 8)), "bias": jnp.zeros((8,))}}}


def _config(**optim):
  c = config_defaults.base_config()
  for k, v in optim.items():
    c.optim[k] = v
  return c


def test_default_mask_is_maes_rule_and_skips_mobile_former_tokens():
  m = _flat(optim.decay_mask(_qbheat_like_params(), _config()))
  assert m["encoder/tokens"] is False                  # learned tokens: like cls_token
  assert m["head/linear_corner/A1"] and m["head/linear_corner/B1"]   # matrices decay
  assert m["head/proj/kernel"] and not m["head/proj/bias"]
  norms = [k for k in m if k.endswith("/scale")]
  assert norms and not any(m[k] for k in norms)
  # The config-less call (probes, fine-tuning) gives the same mask.
  assert _flat(optim.decay_mask(_qbheat_like_params())) == m


def test_extra_no_decay_patterns_exempt_the_linear_models():
  m = _flat(optim.decay_mask(_qbheat_like_params(),
                             _config(no_decay_patterns=("head/linear_",))))
  assert not m["head/linear_corner/A1"] and not m["head/linear_corner/B1"]
  assert m["head/proj/kernel"]
  with pytest.raises(ValueError, match="no_decay_patterns.*not a regular expression"):
    optim.decay_mask(_qbheat_like_params(), _config(no_decay_patterns=("linear_(",)))


def test_mocov2_decays_batchnorm_and_biases():
  c = config_module("mocov2.py").get_config("resnet_tiny")
  assert c.optim.decay_1d_params
  params = {"encoder": _shapes(dict(name="resnet", variant="tiny")),
            "head": {"fc1": {"kernel": jnp.zeros((4, 4)), "bias": jnp.zeros((4,))}}}
  m = _flat(optim.decay_mask(params, c))
  assert all(m.values()), [k for k, v in m.items() if not v]
  # The MoCo exception: Mobile-Former's tokens stay undecayed.
  m = _flat(optim.decay_mask(_qbheat_like_params(), c))
  assert not m["encoder/tokens"] and m["encoder/stem_bn/scale"]


def test_make_optimizer_applies_the_mask():
  """SGD with coupled decay and zero gradients: only decayed arrays move."""
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,)), "tokens": jnp.ones((3, 2))}
  for decay_1d, moved in ((False, {"w"}), (True, {"w", "b"})):
    c = _config(name="sgd", weight_decay=0.5, base_lr=256.0, warmup_steps=0, momentum=0.0,
                decay_1d_params=decay_1d)
    c.batch_size = 256
    tx, _ = optim.make_optimizer(c, total_steps=10, steps_per_epoch=10)
    grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    changed = {k for k in params if not np.allclose(new[k], params[k])}
    assert changed == moved, (decay_1d, changed)
