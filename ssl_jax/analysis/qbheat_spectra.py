"""Eigen-spectra of QB-Heat's learned matrices A, B (000 Sec. 6.2, Fig. 7, Tab. 3).

A (horizontal, dz/dx = A z) and B (vertical) are learned at two translation
scales: A^(1/2), B^(1/2) from corner samples and A^(1/4), B^(1/4) from
centre samples (ssl_jax/methods/qbheat.py). The paper observes full rank
with complex eigenvalues, similar normalised spectra across scales, and a
scale-invariant energy ratio E(A)/E(B) (Eq. 6), E = sum_k |lambda_k| (Eq. 7).

`spectra(params)` takes the QB-Heat method params and returns a flat dict of
numbers; `plot_spectra(params, path)` writes Fig. 7 as a PNG. The matrices
live in the pre-training checkpoint, not in the encoder export:

  python -m ssl_jax.analysis.qbheat_spectra --workdir /tmp/qbheat_tiny --out fig7.png
  python -m ssl_jax.analysis.qbheat_spectra --workdir /tmp/qbheat_tiny --report_dir /tmp/spectra

Controls (`report`): a random D x D matrix already has complex eigenvalues
(~91% at D = 96) and full rank, and two independent ones an energy ratio
near 1, so the learned numbers are only read against
- the step-0 control: independent draws from the linear models' init
  distribution N(0, 0.02^2) (`qbheat.LINEAR_INIT_STD`; they are initialised
  independently of everything else, so a draw is statistically step 0),
  reported as mean / std over `draws` pairs (A, B);
- a norm-matched random control per learned matrix: the energy of a
  Gaussian matrix with the same Frobenius norm (`energy_vs_random`: 1 for an
  unstructured matrix) and E(A)/E(B) against ||A||_F/||B||_F, the ratio the
  norms alone would give;
- every checkpoint the run kept (raise `keep_checkpoints` for a denser
  trend): the energy ratio's trend with training.
`report` writes qbheat_spectra.json and qbheat_spectra.png (trend panels +
Fig. 7 of the last checkpoint).
"""
import json
import os
from typing import Dict, Optional

import numpy as np

# Parameter scope -> the paper's superscript (translation as a fraction of the side).
SCALES = {"centre": "1/4", "corner": "1/2"}


def learned_matrices(params) -> Dict[str, Dict[str, np.ndarray]]:
  """{scale: {"A": A1, "B": B1}} for every scale the run trained."""
  head = params.get("head", {})
  out = {}
  for scale in SCALES:
    lm = head.get(f"linear_{scale}")
    if lm is not None:
      out[scale] = {"A": np.asarray(lm["A1"], np.float64), "B": np.asarray(lm["B1"], np.float64)}
  if not out:
    raise ValueError("no QB-Heat linear models in params: expected params['head']"
                     f"['linear_<scale>'] with scale in {', '.join(SCALES)}.")
  return out


def eigenvalues(params) -> Dict[str, Dict[str, np.ndarray]]:
  """{scale: {"A": complex eigenvalues, "B": ...}}."""
  return {s: {n: np.linalg.eigvals(m) for n, m in ms.items()}
          for s, ms in learned_matrices(params).items()}


def energy(eigs: np.ndarray) -> float:
  """Spectrum energy, Eq. 7: sum of eigenvalue magnitudes."""
  return float(np.abs(eigs).sum())


def normalized_spectrum(eigs: np.ndarray) -> np.ndarray:
  """Sorted (descending) magnitudes divided by their sum (Fig. 7, right)."""
  mag = np.sort(np.abs(eigs))[::-1]
  return mag / max(mag.sum(), 1e-30)


def spectra(params) -> Dict[str, float]:
  """Numbers behind Fig. 7 and Tab. 3 for every learned scale."""
  mats = learned_matrices(params)
  eig = eigenvalues(params)
  out = {}
  for s, pair in eig.items():
    for n, e in pair.items():
      mag = np.abs(e)
      key = f"{n}_{s}"
      out[f"{key}/energy"] = energy(e)
      out[f"{key}/max_abs_eig"] = float(mag.max())
      out[f"{key}/min_abs_eig"] = float(mag.min())
      out[f"{key}/complex_fraction"] = float(np.mean(np.abs(e.imag) > 1e-9 * max(mag.max(), 1e-30)))
      out[f"{key}/rank"] = float(np.linalg.matrix_rank(mats[s][n]))
    out[f"energy_ratio_{s}"] = out[f"A_{s}/energy"] / max(out[f"B_{s}/energy"], 1e-30)  # Eq. 6
  if len(eig) == 2:
    out["energy_ratio_gap"] = abs(out["energy_ratio_centre"] - out["energy_ratio_corner"])
    for n in ("A", "B"):
      a, b = normalized_spectrum(eig["centre"][n]), normalized_spectrum(eig["corner"][n])
      # Fig. 7 right: the normalised spectra of both scales lie on the diagonal.
      out[f"{n}/normalized_spectrum_max_gap"] = float(np.abs(a - b).max())
      out[f"{n}/normalized_spectrum_corr"] = float(np.corrcoef(a, b)[0, 1])
  return out


