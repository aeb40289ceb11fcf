"""How many directions a frozen representation uses: the dimensional-collapse
monitor of the DINO family (a protocol, `eval.protocols = ("feature_rank",)`).

  rankme        RankMe (Garrido et al. 2023, Eq. 1): exp of the entropy of
                the normalised singular values of the [N, D] feature matrix,
                p_k = sigma_k / sum(sigma) + eps. D for isotropic features, 1
                when every image maps to the same line.
  top_pc_share  the variance share of the first principal component (the
                features centred): near 1 when one direction dominates.
  mean_cos      mean cosine between the features of two different images
                (not centred): near 1 when all images look alike.

On the test split's first `eval.feature_rank.max_examples` images, the
representation `eval.feature` / `eval.block` like kNN and linear.
"""
import numpy as np

from ssl_jax.evaluate import features as features_lib

EPS = 1e-7   # RankMe's epsilon (Garrido et al. 2023, Sec. 3)


def rankme(f: np.ndarray) -> float:
  s = np.linalg.svd(np.asarray(f, np.float64), compute_uv=False)
  p = s / s.sum() + EPS
  return float(np.exp(-np.sum(p * np.log(p))))


def top_pc_share(f: np.ndarray) -> float:
  c = np.asarray(f, np.float64)
  c = c - c.mean(0)
  var = np.linalg.svd(c, compute_uv=False) ** 2
  return float(var[0] / var.sum())


def mean_cos(f: np.ndarray) -> float:
  u = np.asarray(f, np.float64)
  u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
  n = len(u)
  total = np.square(u.sum(0)).sum()          # sum over all pairs incl. i == j
  return float((total - n) / (n * (n - 1)))


def run(config, encoder, data, mesh):
  e = config.eval
  n = int(e.feature_rank.max_examples or len(data.test_labels))
  f = features_lib.extract(encoder, data.test_images[:n], e.feature, e.block, e.batch_size, mesh)
  f = f.reshape(len(f), -1)
  return {"rankme": rankme(f), "top_pc_share": top_pc_share(f), "mean_cos": mean_cos(f)}
