"""Times the trainer's own jitted step of any pre-training config (not a test).

  python -m bench.bench_method --config configs/dino.py:cpu [--set data.num_local_crops=8 ...]
  python -m bench.bench_method --config configs/mae.py:vit_tiny,configs/simmim.py:cpu
  python -m bench.bench_method --all            # every method's CPU job (CPU_JOBS)

Per config: compile time, median step time, img/s per device, XLA's FLOPs of
one step, MFU (those FLOPs / step time / the measured matmul rate of one
device, `--dtype` of the rate) and the compiled step's memory per device
(arguments + outputs + temporaries, less what donation aliases).

The batch is one real batch of the config's view builder (the data pipeline,
`bench/common.py:setup`) at the config's own batch size (`--batch_size`
overrides it); the step is `train.jit_train_step`, state donated, as in
training. A config that distils from a frozen export (the module's
`TINY_TEACHER_FIELD`, unset) gets a random export of `TEACHERS[<file>]`'s
model: timing does not depend on the teacher's weights.
"""
import os
import platform
import tempfile
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from bench import common
from ssl_jax import export, models, sharding

# The CPU job of every registered pre-training method (README "Benchmarks").
CPU_JOBS = {
    "mae": "configs/mae.py:vit_tiny",
    "dmae": "configs/dmae.py:dmae_cpu",
    "d2mae": "configs/dmae.py:d2mae_cpu",
    "qbheat": "configs/qbheat.py:mf_tiny",
    "cr2pq": "configs/cr2pq.py:vit_tiny",
    "mocov2": "configs/mocov2.py:mf_tiny",
    "supervised": "configs/supervised.py:vit_small4",
    "simmim": "configs/simmim.py:cpu",
    "maskfeat": "configs/maskfeat.py:cpu",
    "beit": "configs/beit.py:cpu",
    "semanticmim": "configs/semanticmim.py:cpu,hog",
    "dino": "configs/dino.py:cpu",
    "ibot": "configs/ibot.py:cpu",
    "dinov2": "configs/dinov2.py:cpu",
    "posfield": "configs/posfield.py:cpu",
}
# Frozen teachers: config file -> the config whose model the random export has.
TEACHERS = {"configs/dmae.py": "configs/dmae.py:teacher_cpu"}

_CONFIG = flags.DEFINE_list("config", None, "configs/<x>.py:<variant>, comma-separated.")
_ALL = flags.DEFINE_bool("all", False, "Every method's CPU job (CPU_JOBS).")
_SET = flags.DEFINE_multi_string("set", [], "key=value override for every config.")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Global batch (0: the config's).")
_ITERS = flags.DEFINE_integer("iters", 5, "Timed steps (median).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compiling.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Matmul rate's dtype.")


def random_teacher(spec: str, image_size: int, folder: str) -> str:
  """An export of `spec`'s model with random weights; returns its path."""
  c, _ = common.load_config(spec)
  module = models.build(dict(c.model))
  variables = module.init(jax.random.PRNGKey(0), np.zeros((1, image_size, image_size, 3),
                                                          np.float32))
  return export.save(os.path.join(folder, "teacher"), dict(c.model), variables)


def prepare(spec: str, overrides, folder: str):
  """The config of `spec` with overrides and, if it needs one, a teacher."""
  config, module = common.load_config(spec, overrides)
  field = getattr(module, "TINY_TEACHER_FIELD", None)
  if field:
    node, *path = [config] + field.split(".")
    for p in path[:-1]:
      node = node[p]
    if node[path[-1]] is None:
      teacher = TEACHERS.get(spec.partition(":")[0])
      if teacher is None:
        raise ValueError(f"{spec} needs a teacher export at {field}: pass --set {field}=PATH.")
      node[path[-1]] = random_teacher(teacher, config.data.image_size, folder)
  return config


def bench_one(spec, overrides, mesh, peak, folder):
  config = prepare(spec, overrides, folder)
  s = common.setup(config, mesh, batch_size=_BATCH.value or None)
  r = common.time_train_step(s, mesh, warmup=_WARMUP.value, iters=_ITERS.value)
  return dict(r, spec=spec, method=s["config"].method, batch=s["config"].batch_size,
              mfu=r["achieved"] / peak)


HEADER = ("| config | method | batch | compile s | step ms | img/s/dev | GFLOP/step | MFU % "
          "| peak MB/dev (arg + out + temp - alias) |")


def row(r) -> str:
  m = r["memory"]
  mem = (f"{m['peak'] / 2**20:.0f} ({m['argument'] / 2**20:.0f} + {m['output'] / 2**20:.0f} "
         f"+ {m['temp'] / 2**20:.0f} - {m['alias'] / 2**20:.0f})") if m else "n/a"
  return (f"| {r['spec']} | {r['method']} | {r['batch']} | {r['compile_s']:.1f} "
          f"| {1e3 * r['step_s']:.0f} | {r['img_s_dev']:.1f} | {1e3 * r['tflop_step']:.1f} "
          f"| {100 * r['mfu']:.1f} | {mem} |")


def main(argv):
  del argv
  specs = list(CPU_JOBS.values()) if _ALL.value else (_CONFIG.value or [])
  if not specs:
    raise app.UsageError("give --config configs/<x>.py:<variant>[,...] or --all.")
  mesh = sharding.make_mesh([("data", -1), ("fsdp", 1)])
  peak = common.matmul_peak(jnp.bfloat16 if _DTYPE.value == "bfloat16" else jnp.float32)
  print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.node()}: "
        f"{jax.devices()[0].device_kind} x{mesh.devices.size}, {os.cpu_count()} cores; "
        f"load {common.load_average()}; measured {_DTYPE.value} matmul rate "
        f"{peak / 1e9:.1f} GFLOP/s per device", flush=True)
  print(HEADER)
  print("|" + "---|" * (HEADER.count("|") - 1), flush=True)
  with tempfile.TemporaryDirectory() as folder:
    for spec in specs:
      print(row(bench_one(spec, _SET.value, mesh, peak, folder)), flush=True)
  print(f"load after: {common.load_average()}", flush=True)


if __name__ == "__main__":
  app.run(main)