def plot_spectra(params, path: str) -> str:
  """Fig. 7: left, sorted |eigenvalues| of A and B at each scale; right (both
  scales trained), normalised spectrum at 1/4 vs 1/2 with the diagonal."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  eig = eigenvalues(params)
  both = len(eig) == 2
  fig, axes = plt.subplots(2, 2 if both else 1, figsize=(9 if both else 4.5, 7), squeeze=False)
  for row, (n, sym) in enumerate((("A", "lambda"), ("B", "pi"))):
    ax = axes[row, 0]
    for s, pair in eig.items():
      ax.plot(np.sort(np.abs(pair[n]))[::-1], label=f"{n}^({SCALES[s]})")
    ax.set_xlabel("k (sorted)")
    ax.set_ylabel(f"|{sym}_k|")
    ax.legend()
    if both:
      ax = axes[row, 1]
      a, b = normalized_spectrum(eig["centre"][n]), normalized_spectrum(eig["corner"][n])
      ax.scatter(a, b, s=4)
      hi = float(max(a.max(), b.max()))
      ax.plot([0, hi], [0, hi], "r-", lw=1)
      ax.set_xlabel(f"normalised |{sym}_k| of {n}^(1/4)")
      ax.set_ylabel(f"normalised |{sym}_k| of {n}^(1/2)")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def checkpoint_steps(workdir: str):
  """Steps of every checkpoint a pre-training run kept, ascending."""
  from ssl_jax.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  ckpt = Checkpointer(workdir)
  return sorted(int(s) for s in ckpt.manager.all_steps())


def params_from_workdir(workdir: str, step: Optional[int] = None):
  """Method params of a pre-training run's latest (or given) checkpoint."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from ssl_jax.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  ckpt = Checkpointer(workdir)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {ckpt.dir}; pass a QB-Heat pre-training workdir.")
  state = ocp.StandardCheckpointer().restore(os.path.join(ckpt.dir, str(step), "state"))
  return state["params"]


# ---------------------------------------------------------------- controls

def _complex_fraction(e: np.ndarray) -> float:
  mag = np.abs(e)
  return float(np.mean(np.abs(e.imag) > 1e-9 * max(mag.max(), 1e-30)))


def random_control(dim: int, draws: int = 8, seed: int = 0, std: Optional[float] = None):
  """Step-0 control: statistics of `draws` independent (A, B) pairs drawn
  from the linear models' init N(0, std^2). Returns {name: (mean, std)}."""
  if std is None:
    from ssl_jax.methods import qbheat  # pylint: disable=g-import-not-at-top
    std = qbheat.LINEAR_INIT_STD
  rng = np.random.default_rng(seed)
  rows = {"complex_fraction": [], "rank": [], "energy": [], "energy_ratio": [],
          "normalized_spectrum_corr": []}
  for _ in range(draws):
    a, b = (rng.normal(0.0, std, (dim, dim)) for _ in range(2))
    ea, eb = np.linalg.eigvals(a), np.linalg.eigvals(b)
    rows["complex_fraction"] += [_complex_fraction(ea), _complex_fraction(eb)]
    rows["rank"] += [float(np.linalg.matrix_rank(a)), float(np.linalg.matrix_rank(b))]
    rows["energy"] += [energy(ea), energy(eb)]
    rows["energy_ratio"].append(energy(ea) / energy(eb))
    rows["normalized_spectrum_corr"].append(
        float(np.corrcoef(normalized_spectrum(ea), normalized_spectrum(eb))[0, 1]))
  return {k: (float(np.mean(v)), float(np.std(v))) for k, v in rows.items()}


def _gaussian_energy(dim: int, frob: float, draws: int, rng) -> float:
  """Mean spectrum energy of Gaussian D x D matrices of Frobenius norm `frob`."""
  out = []
  for _ in range(draws):
    g = rng.normal(size=(dim, dim))
    out.append(energy(np.linalg.eigvals(g * (frob / np.linalg.norm(g)))))
  return float(np.mean(out))


def against_controls(params, control, draws: int = 8, seed: int = 0) -> Dict[str, float]:
  """`spectra(params)` plus, per matrix and scale, the numbers relative to the
  controls: z-score of the complex fraction against the step-0 control,
  energy / energy of a norm-matched Gaussian matrix, and the Frobenius-norm
  ratio ||A||_F / ||B||_F next to E(A)/E(B)."""
  out = spectra(params)
  rng = np.random.default_rng(seed)
  cf_mean, cf_std = control["complex_fraction"]
  for s, pair in learned_matrices(params).items():
    for n, m in pair.items():
      key = f"{n}_{s}"
      frob = float(np.linalg.norm(m))
      out[f"{key}/frobenius"] = frob
      out[f"{key}/complex_fraction_z"] = (out[f"{key}/complex_fraction"] - cf_mean) / max(cf_std,
                                                                                         1e-12)
      out[f"{key}/energy_vs_random"] = out[f"{key}/energy"] / max(
          _gaussian_energy(m.shape[0], frob, draws, rng), 1e-30)
    out[f"frobenius_ratio_{s}"] = out[f"A_{s}/frobenius"] / max(out[f"B_{s}/frobenius"], 1e-30)
  return out


