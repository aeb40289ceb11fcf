"""The results suite: runs tiny cells through real `ssl_jax.main` commands,
skips finished stages on a rerun, reruns exactly the missing ones, and
aggregates mean / std / twin differences correctly from metrics files."""
import json
import math
import os
import textwrap

import numpy as np
import pytest

from ssl_jax.results import aggregate
from ssl_jax.results import run as run_lib
from ssl_jax.results import suite as suite_lib

_SUITE = textwrap.dedent("""
    from ssl_jax.results.suite import Row, row_config
    EVAL = {"data.image_size": 16, "eval.max_train_examples": 64,
            "eval.max_eval_examples": 64, "eval.feature": "mean"}
    SUITE = dict(
        name="tiny", seeds=1, budget="4 steps x 8",
        jobs={"frozen": ("configs/eval/knn.py", {"eval.knn.k": 5})},
        columns={"knn": ("frozen", "knn/top1", "kNN")},
        rows=[Row("pixels", "raw pixels", ("frozen",), export="pixels", role="reference",
                  eval_overrides=EVAL),
              Row("sup", "supervised", ("frozen",), config="configs/supervised.py:tiny",
                  overrides={"supervised.label_smoothing": 0.0}, eval_overrides=EVAL)])
    def get_config(row):
      return row_config(SUITE, row, __file__)
    """)


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory):
  d = tmp_path_factory.mktemp("suite")
  path = os.path.join(d, "tiny.py")
  with open(path, "w") as f:
    f.write(_SUITE)
  s, path = suite_lib.load(path)
  cells = suite_lib.cells(s["rows"], 1, os.path.join(d, "runs"))
  done_rows = []
  run_lib.run_cells(cells, s, path, on_row_done=lambda r: done_rows.append(r.name))
  return s, path, cells, done_rows, str(d)


def test_suite_runs_cells_then_rerun_skips_them(tiny_suite):
  s, path, cells, done_rows, d = tiny_suite
  assert done_rows == ["pixels", "sup"]
  assert all(suite_lib.cell_done(c, s) for c in cells)
  knn = suite_lib.job_result(cells[0], "frozen", s)["knn/top1"]
  assert 10.0 < knn <= 100.0
  # The pre-training honoured the row's override (written into the export).
  with open(os.path.join(cells[1].export_dir, "encoder.json")) as f:
    cfg = json.loads(json.load(f)["info"]["config"])
  assert cfg["supervised"]["label_smoothing"] == 0.0 and cfg["seed"] == 0

  def must_not_run(cmd, log):
    raise AssertionError(f"a finished stage ran again: {cmd}")
  run_lib.run_cells(cells, s, path, runner=must_not_run)

  # Lose one protocol's result and the export (an interrupted pre-training):
  # the rerun issues exactly those stages, with the same commands as before.
  os.remove(os.path.join(cells[1].job_dir("frozen"), "metrics.jsonl"))
  os.rename(os.path.join(cells[1].export_dir, "encoder.json"),
            os.path.join(cells[1].export_dir, "encoder.json.bak"))
  ran = []
  run_lib.run_cells(cells, s, path, runner=lambda cmd, log: ran.append(cmd))
  assert ran == [suite_lib.pretrain_command(cells[1], path),
                 suite_lib.eval_command(cells[1], "frozen", s)]
  # A cell locked by another live runner is left alone; a stale lock is taken over.
  with open(os.path.join(cells[1].dir, ".lock"), "w") as f:
    f.write(str(os.getppid()))
  ran.clear()
  run_lib.run_cells(cells, s, path, runner=lambda cmd, log: ran.append(cmd))
  assert ran == []
  with open(os.path.join(cells[1].dir, ".lock"), "w") as f:
    f.write("999999999")
  run_lib.run_cells(cells, s, path, runner=lambda cmd, log: ran.append(cmd))
  assert len(ran) == 2 and not os.path.exists(os.path.join(cells[1].dir, ".lock"))
  os.rename(os.path.join(cells[1].export_dir, "encoder.json.bak"),
            os.path.join(cells[1].export_dir, "encoder.json"))
  files = aggregate.write_all(s, os.path.join(d, "runs"), os.path.join(d, "out"))
  assert all(os.path.getsize(f) > 0 for f in files)


