"""Exact skipped-image counts (issue 12, item 5): undecodable images in the
dropped end-of-epoch remainder and in the evaluation arrays are counted, and
the count reaches metrics.jsonl and the run's last line."""
import io
import os
import tarfile
import threading

import jax
import numpy as np
import pytest

from ssl_jax import config_defaults, metrics, sharding, train
from ssl_jax.data import pipeline
from tests.test_imagenet_manual_dir import _add, _jpeg, _photos

N_GOOD, N_BAD = 5, 6          # per epoch: 6 of 11 training images are undecodable


def _corrupt(payload: bytes, seed: int) -> bytes:
  noise = np.random.default_rng(seed).integers(0, 256, 3000, np.uint8)
  return payload[:200] + bytes(noise)


@pytest.fixture(scope="module")
def corrupt_imagenet(tmp_path_factory):
  """imagenet2012 prepared by the real tfds builder from a manual_dir in which
  6 of 11 training and 1 of 3 validation JPEGs do not decode."""
  root = tmp_path_factory.mktemp("corrupt_imagenet")
  good = [_jpeg(p[::4, ::4]) for p in _photos()]             # small: fast to decode
  bad = [_corrupt(good[i % len(good)], i) for i in range(N_BAD)]
  synsets = {"n01440764": good[:3] + bad[:3], "n01443537": good[3:] + bad[3:]}
  manual = root / "manual"
  manual.mkdir()
  with tarfile.open(manual / "ILSVRC2012_img_train.tar", "w") as outer:
    for syn, imgs in synsets.items():
      buf = io.BytesIO()
      with tarfile.open(fileobj=buf, mode="w") as inner:
        for i, payload in enumerate(imgs):
          _add(inner, f"{syn}_{i}.JPEG", payload)
      _add(outer, f"{syn}.tar", buf.getvalue())
  with tarfile.open(manual / "ILSVRC2012_img_val.tar", "w") as val:
    for i, payload in enumerate([good[0], bad[0], good[1]]):
      _add(val, f"ILSVRC2012_val_{i + 1:08d}.JPEG", payload)
  c = config_defaults.base_config()
  c.data.name = "imagenet2012"
  c.data.manual_dir, c.data.data_dir = str(manual), str(root / "tfds")
  c.data.image_size, c.data.shuffle_buffer = 16, 16
  return c


def _iterator(c, batch):
  c = c.copy_and_resolve_references()
  c.batch_size = batch
  mesh = sharding.make_mesh([("data", 1)], jax.devices()[:1])
  return pipeline.TrainIterator(c, "single_crop", sharding.batch_sharding(mesh))


def test_remainder_and_whole_epochs_are_counted_exactly(corrupt_imagenet):
  # batch 2: each epoch is 2 full batches of the 5 good images + 1 dropped.
  it = _iterator(corrupt_imagenet, 2)
  assert it.source.num_examples == N_GOOD + N_BAD
  positions = []
  for _ in range(4):                    # two epochs
    next(it)
    positions.append(it.position())
  # The epoch's last full batch already accounts for the whole epoch.
  assert [p["epoch"] for p in positions] == [0, 0, 1, 1]
  assert positions[1]["skipped"] == N_BAD
  assert positions[3]["skipped"] == 2 * N_BAD
  # A run resumed from the end-of-epoch position counts nothing twice.
  c = corrupt_imagenet.copy_and_resolve_references()
  c.batch_size = 2
  mesh = sharding.make_mesh([("data", 1)], jax.devices()[:1])
  resumed = pipeline.TrainIterator(c, "single_crop", sharding.batch_sharding(mesh), positions[1])
  next(resumed)
  next(resumed)
  assert resumed.position() == positions[3]


def test_eval_arrays_count_undecodable_images(corrupt_imagenet):
  images, labels, _, skipped = pipeline.eval_arrays_counted(corrupt_imagenet.data, "validation")
  assert images.shape[0] == 2 and skipped == 1
  images, _, _, skipped = pipeline.eval_arrays_counted(corrupt_imagenet.data, "train")
  assert images.shape[0] == N_GOOD and skipped == N_BAD
  _, _, _, skipped = pipeline.eval_arrays_counted(corrupt_imagenet.data, "validation", 2)
  assert skipped == 1                   # of the first two


def test_training_run_reports_skipped_images(corrupt_imagenet, tmp_path, capsys):
  """One epoch of a tiny MAE: the last logged step and the closing line carry
  all 6 undecodable images, and no prefetch thread outlives the run."""
  from tests.conftest import tiny_mae_config  # pylint: disable=g-import-not-at-top
  c = tiny_mae_config(batch_size=2, total_steps=2, checkpoint_every=100)
  c.data = corrupt_imagenet.data
  c.model.patch_size = 8
  train.train(c, str(tmp_path), devices=jax.devices()[:1])
  rows = [r for r in metrics.read(str(tmp_path)) if r["kind"] == "train"]
  assert [r["skipped_images"] for r in rows][-1] == N_BAD
  assert "[ssl_jax] skipped_images: 6 undecodable in training" in capsys.readouterr().out
  assert not [t for t in threading.enumerate() if t.name == "ssl_jax-prefetch"]