TREND_KEYS = ("energy_ratio_{s}", "frobenius_ratio_{s}", "A_{s}/complex_fraction",
              "B_{s}/complex_fraction", "A_{s}/energy_vs_random", "B_{s}/energy_vs_random")


def report(workdir: str, out_dir: str, steps=None, draws: int = 8, seed: int = 0):
  """Spectra of every kept checkpoint against the controls -> JSON + PNG.

  Returns the JSON's dict: {"steps", "per_step": {step: numbers},
  "control": {name: [mean, std]}, "trend": {key: [value per step]}, files}.
  """
  steps = checkpoint_steps(workdir) if steps is None else sorted(steps)
  if not steps:
    raise FileNotFoundError(f"no checkpoints under {workdir}/checkpoints: pass the workdir "
                            "of a QB-Heat pre-training run.")
  per_step = {}
  control = None
  for step in steps:
    params = params_from_workdir(workdir, step)
    if control is None:
      dim = next(iter(learned_matrices(params).values()))["A"].shape[0]
      control = random_control(dim, draws, seed)
    per_step[step] = against_controls(params, control, draws, seed)
  scales = list(learned_matrices(params_from_workdir(workdir, steps[-1])))
  trend = {k.format(s=s): [per_step[t][k.format(s=s)] for t in steps]
           for s in scales for k in TREND_KEYS}
  os.makedirs(out_dir, exist_ok=True)
  result = {"workdir": os.path.abspath(workdir), "steps": steps,
            "per_step": {str(t): v for t, v in per_step.items()},
            "control": {k: list(v) for k, v in control.items()}, "trend": trend,
            "control_note": f"{draws} draws of N(0, std^2) D x D pairs (step 0); "
                            "energy_vs_random: energy / that of a Gaussian matrix of equal "
                            "Frobenius norm (1 = unstructured)"}
  png = os.path.join(out_dir, "qbheat_spectra.png")
  _plot_report(result, scales, png)
  result["files"] = {"png": png, "fig7": plot_spectra(
      params_from_workdir(workdir, steps[-1]), os.path.join(out_dir, "qbheat_fig7.png"))}
  path = os.path.join(out_dir, "qbheat_spectra.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=1)
  result["files"]["json"] = path
  return result


def _plot_report(result, scales, path):
  """Trend panels: E(A)/E(B) (with ||A||/||B|| and the step-0 control band),
  complex fraction (with the control band), energy vs a norm-matched random
  matrix."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  steps, trend, control = result["steps"], result["trend"], result["control"]
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))

  def band(ax, name):
    m, sd = control[name]
    ax.axhspan(m - 2 * sd, m + 2 * sd, color="grey", alpha=0.25, label="step-0 control ±2σ")

  ax = axes[0]
  band(ax, "energy_ratio")
  for s in scales:
    ax.plot(steps, trend[f"energy_ratio_{s}"], "o-", label=f"E(A)/E(B) ({SCALES[s]})")
    ax.plot(steps, trend[f"frobenius_ratio_{s}"], "x--", label=f"||A||/||B|| ({SCALES[s]})")
  ax.set_title("energy ratio (Eq. 6)")
  ax = axes[1]
  band(ax, "complex_fraction")
  for s in scales:
    for n in ("A", "B"):
      ax.plot(steps, trend[f"{n}_{s}/complex_fraction"], "o-", label=f"{n} ({SCALES[s]})")
  ax.set_title("fraction of complex eigenvalues")
  ax = axes[2]
  ax.axhline(1.0, color="grey", lw=1, label="random, same norm")
  for s in scales:
    for n in ("A", "B"):
      ax.plot(steps, trend[f"{n}_{s}/energy_vs_random"], "o-", label=f"{n} ({SCALES[s]})")
  ax.set_title("energy / norm-matched random")
  for ax in axes:
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def main(argv=None):
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--out", default=None, help="PNG path for Fig. 7")
  parser.add_argument("--report_dir", default=None,
                      help="write qbheat_spectra.json / .png over every kept checkpoint, "
                           "against the step-0 and random-matrix controls")
  parser.add_argument("--draws", type=int, default=8)
  args = parser.parse_args(argv)
  if args.report_dir:
    res = report(args.workdir, args.report_dir, draws=args.draws)
    print(json.dumps({"steps": res["steps"], "trend": res["trend"], "control": res["control"],
                      "files": res["files"]}, indent=1))
    return
  params = params_from_workdir(args.workdir, args.step)
  print(json.dumps(spectra(params), indent=1))
  if args.out:
    print("wrote", plot_spectra(params, args.out))


if __name__ == "__main__":
  main()
