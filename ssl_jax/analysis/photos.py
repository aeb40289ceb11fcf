"""Real photos for attention-map figures, shipped with scikit-image and
matplotlib (no download): astronaut, chelsea, coffee, rocket, grace_hopper."""
from typing import Dict, Sequence

import numpy as np

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "grace_hopper")


def load(name: str) -> np.ndarray:
  """uint8 [H, W, 3]."""
  if name == "grace_hopper":
    import matplotlib.image as mimage  # pylint: disable=g-import-not-at-top
    from matplotlib import cbook  # pylint: disable=g-import-not-at-top
    with cbook.get_sample_data("grace_hopper.jpg") as f:
      img = mimage.imread(f, format="jpg")
  elif name in PHOTOS:
    import skimage.data  # pylint: disable=g-import-not-at-top
    img = getattr(skimage.data, name)()
  else:
    raise ValueError(f"Unknown photo {name!r}. Valid photos: {', '.join(PHOTOS)}.")
  img = np.asarray(img)
  if img.dtype != np.uint8:
    img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
  return img[..., :3]


def load_all(names: Sequence[str] = PHOTOS) -> Dict[str, np.ndarray]:
  return {n: load(n) for n in names}


def center_square(img: np.ndarray, size: int) -> np.ndarray:
  """Centre square crop resized to size x size -> float32 [size, size, 3] in [0, 1]."""
  import skimage.transform  # pylint: disable=g-import-not-at-top
  h, w = img.shape[:2]
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  crop = img[top:top + s, left:left + s]
  out = skimage.transform.resize(crop, (size, size), order=3, anti_aliasing=True,
                                 preserve_range=True)
  return np.clip(out / 255.0, 0.0, 1.0).astype(np.float32)


def prepare(names: Sequence[str], size: int, mean, std):
  """-> (display images [P, size, size, 3] in [0, 1], normalised model inputs)."""
  shown = np.stack([center_square(load(n), size) for n in names])
  mean = np.asarray(mean, np.float32).reshape(1, 1, 1, -1)
  std = np.asarray(std, np.float32).reshape(1, 1, 1, -1)
  return shown, (shown - mean) / std