def _fake_cell(runs, row, seed, job, key, value):
  d = os.path.join(runs, row, f"seed{seed}", job)
  os.makedirs(d)
  with open(os.path.join(d, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"step": 0, "kind": "eval", key: value}) + "\n")
    f.write('{"step": 0, "kind": "ev')          # a line cut by a kill is ignored


def test_aggregate_mean_std_and_twin_difference(tmp_path):
  s = dict(name="fake", jobs={"frozen": ("configs/eval/knn.py", {})},
           columns={"knn": ("frozen", "knn/top1", "kNN")},
           rows=[suite_lib.Row("rand", "random init", ("frozen",), config="x.py",
                               role="reference"),
                 suite_lib.Row("m", "method", ("frozen",), config="x.py", twin="rand"),
                 suite_lib.Row("w", "wrapped", ("frozen",), config="x.py", twin="rand",
                               baseline="m")])
  runs = str(tmp_path / "runs")
  vals = {"rand": [60.0, 61.0, 59.0], "m": [70.0, 72.5, 71.0], "w": [69.0, 70.0]}
  for row, vs in vals.items():
    for k, v in enumerate(vs):
      _fake_cell(runs, row, k, "frozen", "knn/top1", v)
  res = aggregate.collect(s, runs)
  for row, vs in vals.items():
    sm = res["rows"][row]["summary"]["knn"]
    assert sm["n"] == len(vs)
    np.testing.assert_allclose(sm["mean"], np.mean(vs))
    np.testing.assert_allclose(sm["std"], np.std(vs, ddof=1))
    np.testing.assert_allclose(sm["se"], np.std(vs, ddof=1) / math.sqrt(len(vs)))
  c = res["rows"]["m"]["vs_twin"]["knn"]
  want_se = math.sqrt(np.var(vals["m"], ddof=1) / 3 + np.var(vals["rand"], ddof=1) / 3)
  np.testing.assert_allclose(c["diff"], np.mean(vals["m"]) - 60.0)
  np.testing.assert_allclose(c["se"], want_se)
  assert c["beats_2se"]
  md = aggregate.markdown(res, s)
  assert f"| method | {np.mean(vals['m']):.1f} ± {np.std(vals['m'], ddof=1):.1f} (3)" in md
  assert "+11.2" in md and "✔" in md
  # The baseline comparison: its own table, 2 vs 3 seeds, below 2 se here.
  assert "vs_baseline" not in res["rows"]["m"]
  b = res["rows"]["w"]["vs_baseline"]["knn"]
  np.testing.assert_allclose(b["diff"], 69.5 - np.mean(vals["m"]))
  np.testing.assert_allclose(b["se"], math.sqrt(np.var(vals["w"], ddof=1) / 2 +
                                                np.var(vals["m"], ddof=1) / 3))
  assert not b["beats_2se"]
  base_table = md.split("Difference to the baseline row")[1]
  assert "| wrapped | method | -1.7 (0.9) |" in base_table
  assert "\n| method |" not in base_table


def test_aggregate_keeps_recorded_seeds_and_refuses_to_drop_them(tmp_path):
  """The cells are not in git: a later sitting adds a seed to a committed
  table; a row whose recipe changed must not lose its record silently."""
  row = suite_lib.Row("m", "method", ("frozen",), config="x.py", overrides={"lr": 1})
  s = dict(name="fake", jobs={"frozen": ("configs/eval/knn.py", {})},
           columns={"knn": ("frozen", "knn/top1", "kNN")}, rows=[row])
  runs, later, out = (str(tmp_path / d) for d in ("runs", "later", "out"))
  for k, v in enumerate([70.0, 71.0]):
    _fake_cell(runs, "m", k, "frozen", "knn/top1", v)
  aggregate.write_all(s, runs, out)
  _fake_cell(later, "m", 2, "frozen", "knn/top1", 75.0)   # seed 2 only, elsewhere
  with open(os.path.join(out, "fake_curves.png"), "wb") as f:
    f.write(b"seeds 0-1")       # drawn when they were on disk: not redrawn from seed 2 alone
  aggregate.write_all(s, later, out)
  with open(os.path.join(out, "fake_curves.png"), "rb") as f:
    assert f.read() == b"seeds 0-1"
  with open(os.path.join(out, "fake.json")) as f:
    rec = json.load(f)["rows"]["m"]
  assert [(c["seed"], c.get("recorded", False)) for c in rec["cells"]] == [
      (0, True), (1, True), (2, False)]
  np.testing.assert_allclose(rec["summary"]["knn"]["mean"], 72.0)
  changed = dict(s, rows=[suite_lib.Row("m", "method", ("frozen",), config="x.py",
                                        overrides={"lr": 2})])
  with pytest.raises(SystemExit, match=r"m/knn: 3 -> 1.*--force"):
    aggregate.write_all(changed, later, out)
  aggregate.write_all(changed, later, out, force=True)
  with open(os.path.join(out, "fake.json")) as f:
    assert json.load(f)["rows"]["m"]["summary"]["knn"]["n"] == 1


