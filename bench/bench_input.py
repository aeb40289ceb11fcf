"""Decoded + augmented images/s of each view builder, next to the step rate
of the default job (not a test).

  python -m bench.bench_input                  # embedded Fashion-MNIST + a photo manual_dir
  python -m bench.bench_input --step_rate 46   # skip timing the default job's step

Each row is the trainer's input (`pipeline.TrainIterator`: tf.data decode,
view builder, normalise, batch, device put) of one CPU job's data config
(`INPUTS`), drained for `--batches` batches after one warm-up batch, on the
same cores the step uses. ImageNet rows read an imagenet2012 manual_dir
built from photos (skimage / matplotlib samples, ImageNet-sized JPEGs; the
tests build the same layout, tests/test_imagenet_manual_dir.py), prepared
by tfds once into a temporary folder. The default job is
configs/mae.py:vit_tiny; its step img/s comes from `bench/common.py` (the
trainer's compiled step, as bench_method) unless `--step_rate` gives it.
"""
import argparse
import io
import os
import tarfile
import tempfile
import time

import jax
import numpy as np

from bench import common
from ssl_jax import methods, sharding
from ssl_jax.data import pipeline

DEFAULT_JOB = "configs/mae.py:vit_tiny"
# (label, config, overrides): one row per view builder / colour recipe in use.
INPUTS = [
    ("fmnist single_crop (mae)", "configs/mae.py:vit_tiny", []),
    ("fmnist two_crops byol (cr2pq)", "configs/cr2pq.py:vit_tiny", []),
    ("fmnist two_crops mocov2", "configs/mocov2.py:mf_tiny", []),
    ("fmnist multi_crop dino 2x32+4x16", "configs/dino.py:cpu", []),
    ("in1k single_crop 224 (mae)", "configs/mae.py:vit_base_in1k", ["batch_size=64"]),
    ("in1k two_crops byol 224 (cr2pq)", "configs/cr2pq.py:vit_small_in1k", ["batch_size=64"]),
    ("in1k multi_crop dino 2x224+10x96", "configs/dino.py:vit_s16_100ep", ["batch_size=32"]),
]


def _photos():
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import matplotlib.cbook  # pylint: disable=g-import-not-at-top
  from skimage import data as skdata  # pylint: disable=g-import-not-at-top
  photos = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket()]
  with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
    photos.append(np.asarray(Image.open(f).convert("RGB")))
  return photos


def build_manual_dir(root: str, per_class: int = 160) -> int:
  """ILSVRC2012_img_{train,val}.tar of 2 synsets x `per_class` JPEGs (random
  ~0.6-1.0 crops of the photos, quality 90: ImageNet's typical ~110 KB,
  ~400x350 px), as ImageNet ships them. Returns the number of train images."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  photos = _photos()

  def jpeg(i):
    p = photos[i % len(photos)]
    h, w = p.shape[:2]
    ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
    t, l = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    buf = io.BytesIO()
    Image.fromarray(p[t:t + ch, l:l + cw]).save(buf, format="JPEG", quality=90)
    return buf.getvalue()

  def add(tar, name, payload):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))

  os.makedirs(root, exist_ok=True)
  with tarfile.open(os.path.join(root, "ILSVRC2012_img_train.tar"), "w") as outer:
    for c, syn in enumerate(("n01440764", "n01443537")):
      buf = io.BytesIO()
      with tarfile.open(fileobj=buf, mode="w") as inner:
        for i in range(per_class):
          add(inner, f"{syn}_{i}.JPEG", jpeg(c * per_class + i))
      add(outer, f"{syn}.tar", buf.getvalue())
  with tarfile.open(os.path.join(root, "ILSVRC2012_img_val.tar"), "w") as val:
    for i in range(2):
      add(val, f"ILSVRC2012_val_{i + 1:08d}.JPEG", jpeg(i))
  return 2 * per_class


def input_rate(config, batches: int) -> float:
  """Images/s of the trainer's input iterator for `config` (after 1 warm-up batch)."""
  mesh = sharding.make_mesh([("data", -1)])
  method = methods.get(config.method)
  it = pipeline.TrainIterator(config, method.views(config), sharding.batch_sharding(mesh))
  jax.block_until_ready(next(it))
  t = time.perf_counter()
  for _ in range(batches):
    jax.block_until_ready(next(it))
  rate = batches * config.batch_size / (time.perf_counter() - t)
  it.close()
  return rate


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--batches", type=int, default=8)
  p.add_argument("--step_rate", type=float, default=0.0,
                 help="the default job's step img/s (0: time it here)")
  p.add_argument("--only", default="", help="comma-separated row labels' prefixes (fmnist, in1k)")
  a = p.parse_args()
  print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores; "
        f"load {common.load_average()}", flush=True)
  step_rate = a.step_rate
  if not step_rate:
    mesh = sharding.make_mesh([("data", -1), ("fsdp", 1)])
    config, _ = common.load_config(DEFAULT_JOB)
    step_rate = common.time_train_step(common.setup(config, mesh), mesh)["img_s_dev"] * \
        mesh.devices.size
  print(f"default job {DEFAULT_JOB}: step {step_rate:.1f} img/s", flush=True)
  print("| input (view builder) | batch | img/s | x default job's step |\n|---|---|---|---|",
        flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    manual = None
    for label, spec, overrides in INPUTS:
      if a.only and not any(label.startswith(x) for x in a.only.split(",")):
        continue
      extra = []
      if label.startswith("in1k"):
        if manual is None:
          manual = os.path.join(tmp, "manual")
          build_manual_dir(manual)
        extra = [f"data.manual_dir={manual}", f"data.data_dir={os.path.join(tmp, 'tfds')}",
                 "data.shuffle_buffer=256"]
      config, _ = common.load_config(spec, list(overrides) + extra)
      rate = input_rate(config, a.batches)
      print(f"| {label} | {config.batch_size} | {rate:.0f} | {rate / step_rate:.1f} |",
            flush=True)
  print(f"load after: {common.load_average()}", flush=True)


if __name__ == "__main__":
  main()
