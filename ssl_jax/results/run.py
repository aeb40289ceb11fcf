"""Runs the missing stages of each cell as `ssl_jax.main` commands.

Each stage's output goes to `<cell>/<stage>.log`; its wall time to
`<cell>/timing.json`. A failed stage stops the suite with the log's tail
(rerun to retry: finished stages stay done).
"""
import json
import os
import subprocess
import time
from typing import Callable, List

from ssl_jax.results import suite as suite_lib


def execute(cmd: List[str], log_path: str) -> None:
  """Runs one stage (repo root as cwd), its output appended to `log_path`."""
  env = dict(os.environ)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  env["PYTHONPATH"] = suite_lib.REPO + os.pathsep + env.get("PYTHONPATH", "")
  # A cell runs on the machine's real devices, not on a test session's
  # simulated ones (tests/conftest.py forces 8 CPU devices).
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                              if not f.startswith("--xla_force_host_platform_device_count"))
  with open(log_path, "a") as log:
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    rc = subprocess.call(cmd, cwd=suite_lib.REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
  if rc:
    with open(log_path) as f:
      tail = "".join(f.readlines()[-25:])
    raise RuntimeError(f"stage failed (exit {rc}): {' '.join(cmd)}\n--- {log_path} (tail) ---\n"
                       f"{tail}\nFix the cause and rerun the same command; finished stages "
                       "are skipped.")


def _record_time(cell, stage: str, seconds: float):
  path = os.path.join(cell.dir, "timing.json")
  t = {}
  if os.path.exists(path):
    with open(path) as f:
      t = json.load(f)
  t[stage] = t.get(stage, 0.0) + seconds     # an interrupted + resumed stage adds up
  with open(path, "w") as f:
    json.dump(t, f, indent=1)


class Command:
  """A stage's `ssl_jax.main` command line, built when the stage runs."""

  def __init__(self, build: Callable[[], List[str]]):
    self.build = build


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def acquire(cell) -> bool:
  """Takes `<cell>/.lock` (this pid) unless a live process holds it, so several
  runners (e.g. one per `--only` group) can share a runs dir safely. A lock
  left by a dead process is taken over."""
  os.makedirs(cell.dir, exist_ok=True)
  path = os.path.join(cell.dir, ".lock")
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
      return True
    except FileExistsError:
      try:
        with open(path) as f:
          pid = int(f.read().strip() or 0)
      except (OSError, ValueError):
        pid = 0
      if pid == os.getpid():
        return True
      if pid and _alive(pid):
        return False
      os.remove(path)             # stale: its runner died
  return False


def release(cell):
  path = os.path.join(cell.dir, ".lock")
  if os.path.exists(path):
    os.remove(path)


def stages(cell, s, suite_file: str):
  """(stage name, done?, action) in order: the pre-training (or reference
  export), then each eval job."""
  out = []
  if cell.row.export is not None:
    out.append(("pretrain", suite_lib.pretrain_done(cell), lambda: _write_reference(cell)))
  else:
    # Built when it runs: a teacher export it names may come from an earlier cell.
    out.append(("pretrain", suite_lib.pretrain_done(cell),
                Command(lambda: suite_lib.pretrain_command(cell, suite_file))))
  for j in cell.row.jobs:
    out.append((j, suite_lib.job_result(cell, j, s) is not None,
                Command(lambda j=j: suite_lib.eval_command(cell, j, s))))
  return out


def _write_reference(cell):
  from ssl_jax.models import pixels  # pylint: disable=g-import-not-at-top
  writers = {"pixels": pixels.save_export}
  if cell.row.export not in writers:
    raise ValueError(f"row {cell.row.name!r}: unknown reference export {cell.row.export!r}; "
                     f"valid: {', '.join(writers)}.")
  writers[cell.row.export](cell.export_dir)


def run_cells(cells, s, suite_file: str, runner: Callable = execute,
              on_row_done: Callable = None, log=print):
  """Runs every missing stage; `on_row_done(row)` after each row's last cell."""
  todo = [(c, name) for c in cells for name, done, _ in stages(c, s, suite_file) if not done]
  total_cells = len(cells)
  log(f"[results] {total_cells} cells, {len(todo)} stages to run "
      f"({sum(1 for c in cells if suite_lib.cell_done(c, s))} cells already done)")
  t_start, counter = time.time(), [0]
  for i, cell in enumerate(cells):
    pending = [st for st in stages(cell, s, suite_file) if not st[1]]
    if pending and not acquire(cell):
      log(f"[results] cell {i + 1}/{total_cells} {cell.row.name} seed {cell.seed}: "
          "another runner holds it; skipped")
      todo = [t for t in todo if t[0] is not cell]
      continue
    # Another runner may have finished stages while we waited for the lock.
    pending = [st for st in stages(cell, s, suite_file) if not st[1]]
    try:
      _run_stages(i, cell, pending, total_cells, runner, log, todo, t_start, counter)
    finally:
      release(cell)
    last_of_row = i + 1 == len(cells) or cells[i + 1].row.name != cell.row.name
    if last_of_row and on_row_done is not None:
      on_row_done(cell.row)


def _run_stages(i, cell, pending, total_cells, runner, log, todo, t_start, counter):
  for name, _, action in pending:
    log(f"[results] cell {i + 1}/{total_cells} {cell.row.name} seed {cell.seed}: {name} ...")
    t0 = time.time()
    if isinstance(action, Command):
      runner(action.build(), os.path.join(cell.dir, f"{name}.log"))
    else:
      action()
    dt = time.time() - t0
    _record_time(cell, name, dt)
    counter[0] += 1
    left = len(todo) - counter[0]
    eta = (time.time() - t_start) / counter[0] * left
    log(f"[results] cell {i + 1}/{total_cells} {cell.row.name} seed {cell.seed}: {name} "
        f"done in {dt / 60:.1f} min; {left} stages left, ETA {eta / 60:.0f} min")
