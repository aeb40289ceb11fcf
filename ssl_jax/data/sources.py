"""Data sources: the embedded Fashion-MNIST, imagenet2012 from disk, any tfds name.

A source yields examples {"image": encoded bytes or uint8 [H, W, 3], "label"}
for one split, this process's shard only, in a deterministic order.
"""
import dataclasses
import gzip
import os
from typing import Callable, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ssl_jax.registry import Registry

SOURCES = Registry("dataset")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class Source:
  """One split of a dataset, sharded for this process."""
  make: Callable[..., tf.data.Dataset]     # (shuffle_files_seed) -> dataset
  num_examples: int                        # in this process's shard
  num_classes: int
  mean: Tuple[float, float, float]
  std: Tuple[float, float, float]
  encoded: bool                            # "image" holds JPEG/PNG bytes


def _read_idx(path: str) -> np.ndarray:
  with gzip.open(path, "rb") as f:
    data = f.read()
  ndim = data[3]
  dims = np.frombuffer(data, ">u4", count=ndim, offset=4)
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(split: str, root: str = FASHION_MNIST_DIR):
  """Debian's `dataset-fashion-mnist` idx files -> uint8 [N, 32, 32, 3], labels.

  Read directly: the stock tfds builder rejects these files' checksums. The
  28x28 digits are zero-padded to 32x32 (so patch 4 and 8 tile them) and
  repeated to 3 channels so every encoder sees RGB.
  """
  prefix = {"train": "train", "test": "t10k"}.get(split)
  if prefix is None:
    raise ValueError(f"Unknown fashion_mnist split {split!r}. Valid splits: train, test.")
  img_path = os.path.join(root, f"{prefix}-images-idx3-ubyte.gz")
  if not os.path.exists(img_path):
    raise FileNotFoundError(
        f"{img_path} not found. Install the embedded dataset with "
        "`apt-get install dataset-fashion-mnist` (see README).")
  images = _read_idx(img_path)
  labels = _read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz")).astype(np.int32)
  images = np.pad(images, ((0, 0), (2, 2), (2, 2)))
  return np.repeat(images[..., None], 3, axis=-1), labels


@SOURCES.register("fashion_mnist")
def fashion_mnist(split, data_cfg, process_index, process_count):
  images, labels = load_fashion_mnist(split)
  images, labels = images[process_index::process_count], labels[process_index::process_count]
  if data_cfg.get("max_train_examples") and split == data_cfg.train_split:
    images, labels = images[:data_cfg.max_train_examples], labels[:data_cfg.max_train_examples]
  def make(seed=None):
    del seed
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
  m, s = 0.2860, 0.3530      # Fashion-MNIST train statistics (28x28 pixels)
  return Source(make, len(labels), 10, (m,) * 3, (s,) * 3, encoded=False)


class DatasetNotPreparedError(RuntimeError):
  """A tfds dataset that is neither prepared locally nor preparable offline."""


# Set to 1 to let a run download and prepare a tfds dataset itself.
DOWNLOAD_ENV = "SSL_JAX_TFDS_DOWNLOAD"


def _is_prepared(builder) -> bool:
  return os.path.exists(os.path.join(builder.data_dir, "dataset_info.json"))


def _check_prepared(name: str, builder, data_cfg):
  """Fails in seconds, saying what to do, instead of retrying downloads for
  minutes on a machine without network (tfds' default)."""
  if _is_prepared(builder):
    return
  if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
    manual = data_cfg.get("manual_dir")
    if not manual or not os.path.isdir(manual):
      raise DatasetNotPreparedError(
          f"tfds dataset {name!r} is built from files you download yourself: set "
          f"data.manual_dir to the folder holding them (got {manual!r}); see README.")
    return
  if os.environ.get(DOWNLOAD_ENV, "") not in ("", "0"):
    return
  raise DatasetNotPreparedError(
      f"tfds dataset {name!r} is not prepared in {builder.data_dir}. Prepare it once on a "
      f"machine with network (`tfds build {name} --data_dir=DIR`) and set data.data_dir=DIR, "
      f"or let this run download it ({DOWNLOAD_ENV}=1), or use the embedded default "
      "data.name=fashion_mnist.")


def _tfds_source(name, split, data_cfg, process_index, process_count):
  builder = tfds.builder(name, data_dir=data_cfg.get("data_dir"))
  _check_prepared(name, builder, data_cfg)
  dl_config = tfds.download.DownloadConfig(manual_dir=data_cfg.get("manual_dir"))
  builder.download_and_prepare(download_config=dl_config)
  # tfds split expressions ("train+validation", "train[:90%]") name known splits.
  if any(part.split("[")[0].strip() not in builder.info.splits for part in split.split("+")):
    raise ValueError(f"Dataset {name!r} has no split {split!r}. "
                     f"Valid splits: {', '.join(builder.info.splits)}.")
  shard = tfds.even_splits(split, n=process_count, drop_remainder=True)[process_index]
  image_feature = builder.info.features["image"]
  encoded = isinstance(image_feature, tfds.features.Image)
  def make(seed=None):
    read_config = tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=16)
    decoders = {"image": tfds.decode.SkipDecoding()} if encoded else None
    ds = builder.as_dataset(split=shard, shuffle_files=seed is not None,
                            read_config=read_config, decoders=decoders)
    return ds.map(lambda ex: {"image": ex["image"], "label": tf.cast(ex["label"], tf.int32)})
  num = builder.info.splits[shard].num_examples
  classes = builder.info.features["label"].num_classes
  return Source(make, num, classes, IMAGENET_MEAN, IMAGENET_STD, encoded=encoded)


@SOURCES.register("imagenet2012")
def imagenet2012(split, data_cfg, process_index, process_count):
  """Reads ILSVRC2012_img_{train,val}.tar from `data.manual_dir` via tfds."""
  return _tfds_source("imagenet2012", split, data_cfg, process_index, process_count)


def get_source(data_cfg, split: str, process_index: int = 0,
               process_count: int = 1) -> Source:
  """`fashion_mnist`, `imagenet2012`, or `tfds:<name>` / any registered tfds name."""
  name = data_cfg.name
  if name in SOURCES:
    return SOURCES.get(name)(split, data_cfg, process_index, process_count)
  tfds_name = name[len("tfds:"):] if name.startswith("tfds:") else name
  if tfds_name not in tfds.list_builders():
    raise KeyError(f"Unknown dataset {name!r}. Valid datasets: "
                   f"{', '.join(SOURCES.names())}, or any tfds dataset name "
                   "(e.g. cifar10, stl10, imagenette), optionally prefixed 'tfds:'.")
  return _tfds_source(tfds_name, split, data_cfg, process_index, process_count)
