"""The trainer: 1 vs 8 devices, resume after an interruption, NaN stop."""
import jax
import numpy as np
import pytest

from ssl_jax import checkpoint, metrics, sharding, train
from ssl_jax.data import pipeline
from tests.conftest import tiny_mae_config


def _losses(workdir):
  return {r["step"]: r["loss"] for r in metrics.read(workdir) if r["kind"] == "train"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("uninterrupted"))
  train.train(tiny_mae_config(), wd, devices=jax.devices()[:1])
  return wd


def test_one_vs_eight_devices_same_losses_fsdp_shards_params(uninterrupted, tmp_path):
  assert len(jax.devices()) == 8, "conftest must simulate 8 CPU devices"
  cfg = tiny_mae_config(mesh=[("data", 2), ("fsdp", 4)], fsdp_min_size=0)
  captured = {}
  orig = sharding.tree_shardings

  def spy(tree, mesh, *a, **k):
    out = orig(tree, mesh, *a, **k)
    if isinstance(tree, dict) and "params" in tree:
      placed = jax.device_put(tree["params"], out["params"])
      captured["per_device"] = sharding.bytes_per_device(placed)
      captured["total"] = sum(x.nbytes for x in jax.tree.leaves(tree["params"]))
    return out

  sharding.tree_shardings = spy
  try:
    train.train(cfg, str(tmp_path))
  finally:
    sharding.tree_shardings = orig
  one, eight = _losses(uninterrupted), _losses(str(tmp_path))
  assert sorted(one) == sorted(eight) == list(range(1, 7))
  np.testing.assert_allclose([eight[s] for s in one], [one[s] for s in one], rtol=1e-5)
  ratio = captured["per_device"] / captured["total"]
  assert ratio < 0.3, f"fsdp=4 should hold ~1/4 of the params per device, got {ratio:.2f}"


def test_resume_after_interruption_reproduces_losses(uninterrupted, tmp_path, monkeypatch):
  wd = str(tmp_path)
  orig = pipeline.prefetch

  def crash_after_5(it, size):
    for i, item in enumerate(orig(it, size)):
      if i == 5:
        raise KeyboardInterrupt("simulated kill during step 6")
      yield item

  monkeypatch.setattr(pipeline, "prefetch", crash_after_5)
  with pytest.raises(KeyboardInterrupt):
    train.train(tiny_mae_config(), wd, devices=jax.devices()[:1])
  assert checkpoint.Checkpointer(wd).latest_step() == 4
  monkeypatch.setattr(pipeline, "prefetch", orig)
  train.train(tiny_mae_config(), wd, devices=jax.devices()[:1])    # same command again
  want, got = _losses(uninterrupted), _losses(wd)
  for step in (5, 6):
    np.testing.assert_allclose(got[step], want[step], rtol=1e-6)
  resumes = [r for r in metrics.read(wd) if r["kind"] == "resume"]
  assert resumes and resumes[0]["step"] == 4


def test_nan_stops_run_and_keeps_last_good_checkpoint(tmp_path):
  wd = str(tmp_path)
  cfg = tiny_mae_config(debug_inject_nan_at_step=4, log_every=1)
  with pytest.raises(train.NonFiniteError, match="at step 5"):   # 1-based, as printed
    train.train(cfg, wd, devices=jax.devices()[:1])
  ck = checkpoint.Checkpointer(wd)
  assert ck.latest_step() == 4           # saved after steps 2 and 4 (step index 3 = 4th update)
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  restored = ck.manager.restore(4, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore()))
  params = restored["state"]["params"]
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
  assert int(restored["state"]["bad_step"]) == -1


def test_export_rebuilds_encoder_and_writes_timm_safetensors(uninterrupted):
  import os  # pylint: disable=g-import-not-at-top
  from ssl_jax import export, interop  # pylint: disable=g-import-not-at-top
  from ssl_jax.interop import timm_vit  # pylint: disable=g-import-not-at-top
  ours = export.load(os.path.join(uninterrupted, "export"))
  timm_file = os.path.join(uninterrupted, "export", timm_vit.SAFETENSORS_NAME)
  theirs = interop.load_encoder(timm_file)
  images = np.random.RandomState(0).randn(2, 32, 32, 3).astype(np.float32)
  a = ours.module.apply(ours.variables, images)["patch"]
  b = theirs.module.apply(theirs.variables, images)["patch"]
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
