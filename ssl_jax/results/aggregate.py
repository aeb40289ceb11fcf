"""Cells on disk -> results/<suite>.json, .md (the README's table) and .png.

Per row and column (a metric of one eval job): mean, sample std (ddof 1), n and standard error over
seeds; per method row, the difference to its random-init twin row with
the standard error of a difference of independent means,
se = sqrt(se_row^2 + se_twin^2), and whether it exceeds 2 se; the same
against the row's `baseline` (e.g. the method a wrapper modifies) where set.
"""
import glob
import json
import math
import os
import textwrap
from typing import Dict, List

import numpy as np

from ssl_jax.results import suite as suite_lib


def summarize(values: List[float]) -> Dict[str, float]:
  v = np.asarray(values, np.float64)
  n = len(v)
  std = float(v.std(ddof=1)) if n > 1 else float("nan")
  return {"mean": float(v.mean()), "std": std, "n": n,
          "se": std / math.sqrt(n) if n > 1 else float("nan")}


def compare(row: Dict[str, float], twin: Dict[str, float]) -> Dict[str, float]:
  diff = row["mean"] - twin["mean"]
  se = math.sqrt(row["se"] ** 2 + twin["se"] ** 2)
  return {"diff": diff, "se": se, "beats_2se": bool(diff > 2 * se) if se == se else False}


def row_columns(row, s) -> List[str]:
  return [c for c, (job, _, _) in s["columns"].items() if job in row.jobs]


def _cell_record(cell, s) -> dict:
  rec = {"seed": cell.seed, "metrics": {}}
  for col in row_columns(cell.row, s):
    job, key, _ = s["columns"][col]
    r = suite_lib.job_result(cell, job, s)
    if r is not None:
      rec["metrics"][col] = r[key]
  meta_path = os.path.join(cell.export_dir, "encoder.json")
  if os.path.exists(meta_path) and cell.row.config is not None:
    with open(meta_path) as f:
      info = json.load(f).get("info", {})
    cfg = info.get("config")
    cfg = json.loads(cfg) if isinstance(cfg, str) else (cfg or {})
    steps = int(info.get("step", 0))
    batch = int(cfg.get("batch_size", 0))
    rec["budget"] = {"steps": steps, "batch": batch, "images_seen": steps * batch}
  train = [r for r in suite_lib.read_jsonl(os.path.join(cell.pretrain_dir, "metrics.jsonl"))
           if r.get("kind") == "train"]
  if train:
    rec["loss_first"], rec["loss_last"] = train[0]["loss"], train[-1]["loss"]
  tpath = os.path.join(cell.dir, "timing.json")
  if os.path.exists(tpath):
    with open(tpath) as f:
      rec["wall_min"] = {k: round(v / 60, 2) for k, v in json.load(f).items()}
  if train and "pretrain" not in rec.get("wall_min", {}) and len(train) > 1:
    # Stage not timed by the suite (run by hand, or its runner was stopped):
    # the training loop's own span, first to last logged step, scaled to all steps.
    span = (train[-1]["time"] - train[0]["time"]) * train[-1]["step"] / max(
        1, train[-1]["step"] - train[0]["step"])
    rec.setdefault("wall_min", {})["pretrain"] = round(span / 60, 2)
  return rec


def _recipe(row) -> dict:
  """What a row's cells were trained with, as results/<suite>.json records it."""
  return {"config": row.config or f"reference: {row.export}", "overrides": row.overrides}


def _same_recipe(row, recorded: dict) -> bool:
  """Whether a row recorded in an earlier json still has this config."""
  now = json.loads(json.dumps(_recipe(row), default=str))
  return now == {k: recorded.get(k) for k in now}


