"""Pieces every benchmark shares: config loading, the trainer's own state and
jitted step, timing, XLA's FLOP count and memory analysis, the matmul rate.

A benchmark times `train.jit_train_step` (the program `ssl_jax/train.py`
runs, state donated) on one batch; MFU = XLA's FLOPs of one step / median
step time / the measured dense matmul rate of one device.
"""
import ast
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import config_files, methods, optim, sharding, train
from ssl_jax.data import pipeline


# ---------------------------------------------------------------- configs
def _parse_value(text: str, current):
  """`text` as the type of the field it overrides (as absl's config flags)."""
  if isinstance(current, bool):
    if text.lower() not in ("true", "false", "1", "0"):
      raise ValueError(f"expected true/false, got {text!r}")
    return text.lower() in ("true", "1")
  if isinstance(current, (int, float)) and not isinstance(current, bool):
    return type(current)(float(text)) if isinstance(current, int) and "." in text \
        else type(current)(text)
  if isinstance(current, str):
    return text
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_overrides(config, overrides):
  """["section.key=value", ...] onto a ConfigDict (unknown keys are an error)."""
  for item in overrides:
    key, sep, text = item.partition("=")
    if not sep:
      raise ValueError(f"override {item!r}: expected key=value.")
    node, *path = [config] + key.split(".")
    *parents, last = path
    for p in parents:
      node = node[p]
    if last not in node:
      raise KeyError(f"override {key!r}: no such key; valid here: {', '.join(sorted(node))}.")
    node[last] = _parse_value(text, node[last])
  return config


def load_config(spec: str, overrides=()):
  """"configs/<x>.py:<variant>" (+ "key=value" overrides) -> (ConfigDict, module)."""
  c, module = config_files.load_config(spec)
  return apply_overrides(c, overrides), module


# ---------------------------------------------------------------- state
def setup(config, mesh, batch_size=None, host_batch=None):
  """What `train.train` builds before its loop, for one batch of `config`.

  The batch is one real batch of the method's view builder from the data
  pipeline (`host_batch=None`), so every key and shape is the trainer's.
  Returns dict(method, config, tx, schedule, state, constants, batch,
  state_sh, const_sh, data_sh, repl).
  """
  config = config.copy_and_resolve_references()
  if batch_size:
    config.batch_size = int(batch_size)
  # One batch is all a benchmark reads: no 50k-example shuffle buffer to fill.
  config.data.shuffle_buffer = min(int(config.data.shuffle_buffer), config.batch_size)
  method = methods.get(config.method)
  data_sh, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  it = pipeline.TrainIterator(config, method.views(config), data_sh)
  spe = max(1, it.steps_per_epoch)
  config.total_steps = int(config.total_steps or round(config.num_epochs * spe))
  with config.unlocked():
    config.steps_per_epoch = spe
  batch = it.__next__() if host_batch is None else jax.device_put(host_batch, data_sh)
  it.close()
  batch = {k: v for k, v in batch.items() if k != "index"}
  tx, schedule = optim.make_optimizer(config, config.total_steps, spe)
  init_batch = jax.tree.map(lambda x: np.zeros((2,) + x.shape[1:], x.dtype), batch)
  mvars = jax.jit(lambda rng, b: method.init(rng, b, config))(
      jax.random.PRNGKey(config.seed + 1), init_batch)
  state = train.initial_state(mvars, tx)
  state_sh = sharding.tree_shardings(state, mesh, config.sharding_rules, config.fsdp_min_size)
  const_sh = sharding.tree_shardings(mvars.constants, mesh, config.sharding_rules,
                                     config.fsdp_min_size)
  return dict(method=method, config=config, tx=tx, schedule=schedule,
              state=jax.device_put(state, state_sh),
              constants=jax.device_put(mvars.constants, const_sh), batch=batch,
              state_sh=state_sh, const_sh=const_sh, data_sh=data_sh, repl=repl)


# ---------------------------------------------------------------- measuring
def median_time(fn, *args, warmup=2, iters=10):
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def matmul_peak(dtype, n=2048, iters=10):
  """Measured FLOP/s of a square matmul on device 0: the MFU denominator."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  return 2 * n ** 3 / median_time(f, a, iters=iters)


def flops_of(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", 0.0))


def memory_of(compiled) -> dict:
  """Per-device bytes of the compiled program: arguments, outputs, temporaries;
  `peak` = their sum less the outputs aliased to donated arguments."""
  m = compiled.memory_analysis()
  if m is None:
    return {}
  out = dict(argument=m.argument_size_in_bytes, output=m.output_size_in_bytes,
             temp=m.temp_size_in_bytes, alias=m.alias_size_in_bytes)
  out["peak"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
  return out


class StepRunner:
  """The trainer's compiled step on a fixed batch; the donated state is
  threaded through calls exactly as in the training loop."""

  def __init__(self, s, compiler_options=None):
    t = time.perf_counter()
    jitted = train.jit_train_step(s["method"], s["config"], s["tx"], s["schedule"],
                                  s["state_sh"], s["const_sh"], s["data_sh"], s["repl"])
    self.compiled = jitted.lower(s["state"], s["constants"], s["batch"]).compile(
        compiler_options)   # XLA debug options of this program only (bench/ab_step.py)
    self.compile_s = time.perf_counter() - t
    self.state, self.constants, self.batch = s["state"], s["constants"], s["batch"]

  def __call__(self):
    self.state, m = self.compiled(self.state, self.constants, self.batch)
    return m["loss"]

  def times(self, warmup=2, iters=5):
    for _ in range(warmup):
      jax.block_until_ready(self())
    out = []
    for _ in range(iters):
      t = time.perf_counter()
      jax.block_until_ready(self())
      out.append(time.perf_counter() - t)
    return out


def time_train_step(s, mesh, warmup=2, iters=5) -> dict:
  """Compile + time `setup(...)`'s step. Returns dict(compile_s, step_s,
  img_s_dev, tflop_step, achieved (FLOP/s per device), memory, loss)."""
  run = StepRunner(s)
  times = run.times(warmup, iters)
  step_s = float(np.median(times))
  flops = flops_of(run.compiled)
  n_dev = mesh.devices.size
  n_img = s["config"].batch_size
  loss = float(jax.device_get(run()))
  return dict(compile_s=run.compile_s, step_s=step_s, img_s_dev=n_img / step_s / n_dev,
              tflop_step=flops / 1e12, achieved=flops / step_s / n_dev,
              memory=memory_of(run.compiled), loss=loss)


def pin_threads(n: int):
  """Pins this process (every thread it starts from now on: XLA's pools,
  torch's OpenMP team) to its first `n` allowed cores. Call before jax
  starts its backend: XLA sizes its thread pool by the cores it may use."""
  cores = sorted(os.sched_getaffinity(0))
  os.sched_setaffinity(0, cores[:n])


def load_average() -> str:
  return " ".join(f"{x:.2f}" for x in os.getloadavg())
