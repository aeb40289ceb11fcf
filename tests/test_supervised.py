"""Supervised method: CE with label smoothing vs numpy, learns the labels it
is given, runs through the one trainer and exports the encoder only."""
import os

import jax
import numpy as np
import optax

from ssl_jax import export, metrics, train
from ssl_jax.methods import supervised
from tests.conftest import config_module


def _tiny():
  return config_module("supervised.py").get_config("tiny")


def test_cross_entropy_with_label_smoothing_matches_numpy():
  rng = np.random.RandomState(0)
  logits = rng.randn(6, 10).astype(np.float32) * 3
  labels = rng.randint(0, 10, 6)
  eps = 0.1
  target = np.full((6, 10), eps / 10)
  target[np.arange(6), labels] += 1 - eps
  logp = logits - logits.max(1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
  want = -(target * logp).sum(1).mean()
  got = float(supervised.cross_entropy(logits, labels, 10, eps))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # eps = 0 is plain cross-entropy: -log p(label).
  np.testing.assert_allclose(float(supervised.cross_entropy(logits, labels, 10, 0.0)),
                             -logp[np.arange(6), labels].mean(), rtol=1e-5)


def test_fits_its_labels_and_not_shuffled_ones():
  """Overfits 8 fixed images to their labels; the loss reads `batch['label']`
  (a method that ignored the labels could not get the train accuracy to 100)."""
  cfg = _tiny()
  rng = np.random.RandomState(0)
  batch = {"image": rng.randn(8, 16, 16, 3).astype(np.float32),
           "label": np.arange(8, dtype=np.int32) % 10}
  mvars = supervised.init(jax.random.PRNGKey(0), batch, cfg)
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt, i):
    (l, (m, _)), g = jax.value_and_grad(supervised.loss, has_aux=True)(
        params, mvars.state, {}, batch, jax.random.PRNGKey(i), i, cfg)
    u, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, u), opt, l, m

  params, opt = mvars.params, tx.init(mvars.params)
  first = None
  for i in range(60):
    params, opt, l, m = step(params, opt, i)
    first = float(l) if first is None else first
  assert float(m["train_top1"]) == 100.0
  assert float(l) < 0.5 * first
  enc_before = jax.tree.leaves(mvars.params["encoder"])
  enc_after = jax.tree.leaves(params["encoder"])
  assert any(not np.allclose(a, b) for a, b in zip(enc_before, enc_after)), \
      "the encoder must be trained, not only the head"


def test_trains_through_trainer_and_exports_encoder_only(tmp_path):
  wd = str(tmp_path)
  train.train(_tiny(), wd, devices=jax.devices()[:1])
  recs = [r for r in metrics.read(wd) if r["kind"] == "train"]
  assert [r["step"] for r in recs] == [1, 2, 3, 4]        # tiny_job logs every step
  assert all(np.isfinite(r["ce_loss"]) and 0 <= r["train_top1"] <= 100 for r in recs)
  enc = export.load(os.path.join(wd, "export"))
  assert "head" not in enc.variables["params"]
  out = enc.module.apply(enc.variables, np.zeros((2, 16, 16, 3), np.float32))
  assert out["patch"].shape == (2, 16, 32)
