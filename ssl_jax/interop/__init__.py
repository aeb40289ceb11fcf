"""PyTorch interop without torch at run time.

- `timm_vit`: ssl_jax ViT params <-> timm `VisionTransformer` state dicts,
  safetensors files in timm names and layouts.
- `torch_pickle`: reads `.pth` zip pickles (official MAE / DINO checkpoints)
  with a restricted unpickler into numpy arrays.
- `torchvision_resnet`: torchvision-layout ResNet state dicts (DINO / SimCLR
  / MoCo ResNet-50) -> ssl_jax ResNet variables.
"""

import functools

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def load_encoder(path: str, dtype: str = "float32"):
  """An ssl_jax `export` folder, a timm safetensors / official MAE or DINO
  `.pth` file (a ViT), or a torchvision-layout ResNet `.pth` (DINO / SimCLR
  ResNet-50), as an `export.Encoder`: what frozen teachers and analysis
  references accept."""
  path = str(path)
  if path.endswith(CHECKPOINT_SUFFIXES):
    from ssl_jax.interop import timm_vit  # pylint: disable=g-import-not-at-top
    if path.endswith(".safetensors"):
      return timm_vit.encoder_from_checkpoint(path, dtype=dtype)
    # pylint: disable=g-import-not-at-top
    from ssl_jax.interop import torch_pickle, torchvision_resnet
    sd = torch_pickle.state_dict(torch_pickle.load(path))   # read once, then dispatch
    if torchvision_resnet.matches(sd):
      return torchvision_resnet.encoder_from_state_dict(sd, path, dtype)
    return timm_vit.encoder_from_state_dict(sd, path, dtype=dtype)
  from ssl_jax import export  # pylint: disable=g-import-not-at-top
  return export.load(path, dtype)


@functools.lru_cache(maxsize=4)
def load_teacher(path: str, dtype: str = "float32"):
  """`load_encoder`, read from disk once per process: a method's init takes the
  teacher's variables as constants and its loss rebuilds the teacher's module
  at every trace."""
  return load_encoder(path, dtype)
