"""Times the jitted, sharded MAE training step (not a test).

Prints, per model: median step time, img/s per device, and model-FLOPs
utilisation = (XLA's FLOP count of one step / median step time) / the
machine's measured dense matmul rate (also printed).

  python -m bench.bench_mae_step --models Ti,S,B --batch 256 --image_size 224 --dtype bfloat16
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import config_defaults, methods, optim, sharding, train


def median_time(fn, *args, warmup=2, iters=10):
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def time_train_step(method, config, tx, schedule, state, constants, batch, state_sh, const_sh,
                    data_sh, mesh, iters=10):
  """The trainer's jitted step: its XLA FLOP count and median time.
  Returns dict(step_s, img_s_dev, tflop_step, achieved) (achieved: FLOP/s per device)."""
  step = jax.jit(train.make_train_step(method, config, tx, schedule),
                 in_shardings=(state_sh, const_sh, data_sh), out_shardings=(state_sh, None))
  cost = step.lower(state, constants, batch).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0))
  t = median_time(lambda s: step(s, constants, batch)[1]["loss"], state, iters=iters)
  n_dev = mesh.devices.size
  n_img = jax.tree.leaves(batch)[0].shape[0]
  return dict(step_s=t, img_s_dev=n_img / t / n_dev, tflop_step=flops / 1e12,
              achieved=flops / t / n_dev)


def matmul_peak(dtype, n=4096, iters=10):
  """Measured FLOP/s of a square matmul on device 0: the MFU denominator."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  return 2 * n ** 3 / median_time(f, a, iters=iters)


def config_for(variant, batch, image_size, dtype):
  c = config_defaults.base_config()
  c.model = dict(name="vit", variant=variant, num_heads=12 if variant == "Ti" else None,
                 patch_size=16 if image_size >= 64 else 4)
  c.mae = dict(mask_ratio=0.75, norm_pix_loss=True,
               decoder=dict(width=96, depth=1, num_heads=3) if variant == "Ti"
               else dict(width=512, depth=8, num_heads=16))
  c.batch_size, c.compute_dtype = batch, dtype
  c.total_steps = 1000
  return c


def bench(variant, batch, image_size, dtype, mesh):
  c = config_for(variant, batch, image_size, dtype)
  method = methods.get("mae")
  tx, schedule = optim.make_optimizer(c, 1000, 100)
  b = {"image": jnp.zeros((batch, image_size, image_size, 3), jnp.float32),
       "label": jnp.zeros((batch,), jnp.int32)}
  mv = method.init(jax.random.PRNGKey(0), jax.tree.map(lambda x: x[:2], b), c)
  state = {"step": jnp.zeros((), jnp.int32), "params": mv.params, "opt_state": tx.init(mv.params),
           "method_state": mv.state, "bad_step": jnp.full((), -1, jnp.int32)}
  st_sh = sharding.tree_shardings(state, mesh, c.sharding_rules, c.fsdp_min_size)
  d_sh = sharding.batch_sharding(mesh)
  state, b = jax.device_put(state, st_sh), jax.device_put(b, d_sh)
  r = time_train_step(method, c, tx, schedule, state, {}, b, st_sh, sharding.replicated(mesh),
                      d_sh, mesh)
  return dict(r, model=f"ViT-{variant}")


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--models", default="Ti,S,B")
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
  a = p.parse_args()
  mesh = sharding.make_mesh([("data", -1), ("fsdp", 1)])
  peak = matmul_peak(jnp.bfloat16 if a.dtype == "bfloat16" else jnp.float32)
  print(f"device: {jax.devices()[0].device_kind} x{mesh.devices.size}; measured {a.dtype} "
        f"matmul peak {peak / 1e12:.1f} TFLOP/s per device; batch {a.batch}, {a.image_size}px")
  print(f"{'model':<10}{'step ms':>10}{'img/s/dev':>12}{'TFLOP/step':>12}{'MFU %':>8}")
  for v in a.models.split(","):
    r = bench(v, a.batch, a.image_size, a.dtype, mesh)
    print(f"{r['model']:<10}{1e3 * r['step_s']:>10.1f}{r['img_s_dev']:>12.1f}"
          f"{r['tflop_step']:>12.3f}{100 * r['achieved'] / peak:>8.1f}", flush=True)


if __name__ == "__main__":
  main()
