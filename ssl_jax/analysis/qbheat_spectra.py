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


def main(argv=None):
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--out", default=None, help="PNG path for Fig. 7")
  args = parser.parse_args(argv)
  params = params_from_workdir(args.workdir, args.step)
  print(json.dumps(spectra(params), indent=1))
  if args.out:
    print("wrote", plot_spectra(params, args.out))


if __name__ == "__main__":
  main()
