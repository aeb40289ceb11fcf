"""PyTorch interop without torch at run time.

- `timm_vit`: ssl_jax ViT params <-> timm `VisionTransformer` state dicts,
  safetensors files in timm names and layouts.
- `torch_pickle`: reads `.pth` zip pickles (official MAE / DINO checkpoints)
  with a restricted unpickler into numpy arrays.
"""

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
