"""A/B of one code change on the trainer's step, alternated in one process
(not a test). How a speed change earns its place (bench/README.md).

  python -m bench.ab_step --config configs/mae.py:vit_tiny --variant gather_onehot
  python -m bench.ab_step --task mae --batch 64 --variant gather_onehot   # compare_torch's step

Variant B is variant A with `VARIANTS[name]` patched in while the step is
traced (the patch is undone afterwards), or A compiled with other XLA
options (`xla:xla_cpu_use_xnnpack=true`), so both compiled programs live in
one process on the same batch and state. Each repeat times `--steps` steps
of A then B (then B then A, alternating); printed: median ms/step of each,
B/A, XLA FLOPs and memory of each, and the loss after the same number of
steps from the same state (a change must not alter the numbers beyond
float rounding).
"""
import argparse
import contextlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench import common, twin_configs
from ssl_jax import train as train_lib
from ssl_jax.models import dino_head
from ssl_jax.models import vit as vit_lib
from ssl_jax.ops import masking


def _gather_onehot(x, idx):
  """take_along_axis as a one-hot matmul: its gradient is a matmul too, not a
  scatter-add (serial on XLA:CPU)."""
  onehot = jax.nn.one_hot(idx, x.shape[1], dtype=x.dtype)
  return jnp.einsum("bkn,bn...->bk...", onehot, x)


@contextlib.contextmanager
def _patch(obj, name, value):
  old = getattr(obj, name)
  setattr(obj, name, value)
  try:
    yield
  finally:
    setattr(obj, name, old)


def _if_finite_select(finite, apply_update, old):
  """The NaN guard before the lax.cond: compute the update, then select."""
  new = apply_update(old)
  return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)


VARIANTS = {
    "gather_onehot": lambda: _patch(masking, "gather_tokens", _gather_onehot),
    "nan_guard_select": lambda: _patch(train_lib, "if_finite", _if_finite_select),
    "embed_all": lambda: _patch(vit_lib, "VISIBLE_ONLY_EMBED", False),
    # DINO head's weight norm as the column reduction it was before
    "colnorm_reduce": lambda: _patch(dino_head, "column_norms",
                                     lambda v: jnp.linalg.norm(v, axis=0, keepdims=True)),
}


def main():
  p = argparse.ArgumentParser()
  twin_configs.add_step_args(p)
  p.add_argument("--variant", required=True,
                 help=f"one of {sorted(VARIANTS)}, or xla:<option>=<value>[;...]")
  p.add_argument("--repeats", type=int, default=6)
  p.add_argument("--steps", type=int, default=2)
  a = p.parse_args()
  s = twin_configs.setup_step(a)
  state0 = jax.tree.map(jnp.copy, s["state"])
  runs = {"A": common.StepRunner(dict(s, state=jax.tree.map(jnp.copy, state0)))}
  if a.variant.startswith("xla:"):   # XLA options for B's program only: "xla:k=v;k2=v2"
    typed = lambda v: {"true": True, "false": False}.get(v, int(v) if v.isdigit() else v)
    opts = {k: typed(v) for k, v in (kv.split("=", 1) for kv in a.variant[4:].split(";"))}
    runs["B"] = common.StepRunner(dict(s, state=jax.tree.map(jnp.copy, state0)), opts)
  else:
    with VARIANTS[a.variant]():
      runs["B"] = common.StepRunner(dict(s, state=jax.tree.map(jnp.copy, state0)))
  losses = {k: [float(r()) for _ in range(3)] for k, r in runs.items()}   # same steps, same state
  times = {"A": [], "B": []}
  load = common.load_average()
  for i in range(a.repeats):
    for k in (("A", "B") if i % 2 == 0 else ("B", "A")):
      times[k] += runs[k].times(warmup=0, iters=a.steps)
  med = {k: float(np.median(v)) for k, v in times.items()}
  print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load {load} -> "
        f"{common.load_average()}; {a.config or f'--task {a.task}'} batch {s['config'].batch_size}; "
        f"B = {a.variant}; {a.repeats} alternated repeats x {a.steps} steps")
  for k, r in runs.items():
    m = common.memory_of(r.compiled)
    print(f"{k}: {1e3 * med[k]:.0f} ms/step (min {1e3 * min(times[k]):.0f}), "
          f"{common.flops_of(r.compiled) / 1e9:.1f} GFLOP, peak {m.get('peak', 0) / 2**20:.0f} MB, "
          f"losses {losses[k]}, compile {r.compile_s:.1f} s")
  print(f"B/A time: {med['B'] / med['A']:.3f}")


if __name__ == "__main__":
  main()
