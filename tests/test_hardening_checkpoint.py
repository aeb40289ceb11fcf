"""Checkpoint save failures and NaN stops (issue 12, items 6 and 8): reported
at once with the folder, its free space and the step that is kept; the
previous checkpoint stays usable and a rerun resumes from it."""
import errno

import jax
import numpy as np
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from ssl_jax import checkpoint, metrics, train
from tests.conftest import tiny_mae_config


def _disk_full_after(monkeypatch, n_ok: int):
  """Orbax's async writer of the data position raises ENOSPC after n_ok saves."""
  orig = json_checkpoint_handler.JsonCheckpointHandler._save_fn  # pylint: disable=protected-access
  calls = []

  async def save_fn(self, x, directory):
    calls.append(directory)
    if len(calls) > n_ok:
      raise OSError(errno.ENOSPC, "No space left on device", str(directory))
    return await orig(self, x, directory)
  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", save_fn)


def test_async_save_failure_stops_at_once_and_keeps_previous(tmp_path, monkeypatch):
  wd = str(tmp_path)
  _disk_full_after(monkeypatch, 1)                 # step 2 saves, step 4's save fails
  cfg = tiny_mae_config(total_steps=8, checkpoint_every=2, log_every=1)
  with pytest.raises(checkpoint.CheckpointSaveError) as e:
    train.train(cfg, wd, devices=jax.devices()[:1])
  msg = str(e.value)
  assert "step 4" in msg and f"{tmp_path}/checkpoints" in msg
  assert "No space left on device" in msg and "GiB free" in msg
  assert "previous checkpoint (step 2) is kept" in msg
  assert "\n" not in msg
  logged = [r["step"] for r in metrics.read(wd) if r["kind"] == "train"]
  # Found by the per-step poll once Orbax's writer failed, at the latest by
  # the next save (step 6), never after more training.
  assert max(logged) <= 6, f"reported only at step {max(logged)}"
  monkeypatch.undo()                               # space freed: the same command again
  assert checkpoint.Checkpointer(wd).latest_step() == 2
  train.train(cfg, wd, devices=jax.devices()[:1])
  rows = metrics.read(wd)
  assert [r["step"] for r in rows if r["kind"] == "resume"] == [2]
  assert checkpoint.Checkpointer(wd).latest_step() == 8


def test_synchronous_save_failure_is_reported_once(tmp_path, monkeypatch):
  ck = checkpoint.Checkpointer(str(tmp_path), keep=2)
  state = {"w": np.arange(4.0)}
  ck.save(1, state, {"epoch": 0})
  ck.wait()

  def full(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(ck.manager, "save", full)
  with pytest.raises(checkpoint.CheckpointSaveError, match=r"step 2 .*No space left.*"
                     r"GiB free.*previous checkpoint \(step 1\) is kept"):
    ck.save(2, state, {"epoch": 0})
  ck.wait()                                        # reported already: shutdown proceeds
  ck.close()
  assert checkpoint.Checkpointer(str(tmp_path)).latest_step() == 1


def test_nan_before_any_checkpoint_says_so_with_1_based_step(tmp_path):
  cfg = tiny_mae_config(debug_inject_nan_at_step=0, checkpoint_every=100, total_steps=3)
  with pytest.raises(train.NonFiniteError) as e:
    train.train(cfg, str(tmp_path), devices=jax.devices()[:1])
  msg = str(e.value)
  assert "at step 1;" in msg and "No checkpoint was saved yet" in msg
  assert "step None" not in msg
