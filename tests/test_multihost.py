"""The pod path on localhost: 2 processes x 4 simulated CPU devices vs 1 x 8.

tests/multihost_worker.py runs in 2 subprocesses joined by
jax.distributed (ssl_jax.distributed: localhost coordinator, gloo
collectives): configs/mae.py:tiny on a (data 2, fsdp 4) mesh, each process
reading its own input shard (half of every global batch), Orbax checkpoints
written by both, a resume from the step-2 checkpoint, the export (parameters
gathered across hosts) and kNN on process 0 only, after training and in
`mode = "eval"` (streaming kNN). This process runs the same
job on its 8 devices with data.input_shards=2, i.e. the same global batches.

What fails it (by construction, not each run here: a run costs minutes of
CPU): both processes reading shard 0 (`shard_ids` without the process
offset) feeds other images from step 1; without the `global_position`
gather process 0 checkpoints shard "0" only and the resume stops with the
input_shards message; an export or kNN on every process over the global
mesh raises (numpy inputs to a multi-process jit).
"""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from ssl_jax import export, metrics, train
from tests import multihost_worker

REPO = os.path.join(os.path.dirname(__file__), "..")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _records(workdir, kind):
  return {r["step"]: r for r in metrics.read(workdir) if r["kind"] == kind}


def test_two_processes_match_one_process(tmp_path):
  root, port = str(tmp_path), _free_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = [subprocess.Popen([sys.executable, "-m", "tests.multihost_worker", root, str(i),
                             str(port)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
  # The reference meanwhile: 1 process, 8 devices, the same 2 input shards.
  ref = str(tmp_path / "one_process")
  ref_results = train.train(multihost_worker.mae_tiny_job(input_shards=2), ref)
  logs = []
  for p in procs:
    try:
      out, _ = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    logs.append(out)
  for i, (p, out) in enumerate(zip(procs, logs)):
    assert p.returncode == 0, f"process {i} failed:\n" + out[-4000:]
  res = [json.load(open(os.path.join(root, f"result{i}.json"))) for i in (0, 1)]

  want = {s: r["loss"] for s, r in _records(ref, "train").items()}
  full = {s: r["loss"] for s, r in _records(os.path.join(root, "full"), "train").items()}
  resumed = {s: r["loss"] for s, r in _records(os.path.join(root, "resumed"), "train").items()}
  assert sorted(want) == sorted(full) == [1, 2, 3, 4] and sorted(resumed) == [3, 4]
  np.testing.assert_allclose([full[s] for s in want], [want[s] for s in want], rtol=1e-5)
  np.testing.assert_allclose([resumed[s] for s in (3, 4)], [want[s] for s in (3, 4)], rtol=1e-5)

  # kNN during training (step 2) on process 0: the 1-process numbers.
  mid = _records(os.path.join(root, "full"), "eval")
  assert sorted(mid) == [2] and mid[2]["knn/top1"] == _records(ref, "eval")[2]["knn/top1"]

  # Both processes' shard positions reached the checkpoint process 0 wrote.
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  with ocp.CheckpointManager(os.path.join(root, "resumed", "checkpoints"),
                             item_names=("state", "data")) as m:
    pos = m.restore(4, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]
  assert sorted(pos["shards"]) == ["0", "1"], pos
  assert pos["shards"]["1"]["next_index"] == 16, pos

  # One export (process 0's files), equal to the 1-process one.
  ref_vars = export.load(os.path.join(ref, "export")).variables
  for run in ("full", "resumed"):
    got = export.load(os.path.join(root, run, "export")).variables
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(ref_vars)):
      name = jax.tree_util.keystr(path)
      if "['key']['bias']" in name:
        # Its gradient is 0 in exact arithmetic (softmax ignores a shift of
        # every logit), so AdamW turns float noise into steps of ~lr * 1e-2
        # (1e-4 seen with the late-normalised attention); a real gradient
        # moves it by ~lr = 1e-3 per step, 4 steps here.
        assert np.abs(a).max() < 5e-4 and np.abs(b).max() < 5e-4, name
        continue
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=f"{run}: {name}")
  # kNN on process 0 only, over the whole eval split: the 1-process numbers.
  print("worker CPU seconds:", [r.pop("cpu_s") for r in res])
  assert res[1] == {"full": {}, "resumed": {}, "eval_job": {}}
  assert set(res[0]["full"]) == {"knn/top1", "knn/top5"}
  for run in ("full", "resumed", "eval_job"):
    for k, v in res[0][run].items():
      assert abs(v - ref_results[k]) < 1e-6, (run, k, v, ref_results[k])


# ------------------------------------------------------------------ in this process

def test_input_shards_position_resumes_and_names_a_mismatch():
  """1 process reading 2 input shards: each global batch is shard 0's half
  then shard 1's, the per-shard position resumes the next batch exactly,
  and resuming with another shard count (or a bad one) says what to set."""
  from ssl_jax import config_check, sharding  # pylint: disable=g-import-not-at-top
  from ssl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  c = multihost_worker.mae_tiny_job(input_shards=2)
  data_sh = sharding.batch_sharding(sharding.make_mesh([("data", 1)], jax.devices()[:1]))
  it = pipeline.TrainIterator(c, "single_crop", data_sh)
  halves = [pipeline._ShardReader(c, "single_crop", i, 2, 4) for i in (0, 1)]  # pylint: disable=protected-access
  first = next(it)
  np.testing.assert_array_equal(np.asarray(first["label"]), np.concatenate(
      [h.next_batch()["label"] for h in halves]))
  next(it)
  pos = it.position()
  assert sorted(pos["shards"]) == ["0", "1"] and pos["shards"]["1"]["next_index"] == 8
  want = next(it)
  got = next(pipeline.TrainIterator(c, "single_crop", data_sh, pos))
  np.testing.assert_array_equal(np.asarray(got["image"]), np.asarray(want["image"]))
  c.data.input_shards = 4
  with pytest.raises(ValueError, match="input_shards=2 to resume"):
    pipeline.TrainIterator(c, "single_crop", data_sh, pos)
  c.data.input_shards = 3
  with pytest.raises(config_check.ConfigError, match="batch_size=8 is not divisible by 3 input"):
    config_check.check(c, ("pretrain", "eval"), 8)
