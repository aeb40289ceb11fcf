"""Deterministic, resumable tf.data pipelines onto the device mesh.

Order and augmentation depend only on (seed, epoch, example index): each epoch
shuffles with a seed of its own and every random draw of an example is seeded
by its index. The iterator's position (epoch, next raw index) is saved with
each checkpoint, so a resumed run sees exactly the batches an uninterrupted
run would have seen. Undecodable images are dropped and counted exactly
(`skipped`), including those in the end-of-epoch remainder that is dropped
to keep batches full; `eval_arrays_counted` counts them for evaluation.

`prefetch` decodes in a background thread that is stopped and joined when
the loop ends, however it ends: a thread left inside tf.data at interpreter
exit aborts the process ("terminate called ...", exit 134).
"""
import queue
import threading
import time
from typing import Dict, Iterator, Optional, Tuple

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


class _ShardReader:
  """One input shard (of `count`): its batches of `batch` host-local numpy examples."""

  def __init__(self, config, view: str, index: int, count: int, batch: int,
               position: Optional[dict] = None):
    self.config = config
    self.data_cfg = config.data
    self.view_fn = views.VIEWS.get(view)
    self.source = sources.get_source(self.data_cfg, self.data_cfg.train_split, index, count)
    self.local_batch = batch
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
    # The short last batch is kept here (and dropped in `_host_batches`) so
    # the undecodable images among the remainder are counted too.
    ds = ds.batch(self.local_batch, drop_remainder=False)
    return ds.with_options(opts).prefetch(cfg.prefetch)

  def _full(self, batch) -> bool:
    return batch is not None and len(batch["index"]) == self.local_batch

  def _end_epoch(self, remainder):
    """Counts the undecodable images after the epoch's last full batch: all
    raw indices up to num_examples not in the dropped `remainder`."""
    kept = 0 if remainder is None else len(remainder["index"])
    self.skipped += max(0, self.source.num_examples - self.next_index - kept)
    self.next_index = self.source.num_examples

  def _host_batches(self) -> Iterator[Dict[str, np.ndarray]]:
    while True:
      batches = self._epoch_dataset(self.epoch, self.next_index).as_numpy_iterator()
      batch = next(batches, None)
      if not self._full(batch):
        self._end_epoch(batch)
      while self._full(batch):
        following = next(batches, None)    # one batch of look-ahead: is this the last?
        idx = batch.pop("index")
        # Gaps in the raw indices are the examples that failed to decode.
        self.skipped += int(idx[-1] + 1 - self.next_index) - len(idx)
        self.next_index = int(idx[-1]) + 1
        if not self._full(following):
          self._end_epoch(following)       # counted with the epoch's last batch
        yield batch
        batch = following
      self.epoch += 1
      self.next_index = 0

  def close(self):
    """Releases the tf.data iterator (call from the thread that used it)."""
    if self._host_iter is not None:
      self._host_iter.close()
      self._host_iter = None

  def next_batch(self) -> Dict[str, np.ndarray]:
    if self._host_iter is None:
      self._host_iter = self._host_batches()
    return next(self._host_iter)


