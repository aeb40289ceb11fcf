"""Evaluation protocols over a frozen or fine-tuned encoder.

A protocol is `fn(config, encoder, data, mesh) -> {metric: float}`, registered
in `PROTOCOLS`; `config.eval.protocols` lists the ones to run. `data`
(`EvalData`) holds the labelled train / test arrays and memoises features.
"""
import dataclasses
from typing import Dict, Tuple

import jax
import numpy as np

from ssl_jax import export as export_lib
from ssl_jax.data import pipeline
from ssl_jax.evaluate import features as features_lib
from ssl_jax.evaluate import knn as knn_lib
from ssl_jax.evaluate import linear as linear_lib
from ssl_jax.registry import Registry

PROTOCOLS = Registry("eval protocol")


@dataclasses.dataclass
class EvalData:
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  skipped_images: int = 0     # undecodable images dropped from both splits
  _cache: Dict[Tuple, Tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)

  @classmethod
  def load(cls, config):
    e, d = config.eval, config.data
    xtr, ytr, n, skip_tr = pipeline.eval_arrays_counted(d, d.train_split, e.max_train_examples)
    xte, yte, _, skip_te = pipeline.eval_arrays_counted(d, d.eval_split, e.max_eval_examples)
    return cls(xtr, ytr, xte, yte, n, skip_tr + skip_te)

  def train_batches(self, batch_size: int):
    """(images, labels) of the train split, `batch_size` at a time."""
    for s in range(0, len(self.train_labels), batch_size):
      yield self.train_images[s:s + batch_size], self.train_labels[s:s + batch_size]

  def features(self, encoder, feature: str, block: int, mesh, batch_size: int = 512):
    key = (id(encoder.variables), feature, block)
    if key not in self._cache:
      self._cache[key] = tuple(features_lib.extract_many(
          encoder, [self.train_images, self.test_images], feature, block, batch_size, mesh))
    return self._cache[key]


@PROTOCOLS.register("knn")
def knn_protocol(config, encoder, data: EvalData, mesh):
  """DINO's weighted kNN at `eval.knn.k`, plus DINOv2's sweep `eval.knn.ks`.

  `eval.knn.stream`: the train features go batch by batch from the encoder
  (sharded over `mesh`) into the running top-k, at most `eval.knn.block`
  rows held, none kept for other protocols; otherwise the cached in-memory
  features (shared with `linear`). Both give the same numbers.
  """
  e, kc = config.eval, config.eval.knn
  ks, block = tuple(kc.get("ks") or ()), int(kc.get("block") or 8192)
  if kc.get("stream"):
    fte = features_lib.extract(encoder, data.test_images, e.feature, e.block, e.batch_size, mesh)
    train = features_lib.extract_stream(
        encoder, data.train_batches(e.batch_size), e.feature, e.block, e.batch_size, mesh,
        total=len(data.train_labels), phase="kNN train features")
    return knn_lib.streaming_knn(train, fte, data.test_labels, data.num_classes, kc.k,
                                 kc.temperature, ks, block)
  ftr, fte = data.features(encoder, e.feature, e.block, mesh, e.batch_size)
  return knn_lib.knn_accuracy(ftr, data.train_labels, fte, data.test_labels,
                              data.num_classes, kc.k, kc.temperature, ks=ks, block=block)


@PROTOCOLS.register("linear")
def linear_protocol(config, encoder, data: EvalData, mesh):
  e = config.eval
  ftr, fte = data.features(encoder, e.feature, e.block, mesh, e.batch_size)
  lc = e.linear
  return linear_lib.linear_probe(ftr, data.train_labels, fte, data.test_labels,
                                 data.num_classes, epochs=lc.epochs, base_lr=lc.base_lr,
                                 batch_size=lc.batch_size, weight_decay=lc.weight_decay,
                                 seed=config.seed, optimizer=lc.optimizer)


def random_init(encoder: export_lib.Encoder, images: np.ndarray, seed: int = 0):
  """The same architecture with fresh random weights: the baseline every eval reports."""
  variables = encoder.module.init(jax.random.PRNGKey(seed + 12345), images[:2])
  return encoder._replace(variables=jax.tree.map(np.asarray, dict(variables)))


def evaluate(config, encoder, mesh, data: EvalData = None, protocols=None):
  """Runs protocols on `encoder` and, if configured, on a random-init twin.

  Returns a flat dict: "<protocol>/<metric>" and "<protocol>/<metric>_random_init".
  """
  data = data or EvalData.load(config)
  protocols = protocols or list(config.eval.protocols)
  encoders = {"": encoder}
  if config.eval.compare_random_init:
    encoders["_random_init"] = random_init(encoder, data.train_images, config.seed)
  results = {}
  for name in protocols:
    fn = PROTOCOLS.get(name)
    for suffix, enc in encoders.items():
      for k, v in fn(config, enc, data, mesh).items():
        results[f"{name}/{k}{suffix}"] = float(v)
  return results


def format_table(results: Dict[str, float]) -> str:
  rows = sorted({k.replace("_random_init", "") for k in results})
  lines = [f"{'metric':<28}{'pre-trained':>14}{'random init':>14}"]
  for r in rows:
    rnd = results.get(r + "_random_init")
    lines.append(f"{r:<28}{results[r]:>14.2f}{(f'{rnd:.2f}' if rnd is not None else '-'):>14}")
  return "\n".join(lines)


def _register_builtin():
  # Imported here: these modules import ssl_jax.evaluate's submodules.
  from ssl_jax import analysis  # pylint: disable=g-import-not-at-top
  from ssl_jax.evaluate import box_probe, decoder_probe, dense_probe, feature_rank, finetune  # pylint: disable=g-import-not-at-top
  PROTOCOLS.register("decoder_probe", decoder_probe.run)
  PROTOCOLS.register("box_probe", box_probe.run)
  PROTOCOLS.register("finetune", finetune.run)
  PROTOCOLS.register("dense_probe", dense_probe.run)
  PROTOCOLS.register("feature_rank", feature_rank.run)
  PROTOCOLS.register("analyze", analysis.run)


_register_builtin()
