"""Fits the offline BEiT tokenizer (k-means over patch pixels) and saves it.

  python -m ssl_jax.tokenizers.fit --out configs/tokenizers/kmeans_fmnist32_p4_v256.npz \
      --dataset fashion_mnist --image_size 32 --patch_size 4 --vocab_size 256 \
      --max_images 10000 --seed 0

Images are the pipeline's deterministic eval view of the *train* split,
normalised as pre-training sees them. Same flags + seed -> identical file.
"""
import argparse

from ssl_jax import config_defaults, tokenizers
from ssl_jax.data import pipeline
from ssl_jax.tokenizers import kmeans


def fit_from_dataset(dataset: str, image_size: int, patch_size: int, vocab_size: int,
                     max_images: int, seed: int, iters: int, split: str = "train"):
  data = config_defaults.base_config().data
  data.name, data.image_size = dataset, image_size
  images, _, _ = pipeline.eval_arrays(data, split, max_images)
  return kmeans.fit_images(images, patch_size, vocab_size, seed, iters)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--out", required=True, help="output .npz")
  ap.add_argument("--dataset", default="fashion_mnist")
  ap.add_argument("--image_size", type=int, default=32)
  ap.add_argument("--patch_size", type=int, default=4)
  ap.add_argument("--vocab_size", type=int, default=256)
  ap.add_argument("--max_images", type=int, default=10000)
  ap.add_argument("--iters", type=int, default=20)
  ap.add_argument("--seed", type=int, default=0)
  a = ap.parse_args(argv)
  c = fit_from_dataset(a.dataset, a.image_size, a.patch_size, a.vocab_size, a.max_images,
                       a.seed, a.iters)
  tokenizers.save(a.out, "kmeans", a.patch_size, centroids=c)
  print(f"wrote {a.out}: {c.shape[0]} codes of {c.shape[1]} values")


if __name__ == "__main__":
  main()
