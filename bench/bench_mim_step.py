"""Times the jitted training step of the mask-token MIM family (not a test).

Per method: median step time, img/s per device and MFU (XLA's FLOP count of
one step / step time / the measured matmul peak, bench/common.py).

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

from bench import common
from ssl_jax import sharding, tokenizers
from ssl_jax.methods import mim_recipes


def config_for(spec, size, batch, dtype):
  name, _, target = spec.partition(":")
  c, _ = common.load_config(f"configs/{name}.py:" + (f"{size},{target}" if target else size))
  c.batch_size, c.compute_dtype, c.total_steps = batch, dtype, 1000
  if c.mim.target == "token" and size != "cpu":
    p = c.model.patch_size
    path = os.path.join(tempfile.mkdtemp(), "random_codebook.npz")
    tokenizers.save(path, "kmeans", p, centroids=np.random.default_rng(0).normal(
        size=(8192, p * p * 3)).astype(np.float32))
    c.mim.tokenizer = path
  return c


def bench(spec, size, batch, dtype, mesh):
  return common.time_train_step(common.setup(config_for(spec, size, batch, dtype), mesh), mesh)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--methods", default="simmim,maskfeat,beit,semanticmim:hog,semanticmim:pixel")
  p.add_argument("--size", default="cpu", choices=mim_recipes.SIZES)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  a = p.parse_args()
  mesh = sharding.make_mesh([("data", -1), ("fsdp", 1)])
  peak = common.matmul_peak(jnp.bfloat16 if a.dtype == "bfloat16" else jnp.float32)
  print(f"device: {jax.devices()[0].device_kind} x{mesh.devices.size}; measured {a.dtype} "
        f"matmul peak {peak / 1e12:.2f} TFLOP/s per device; size {a.size}, batch {a.batch}")
  print(f"{'method':<20}{'step ms':>10}{'img/s/dev':>12}{'TFLOP/step':>12}{'MFU %':>8}")
  for spec in a.methods.split(","):
    r = bench(spec, a.size, a.batch, a.dtype, mesh)
    print(f"{spec:<20}{1e3 * r['step_s']:>10.1f}{r['img_s_dev']:>12.1f}"
          f"{r['tflop_step']:>12.4f}{100 * r['achieved'] / peak:>8.1f}", flush=True)


if __name__ == "__main__":
  main()