def collect(s, runs_dir: str, recorded: dict = None) -> dict:
  """Every row's cells found on disk (any number of seeds) and summaries.

  `recorded` (an earlier results/<suite>.json): its cells whose folders are
  not on disk are kept (`"recorded": true`): the cells are not in git, so a
  later sitting can add seeds to a committed table. Only while the row's
  config and overrides are unchanged; a cell on disk wins over its record."""
  out = {"suite": s["name"], "budget": s.get("budget", ""),
         "jobs": {j: {"config": v[0], "overrides": v[1]} for j, v in s["jobs"].items()},
         "columns": {c: {"job": v[0], "metric": v[1], "title": v[2]}
                     for c, v in s["columns"].items()},
         "rows": {}}
  for row in s["rows"]:
    seed_dirs = sorted(glob.glob(os.path.join(os.path.abspath(runs_dir), row.name, "seed*")),
                       key=lambda d: int(os.path.basename(d)[4:]))
    cells = [suite_lib.Cell(row, int(os.path.basename(d)[4:]), d) for d in seed_dirs]
    recs = [_cell_record(c, s) for c in cells]
    old = (recorded or {}).get("rows", {}).get(row.name)
    if old and _same_recipe(row, old):
      on_disk = {c.seed for c in cells}
      recs += [dict(r, recorded=True) for r in old["cells"] if r["seed"] not in on_disk]
      recs.sort(key=lambda r: r["seed"])
    summary = {}
    for p in row_columns(row, s):
      vals = [r["metrics"][p] for r in recs if p in r["metrics"]]
      if vals:
        summary[p] = summarize(vals)
    out["rows"][row.name] = {"label": row.label, "role": row.role, "twin": row.twin,
                             "baseline": row.baseline, **_recipe(row),
                             "cells": recs, "summary": summary}
  for name, r in out["rows"].items():
    for field in ("twin", "baseline"):
      other = out["rows"].get(r[field]) if r[field] else None
      if other:
        r[f"vs_{field}"] = {p: compare(v, other["summary"][p]) for p, v in r["summary"].items()
                            if p in other["summary"]}
  return out


def _fmt(sm):
  digits = 1 if abs(sm["mean"]) >= 20 else 2    # accuracies vs attention statistics
  if sm["n"] > 1:
    return f"{sm['mean']:.{digits}f} ± {sm['std']:.{digits}f} ({sm['n']})"
  return f"{sm['mean']:.{digits}f} ({sm['n']})"


def markdown(res: dict, s) -> str:
  protos = list(s["columns"])
  titles = [s["columns"][p][2] for p in protos]
  lines = ["| row | " + " | ".join(titles) + " | pre-training (steps x batch = images; wall min/seed) |",
           "|---|" + "---|" * len(protos) + "---|"]
  for name, r in res["rows"].items():
    if not r["summary"]:
      continue
    cells = [(_fmt(r["summary"][p]) if p in r["summary"] else "–") for p in protos]
    b = next((c["budget"] for c in r["cells"] if "budget" in c), None)
    walls = [c["wall_min"]["pretrain"] for c in r["cells"]     # finished pre-trainings only
             if "budget" in c and "pretrain" in c.get("wall_min", {})]
    budget = "–"
    if b and b["steps"]:
      budget = f"{b['steps']} x {b['batch']} = {b['images_seen']:,}"
      if walls:
        budget += f"; {np.mean(walls):.1f}"
    elif b:
      budget = "none (random init)"
    label = r["label"] if r["role"] == "method" else f"*{r['label']}*"
    lines.append(f"| {label} | " + " | ".join(cells) + f" | {budget} |")
  lines.append("")
  lines.append("Mean ± sample std over seeds (n).")
  lines += _difference_table(res, protos, titles, "twin", "the random-init twin")
  lines += _difference_table(res, protos, titles, "baseline", "the baseline row")
  return "\n".join(lines) + "\n"


