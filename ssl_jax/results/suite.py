"""Suites, rows and cells, and what "done" means for each stage of a cell.

A suite file (configs/results/<name>.py) defines `SUITE` (a dict: name,
seeds, budget text, `jobs` {job: (eval config, overrides)}: one eval job
each, e.g. kNN + linear in one job sharing the features; `columns`
{column: (job, metric key in its metrics.jsonl, title)}; `rows` [Row]) and
`get_config(row_name)`, the pre-training config of a row,
so a cell's pre-training is `python -m ssl_jax.main --config <suite
file>:<row> --config.seed=<seed> --workdir <cell>/pretrain`.

A cell = row x seed, its own folder `<runs_dir>/<row>/seed<k>/`:
  pretrain/         the pre-training workdir (checkpoints, metrics, export/)
  <job>/            one eval job's workdir (metrics.jsonl: kind "eval")
  timing.json       wall seconds of each stage run by the suite
Stages are done when their output is on disk: the export's encoder.json
(written last by the trainer) and each job's metrics in its
metrics.jsonl. Rerunning skips done stages; an interrupted pre-training is
resumed by the trainer from its Orbax checkpoints.
"""
import dataclasses
import json
import os
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

from ssl_jax import config_files

REPO = config_files.REPO
SUITES_DIR = os.path.join(REPO, "configs", "results")
_NAME = re.compile(r"^[a-z0-9_]+$")


# The suites' kNN + linear eval job (one job: both share the features): the
# CPU linear probe of config_defaults.cpu_job (SGD, batch 256, 30 epochs);
# configs/eval/linear.py keeps MAE's LARS at batch 16384, which takes one step
# per epoch on 10k images. `extra`: further overrides (e.g. eval.feature).
def knn_linear_job(**extra):
  return ("configs/eval/linear.py", dict({"eval.protocols": ("knn", "linear"),
                                          "eval.linear.optimizer": "sgd",
                                          "eval.linear.batch_size": 256,
                                          "eval.linear.epochs": 30}, **extra))


def feature_rank_job(**extra):
  """evaluate/feature_rank.py on 2k test images (the train split unused: 256
  loaded)."""
  return ("configs/eval/linear.py", dict({"eval.protocols": ("feature_rank",),
                                          "eval.max_train_examples": 256}, **extra))


@dataclasses.dataclass(frozen=True)
class Row:
  """One table row. `config`: "configs/<file>.py:<variant>" (repo-relative)
  with `overrides` ("a.b": value) applied by the suite's get_config; or
  `export`: a reference encoder written without training ("pixels").
  `twin`: the row (same architecture, never trained) its numbers are
  compared with; `role`: "method" | "reference" (table sections).
  `export_flags` {config key: row}: the same seed's export of another row
  passed as a path (frozen teachers: D-MAE's `dmae.teacher`, CR2PQ's
  `cr2pq.teacher_path`); "row@k" names seed k's export for every seed (one
  teacher shared by all student seeds, as a paper pre-trains one teacher).
  That row must come earlier in the suite.
  `baseline`: a trained row this one is also compared with (e.g. the method
  a wrapper modifies), in a second difference table."""
  name: str
  label: str
  jobs: Tuple[str, ...]
  config: Optional[str] = None
  overrides: Dict[str, Any] = dataclasses.field(default_factory=dict)
  export: Optional[str] = None
  eval_overrides: Dict[str, Any] = dataclasses.field(default_factory=dict)
  twin: Optional[str] = None
  role: str = "method"
  export_flags: Dict[str, str] = dataclasses.field(default_factory=dict)
  baseline: Optional[str] = None

  def __post_init__(self):
    if not _NAME.match(self.name):
      raise ValueError(f"row name {self.name!r}: use lower-case letters, digits and _ "
                       "(it names the cell folders and --only).")
    if (self.config is None) == (self.export is None):
      raise ValueError(f"row {self.name!r}: give exactly one of `config` (pre-training) "
                       "or `export` (a reference encoder, e.g. 'pixels').")


@dataclasses.dataclass(frozen=True)
class Cell:
  row: Row
  seed: int
  dir: str

  @property
  def pretrain_dir(self):
    return os.path.join(self.dir, "pretrain")

  @property
  def export_dir(self):
    return os.path.join(self.pretrain_dir, "export")

  def job_dir(self, job: str):
    return os.path.join(self.dir, job)


def suite_path(suite: str) -> str:
  """A suite name (configs/results/<name>.py) or a path to a suite file."""
  if suite.endswith(".py"):
    path = os.path.abspath(suite)
  else:
    path = os.path.join(SUITES_DIR, f"{suite}.py")
  if not os.path.exists(path):
    names = sorted(f[:-3] for f in os.listdir(SUITES_DIR) if f.endswith(".py") and f[0] != "_")
    raise FileNotFoundError(f"Unknown suite {suite!r}: no {path}. Valid suites: "
                            f"{', '.join(names)} (or a path to a suite .py file).")
  return path


def load(suite: str):
  """-> (suite dict, suite file path)."""
  path = suite_path(suite)
  s = dict(config_files.load_module(path).SUITE)
  names = [r.name for r in s["rows"]]
  if len(set(names)) != len(names):
    raise ValueError(f"suite {s['name']}: duplicate row names in {names}.")
  for col, (job, _, _) in s["columns"].items():
    if job not in s["jobs"]:
      raise ValueError(f"column {col!r}: unknown job {job!r}; jobs: {', '.join(s['jobs'])}.")
  for r in s["rows"]:
    unknown = [j for j in r.jobs if j not in s["jobs"]]
    if unknown:
      raise ValueError(f"row {r.name!r}: unknown jobs {unknown}; the suite defines "
                       f"{', '.join(s['jobs'])}.")
    for field in ("twin", "baseline"):
      other = getattr(r, field)
      if other is not None and other not in names:
        raise ValueError(f"row {r.name!r}: {field} {other!r} is not a row ({', '.join(names)}).")
    for key, dep in r.export_flags.items():
      dep_row, _ = parse_dependency(dep)
      if dep_row not in names[:names.index(r.name)]:
        raise ValueError(f"row {r.name!r}: export_flags[{key!r}] names {dep_row!r}, which is "
                         f"not an earlier row ({', '.join(names[:names.index(r.name)])}).")
  return s, path


