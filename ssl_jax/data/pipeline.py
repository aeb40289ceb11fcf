"""Deterministic, resumable tf.data pipelines onto the device mesh.

Order and augmentation depend only on (seed, epoch, example index): each epoch
shuffles with a seed of its own and every random draw of an example is seeded
by its index. The iterator's position (epoch, next raw index) is saved with
each checkpoint, so a resumed run sees exactly the batches an uninterrupted
run would have seen. Undecodable images are dropped and counted (`skipped`).
"""
import queue
import threading
from typing import Dict, Iterator, Optional

import jax
import numpy as np
import tensorflow as tf

from ssl_jax.data import sources, views

# tf.data must not grab the accelerator.
tf.config.set_visible_devices([], "GPU")


def _decode(image, encoded: bool):
  if not encoded:
    return image
  img = tf.io.decode_image(image, channels=3, expand_animations=False)
  return tf.ensure_shape(img, [None, None, 3])


def _normalize(ex: Dict[str, tf.Tensor], mean, std):
  mean = tf.constant(mean, tf.float32)
  std = tf.constant(std, tf.float32)
  return {k: (v - mean) / std if k in views.IMAGE_KEYS else v for k, v in ex.items()}


class TrainIterator:
  """Yields (global batch of jax Arrays sharded on `sharding`, host info)."""

  def __init__(self, config, view: str, sharding, position: Optional[dict] = None):
    self.config = config
    self.data_cfg = config.data
    self.view_fn = views.VIEWS.get(view)
    self.sharding = sharding
    self.source = sources.get_source(self.data_cfg, self.data_cfg.train_split,
                                     jax.process_index(), jax.process_count())
    if config.batch_size % jax.process_count():
      raise ValueError(f"batch_size {config.batch_size} is not divisible by "
                       f"{jax.process_count()} processes.")
    self.local_batch = config.batch_size // jax.process_count()
    if self.local_batch > self.source.num_examples:
      raise ValueError(f"batch_size {config.batch_size} exceeds the "
                       f"{self.source.num_examples} examples of this split.")
    pos = position or {}
    self.epoch = int(pos.get("epoch", 0))
    self.next_index = int(pos.get("next_index", 0))
    self.skipped = int(pos.get("skipped", 0))
    self._host_iter = None

  @property
  def steps_per_epoch(self) -> int:
    return self.source.num_examples // self.local_batch

  def position(self) -> dict:
    return {"epoch": self.epoch, "next_index": self.next_index, "skipped": self.skipped}

  def _epoch_dataset(self, epoch: int, start: int) -> tf.data.Dataset:
    cfg, src = self.data_cfg, self.source
    seed = int(self.config.seed)
    ds = src.make(seed=seed * 1000 + epoch)
    buffer = int(min(cfg.shuffle_buffer, src.num_examples))
    ds = ds.shuffle(buffer, seed=seed * 1_000_003 + epoch, reshuffle_each_iteration=False)
    ds = ds.enumerate().skip(start)
    view_fn, encoded = self.view_fn, src.encoded

    def process(index, ex):
      ex_seed = tf.stack([tf.constant(seed * 7919 + epoch, tf.int64), index])
      out = view_fn(_decode(ex["image"], encoded), ex_seed, cfg)
      out = _normalize(out, src.mean, src.std)
      out.update(label=ex["label"], index=index)
      return out

    opts = tf.data.Options()
    opts.deterministic = True
    ds = ds.map(process, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors()       # undecodable images: dropped, counted below
    ds = ds.batch(self.local_batch, drop_remainder=True)
    return ds.with_options(opts).prefetch(cfg.prefetch)

  def _host_batches(self) -> Iterator[Dict[str, np.ndarray]]:
    while True:
      for batch in self._epoch_dataset(self.epoch, self.next_index).as_numpy_iterator():
        idx = batch.pop("index")
        # Gaps in the raw indices are the examples that failed to decode.
        self.skipped += int(idx[-1] + 1 - self.next_index) - len(idx)
        self.next_index = int(idx[-1]) + 1
        yield batch
      self.epoch += 1
      self.next_index = 0

  def __iter__(self):
    return self

  def __next__(self):
    if self._host_iter is None:
      self._host_iter = self._host_batches()
    batch = next(self._host_iter)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.sharding, x), batch)


def prefetch(iterator, size: int = 2):
  """Runs `iterator` (host decode + device transfer) in a background thread.

  Also returns each item's iterator position, so the loop can checkpoint the
  position of the batch it actually consumed.
  """
  q: "queue.Queue" = queue.Queue(maxsize=max(size, 1))
  sentinel = object()

  def worker():
    try:
      for item in iterator:
        q.put((item, iterator.position()))
    except Exception as e:  # pylint: disable=broad-except
      q.put(e)
    q.put(sentinel)

  threading.Thread(target=worker, daemon=True).start()
  while True:
    item = q.get()
    if item is sentinel:
      return
    if isinstance(item, Exception):
      raise item
    yield item


def eval_arrays(data_cfg, split: str, max_examples: Optional[int] = None):
  """Whole eval split of this process as normalised numpy arrays (images, labels).

  Deterministic transform (`views.eval_view`); for kNN / linear probes over
  frozen features. Undecodable images are dropped.
  """
  src = sources.get_source(data_cfg, split, jax.process_index(), jax.process_count())
  ds = src.make(seed=None)
  if max_examples:
    ds = ds.take(max_examples)
  size, encoded = data_cfg.image_size, src.encoded
  def process(ex):
    img = views.eval_view(_decode(ex["image"], encoded), size)
    return _normalize({"image": img}, src.mean, src.std)["image"], ex["label"]
  ds = ds.map(process, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
  images, labels = [], []
  for im, lb in ds.batch(1024).as_numpy_iterator():
    images.append(im)
    labels.append(lb)
  return np.concatenate(images), np.concatenate(labels).astype(np.int32), src.num_classes