class TrainIterator:
  """Yields (global batch of jax Arrays sharded on `sharding`, host info).

  The global batch is the concatenation of `data.input_shards` shard batches
  (default 0: one shard per process, each process reading its own slice of
  the split); process p reads shards p*K .. p*K+K-1, K = input_shards /
  process_count. The batches depend on input_shards only, not on how many
  processes read them: 2 hosts = 1 host with input_shards=2 (the multi-host
  test), and a pod job resumes on another host count with the same order.
  The position (checkpointed) holds every shard's (epoch, next_index,
  skipped) under "shards" when input_shards > 1; `global_position` gathers
  them from all processes before a save.
  """

  def __init__(self, config, view: str, sharding, position: Optional[dict] = None):
    self.sharding = sharding
    count = jax.process_count()
    self.num_shards = int(config.data.get("input_shards") or 0) or count
    if self.num_shards % count:
      raise ValueError(f"data.input_shards={self.num_shards} is not a multiple of the "
                       f"{count} processes; use 0 (one shard per process) or a multiple.")
    if config.batch_size % self.num_shards:
      raise ValueError(f"batch_size {config.batch_size} is not divisible by "
                       f"{self.num_shards} input shards ({count} processes).")
    per_process = self.num_shards // count
    self.local_batch = config.batch_size // count
    self.shard_ids = [jax.process_index() * per_process + j for j in range(per_process)]
    self.readers = [_ShardReader(config, view, i, self.num_shards,
                                 config.batch_size // self.num_shards,
                                 _shard_position(position, i, self.num_shards))
                    for i in self.shard_ids]
    self.source = self.readers[0].source        # one shard's source (num_examples: per shard)

  @property
  def steps_per_epoch(self) -> int:
    return self.readers[0].steps_per_epoch

  def _epoch_dataset(self, epoch: int, start: int) -> tf.data.Dataset:
    return self.readers[0]._epoch_dataset(epoch, start)  # pylint: disable=protected-access

  def position(self) -> dict:
    """This process's shards; one shard in all: the reader's own position."""
    if self.num_shards == 1:
      return self.readers[0].position()
    return _merge({str(i): r.position() for i, r in zip(self.shard_ids, self.readers)})

  def close(self):
    for r in self.readers:
      r.close()

  def __iter__(self):
    return self

  def __next__(self):
    parts = [r.next_batch() for r in self.readers]
    batch = {k: np.concatenate([b[k] for b in parts]) for k in parts[0]} if len(parts) > 1 \
        else parts[0]
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.sharding, x), batch)


def _merge(shards: Dict[str, dict]) -> dict:
  return {"epoch": min(p["epoch"] for p in shards.values()),
          "skipped": sum(p["skipped"] for p in shards.values()), "shards": shards}


def _shard_position(position: Optional[dict], index: int, count: int) -> Optional[dict]:
  """Shard `index`'s part of a checkpointed position. A position without
  "shards" (one shard, or a checkpoint from before input_shards) applies to
  every shard, as it did then."""
  if not position or "shards" not in position:
    return position
  shards = position["shards"]
  if str(index) not in shards or len(shards) != count:
    raise ValueError(f"the checkpoint's data position has {len(shards)} input shards, this run "
                     f"reads {count}: set --config.data.input_shards={len(shards)} to resume "
                     "with the same data order.")
  return shards[str(index)]


def global_position(position: dict) -> dict:
  """Every process's shard positions in one dict (a collective: all processes
  call it at the same step). Orbax writes the JSON item from process 0 only."""
  if jax.process_count() == 1 or "shards" not in position:
    return position
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  local = np.asarray([[int(i), p["epoch"], p["next_index"], p["skipped"]]
                      for i, p in position["shards"].items()], np.int32)
  everyone = np.asarray(multihost_utils.process_allgather(local)).reshape(-1, 4)
  return _merge({str(i): {"epoch": int(e), "next_index": int(n), "skipped": int(k)}
                 for i, e, n, k in everyone.tolist()})


def prefetch(iterator, size: int = 2, join_timeout: float = 120.0):
  """Runs `iterator` (host decode + device transfer) in a background thread.

  Also returns each item's iterator position, so the loop can checkpoint the
  position of the batch it actually consumed. Closing the generator (or
  leaving its loop by break / exception) stops the worker, joins it and
  closes `iterator`.
  """
  q: "queue.Queue" = queue.Queue(maxsize=max(size, 1))
  stop = threading.Event()
  sentinel = object()

  def put(item) -> bool:
    while not stop.is_set():       # never block forever on a consumer that left
      try:
        q.put(item, timeout=0.05)
        return True
      except queue.Full:
        pass
    return False

  def worker():
    try:
      for item in iterator:
        if not put((item, iterator.position())):
          return
    except Exception as e:  # pylint: disable=broad-except
      put(e)
      return
    put(sentinel)

  thread = threading.Thread(target=worker, daemon=True, name="ssl_jax-prefetch")
  thread.start()
  try:
    while True:
      item = q.get()
      if item is sentinel:
        return
      if isinstance(item, Exception):
        raise item
      yield item
  finally:
    stop.set()
    deadline = time.time() + join_timeout
    while thread.is_alive() and time.time() < deadline:
      thread.join(timeout=0.1)
      try:
        q.get_nowait()              # unblock a worker mid-put
      except queue.Empty:
        pass
    if not thread.is_alive() and hasattr(iterator, "close"):
      iterator.close()


