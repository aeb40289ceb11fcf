"""Official DINOv2 ViT checkpoints (facebookresearch/dinov2 hub files such as
`dinov2_vits14_pretrain.pth` / `dinov2_vits14_reg4_pretrain.pth`) as ssl_jax
ViTs, and the checkpoint-file entry point of `interop.load_encoder`.

The DINOv2 layout is timm's (timm_vit) plus:
- `blocks.{i}.ls1.gamma` / `ls2.gamma`: LayerScale on both residual branches
  (-> the ViT's `layer_scale` option, params `block{i}/ls{1,2}/gamma`; timm's
  names too, so timm_vit maps them);
- `register_tokens` [1, R, D] (the `_reg4` models): inserted after CLS,
  after the position embedding (-> the ViT's prefix tokens: `proxy_tokens`,
  `num_prefix` = 1 + R, the layout SemanticMIM's proxies share);
- `mask_token` [1, D]: used only in training (kept in `unused_keys`);
- `pos_embed` for a 37x37 grid (518 px, patch 14), CLS slot first: the CLS
  slot is folded into `cls_token` (timm_vit), the patch table is resampled
  to the grid in use as DINOv2's `interpolate_pos_encoding` does
  (interop/pos_embed.py; antialiased without offset for the register models,
  as their hub entries set);
- chunked blocks (`blocks.{chunk}.{i}.`, FSDP training checkpoints) are
  renamed to `blocks.{i}.`.
ViT-g/14's SwiGLU FFN (`mlp.w12` / `mlp.w3`) has no ssl_jax equivalent and
is refused with a clear error.
"""
import os
import re
from typing import Optional, Sequence, Union

import numpy as np

from ssl_jax import export as export_lib
from ssl_jax import models
from ssl_jax.interop import pos_embed, timm_vit

# DINOv2 head counts by width (vit_small / base / large / giant2).
DINOV2_HEADS = {384: 6, 768: 12, 1024: 16, 1536: 24}


def is_dinov2(sd) -> bool:
  return any(k.endswith((".ls1.gamma", ".ls2.gamma")) for k in sd) or "register_tokens" in sd


def _unchunk(sd):
  return {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in sd.items()}


def from_dinov2(state, num_heads: Optional[int] = None):
  """DINOv2 state dict -> (model_cfg, variables, extras)."""
  sd = _unchunk(timm_vit._strip_common_prefix(dict(state)))  # pylint: disable=protected-access
  if any(".mlp.w12." in k for k in sd):
    raise ValueError("this DINOv2 checkpoint uses the SwiGLU FFN (ViT-g/14: mlp.w12 / mlp.w3), "
                     "which ssl_jax's ViT does not implement; ViT-S/B/L/14 (plain MLP) load.")
  width = int(np.shape(sd["patch_embed.proj.weight"])[0]) if "patch_embed.proj.weight" in sd else 0
  model_cfg, variables, extras = timm_vit.from_timm(
      sd, num_heads=num_heads or DINOV2_HEADS.get(width), posemb="learn")
  params = variables["params"]
  missing = [f"blocks.{i}.{n}.gamma" for i in range(model_cfg["depth"]) for n in ("ls1", "ls2")
             if f"blocks.{i}.{n}.gamma" not in sd]
  if missing and len(missing) < 2 * model_cfg["depth"]:
    raise KeyError(f"DINOv2 checkpoint has LayerScale in some blocks but not {missing[:4]}.")
  reg = sd.get("register_tokens")
  if reg is not None:
    params["proxy_tokens"] = np.asarray(reg, np.float32)
    extras.pop("register_tokens")
  # timm_vit.from_timm took the LayerScale gammas (timm's names are DINOv2's).
  model_cfg["num_prefix"] = 1 + (0 if reg is None else int(reg.shape[1]))
  grid = timm_vit._square_grid(params["pos_embedding"].shape[1])  # pylint: disable=protected-access
  timm_vit.check_tree(model_cfg, params, grid)
  return model_cfg, variables, extras


def load_checkpoint(path: str, num_heads: Optional[int] = None, key: Optional[str] = None):
  """timm safetensors, or a `.pth` of MAE / DINO (timm layout) or DINOv2."""
  if path.endswith(".safetensors"):
    return timm_vit.load_safetensors(path, num_heads)
  from ssl_jax.interop import torch_pickle  # pylint: disable=g-import-not-at-top
  return from_state_dict(torch_pickle.state_dict(torch_pickle.load(path), key), num_heads)


def from_state_dict(sd, num_heads: Optional[int] = None):
  """A state dict already read from a `.pth`: DINOv2 layout, else timm's (MAE / DINO)."""
  if is_dinov2(sd):
    return from_dinov2(sd, num_heads)
  return timm_vit.from_timm(sd, num_heads)


def resize_to(model_cfg, variables, image_size: Union[int, Sequence[int]]):
  """Resamples a learned position table to the patch grid of `image_size`
  (DINO / DINOv2 run-time interpolation, done once at load). Returns
  (variables, (src_grid, dst_grid)) or (variables, None) when unchanged."""
  params = variables["params"]
  if "pos_embedding" not in params:
    return variables, None              # sin-cos / RoPE: computed for any grid
  hw = (image_size, image_size) if np.ndim(image_size) == 0 else tuple(image_size)
  p = int(model_cfg["patch_size"])
  if hw[0] % p or hw[1] % p:
    raise ValueError(f"image size {hw} is not a multiple of the checkpoint's patch size {p}.")
  src = timm_vit._square_grid(params["pos_embedding"].shape[1])  # pylint: disable=protected-access
  dst = (hw[0] // p, hw[1] // p)
  if tuple(src) == dst:
    return variables, None
  mode = "antialias" if model_cfg.get("num_prefix", 1) > 1 else "dino"   # the reg4 hub entries
  table = pos_embed.resample(np.asarray(params["pos_embedding"][0]), src, dst, mode)
  new = dict(params, pos_embedding=table[None])
  return dict(variables, params=new), (src, dst)


def encoder_from_checkpoint(path: str, image_size=None, num_heads: Optional[int] = None,
                            key: Optional[str] = None, dtype: str = "float32",
                            state_dict=None) -> export_lib.Encoder:
  """A checkpoint file as an `export.Encoder`; `image_size` (int or (h, w))
  resamples a learned position table to that input size. `state_dict`: the
  file's tensors when the caller has read them already."""
  model_cfg, variables, extras = (load_checkpoint(path, num_heads, key) if state_dict is None
                                  else from_state_dict(state_dict, num_heads))
  info = {"source": os.path.abspath(path), "unused_keys": sorted(extras)}
  if image_size:
    variables, grids = resize_to(model_cfg, variables, image_size)
    if grids:
      info["pos_embed_grid"] = {"checkpoint": list(grids[0]), "resampled": list(grids[1])}
    if np.ndim(image_size) == 0:
      info["image_size"] = int(image_size)      # the timm export's default grid
  return export_lib.Encoder(models.build(model_cfg, dtype), variables, model_cfg, info)
