"""Times the jitted, sharded MAE training step (not a test).

Prints, per model: median step time, img/s per device, and model-FLOPs
utilisation = (XLA's FLOP count of one step / median step time) / the
machine's measured dense matmul rate (also printed). The step is the
trainer's (`bench/common.py`) on one real batch of the data pipeline.

  python -m bench.bench_mae_step --models Ti,S,B --batch 256 --image_size 224 --dtype bfloat16
"""
import argparse

import jax
import jax.numpy as jnp

from bench import common
from ssl_jax import config_defaults, sharding


def config_for(variant, batch, image_size, dtype):
  c = config_defaults.base_config()
  c.model = dict(name="vit", variant=variant, num_heads=12 if variant == "Ti" else None,
                 patch_size=16 if image_size >= 64 else 4)
  c.mae = dict(mask_ratio=0.75, norm_pix_loss=True,
               decoder=dict(width=96, depth=1, num_heads=3) if variant == "Ti"
               else dict(width=512, depth=8, num_heads=16))
  c.batch_size, c.compute_dtype = batch, dtype
  c.data.image_size = image_size
  c.total_steps = 1000
  return c


def bench(variant, batch, image_size, dtype, mesh):
  r = common.time_train_step(common.setup(config_for(variant, batch, image_size, dtype), mesh),
                             mesh, iters=10)
  return dict(r, model=f"ViT-{variant}")


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--models", default="Ti,S,B")
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
  a = p.parse_args()
  mesh = sharding.make_mesh([("data", -1), ("fsdp", 1)])
  peak = common.matmul_peak(jnp.bfloat16 if a.dtype == "bfloat16" else jnp.float32)
  print(f"device: {jax.devices()[0].device_kind} x{mesh.devices.size}; measured {a.dtype} "
        f"matmul peak {peak / 1e12:.1f} TFLOP/s per device; batch {a.batch}, {a.image_size}px")
  print(f"{'model':<10}{'step ms':>10}{'img/s/dev':>12}{'TFLOP/step':>12}{'MFU %':>8}")
  for v in a.models.split(","):
    r = bench(v, a.batch, a.image_size, a.dtype, mesh)
    print(f"{r['model']:<10}{1e3 * r['step_s']:>10.1f}{r['img_s_dev']:>12.1f}"
          f"{r['tflop_step']:>12.3f}{100 * r['achieved'] / peak:>8.1f}", flush=True)


if __name__ == "__main__":
  main()