def eval_arrays(data_cfg, split: str, max_examples: Optional[int] = None):
  """Whole eval split of this process as normalised numpy arrays (images, labels).

  Deterministic transform (`views.eval_view`); for kNN / linear probes over
  frozen features. Undecodable images are dropped (`eval_arrays_counted`
  also returns how many).
  """
  return eval_arrays_counted(data_cfg, split, max_examples)[:3]


def _eval_dataset(data_cfg, src, max_examples: Optional[int]):
  """(image, label) pairs of `src` in order through the deterministic eval
  view, undecodable images dropped; and how many examples were asked for."""
  ds = src.make(seed=None)
  expected = src.num_examples
  if max_examples:
    ds = ds.take(max_examples)
    expected = min(expected, max_examples)
  size, encoded = data_cfg.image_size, src.encoded

  def process(ex):
    img = views.eval_view(_decode(ex["image"], encoded), size)
    return _normalize({"image": img}, src.mean, src.std)["image"], ex["label"]
  ds = ds.map(process, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
  return ds, expected


def eval_arrays_counted(data_cfg, split: str, max_examples: Optional[int] = None
                        ) -> Tuple[np.ndarray, np.ndarray, int, int]:
  """`eval_arrays` plus the number of undecodable images dropped."""
  # The whole split, in every process: evaluation runs on process 0 alone
  # (train.py); a per-host shard would score kNN against half the train set.
  src = sources.get_source(data_cfg, split)
  ds, expected = _eval_dataset(data_cfg, src, max_examples)
  images, labels = [], []
  for im, lb in ds.batch(1024).as_numpy_iterator():
    images.append(im)
    labels.append(lb)
  if not images:
    raise ValueError(f"no decodable image in split {split!r} of {data_cfg.name!r} "
                     f"({expected} examples).")
  images, labels = np.concatenate(images), np.concatenate(labels).astype(np.int32)
  return images, labels, src.num_classes, expected - len(labels)


def eval_batches(data_cfg, split: str, batch_size: int, sharding,
                 max_examples: Optional[int] = None):
  """The eval split streamed in order: (batch, expected) where batch is a dict
  of global jax Arrays {"image", "label", "valid"} sharded on `sharding`.

  Deterministic transform (`views.eval_view`), decoded per batch, so host
  memory is bounded by the prefetch depth, not by the split's size. The last
  batch is padded and `valid` (1.0 / 0.0) marks the real rows, so a metric
  summed over valid rows counts every decodable example once on any number
  of devices. Processes with equally large shards (tfds.even_splits drops
  the remainder) yield the same number of batches, padding with empty ones
  if undecodable images shortened a shard; `expected` is the
  number of examples of this process's shard (valid rows fall short of it by
  the undecodable ones).
  """
  src = sources.get_source(data_cfg, split, jax.process_index(), jax.process_count())
  if batch_size % jax.process_count():
    raise ValueError(f"eval batch size {batch_size} is not divisible by "
                     f"{jax.process_count()} processes.")
  local = batch_size // jax.process_count()
  ds, expected = _eval_dataset(data_cfg, src, max_examples)
  ds = ds.batch(local, drop_remainder=False).prefetch(max(1, int(data_cfg.prefetch)))
  steps = -(-expected // local)
  batches = ds.as_numpy_iterator()
  size = data_cfg.image_size
  shape = (local, size, size, 3)

  def put(x):
    return jax.make_array_from_process_local_data(sharding, x)

  def generate():
    for _ in range(steps):
      im, lb = next(batches, (np.zeros((0,) + shape[1:], np.float32), np.zeros((0,), np.int32)))
      n = len(lb)
      pad = local - n
      yield {"image": put(np.concatenate([im, np.zeros((pad,) + shape[1:], im.dtype)])),
             "label": put(np.concatenate([lb.astype(np.int32), np.zeros((pad,), np.int32)])),
             "valid": put(np.concatenate([np.ones((n,), np.float32),
                                          np.zeros((pad,), np.float32)]))}
  return generate(), expected
