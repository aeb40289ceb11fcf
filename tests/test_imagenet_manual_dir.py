"""imagenet2012 read from a manual_dir laid out as ImageNet ships, through the
real tfds builder; a corrupted JPEG is skipped and counted, never a crash."""
import io
import os
import tarfile

import jax
import matplotlib.cbook
import numpy as np
from PIL import Image
from skimage import data as skdata

from ssl_jax import config_defaults, sharding
from ssl_jax.data import pipeline


def _photos():
  photos = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket()]
  with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
    photos.append(np.asarray(Image.open(f).convert("RGB")))
  return photos


def _jpeg(arr):
  buf = io.BytesIO()
  Image.fromarray(arr).save(buf, format="JPEG", quality=90)
  return buf.getvalue()


def _add(tar, name, payload):
  info = tarfile.TarInfo(name)
  info.size = len(payload)
  tar.addfile(info, io.BytesIO(payload))


def _build_manual_dir(root):
  """ILSVRC2012_img_train.tar = one tar per synset holding <synset>_<i>.JPEG."""
  photos = _photos()
  good = [_jpeg(p) for p in photos]
  corrupted = good[0][:200] + bytes(np.random.default_rng(0).integers(0, 256, 3000, np.uint8))
  synsets = {"n01440764": good[:3] + [corrupted], "n01443537": good[3:] + good[:2]}
  os.makedirs(root, exist_ok=True)
  with tarfile.open(os.path.join(root, "ILSVRC2012_img_train.tar"), "w") as outer:
    for syn, imgs in synsets.items():
      buf = io.BytesIO()
      with tarfile.open(fileobj=buf, mode="w") as inner:
        for i, payload in enumerate(imgs):
          _add(inner, f"{syn}_{i}.JPEG", payload)
      _add(outer, f"{syn}.tar", buf.getvalue())
  # tfds reads the validation labels eagerly, so the val tar must exist too;
  # its labels come from tfds' own validation_labels.txt, by sorted file name.
  with tarfile.open(os.path.join(root, "ILSVRC2012_img_val.tar"), "w") as val:
    for i, payload in enumerate(good[:2]):
      _add(val, f"ILSVRC2012_val_{i + 1:08d}.JPEG", payload)
  return sum(len(v) for v in synsets.values())


def test_corrupted_jpeg_is_skipped_and_counted(tmp_path):
  total = _build_manual_dir(str(tmp_path / "manual"))
  c = config_defaults.base_config()
  c.data.name = "imagenet2012"
  c.data.manual_dir = str(tmp_path / "manual")
  c.data.data_dir = str(tmp_path / "tfds")
  c.data.image_size = 32
  c.data.shuffle_buffer = 16
  c.batch_size = total - 1                 # every good image in one batch
  mesh = sharding.make_mesh([("data", 1)], jax.devices()[:1])
  it = pipeline.TrainIterator(c, "single_crop", sharding.batch_sharding(mesh))
  assert it.source.num_examples == total
  batch = next(it)
  assert batch["image"].shape == (total - 1, 32, 32, 3)
  assert np.isfinite(np.asarray(batch["image"])).all()
  assert set(np.asarray(batch["label"]).tolist()) <= {0, 1}
  assert it.position()["skipped"] == 1
  images, labels, n_classes = pipeline.eval_arrays(c.data, "validation")
  assert images.shape == (2, 32, 32, 3) and n_classes == 1000
  # Official ground truth: val_00000001 is a sea snake (65), val_00000002 a cliff (970).
  assert sorted(labels.tolist()) == [65, 970]
