"""Times the jitted training step of the mask-token MIM family (not a test).

Per method: median step time, img/s per device and MFU (XLA's FLOP count of
one step / step time / the measured matmul peak of bench_mae_step).

  python -m bench.bench_mim_step --methods simmim,maskfeat,beit,semanticmim:hog \
      --size in1k --batch 256 --dtype bfloat16            # ViT-B/16, 224 px (accelerator)
  python -m bench.bench_mim_step --size cpu --batch 64    # ViT-Ti/4, 32 px (CPU)

BEiT gets a random codebook of the config's vocabulary when its tokenizer
file does not match the patch size (timing only: the codes do not matter).
"""
import argparse
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from bench.bench_mae_step import matmul_peak, time_train_step
from ssl_jax import methods, optim, sharding, tokenizers
from ssl_jax.methods import mim_recipes


def config_for(spec, size, batch, dtype):
  name, _, target = spec.partition(":")
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(__file__), "..", "configs", f"{name}.py")
  mod_spec = importlib.util.spec_from_file_location(f"cfg_{name}", path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  c = mod.get_config(f"{size},{target}" if target else size)
  c.batch_size, c.compute_dtype, c.total_steps = batch, dtype, 1000
  if c.mim.target == "token" and size != "cpu":
    p = c.model.patch_size
    path = os.path.join(tempfile.mkdtemp(), "random_codebook.npz")
    tokenizers.save(path, "kmeans", p, centroids=np.random.default_rng(0).normal(
        size=(8192, p * p * 3)).astype(np.float32))
    c.mim.tokenizer = path
  return c


def bench(spec, size, batch, dtype, mesh):
  c = config_for(spec, size, batch, dtype)
  method = methods.get(c.method)
  tx, schedule = optim.make_optimizer(c, 1000, 100)
  s = c.data.image_size
  b = {"image": jnp.zeros((batch, s, s, 3), jnp.float32), "label": jnp.zeros((batch,), jnp.int32)}
  mv = method.init(jax.random.PRNGKey(0), jax.tree.map(lambda x: x[:2], b), c)
  state = {"step": jnp.zeros((), jnp.int32), "params": mv.params, "opt_state": tx.init(mv.params),
           "method_state": mv.state, "bad_step": jnp.full((), -1, jnp.int32)}
  st_sh = sharding.tree_shardings(state, mesh, c.sharding_rules, c.fsdp_min_size)
  d_sh, rep = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  state, b = jax.device_put(state, st_sh), jax.device_put(b, d_sh)
  consts = jax.device_put(mv.constants, rep)
  return time_train_step(method, c, tx, schedule, state, consts, b, st_sh, rep, d_sh, mesh, iters=5)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--methods", default="simmim,maskfeat,beit,semanticmim:hog,semanticmim:pixel")
  p.add_argument("--size", default="cpu", choices=mim_recipes.SIZES)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  a = p.parse_args()
  mesh = sharding.make_mesh([("data", -1), ("fsdp", 1)])
  peak = matmul_peak(jnp.bfloat16 if a.dtype == "bfloat16" else jnp.float32)
  print(f"device: {jax.devices()[0].device_kind} x{mesh.devices.size}; measured {a.dtype} "
        f"matmul peak {peak / 1e12:.2f} TFLOP/s per device; size {a.size}, batch {a.batch}")
  print(f"{'method':<20}{'step ms':>10}{'img/s/dev':>12}{'TFLOP/step':>12}{'MFU %':>8}")
  for spec in a.methods.split(","):
    r = bench(spec, a.size, a.batch, a.dtype, mesh)
    print(f"{spec:<20}{1e3 * r['step_s']:>10.1f}{r['img_s_dev']:>12.1f}"
          f"{r['tflop_step']:>12.4f}{100 * r['achieved'] / peak:>8.1f}", flush=True)


if __name__ == "__main__":
  main()
