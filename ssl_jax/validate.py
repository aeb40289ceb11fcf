"""The trainer's validation pass for classifier objectives (`Method.predict`).

Top-1 / top-5 accuracy and the cross-entropy over the whole eval split
(`data.eval_split`, at most `eval.max_eval_examples`), streamed batch by batch
(`pipeline.eval_batches`) through one jitted, sharded scoring step; the sums
stay on device until the end, so host memory does not grow with the split.
A padded last batch is masked (`valid`), so every example counts once on any
number of devices. Prints a progress line like every long phase.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax import sharding
from ssl_jax.data import pipeline
from ssl_jax.progress import Progress


def _scores(logits, labels, valid):
  """Sums over valid rows: top-1 / top-k hits (k = min(5, classes)), CE."""
  logits = logits.astype(jnp.float32)
  k = min(5, logits.shape[-1])
  top = jax.lax.top_k(logits, k)[1]
  hit1 = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  hitk = jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return {"top1": jnp.sum(hit1 * valid), "top5": jnp.sum(hitk * valid),
          "loss": jnp.sum(ce * valid), "count": jnp.sum(valid)}


class Validator:
  """`Validator(...)(state, constants) -> {"<name>/top1", "/top5", "/loss", ...}`."""

  def __init__(self, method, config, mesh, state_sh, const_sh):
    self.config, self.mesh = config, mesh
    self.name = config.method          # metric prefix: "linear/top1", "finetune/top1"
    self.data_sh = sharding.batch_sharding(mesh)
    n = mesh.devices.size * jax.process_count()
    self.batch_size = max(n, -(-int(config.eval.batch_size) // n) * n)

    def score(state, constants, batch):
      logits = method.predict(state["params"], state["method_state"], constants, batch, config)
      return _scores(logits, batch["label"], batch["valid"])
    self._score = jax.jit(score, in_shardings=(state_sh, const_sh, self.data_sh),
                          out_shardings=sharding.replicated(mesh))

  def __call__(self, state, constants):
    d = self.config.data
    batches, expected = pipeline.eval_batches(d, d.eval_split, self.batch_size, self.data_sh,
                                              self.config.eval.get("max_eval_examples"))
    total = expected * jax.process_count()
    progress = Progress(f"validation ({d.eval_split})", total)
    totals = None
    for batch in batches:
      s = self._score(state, constants, batch)
      totals = s if totals is None else jax.tree.map(jnp.add, totals, s)
      progress.update(min(self.batch_size, total - progress.done))
    totals = {k: float(v) for k, v in jax.device_get(totals).items()}
    count = max(totals["count"], 1.0)
    return {f"{self.name}/top1": 100.0 * totals["top1"] / count,
            f"{self.name}/top5": 100.0 * totals["top5"] / count,
            f"{self.name}/val_loss": totals["loss"] / count,
            f"{self.name}/val_examples": int(totals["count"]),
            "skipped_images": int(np.round(total - totals["count"]))}
