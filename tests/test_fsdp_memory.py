"""bench/fsdp_memory.py: per-device train-state bytes fall as ~1/fsdp.

A tiny 2-block MAE (width 64) on 8 simulated devices under mesh (data 8/f,
fsdp f), f = 1, 2, 4, 8, with the project's sharding rules. Only arrays
below `fsdp_min_size` (norms, biases, tokens) stay replicated, so the state
(params and both AdamW moments) must shrink by at least 0.85 f. Breaks
caught: sharding the parameters but not the optimizer moments (opt bytes
would not fall), or counting a leaf's full shape instead of its shard's (no
fall at all); and the shape-only count must equal the bytes the live,
device_put state really holds per device.
"""
import jax
import numpy as np
import pytest

from bench import fsdp_memory
from ssl_jax import sharding
from tests.conftest import tiny_mae_config


@pytest.fixture(scope="module")
def abstract():
  c = tiny_mae_config(fsdp_min_size=2 ** 10)
  c.model.width, c.model.num_heads = 64, 4
  return fsdp_memory.abstract_setup(c)


def test_state_bytes_fall_as_one_over_fsdp(abstract):
  assert len(jax.devices()) == 8
  by_f = {f: fsdp_memory.state_bytes(abstract, f) for f in (1, 2, 4, 8)}
  one = by_f[1]
  leaves = jax.tree.leaves(abstract["state"])
  assert one["total"] == sum(x.size * np.dtype(x.dtype).itemsize for x in leaves)
  assert one["opt"] > one["params"] > 0                 # AdamW: two moments per parameter
  for f in (2, 4, 8):
    for part in ("params", "opt", "total"):
      ratio = one[part] / by_f[f][part]
      assert 0.85 * f <= ratio <= f, (part, f, ratio)


def test_shape_count_matches_live_sharded_state(abstract):
  s = fsdp_memory.state_bytes(abstract, 4)
  live = jax.tree.map(lambda x, sh: jax.device_put(np.zeros(x.shape, x.dtype), sh),
                      abstract["state"], s["shardings"])
  assert sharding.bytes_per_device(live) == s["total"]
  assert sharding.bytes_per_device(live["opt_state"]) == s["opt"]
