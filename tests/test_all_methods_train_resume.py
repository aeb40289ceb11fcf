"""Every registered method through the real `train.train`: checkpoint, resume, exact match.

Each method in `methods.METHODS` (new methods join by registering) runs its
`configs/<method>.py:tiny` variant (config_defaults.tiny_job: 16-px images,
batch 8, 4 steps of 2 per epoch, a checkpoint every 2 steps). The run is
then "killed" right after its step-2 checkpoint (a fresh workdir holding
only that checkpoint) and the same command resumes it. Steps 3-4 (the
second epoch) must give the same losses and the same step-4 state, leaf for
leaf: parameters, optimizer moments and the method state (MoCo's queue and
key encoder, BatchNorm statistics, EMA teachers), bit for bit.

Break tried: resetting `method_state` to its init value after the restore
fails (MoCo v2: its queue and key encoder differ at step 4).

The two runs of a method compile the same program: the suite's persistent
compilation cache (tests/conftest.py) lets the resumed run reuse the first's
executable.
"""
import os
import shutil

import jax
import numpy as np
import pytest

from ssl_jax import checkpoint, export, methods, metrics, models, train
from tests.conftest import config_module, set_dotted

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
METHOD_NAMES = sorted(methods.METHODS.names())
# A frozen teacher for methods that distil from an export (configs' TINY_TEACHER_FIELD).
TEACHER = dict(name="vit", variant="Ti", width=32, depth=1, num_heads=2, patch_size=4)


@pytest.fixture(scope="module")
def teacher_export(tmp_path_factory):
  module = models.build(TEACHER)
  variables = module.init(jax.random.PRNGKey(7), np.zeros((1, 16, 16, 3), np.float32))
  return export.save(str(tmp_path_factory.mktemp("teacher") / "export"), TEACHER, variables)


# Evaluation jobs (methods over an exported encoder) keep their config with
# the in-memory protocol of the same name: configs/eval/<name>.py.
def config_path(name: str) -> str:
  for rel in (f"{name}.py", f"eval/{name}.py"):
    if os.path.exists(os.path.join(CONFIGS, rel)):
      return rel
  return f"{name}.py"


def tiny_config(name: str, teacher_path: str = ""):
  """`configs/<name>.py:tiny`, with a clear failure if a method has none."""
  how = ("each registered method needs configs/<method>.py (or configs/eval/<method>.py for an "
         "evaluation job) whose get_config('tiny') returns "
         "config_defaults.tiny_job(c) with a model of width 32 and 1-2 blocks (see "
         "configs/mae.py)")
  rel = config_path(name)
  if not os.path.exists(os.path.join(CONFIGS, rel)):
    pytest.fail(f"Method {name!r} is registered but configs/{rel} does not exist: {how}.")
  module = config_module(rel)
  try:
    c = module.get_config("tiny")
  except (ValueError, KeyError) as e:
    pytest.fail(f"configs/{rel} has no 'tiny' variant ({e}): {how}.")
  field = getattr(module, "TINY_TEACHER_FIELD", None)
  if field:                  # "<section>.<key>", or a top-level key ("encoder")
    set_dotted(c, {field: teacher_path})
  return c


def test_every_registered_method_has_a_tiny_config():
  for name in METHOD_NAMES:
    c = tiny_config(name, "unused")
    rel = config_path(name)
    assert c.method == name, f"configs/{rel}:tiny trains {c.method!r}, not {name!r}"
    assert (c.data.image_size, c.batch_size, c.total_steps, tuple(c.eval.protocols)) == (
        16, 8, 4, ()), f"configs/{rel}:tiny must end with config_defaults.tiny_job(c)"


def _losses(workdir):
  return {r["step"]: r["loss"] for r in metrics.read(workdir) if r["kind"] == "train"}


def _state_at(workdir, step):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  ck = checkpoint.Checkpointer(workdir)
  out = ck.manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore()))
  ck.close()
  return out["state"], out["data"]


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_trains_and_resumes_exactly(name, teacher_export, tmp_path):
  config = tiny_config(name, teacher_export)
  full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
  dev = jax.devices()[:1]
  train.train(config, full, devices=dev)
  assert sorted(_losses(full)) == [1, 2, 3, 4]
  # "Kill" the run right after its step-2 checkpoint, then run the same command.
  shutil.copytree(os.path.join(full, "checkpoints", "2"),
                  os.path.join(resumed, "checkpoints", "2"))
  train.train(tiny_config(name, teacher_export), resumed, devices=dev)

  want, got = _losses(full), _losses(resumed)
  assert sorted(got) == [3, 4], f"{name}: the resumed run logged steps {sorted(got)}"
  assert [got[s] for s in (3, 4)] == [want[s] for s in (3, 4)], (name, want, got)
  assert all(np.isfinite(want[s]) for s in want), (name, want)

  s2, _ = _state_at(full, 2)
  s4, pos4 = _state_at(full, 4)
  r4, rpos4 = _state_at(resumed, 4)
  # Steps 3-4 are the second epoch (0-based epoch 1): the resume crossed the boundary.
  assert pos4 == rpos4 == dict(epoch=1, next_index=16, skipped=0), (pos4, rpos4)
  flat_want = jax.tree_util.tree_leaves_with_path(s4)
  flat_got = dict(jax.tree_util.tree_leaves_with_path(r4))
  assert len(flat_got) == len(flat_want)
  for path, w in flat_want:
    np.testing.assert_array_equal(np.asarray(flat_got[path]), np.asarray(w),
                                  err_msg=f"{name}: {jax.tree_util.keystr(path)}")
  # Non-vacuous: training moved the parameters and each method-state array
  # that is not constant by design, between the checkpoint and the end.
  moved = lambda a, b: not np.array_equal(np.asarray(a), np.asarray(b))
  assert any(moved(a, b) for a, b in zip(jax.tree.leaves(s2["params"]),
                                         jax.tree.leaves(s4["params"])))
  ms2, ms4 = jax.tree.leaves(s2["method_state"]), jax.tree.leaves(s4["method_state"])
  if ms2:
    assert any(moved(a, b) for a, b in zip(ms2, ms4)), f"{name}: method state never changed"