def _difference_table(res, protos, titles, field: str, what: str) -> List[str]:
  """Rows' differences to the row named by their `field` (twin | baseline)."""
  key = f"vs_{field}"
  if not any(r.get(key) for r in res["rows"].values()):
    return []
  lines = [f"Difference to {what} (standard error of the difference; ✔ when above 2 se):", "",
           f"| row | {field} | " + " | ".join(titles) + " |",
           "|---|---|" + "---|" * len(protos)]
  for r in res["rows"].values():
    if not r.get(key):
      continue
    cells = []
    for p in protos:
      c = r[key].get(p)
      if c is None:
        cells.append("–")
      elif c["se"] != c["se"]:          # one seed on either side: no standard error
        cells.append(f"{c['diff']:+.1f} (1 seed)")
      else:
        cells.append(f"{c['diff']:+.1f} ({c['se']:.1f}){' ✔' if c['beats_2se'] else ''}")
    lines.append(f"| {r['label']} | {res['rows'][r[field]]['label']} | " + " | ".join(cells)
                 + " |")
  lines.append("")
  return lines


def chart(res: dict, s, path: str):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  protos = list(s.get("chart_columns") or s["columns"])
  rows = [(n, r) for n, r in res["rows"].items() if any(p in r["summary"] for p in protos)]
  fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows) + 2), 4))
  width = 0.8 / max(1, len(protos))
  for j, p in enumerate(protos):
    xs, ms, es = [], [], []
    for i, (_, r) in enumerate(rows):
      if p in r["summary"]:
        sm = r["summary"][p]
        xs.append(i + (j - (len(protos) - 1) / 2) * width)
        ms.append(sm["mean"])
        es.append(0.0 if sm["std"] != sm["std"] else sm["std"])
    if xs:
      ax.bar(xs, ms, width, yerr=es, capsize=2, label=s["columns"][p][2])
  ax.set_xticks(range(len(rows)))
  ax.set_xticklabels([r["label"] for _, r in rows], rotation=30, ha="right", fontsize=8)
  ax.set_ylabel("%  (top-1, or mIoU as the legend says)")
  lo = min((r["summary"][p]["mean"] for _, r in rows for p in protos if p in r["summary"]),
           default=0)
  ax.set_ylim(max(0, lo - 10), 100)
  ax.set_title(f"{res['suite']}: mean ± std over seeds")
  ax.legend(fontsize=7, ncol=len(protos))
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def loss_curves(s, runs_dir: str, path: str, res: dict = None):
  """Pre-training curves of every trained row (each seed a line): the loss and
  every other logged scalar named *_acc or *top1 (e.g. MoCo's instance
  accuracy), or the suite's `curve_keys` (e.g. DINO's collapse monitors), so a
  row that does not learn shows why."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  panels = []
  for row in s["rows"]:
    for d in sorted(glob.glob(os.path.join(os.path.abspath(runs_dir), row.name, "seed*"))):
      every = suite_lib.read_jsonl(os.path.join(d, "pretrain", "metrics.jsonl"))
      recs = [r for r in every if r.get("kind") == "train"]
      # kNN during pre-training (config.eval_every): when a row crosses a reference.
      knn = [(r["step"], r["knn/top1"]) for r in every
             if r.get("kind") == "eval" and "knn/top1" in r]
      if recs:
        panels.append((row, os.path.basename(d), recs, knn))
  rows = list(dict.fromkeys(p[0].name for p in panels))
  if not rows:
    return None
  fig, axes = plt.subplots(1, len(rows), figsize=(max(4.5, 3.2 * len(rows)), 3.0), squeeze=False)
  for ax, name in zip(axes[0], rows):
    right = knn_ax = None  # twin axes made once per panel, on first use
    for row, seed, recs, knn in (p for p in panels if p[0].name == name):
      steps = [r["step"] for r in recs]
      ax.plot(steps, [r["loss"] for r in recs], label=f"loss {seed}")
      ax.set_title(row.label, fontsize=8)
      extra = ([k for k in s.get("curve_keys", ()) if k in recs[-1]]
               or [k for k in recs[-1] if k.endswith("_acc") or k.endswith("top1")])
      if extra:
        right = right or ax.twinx()
        for k in extra:
          right.plot(steps, [r.get(k, float("nan")) for r in recs], "--", label=f"{k} {seed}")
        right.tick_params(labelsize=6)
      if knn:
        # Its own axis (percent; the accuracies above are fractions), offset outward.
        if knn_ax is None:
          knn_ax = ax.twinx()
          knn_ax.spines["right"].set_position(("axes", 1.18 if extra else 1.0))
          # The reference rows' final kNN (raw pixels, random init, supervised):
          # where the curve crosses them is the question this plot answers.
          for ref in (res or {}).get("rows", {}).values():
            knn_ref = ref.get("summary", {}).get("knn")
            if ref.get("role") == "reference" and knn_ref:
              knn_ax.axhline(knn_ref["mean"], color="gray", lw=0.6, ls="-.")
              knn_ax.annotate(ref["label"], (0, knn_ref["mean"]), fontsize=5, color="gray",
                              xycoords=("axes fraction", "data"), va="bottom")
        knn_ax.plot(*zip(*knn), "o:", markersize=3, label=f"kNN top-1 {seed}")
        knn_ax.tick_params(labelsize=6)
    ax.set_xlabel("step", fontsize=7)
    ax.tick_params(labelsize=6)
  what = ", ".join(s["curve_keys"]) if s.get("curve_keys") else "accuracies"
  knn_note = ("; kNN top-1 % during pre-training (dots, outer axis)"
              if any(p[3] for p in panels) else "")
  title = f"pre-training loss (solid) and {what} (dashed, right axis){knn_note}"
  fig.suptitle("\n".join(textwrap.wrap(title, width=int(15 * fig.get_figwidth()))), fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def lost_values(old: dict, new: dict) -> List[str]:
  """'row/column: n_old -> n_new' wherever `new` holds fewer seeds than `old`."""
  lost = []
  for name, row in old.get("rows", {}).items():
    for col, v in row.get("summary", {}).items():
      n_new = new["rows"].get(name, {}).get("summary", {}).get(col, {}).get("n", 0)
      if n_new < v["n"]:
        lost.append(f"{name}/{col}: {v['n']} -> {n_new}")
  return lost


def write_all(s, runs_dir: str, out_dir: str, seeds: int = None, force: bool = False):
  del seeds    # every seed found on disk counts
  base = os.path.join(out_dir, s["name"])
  recorded = None
  if os.path.exists(base + ".json") and not force:
    with open(base + ".json") as f:
      recorded = json.load(f)
  res = collect(s, runs_dir, recorded)
  os.makedirs(out_dir, exist_ok=True)
  # Recorded cells of a row whose recipe changed are not merged: refuse to drop
  # them silently (the cells live in results/runs/, not in git).
  lost = lost_values(recorded, res) if recorded else []
  if lost:
    raise SystemExit(
        f"[results] refusing to rewrite {base}.json: it records more seeds than the cells under "
        f"{runs_dir} and the rows' current recipes give ({'; '.join(lost[:6])}"
        f"{' ...' if len(lost) > 6 else ''}). Point --runs_dir at the cells, or pass --force "
        "to rewrite from what is on disk alone.")
  with open(base + ".json", "w") as f:
    json.dump(res, f, indent=1, default=str)
  with open(base + ".md", "w") as f:
    f.write(markdown(res, s))
  chart(res, s, base + ".png")
  files = [base + ".json", base + ".md", base + ".png"]
  # The curves need every cell's metrics.jsonl: with cells known only from the
  # record, an existing picture (drawn when they were on disk) is kept.
  partial = any(c.get("recorded") for r in res["rows"].values() for c in r["cells"])
  if partial and os.path.exists(base + "_curves.png"):
    print(f"[results] kept {base}_curves.png: some cells are known only from {base}.json",
          flush=True)
  elif loss_curves(s, runs_dir, base + "_curves.png", res):
    files.append(base + "_curves.png")
  return files
