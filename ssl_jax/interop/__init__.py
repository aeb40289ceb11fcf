"""PyTorch interop without torch at run time.

- `timm_vit`: ssl_jax ViT params <-> timm `VisionTransformer` state dicts,
  safetensors files in timm names and layouts.
- `torch_pickle`: reads `.pth` zip pickles (official MAE / DINO checkpoints)
  with a restricted unpickler into numpy arrays.
"""

import functools

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def load_encoder(path: str, dtype: str = "float32"):
  """An ssl_jax `export` folder, or a timm safetensors / official MAE or DINO
  `.pth` file (a ViT), as an `export.Encoder`: what frozen teachers and
  analysis references accept."""
  if str(path).endswith(CHECKPOINT_SUFFIXES):
    from ssl_jax.interop import timm_vit  # pylint: disable=g-import-not-at-top
    return timm_vit.encoder_from_checkpoint(path, dtype=dtype)
  from ssl_jax import export  # pylint: disable=g-import-not-at-top
  return export.load(path, dtype)


@functools.lru_cache(maxsize=4)
def load_teacher(path: str, dtype: str = "float32"):
  """`load_encoder`, read from disk once per process: a method's init takes the
  teacher's variables as constants and its loss rebuilds the teacher's module
  at every trace."""
  return load_encoder(path, dtype)
