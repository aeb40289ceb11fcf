"""Orbax checkpoints of the train state plus the data iterator's position.

Saves are async and atomic (Orbax writes to a temporary folder and renames
on commit), so a crash or kill mid-save never corrupts the last good step.
A failed save (disk full, permissions) is raised as `CheckpointSaveError` at
the first chance (the next training step polls the async save), naming the
folder, its free space and the step that is still intact; the error is
reported once, and the manager is still closed cleanly afterwards.
"""
import os
import shutil

import orbax.checkpoint as ocp


class CheckpointSaveError(RuntimeError):
  """Saving a checkpoint failed; the previous one is intact."""


def _root_cause(exc: BaseException) -> BaseException:
  """The OSError (ENOSPC, EACCES, ...) behind Orbax's wrappers, if any."""
  seen, todo = set(), [exc]
  while todo:
    e = todo.pop(0)
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    if isinstance(e, OSError):
      return e
    todo += [e.__cause__, e.__context__] + list(getattr(e, "exceptions", ()))
  return exc


def _free_space(path: str) -> str:
  while path and not os.path.exists(path):
    path = os.path.dirname(path)
  try:
    return f"{shutil.disk_usage(path).free / 2**30:.2f} GiB free"
  except OSError:
    return "free space unknown"


class Checkpointer:

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.dir = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(self.dir, options=options,
                                         item_names=("state", "data"))
    self._saving = None        # step of the save in flight
    self._reported = False     # a save error was raised already
    self._closed = False

  def latest_step(self):
    return self.manager.latest_step()

  def _error(self, exc: BaseException, step) -> CheckpointSaveError:
    self._reported = True
    cause = _root_cause(exc)
    kept = [s for s in self.manager.all_steps() if s != step]
    prev = (f"the previous checkpoint (step {max(kept)}) is kept and a rerun resumes from it"
            if kept else "no earlier checkpoint exists")
    return CheckpointSaveError(
        f"saving the checkpoint of step {step} to {self.dir} failed "
        f"({type(cause).__name__}: {cause}); {_free_space(self.dir)} there; {prev}. "
        "Free disk space or fix the folder's permissions (or use another --workdir).")

  def _guard(self, fn, step):
    try:
      return fn()
    except Exception as e:  # pylint: disable=broad-except
      if self._reported:
        return None           # already raised once; let shutdown finish
      err = self._error(e, step)
      self._shutdown()        # the run ends here: stop Orbax's threads now
      raise err from e

  def _shutdown(self):
    self._closed = True
    try:
      self.manager.close()
    except Exception:  # pylint: disable=broad-except
      pass                    # its error is the one being reported

  def poll(self):
    """Raises CheckpointSaveError if the async save in flight has failed."""
    if self._saving is not None and not self._closed:
      self._guard(self.manager.check_for_errors, self._saving)

  def save(self, step: int, state, data_position: dict):
    # Orbax waits for the previous save here anyway; doing it first blames
    # a failure on the step whose save failed.
    self.wait()
    self._saving = step
    self._guard(lambda: self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_position))), step)

  def restore(self, step: int, abstract_state):
    """`abstract_state`: ShapeDtypeStructs carrying the target shardings."""
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return out["state"], out["data"]

  def wait(self):
    """Blocks until in-flight saves committed; raises CheckpointSaveError once."""
    if not self._closed:
      self._guard(self.manager.wait_until_finished, self._saving)

  def close(self, quiet: bool = False):
    """Waits for saves and stops Orbax's background threads; idempotent.
    quiet: another error is already on its way out, do not mask it."""
    if self._closed:
      return
    try:
      self.wait()
    except CheckpointSaveError:
      if not quiet:
        raise
    if quiet:
      self._shutdown()
    else:
      self._closed = True
      self.manager.close()


def read_params(workdir: str):
  """`params` of the latest committed checkpoint in `<workdir>/checkpoints`,
  as numpy arrays on the host (no shardings, no target tree needed): e.g. a
  tran-1 probe job's head that a fine-tuning job starts from (000 App. B.1).
  Callable while a jitted init is being traced."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  ckpt_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
  # Orbax writes a step to "<step>.orbax-checkpoint-tmp-*" and renames it on commit.
  steps = [int(s) for s in (os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else ())
           if s.isdigit()]
  if not steps:
    raise FileNotFoundError(f"no committed checkpoint in {ckpt_dir} (a trainer workdir "
                            "whose job saved at least once)")
  path = os.path.join(ckpt_dir, str(max(steps)), "state")
  reader = ocp.PyTreeCheckpointer()
  tree = reader.metadata(path).item_metadata
  tree = dict(getattr(tree, "tree", tree))
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  with jax.ensure_compile_time_eval():     # eager, even inside a traced init
    return reader.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))["params"]
