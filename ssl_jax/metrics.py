"""Machine-readable results: <workdir>/metrics.jsonl (one object per logged
step or eval) and TensorBoard events beside it. Only process 0 writes."""
import json
import os
import time

import jax
import numpy as np


def _plain(v):
  if isinstance(v, (np.generic, np.ndarray)) or hasattr(v, "dtype"):
    v = np.asarray(v)
    return v.item() if v.ndim == 0 else v.tolist()
  return v


class MetricsWriter:

  def __init__(self, workdir: str, tensorboard: bool = True):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.active:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        self._tb = tf.summary.create_file_writer(workdir)

  def write(self, step: int, kind: str, **values):
    if not self.active:
      return
    record = {"step": int(step), "kind": kind, "time": round(time.time(), 3)}
    record.update({k: _plain(v) for k, v in values.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      # Low-level tf.summary.write with the scalars plugin tag: TensorBoard
      # reads these, and writing them needs no tensorboard package.
      meta = tf.compat.v1.SummaryMetadata(
          plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars"))
      with self._tb.as_default():
        for k, v in record.items():
          if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "time"):
            tf.summary.write(f"{kind}/{k}", tf.constant(float(v)), step=int(step), metadata=meta)
      self._tb.flush()


def read(workdir: str):
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
