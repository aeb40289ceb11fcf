"""Orderly shutdown (issue 12, item 2): the prefetch worker is stopped and
joined however the loop ends, and finished runs exit 0 at interpreter exit."""
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ssl_jax.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Endless:
  """An iterator like TrainIterator: endless items, a position, close()."""

  def __init__(self, fail_at=None):
    self.i, self.closed, self.fail_at = 0, False, fail_at

  def __iter__(self):
    return self

  def __next__(self):
    if self.closed:
      raise AssertionError("used after close")
    self.i += 1
    if self.i == self.fail_at:
      raise OSError("disk went away")
    time.sleep(0.001)
    return {"x": self.i}

  def position(self):
    return {"next_index": self.i}

  def close(self):
    self.closed = True


def _workers():
  return [t for t in threading.enumerate() if t.name == "ssl_jax-prefetch" and t.is_alive()]


def test_worker_is_joined_and_iterator_closed_on_break_and_on_error():
  assert not _workers()
  it = _Endless()
  gen = pipeline.prefetch(it, 2)
  for n, (item, pos) in enumerate(gen):
    assert pos["next_index"] == item["x"]          # the position of that very item
    if n == 3:
      break
  gen.close()                                      # what train.py's `finally` does
  assert not _workers() and it.closed

  it = _Endless()
  with pytest.raises(KeyError):
    for _ in pipeline.prefetch(it, 2):             # consumer error: generator dropped
      raise KeyError("step failed")
  assert not _workers() and it.closed

  it = _Endless(fail_at=3)                         # producer error reaches the loop
  with pytest.raises(OSError, match="disk went away"):
    for _ in pipeline.prefetch(it, 2):
      pass
  assert not _workers() and it.closed


TINY = textwrap.dedent("""
    from ssl_jax import config_defaults
    def get_config():
      c = config_defaults.base_config()
      c.method = "mae"
      c.model = dict(name="vit", variant="Ti", width=32, depth=1, num_heads=2, patch_size=8)
      c.mae = dict(mask_ratio=0.75, norm_pix_loss=True,
                   decoder=dict(width=32, depth=1, num_heads=2))
      c.batch_size = 8
      c.data.max_train_examples = 64
      c.data.shuffle_buffer = 64
      c.total_steps = 3
      c.optim.warmup_steps = 1
      c.log_every = 1
      c.checkpoint_every = 2
      c.eval.protocols = ()
      return c
""")


def _env(env=None):
  full_env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  # One device, as a user's run; LLVM -O0 as in the rest of the suite (conftest).
  full_env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
  full_env.update(env or {})
  return full_env


def start_main(args, env=None):
  return subprocess.Popen([sys.executable, "-m", "ssl_jax.main"] + list(args), cwd=ROOT,
                          env=_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def run_main(args, env=None, timeout=600):
  proc = start_main(args, env)
  out, err = proc.communicate(timeout=timeout)
  return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_short_runs_exit_zero_every_time(tmp_path):
  """Short jobs, each a fresh interpreter, one after the other (the second
  loads the first's programs from the suite's compilation cache): exit 0, no
  abort at shutdown. `bench/shutdown_loop.sh` runs 20 in a row."""
  cfg = tmp_path / "tiny.py"
  cfg.write_text(TINY)
  for i in range(2):
    proc = start_main(["--config", str(cfg), "--workdir", str(tmp_path / f"w{i}")])
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, f"run {i} exited {proc.returncode}:\n{(out + err)[-3000:]}"
    assert "Fatal Python error" not in err and "terminate called" not in err
    assert "[ssl_jax] skipped_images: 0 undecodable in training" in out
