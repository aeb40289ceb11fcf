"""python -m ssl_jax.results --suite fmnist [--only ROW,ROW] [--seeds N]
[--first_seed K] [--runs_dir DIR]
[--aggregate_only] [--force]

Runs (or resumes) every cell of the suite, then writes results/<suite>.json,
.md and .png; the tables are rewritten after each finished row, so an
interrupted suite still leaves its finished rows on disk. Cells recorded in
results/<suite>.json but absent on disk (the cells are not in git) are kept
while their row's recipe is unchanged, so `--first_seed 2 --seeds 3` adds a
third seed to a committed table from a fresh clone.
"""
import argparse
import os

from ssl_jax.results import aggregate
from ssl_jax.results import run as run_lib
from ssl_jax.results import suite as suite_lib


def main(argv=None):
  ap = argparse.ArgumentParser(prog="python -m ssl_jax.results", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--suite", required=True, help="configs/results/<suite>.py, or a path")
  ap.add_argument("--only", default="", help="comma-separated row names")
  ap.add_argument("--seeds", type=int, default=None, help="seeds per row (default: the suite's)")
  ap.add_argument("--first_seed", type=int, default=0,
                  help="run seeds first_seed .. seeds-1 only (add a seed to rows whose earlier "
                       "seeds are recorded in results/<suite>.json but not on disk)")
  ap.add_argument("--runs_dir", default=None, help="default: results/runs/<suite>")
  ap.add_argument("--out_dir", default=None, help="where <suite>.{json,md,png} go "
                  "(default: results/)")
  ap.add_argument("--aggregate_only", action="store_true",
                  help="only rebuild json / md / png from the cells on disk")
  ap.add_argument("--force", action="store_true",
                  help="rewrite the tables from the cells on disk alone, dropping cells "
                       "results/<suite>.json records but the disk does not hold")
  args = ap.parse_args(argv)
  s, path = suite_lib.load(args.suite)
  seeds = args.seeds if args.seeds is not None else s["seeds"]
  if seeds < 1:
    raise SystemExit(f"--seeds must be >= 1, got {seeds}.")
  if not 0 <= args.first_seed < seeds:
    raise SystemExit(f"--first_seed must be in [0, --seeds={seeds}), got {args.first_seed}.")
  runs_dir = os.path.abspath(args.runs_dir or os.path.join(suite_lib.REPO, "results", "runs",
                                                           s["name"]))
  out_dir = os.path.abspath(args.out_dir or os.path.join(suite_lib.REPO, "results"))
  write = lambda *_: aggregate.write_all(s, runs_dir, out_dir, seeds, force=args.force)
  if not args.aggregate_only:
    rows = suite_lib.select_rows(s, args.only)
    cells = [c for c in suite_lib.cells(rows, seeds, runs_dir) if c.seed >= args.first_seed]
    run_lib.run_cells(cells, s, path, on_row_done=write)
  files = write()
  print("[results] wrote " + ", ".join(files), flush=True)


if __name__ == "__main__":
  main()