def select_rows(s, only: Optional[str]) -> List[Row]:
  rows = s["rows"]
  if not only:
    return list(rows)
  want = [x.strip() for x in only.split(",") if x.strip()]
  valid = {r.name for r in rows}
  bad = [w for w in want if w not in valid]
  if bad:
    raise ValueError(f"--only: unknown rows {bad}. Valid rows: {', '.join(r.name for r in rows)}.")
  return [r for r in rows if r.name in want]


def cells(rows: List[Row], seeds: int, runs_dir: str) -> List[Cell]:
  """Row-major: all seeds of a row finish before the next row starts, so a
  row's numbers are complete as early as possible."""
  runs_dir = os.path.abspath(runs_dir)
  return [Cell(r, k, os.path.join(runs_dir, r.name, f"seed{k}")) for r in rows
          for k in range(seeds)]


# ---------------------------------------------------------------- commands


def _flag_value(v) -> str:
  return v if isinstance(v, str) else repr(v)


def parse_dependency(dep: str) -> Tuple[str, Optional[int]]:
  """"row" -> (row, None): the same seed; "row@k" -> (row, k): seed k always."""
  m = re.fullmatch(r"([a-z0-9_]+)(?:@(\d+))?", dep)
  if m is None:
    raise ValueError(f"export_flags value {dep!r}: write a row name, or row@seed (e.g. "
                     "'dmae_teacher@0') for one seed's export shared by every seed.")
  return m.group(1), (None if m.group(2) is None else int(m.group(2)))


def dependency(cell: Cell, dep: str) -> Cell:
  """Another row's cell (same runs dir): the same seed's, or seed k's for "row@k"."""
  row_name, fixed_seed = parse_dependency(dep)
  seed = cell.seed if fixed_seed is None else fixed_seed
  runs_dir = os.path.dirname(os.path.dirname(cell.dir))
  return Cell(Row(row_name, row_name, (), export="-"), seed,
              os.path.join(runs_dir, row_name, f"seed{seed}"))


def pretrain_command(cell: Cell, suite_file: str) -> List[str]:
  cmd = [sys.executable, "-m", "ssl_jax.main", f"--config={suite_file}:{cell.row.name}",
         f"--workdir={cell.pretrain_dir}", f"--config.seed={cell.seed}"]
  for key, dep in cell.row.export_flags.items():
    dep_cell = dependency(cell, dep)
    if not pretrain_done(dep_cell):
      raise RuntimeError(f"row {cell.row.name!r} seed {cell.seed} needs the export of row "
                         f"{dep_cell.row.name!r} seed {dep_cell.seed} ({dep_cell.export_dir}); "
                         f"run that row first (--only {dep_cell.row.name},{cell.row.name}).")
    cmd.append(f"--config.{key}={dep_cell.export_dir}")
  return cmd


def eval_command(cell: Cell, job: str, s) -> List[str]:
  cfg, overrides = s["jobs"][job]
  flags = {"eval.compare_random_init": False}   # twins are rows of their own
  flags.update(overrides)
  flags.update(cell.row.eval_overrides)
  return ([sys.executable, "-m", "ssl_jax.main", f"--config={os.path.join(REPO, cfg)}",
           f"--config.encoder={cell.export_dir}", f"--workdir={cell.job_dir(job)}",
           f"--config.seed={cell.seed}"] +
          [f"--config.{k}={_flag_value(v)}" for k, v in flags.items()])


# ---------------------------------------------------------------- done checks


def read_jsonl(path: str) -> List[dict]:
  if not os.path.exists(path):
    return []
  out = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line:
        try:
          out.append(json.loads(line))
        except json.JSONDecodeError:      # a line cut by a kill: ignore it
          pass
  return out


def pretrain_done(cell: Cell) -> bool:
  return os.path.exists(os.path.join(cell.export_dir, "encoder.json"))


def job_keys(s, job: str) -> List[str]:
  return [key for j, key, _ in s["columns"].values() if j == job]


def job_result(cell: Cell, job: str, s) -> Optional[dict]:
  """The job's last eval record holding all its columns' metrics, or None."""
  keys = job_keys(s, job)
  recs = [r for r in read_jsonl(os.path.join(cell.job_dir(job), "metrics.jsonl"))
          if r.get("kind") == "eval" and all(k in r for k in keys)]
  return recs[-1] if recs else None


def cell_done(cell: Cell, s) -> bool:
  return pretrain_done(cell) and all(job_result(cell, j, s) is not None for j in cell.row.jobs)


def row_config(s, row_name: str, suite_file: str):
  """The pre-training config of a row: its method config + overrides, with the
  final evaluation off (protocols run as their own eval jobs)."""
  rows = {r.name: r for r in s["rows"]}
  if row_name not in rows:
    raise ValueError(f"Unknown row {row_name!r}. Valid rows: {', '.join(rows)}.")
  row = rows[row_name]
  if row.config is None:
    raise ValueError(f"row {row_name!r} is a reference export ({row.export}); nothing to train.")
  c, _ = config_files.load_config(row.config)
  # Rows may add fields the method config lacks.
  c = config_files.set_dotted(c, row.overrides, new_keys=True)
  c.eval.protocols = ()
  return c
