"""Per-device parameter + optimizer-state bytes under FSDP (not a test).

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
      python -m bench.fsdp_memory --configs configs/mae.py:vit_base_in1k,configs/mae.py:vit_large_in1k
  ... --compile --batch 64     # also the compiled step's memory analysis per device

For each config and mesh (data = 8 / fsdp, fsdp) with fsdp in `--fsdp`: the
train state's per-device bytes from its abstract shapes (`jax.eval_shape`,
nothing allocated) and the project's sharding rules (`ssl_jax/sharding.py`:
`config.sharding_rules`, `fsdp_min_size`): each leaf counts its shard's
shape. Expected: params + AdamW moments fall as ~1/fsdp; the replicated
remainder is the arrays below `fsdp_min_size` (norms, biases, tokens).

`--compile` lowers the trainer's step (`train.jit_train_step`) on abstract
sharded inputs and prints XLA's memory analysis of the per-device program
(arguments, outputs, temporaries; peak = their sum less donated aliases).
Shapes only: ViT-L's state is never materialised.
"""
import argparse

import jax
import numpy as np

from bench import common
from ssl_jax import methods, optim, sharding, train
from ssl_jax.data import pipeline


def abstract_setup(config):
  """Abstract (ShapeDtypeStruct) train state and batch spec of `config`,
  the way `train.train` builds them; the batch spec comes from the view
  builder on the embedded data at the config's image size (ImageNet need not
  be on disk: only shapes matter)."""
  config = config.copy_and_resolve_references()
  method = methods.get(config.method)
  data_cfg = config.data
  data_cfg.name, data_cfg.train_split = "fashion_mnist", "train"
  data_cfg.shuffle_buffer = 16
  mesh1 = sharding.make_mesh([("data", 1)], jax.devices()[:1])
  it = pipeline.TrainIterator(config, method.views(config), sharding.batch_sharding(mesh1))
  spec = {k: v for k, v in it._epoch_dataset(0, 0).element_spec.items()  # pylint: disable=protected-access
          if k != "index"}
  batch = lambda n: {k: jax.ShapeDtypeStruct((n,) + tuple(v.shape[1:]), v.dtype.as_numpy_dtype)
                     for k, v in spec.items()}
  tx, schedule = optim.make_optimizer(config, 1000, 100)
  with config.unlocked():
    config.total_steps, config.steps_per_epoch = 1000, 100
  state = jax.eval_shape(lambda rng, b: train.initial_state(method.init(rng, b, config), tx),
                         jax.random.PRNGKey(0), batch(2))
  return dict(method=method, config=config, tx=tx, schedule=schedule, state=state, batch=batch)


def shard_bytes(tree, shardings) -> int:
  """Bytes one device holds of `tree` (arrays or ShapeDtypeStructs) under
  `shardings` (a matching tree of NamedShardings; even splits)."""
  total = 0
  for leaf, sh in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
    total += int(np.prod(sh.shard_shape(leaf.shape))) * np.dtype(leaf.dtype).itemsize
  return total


def state_bytes(a, fsdp: int, devices=None) -> dict:
  """Per-device bytes of params, optimizer state and the whole train state
  of `abstract_setup(...)` on a (data, fsdp) mesh of `devices` (default all)."""
  devices = devices if devices is not None else jax.devices()
  mesh = sharding.make_mesh([("data", len(devices) // fsdp), ("fsdp", fsdp)], devices)
  c = a["config"]
  sh = sharding.tree_shardings(a["state"], mesh, c.sharding_rules, c.fsdp_min_size)
  return dict(mesh=mesh, shardings=sh,
              params=shard_bytes(a["state"]["params"], sh["params"]),
              opt=shard_bytes(a["state"]["opt_state"], sh["opt_state"]),
              total=shard_bytes(a["state"], sh))


def compiled_memory(a, s, batch_size: int) -> dict:
  """XLA's memory analysis of the trainer's step on abstract sharded inputs."""
  mesh, sh = s["mesh"], s["shardings"]
  data_sh, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  state = jax.tree.map(lambda x, d: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=d),
                       a["state"], sh)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=data_sh)
           for k, v in a["batch"](batch_size).items()}
  step = train.jit_train_step(a["method"], a["config"], a["tx"], a["schedule"], sh, {}, data_sh,
                              repl)
  return common.memory_of(step.lower(state, {}, batch).compile())


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--configs", default="configs/mae.py:vit_base_in1k,configs/mae.py:vit_large_in1k")
  p.add_argument("--fsdp", default="1,2,4,8")
  p.add_argument("--compile", action="store_true", help="also the compiled step's memory")
  p.add_argument("--batch", type=int, default=64, help="global batch for --compile")
  a = p.parse_args()
  mb = lambda x: f"{x / 2**20:.1f}"
  print(f"{len(jax.devices())} {jax.devices()[0].platform} devices")
  head = "| config | fsdp | params MB/dev | optimizer MB/dev | state MB/dev | x fsdp=1 |"
  if a.compile:
    head += f" step peak MB/dev (batch {a.batch}) | arg | out | temp |"
  print(head + "\n|" + "---|" * (head.count("|") - 1), flush=True)
  for spec in a.configs.split(","):
    config, _ = common.load_config(spec)
    ab = abstract_setup(config)
    base = None
    for f in [int(x) for x in a.fsdp.split(",")]:
      s = state_bytes(ab, f)
      base = base or s["total"]
      line = (f"| {spec} | {f} | {mb(s['params'])} | {mb(s['opt'])} | {mb(s['total'])} "
              f"| {s['total'] / base:.3f} |")
      if a.compile:
        m = compiled_memory(ab, s, a.batch)
        line += f" {mb(m['peak'])} | {mb(m['argument'])} | {mb(m['output'])} | {mb(m['temp'])} |"
      print(line, flush=True)


if __name__ == "__main__":
  main()
