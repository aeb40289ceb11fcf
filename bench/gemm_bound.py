"""How fast could the step be? The time its matmuls alone take (not a test).

  python -m bench.gemm_bound --task mae --batch 64 --threads 2 [--torch]
  python -m bench.gemm_bound --config configs/mae.py:vit_tiny --threads 2

Every `dot_general` of the trainer's step (forward, backward and optimizer;
read from the step's jaxpr, sub-jaxprs included, scans counted `length`
times) is timed alone as a jitted fp32 XLA program on random inputs of its
shapes, and, with `--torch`, as the same contraction in PyTorch
(`torch.einsum`, which lowers to its BLAS matmuls); each less the time of a
call on the same arguments that does no work. Printed per unique
shape: count, GFLOP, ms per call and GFLOP/s; then the sums, split into the
weight matmuls (no batch dimension: projections, MLP, patch embedding) and
the batched ones (attention's QK^T and AV per head), next to the whole step
measured in the same process.

Why: a step can not be faster than its matmuls run back to back (everything
else, LayerNorm, GELU, softmax, the optimizer, only adds). The weight
matmuls' sum is a floor under any ssl_jax step on this machine that XLA's
GEMMs bound; a speed target below that floor is out of reach without a
faster GEMM library (bench/README.md, "the floor").
"""
import argparse
import collections
import os
import string
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench import common, twin_configs
from ssl_jax import train as train_lib


def _dots(jaxpr, mult, out):
  """Collects (lhs shape, rhs shape, dimension numbers) -> calls, recursively."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
      key = (tuple(eqn.invars[0].aval.shape), tuple(eqn.invars[1].aval.shape),
             (tuple(lc), tuple(rc)), (tuple(lb), tuple(rb)))
      out[key] += mult
    inner = mult * (eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1)
    for v in eqn.params.values():
      for sub in (v if isinstance(v, (list, tuple)) else (v,)):
        sub = getattr(sub, "jaxpr", sub)       # ClosedJaxpr -> Jaxpr
        if hasattr(sub, "eqns"):
          _dots(sub, inner, out)
  return out


def step_dots(s):
  fn = train_lib.make_train_step(s["method"], s["config"], s["tx"], s["schedule"])
  closed = jax.make_jaxpr(fn)(s["state"], s["constants"], s["batch"])
  return _dots(closed.jaxpr, 1, collections.Counter())


def flops(key) -> float:
  lhs, rhs, (lc, _), (lb, _) = key
  free_l = [d for i, d in enumerate(lhs) if i not in lc and i not in lb]
  free_r = [d for i, d in enumerate(rhs) if i not in key[2][1] and i not in key[3][1]]
  return 2.0 * np.prod([lhs[i] for i in lb]) * np.prod([lhs[i] for i in lc]) \
      * np.prod(free_l) * np.prod(free_r)


def _einsum_spec(key) -> str:
  """dot_general's dimension numbers as an einsum string (batch, free lhs, free rhs)."""
  lhs, rhs, (lc, rc), (lb, rb) = key
  letters = iter(string.ascii_letters)
  a, b = [None] * len(lhs), [None] * len(rhs)
  for i, j in zip(lb, rb):
    a[i] = b[j] = next(letters)
  for i, j in zip(lc, rc):
    a[i] = b[j] = next(letters)
  for arr in (a, b):
    for i, x in enumerate(arr):
      arr[i] = x or next(letters)
  out = [a[i] for i in lb] + [a[i] for i in range(len(lhs)) if i not in lc and i not in lb] \
      + [b[j] for j in range(len(rhs)) if j not in rc and j not in rb]
  return f"{''.join(a)},{''.join(b)}->{''.join(out)}"


def time_jax(key, iters):
  """Median seconds of the dot alone, less the dispatch of a jitted call on
  the same arguments that does no work (so the floor is not overstated)."""
  lhs, rhs, c, b = key
  f = jax.jit(lambda x, y: jax.lax.dot_general(x, y, (c, b)))
  nothing = jax.jit(lambda x, y: x.ravel()[0] + y.ravel()[0])
  x = jax.random.normal(jax.random.PRNGKey(0), lhs, jnp.float32)
  y = jax.random.normal(jax.random.PRNGKey(1), rhs, jnp.float32)
  t = common.median_time(f, x, y, warmup=2, iters=iters)
  return max(t - common.median_time(nothing, x, y, warmup=2, iters=iters), 0.0)