def test_twin_and_baseline_must_name_rows(tmp_path):
  path = tmp_path / "bad.py"
  path.write_text(textwrap.dedent("""
      from ssl_jax.results.suite import Row
      SUITE = dict(name="bad", jobs={"j": ("configs/eval/knn.py", {})},
                   columns={"c": ("j", "knn/top1", "kNN")},
                   rows=[Row("a", "a", ("j",), config="x.py", baseline="nope")])
      """))
  with pytest.raises(ValueError, match="baseline 'nope' is not a row"):
    suite_lib.load(str(path))


def test_bad_rows_and_suites_name_the_choices(tmp_path):
  with pytest.raises(FileNotFoundError, match="Valid suites: .*fmnist"):
    suite_lib.suite_path("nope")
  s, _ = suite_lib.load("fmnist")
  with pytest.raises(ValueError, match="Valid rows: pixels"):
    suite_lib.select_rows(s, "mae,maee")
  with pytest.raises(ValueError, match="exactly one of"):
    suite_lib.Row("x", "x", ("frozen",))


@pytest.mark.parametrize("name", ["fmnist", "fmnist_mim", "fmnist_dino", "fmnist_long"])
def test_every_row_of_every_suite_builds_a_valid_config(name):
  """Each trained row's config (method config + row overrides) is one the
  trainer accepts: an override that names a wrong key or value fails here,
  not an hour into a results run. Teachers read from another row's export
  are checked by the runner when that export exists."""
  from ssl_jax import config_check  # pylint: disable=g-import-not-at-top
  s, path = suite_lib.load(name)
  for r in s["rows"]:
    if r.config is None:
      continue
    c = suite_lib.row_config(s, r.name, path)
    for key, value in r.overrides.items():
      node = c
      for part in key.split("."):
        node = node[part]
      assert getattr(node, "to_dict", lambda: node)() == value, (r.name, key)
    if not r.export_flags:
      config_check.check(c, ("pretrain", "train"), device_count=1)


def test_export_flag_dependency_same_seed_or_fixed_seed(tmp_path):
  """"row" reads the same seed's export; "row@k" reads seed k's for every
  seed (one teacher shared by all student seeds); anything else is refused."""
  student = suite_lib.Row("student", "s", ("frozen",), config="configs/mae.py:vit_tiny",
                          export_flags={"dmae.teacher": "teacher@0"})
  cell = suite_lib.cells([student], 3, str(tmp_path))[2]
  assert cell.seed == 2
  same = suite_lib.dependency(cell, "teacher")
  fixed = suite_lib.dependency(cell, "teacher@0")
  assert same.dir == str(tmp_path / "teacher" / "seed2")
  assert fixed.dir == str(tmp_path / "teacher" / "seed0") and fixed.seed == 0
  with pytest.raises(RuntimeError, match="row 'teacher' seed 0"):
    suite_lib.pretrain_command(cell, "suite.py")
  with pytest.raises(ValueError, match="row@seed"):
    suite_lib.dependency(cell, "teacher@x")
  # Once seed 0's export exists every seed's command names it.
  os.makedirs(fixed.export_dir)
  open(os.path.join(fixed.export_dir, "encoder.json"), "w").write("{}")
  cmd = suite_lib.pretrain_command(cell, "suite.py")
  assert f"--config.dmae.teacher={fixed.export_dir}" in cmd
