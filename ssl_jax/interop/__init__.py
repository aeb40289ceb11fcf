"""PyTorch interop without torch at run time.

- `timm_vit`: ssl_jax ViT params <-> timm `VisionTransformer` state dicts,
  safetensors files in timm names and layouts.
- `torch_pickle`: reads `.pth` zip pickles (official MAE / DINO checkpoints)
  with a restricted unpickler into numpy arrays.
- `torchvision_resnet`: torchvision-layout ResNet state dicts (DINO / SimCLR
  / MoCo ResNet-50) -> ssl_jax ResNet variables.
- `dinov2`: official DINOv2 checkpoints (LayerScale, registers) and the
  checkpoint-file loader; `pos_embed`: DINO / DINOv2 position-table resampling.
"""

import functools

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def load_encoder(path: str, dtype: str = "float32", image_size=None):
  """An ssl_jax `export` folder, a timm safetensors / official MAE, DINO or
  DINOv2 `.pth` file (a ViT), or a torchvision-layout ResNet `.pth` (DINO /
  SimCLR ResNet-50), as an `export.Encoder`: what frozen teachers and analysis
  references accept. `image_size` (int or (h, w)) resamples a ViT checkpoint's
  learned position table to that input size as DINO / DINOv2 interpolate it
  (default: the checkpoint's own grid, 518 px for DINOv2)."""
  path = str(path)
  if path.endswith(CHECKPOINT_SUFFIXES):
    # pylint: disable=g-import-not-at-top
    from ssl_jax.interop import dinov2, torch_pickle, torchvision_resnet
    sd = None
    if not path.endswith(".safetensors"):
      sd = torch_pickle.state_dict(torch_pickle.load(path))   # read once, then dispatch
      if torchvision_resnet.matches(sd):
        return torchvision_resnet.encoder_from_state_dict(sd, path, dtype)
    return dinov2.encoder_from_checkpoint(path, image_size=image_size, dtype=dtype,
                                          state_dict=sd)
  from ssl_jax import export  # pylint: disable=g-import-not-at-top
  return export.load(path, dtype)


@functools.lru_cache(maxsize=4)
def load_teacher(path: str, dtype: str = "float32", image_size=None):
  """`load_encoder`, read from disk once per process: a method's init takes the
  teacher's variables as constants and its loss rebuilds the teacher's module
  at every trace."""
  return load_encoder(path, dtype, image_size)
