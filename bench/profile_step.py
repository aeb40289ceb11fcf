"""Where the trainer's step spends its time: a jax.profiler trace of a few
steps, summed per XLA op (not a test).

  python -m bench.profile_step --task mae --batch 16 --steps 3 [--top 30]
  python -m bench.profile_step --config configs/mae.py:vit_tiny --batch 64

Reads the trace's XPlane (tensorflow's proto; tensorboard is not needed) and
prints, per event name on the host threads that ran XLA's kernels, the
total time and its share, largest first; `--hlo` also prints the optimized
HLO text of the named ops so a fusion can be read back to its source.
"""
import argparse
import collections
import glob
import os
import re
import tempfile

import jax

from bench import common, twin_configs


def op_times(trace_dir: str):
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  totals = collections.Counter()
  for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      for ev in line.events:
        totals[(plane.name, line.name, names.get(ev.metadata_id, "?"))] += ev.duration_ps / 1e12
  return totals


def main():
  p = argparse.ArgumentParser()
  twin_configs.add_step_args(p)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--top", type=int, default=30)
  p.add_argument("--hlo", action="store_true")
  a = p.parse_args()
  run = common.StepRunner(twin_configs.setup_step(a))
  run.times(warmup=2, iters=1)
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d):
      wall = sum(run.times(warmup=0, iters=a.steps))
    totals = op_times(d)
  print(f"{a.steps} steps, {wall:.2f} s wall")
  by_line = collections.Counter()
  for (plane, line, _), t in totals.items():
    by_line[(plane, line)] += t
  for (plane, line), t in by_line.most_common(8):
    print(f"  line {plane} / {line}: {t:.2f} s")
  kinds = collections.Counter()
  for (plane, line, name), t in totals.items():
    if "XLAEigen" in line and not name.startswith("ThunkExecutor"):
      kinds[name.split(".")[0]] += t
  busy = sum(kinds.values())
  print(f"XLA kernels: {busy:.2f} thread-s; by kind:")
  for k, t in kinds.most_common(15):
    print(f"  {k:<36}{t:8.3f} s {100 * t / busy:6.1f}%")
  # By source: the op_name metadata of each kernel's HLO (forward / backward x layer part).
  src = {}
  for l in run.compiled.as_text().splitlines():
    m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = .*op_name=\"([^\"]+)\"", l)
    if m:
      src[m.group(1)] = m.group(2)
  parts = collections.Counter()
  for (plane, line, name), t in totals.items():
    if "XLAEigen" in line and not name.startswith("ThunkExecutor"):
      op = src.get(name, "")
      part = next((k for k in ("attn", "mlp", "norm", "patch_embed", "head", "decoder", "pred")
                   if f"/{k}" in op), "other (loss, optimizer, masking, copies)")
      parts[("bwd " if "transpose(" in op else "fwd ") + part] += t
  print("by source (HLO op_name):")
  for k, t in parts.most_common(14):
    print(f"  {k:<44}{t:8.3f} s {100 * t / busy:6.1f}%")
  print(f"{'s':>8} {'%wall':>6}  event (plane / line)")
  for (plane, line, name), t in totals.most_common(a.top):
    print(f"{t:8.3f} {100 * t / wall:6.1f}  {name}   ({plane} / {line})")
  if a.hlo:
    text = run.compiled.as_text()
    for (_, _, name), _ in totals.most_common(a.top):
      for l in text.splitlines():
        if f"{name} = " in l:
          print(l.strip()[:400])
          break


if __name__ == "__main__":
  main()