def time_torch(key, iters):
  import torch  # pylint: disable=g-import-not-at-top
  spec = _einsum_spec(key)
  x, y = torch.randn(key[0]), torch.randn(key[1])

  def median(fn):
    for _ in range(2):
      fn()
    times = []
    for _ in range(iters):
      t = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t)
    return float(np.median(times))
  return max(median(lambda: torch.einsum(spec, x, y))
             - median(lambda: x.view(-1)[0] + y.view(-1)[0]), 0.0)


def main():
  p = argparse.ArgumentParser()
  twin_configs.add_step_args(p)
  p.add_argument("--iters", type=int, default=7)
  p.add_argument("--torch", action="store_true", help="also time each matmul in PyTorch")
  a = p.parse_args()
  s = twin_configs.setup_step(a)
  if a.torch:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(len(os.sched_getaffinity(0)))   # the cores --threads left us
  dots = step_dots(s)
  load = common.load_average()
  run = common.StepRunner(s)
  step_s = float(np.median(run.times(warmup=2, iters=a.iters)))
  peak = common.matmul_peak(jnp.float32)
  rows, sums = [], collections.defaultdict(float)
  for key, n in sorted(dots.items(), key=lambda kv: -flops(kv[0]) * kv[1]):
    tj = time_jax(key, a.iters)
    tt = time_torch(key, a.iters) if a.torch else float("nan")
    kind = "batched" if key[3][0] else "weight"
    sums[kind, "jax"] += n * tj
    sums[kind, "torch"] += n * tt
    sums[kind, "flop"] += n * flops(key)
    rows.append((key, n, tj, tt))
  print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load {load} -> "
        f"{common.load_average()}; {a.config or f'--task {a.task}'} batch "
        f"{s['config'].batch_size}; fp32; threads {a.threads or 'all'}; "
        f"matmul rate (2048^2) {peak / 1e9:.1f} GFLOP/s")
  print(f"{'lhs':>18} {'rhs':>16} {'contract':>12} {'batch':>8} {'n':>3} {'GFLOP':>7} "
        f"{'jax ms':>8} {'GFLOP/s':>8}" + (f" {'torch ms':>9} {'GFLOP/s':>8}" if a.torch else ""))
  for key, n, tj, tt in rows:
    f = flops(key)
    line = (f"{str(key[0]):>18} {str(key[1]):>16} {str(key[2]):>12} {str(key[3][0]):>8} "
            f"{n:>3} {n * f / 1e9:>7.2f} {1e3 * tj:>8.2f} {f / tj / 1e9:>8.1f}")
    if a.torch:
      line += f" {1e3 * tt:>9.2f} {f / tt / 1e9:>8.1f}"
    print(line)
  step_flop = common.flops_of(run.compiled)
  print(f"step (XLA, measured): {1e3 * step_s:.0f} ms, {step_flop / 1e9:.1f} GFLOP, "
        f"MFU {100 * step_flop / step_s / peak:.1f}%")
  for kind in ("weight", "batched"):
    line = (f"{kind} matmuls: {sums[kind, 'flop'] / 1e9:.1f} GFLOP, jax {1e3 * sums[kind, 'jax']:.0f} ms"
            f" ({sums[kind, 'flop'] / sums[kind, 'jax'] / 1e9:.1f} GFLOP/s)")
    if a.torch:
      line += (f", torch {1e3 * sums[kind, 'torch']:.0f} ms "
               f"({sums[kind, 'flop'] / sums[kind, 'torch'] / 1e9:.1f} GFLOP/s)")
    print(line)
  total = sums["weight", "jax"] + sums["batched", "jax"]
  print(f"all matmuls back to back (jax): {1e3 * total:.0f} ms = {100 * total / step_s:.0f}% "
        f"of the step; weight matmuls alone {100 * sums['weight', 'jax'] / step_s:.0f}%")


if __name__ == "__main__":
  main()
