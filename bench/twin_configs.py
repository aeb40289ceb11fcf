"""ssl_jax's side of each PyTorch comparison (bench/compare_torch.py), by task
name, so ab_step / profile_step / gemm_bound time the very step compared.

  mae   MAE ViT-Ti/16 (12 heads), 1-block 96-wide decoder (bench_mae_step)
  full  supervised ViT-Ti/16 on all tokens (configs/supervised.py:vit_tiny)
  dino  DINO ViT-Ti/16 (3 heads), full head (2048-256-65536), 2 x 224 + 8 x 96
        crops, no drop path, last layer not frozen (configs/dino.py:cpu reshaped)
"""
import jax

from bench import common
from bench.bench_mae_step import config_for
from ssl_jax import sharding

TASKS = ("mae", "full", "dino")


def config(task: str, batch: int, image_size: int = 224):
  if task == "mae":
    return config_for("Ti", batch, image_size, "float32")
  if task == "full":
    c, _ = common.load_config("configs/supervised.py:vit_tiny")
    c.model.patch_size = 16
    c.data.image_size, c.batch_size = image_size, batch
    return c
  if task == "dino":
    c, _ = common.load_config("configs/dino.py:cpu")
    c.model = dict(name="vit", variant="Ti", num_heads=3, patch_size=16, posemb="learn",
                   drop_path=0.0)
    c.dino.update(out_dim=65536, hidden_dim=2048, bottleneck_dim=256)
    c.data.image_size, c.data.local_crop_size, c.data.num_local_crops = image_size, 96, 8
    c.optim.frozen = ()      # main_dino freezes the last layer in epoch 0: neither side does here
    c.batch_size = batch
    return c
  raise ValueError(f"Unknown task {task!r}. Valid: {', '.join(TASKS)}.")


def add_step_args(p):
  """The flags that pick the step to time: `--task` (a step above) or
  `--config` (any config), with `--batch`, `--image_size`, `--threads`, `--set`."""
  p.add_argument("--config", default="", help="configs/<x>.py:<variant>")
  p.add_argument("--task", default="", help=f"compare_torch's step: one of {', '.join(TASKS)}")
  p.add_argument("--batch", type=int, default=0, help="0: the config's (--task: 64)")
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--threads", type=int, default=0, help="pin the process to this many cores")
  p.add_argument("--set", action="append", default=[], help="key=value config override")


def setup_step(a):
  """Pins the process to `--threads` cores, then `common.setup` of the chosen
  step on a one-device mesh (the dict ab_step / profile_step / gemm_bound time)."""
  if a.threads:
    common.pin_threads(a.threads)     # before jax starts its backend
  if a.task:
    cfg = common.apply_overrides(config(a.task, a.batch or 64, a.image_size), a.set)
  else:
    cfg, _ = common.load_config(a.config, a.set)
  mesh = sharding.make_mesh([("data", 1)], jax.devices()[:1])
  return common.setup(cfg, mesh, batch_size=a.batch or None)
