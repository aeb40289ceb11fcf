"""PyTorch interop without torch at run time.

- `timm_vit`: ssl_jax ViT params <-> timm `VisionTransformer` state dicts,
  safetensors files in timm names and layouts.
- `torch_pickle`: reads `.pth` zip pickles (official MAE / DINO checkpoints)
  with a restricted unpickler into numpy arrays.
- `dinov2`: official DINOv2 checkpoints (LayerScale, registers) and the
  checkpoint-file loader; `pos_embed`: DINO / DINOv2 position-table resampling.
"""

import functools

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def load_encoder(path: str, dtype: str = "float32", image_size=None):
  """An ssl_jax `export` folder, or a timm safetensors / official MAE, DINO or
  DINOv2 `.pth` file (a ViT), as an `export.Encoder`: what frozen teachers and
  analysis references accept. `image_size` (int or (h, w)) resamples a
  checkpoint's learned position table to that input size as DINO / DINOv2
  interpolate it (default: the checkpoint's own grid, 518 px for DINOv2)."""
  if str(path).endswith(CHECKPOINT_SUFFIXES):
    from ssl_jax.interop import dinov2  # pylint: disable=g-import-not-at-top
    return dinov2.encoder_from_checkpoint(str(path), image_size=image_size, dtype=dtype)
  from ssl_jax import export  # pylint: disable=g-import-not-at-top
  return export.load(path, dtype)


@functools.lru_cache(maxsize=4)
def load_teacher(path: str, dtype: str = "float32", image_size=None):
  """`load_encoder`, read from disk once per process: a method's init takes the
  teacher's variables as constants and its loss rebuilds the teacher's module
  at every trace."""
  return load_encoder(path, dtype, image_size)
