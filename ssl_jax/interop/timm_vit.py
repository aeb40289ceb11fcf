"""ssl_jax ViT params <-> timm `VisionTransformer` state dicts.

Names and layouts are timm's (also MAE's and DINO's `vision_transformer`):
`patch_embed.proj.weight` OIHW, `cls_token` [1, 1, D], `pos_embed` [1, 1+N, D]
whose first (CLS) slot is zeros for fixed sin-cos embeddings as in MAE,
`blocks.{i}.norm1/norm2`, the fused `blocks.{i}.attn.qkv.weight` [3D, D]
(rows: q, k, v, each head-major), `attn.proj`, `mlp.fc1/fc2` ([out, in]
torch Linear layout), `norm`, an optional classifier `head`, and LayerScale's
`blocks.{i}.ls1.gamma` / `ls2.gamma` (timm `init_values`, DINOv2) when the
ViT has `layer_scale`.
K > 1 prefix tokens (SemanticMIM proxies, DINOv2 registers) map to timm's
`reg_tokens` [1, K-1, D] (timm `VisionTransformer(reg_tokens=K-1)`), whose
`pos_embed` then has K zero prefix slots (timm's default, no_embed_class=False).

Importing folds a non-zero CLS slot of `pos_embed` (DINO, timm's learned
embeddings) into `cls_token`: timm adds it to the CLS token only, so the
features are unchanged. Sin-cos embeddings are recognised and kept fixed;
a table that differs from sin-cos is imported as learned even when the
metadata says sin-cos. Non-finite weights and mis-shaped tensors are refused
with the tensor's name.
"""
import json
import os
import re
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import export as export_lib
from ssl_jax import models
from ssl_jax.ops import posemb as posemb_lib

# timm / DeiT / MAE head counts by width, used when a checkpoint does not say.
# 002's ViT-Tiny has 12 heads, not timm's 3: pass num_heads for it.
DEFAULT_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}
SAFETENSORS_NAME = "timm_vit.safetensors"


def _square_grid(n: int) -> Tuple[int, int]:
  g = int(round(np.sqrt(n)))
  if g * g != n:
    raise ValueError(f"{n} position embeddings do not form a square grid; "
                     "pass image_size / grid explicitly.")
  return g, g


def sincos_table(grid: Tuple[int, int], width: int) -> np.ndarray:
  return np.asarray(posemb_lib.sincos_2d(posemb_lib.grid_coords(*grid), width), np.float32)


def to_timm(params: Dict[str, Any], model_cfg: Dict[str, Any], grid: Tuple[int, int] = None,
            head: Optional[Dict[str, Any]] = None) -> Dict[str, np.ndarray]:
  """ssl_jax ViT `params` -> timm state dict (numpy, float32)."""
  a = lambda x: np.ascontiguousarray(np.asarray(x, np.float32))
  posemb = model_cfg.get("posemb", "sincos2d")
  if posemb == "rope":
    raise ValueError("a RoPE ViT has no timm VisionTransformer equivalent; "
                     "export works for posemb sincos2d | learn | none.")
  kernel = np.asarray(params["patch_embed"]["kernel"])          # [p, p, C, D]
  width = kernel.shape[-1]
  sd = {"patch_embed.proj.weight": a(kernel.transpose(3, 2, 0, 1)),
        "patch_embed.proj.bias": a(params["patch_embed"]["bias"]),
        "cls_token": a(params["cls_token"])}
  num_prefix = 1
  if "proxy_tokens" in params:
    sd["reg_tokens"] = a(params["proxy_tokens"])
    num_prefix += sd["reg_tokens"].shape[1]
  if posemb == "learn":
    patch_pos = np.asarray(params["pos_embedding"])[0]
  else:
    if grid is None:
      raise ValueError("exporting fixed sin-cos / no position embeddings needs the patch "
                       "grid (image_size // patch_size).")
    patch_pos = (sincos_table(grid, width) if posemb == "sincos2d"
                 else np.zeros((grid[0] * grid[1], width), np.float32))
  sd["pos_embed"] = a(np.concatenate([np.zeros((num_prefix, width)), patch_pos])[None])
  depth = len([k for k in params if re.fullmatch(r"block\d+", k)])
  for i in range(depth):
    b, t = params[f"block{i}"], f"blocks.{i}."
    at = b["attn"]
    for n in ("norm1", "norm2"):
      sd[t + n + ".weight"], sd[t + n + ".bias"] = a(b[n]["scale"]), a(b[n]["bias"])
    qkv = [np.asarray(at[n]["kernel"]).reshape(width, width).T for n in ("query", "key", "value")]
    sd[t + "attn.qkv.weight"] = a(np.concatenate(qkv, 0))
    sd[t + "attn.qkv.bias"] = a(np.concatenate(
        [np.asarray(at[n]["bias"]).reshape(width) for n in ("query", "key", "value")]))
    sd[t + "attn.proj.weight"] = a(np.asarray(at["out"]["kernel"]).T)
    sd[t + "attn.proj.bias"] = a(at["out"]["bias"])
    for n in ("fc1", "fc2"):
      sd[t + f"mlp.{n}.weight"] = a(np.asarray(b["mlp"][n]["kernel"]).T)
      sd[t + f"mlp.{n}.bias"] = a(b["mlp"][n]["bias"])
    for n in ("ls1", "ls2"):
      if n in b:
        sd[t + f"{n}.gamma"] = a(b[n]["gamma"])
  sd["norm.weight"], sd["norm.bias"] = a(params["norm"]["scale"]), a(params["norm"]["bias"])
  if head is not None:
    sd["head.weight"], sd["head.bias"] = a(np.asarray(head["kernel"]).T), a(head["bias"])
  return sd


def _strip_common_prefix(sd):
  for prefix in ("module.", "model.", "encoder.", "backbone."):
    if sd and all(k.startswith(prefix) for k in sd):
      sd = {k[len(prefix):]: v for k, v in sd.items()}
  return sd


def from_timm(state: Dict[str, np.ndarray], num_heads: Optional[int] = None,
              posemb: Optional[str] = None):
  """timm state dict -> (model_cfg, variables, extras).

  `extras` holds what the encoder does not use (classifier `head`, MAE's
  `fc_norm` and decoder, DINO's projection head, ...). `posemb` defaults to
  "sincos2d" when the patch slots of `pos_embed` equal the sin-cos table,
  else "learn".
  """
  sd = {k: np.asarray(v) for k, v in _strip_common_prefix(dict(state)).items()}
  f32 = lambda x: np.asarray(x, np.float32)
  need = ("patch_embed.proj.weight", "cls_token", "pos_embed")
  missing = [k for k in need if k not in sd]
  if missing:
    raise KeyError(f"not a timm VisionTransformer state dict: missing {missing}; "
                   f"it has e.g. {sorted(sd)[:8]}.")
  used = set()
  def take(k):
    used.add(k)
    return sd[k]
  proj = f32(take("patch_embed.proj.weight"))                   # [D, C, p, p]
  if proj.ndim != 4 or proj.shape[2] != proj.shape[3]:
    raise ValueError(f"patch_embed.proj.weight has shape {proj.shape}; expected "
                     "[width, channels, patch, patch].")
  width, _, patch, _ = proj.shape
  depth = 1 + max([int(m.group(1)) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m],
                  default=-1)
  heads = num_heads or DEFAULT_HEADS.get(width)
  if heads is None:
    raise ValueError(f"width {width} has no default head count; pass num_heads.")
  pos = f32(take("pos_embed"))
  if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != width:
    raise ValueError(f"pos_embed has shape {pos.shape}; expected [1, tokens, {width}].")
  pos = pos[0]
  n_pos = pos.shape[0]
  regs = f32(take("reg_tokens")) if "reg_tokens" in sd else np.zeros((1, 0, width), np.float32)
  k = 1 + regs.shape[1]                                         # prefix tokens: CLS + registers
  has_prefix_slots = n_pos > k and int(round(np.sqrt(n_pos - k))) ** 2 == n_pos - k
  prefix_slots, patch_pos = ((pos[:k], pos[k:]) if has_prefix_slots
                             else (np.zeros((k, width), np.float32), pos))
  grid = _square_grid(patch_pos.shape[0])
  fixed = {"sincos2d": sincos_table(grid, width), "none": np.zeros_like(patch_pos)}
  if posemb is None:
    posemb = ("sincos2d" if np.allclose(patch_pos, fixed["sincos2d"], atol=1e-4)
              else "learn")
  elif posemb in fixed and not np.allclose(patch_pos, fixed[posemb], atol=1e-4):
    # Metadata says fixed, but the file's table differs (e.g. fine-tuned
    # embeddings): the weights in the file win, as a learned table.
    posemb = "learn"

  params = {"patch_embed": {"kernel": proj.transpose(2, 3, 1, 0),
                            "bias": f32(take("patch_embed.proj.bias"))},
            "cls_token": f32(take("cls_token")) + prefix_slots[None, :1]}
  if k > 1:
    params["proxy_tokens"] = regs + prefix_slots[None, 1:]
  if posemb == "learn":
    params["pos_embedding"] = patch_pos[None].astype(np.float32)
  hd = width // heads
  mlp_hidden = None
  for i in range(depth):
    t = f"blocks.{i}."
    qkv_w = f32(take(t + "attn.qkv.weight"))                    # [3D, D]
    qkv_b = f32(take(t + "attn.qkv.bias")) if t + "attn.qkv.bias" in sd else np.zeros(3 * width)
    if qkv_w.shape != (3 * width, width) or qkv_b.shape != (3 * width,):
      raise ValueError(f"{t}attn.qkv.weight / .bias have shapes {qkv_w.shape} / {qkv_b.shape}; "
                       f"a ViT of width {width} needs ({3 * width}, {width}) / ({3 * width},).")
    attn = {}
    for j, n in enumerate(("query", "key", "value")):
      attn[n] = {"kernel": qkv_w[j * width:(j + 1) * width].T.reshape(width, heads, hd),
                 "bias": qkv_b[j * width:(j + 1) * width].reshape(heads, hd)}
    attn["out"] = {"kernel": f32(take(t + "attn.proj.weight")).T,
                   "bias": f32(take(t + "attn.proj.bias"))}
    blk = {"norm1": {"scale": f32(take(t + "norm1.weight")), "bias": f32(take(t + "norm1.bias"))},
           "norm2": {"scale": f32(take(t + "norm2.weight")), "bias": f32(take(t + "norm2.bias"))},
           "attn": attn,
           "mlp": {n: {"kernel": f32(take(t + f"mlp.{n}.weight")).T,
                       "bias": f32(take(t + f"mlp.{n}.bias"))} for n in ("fc1", "fc2")}}
    for n in ("ls1", "ls2"):
      if t + f"{n}.gamma" in sd:
        blk[n] = {"gamma": f32(take(t + f"{n}.gamma"))}
    mlp_hidden = blk["mlp"]["fc1"]["kernel"].shape[1]
    params[f"block{i}"] = blk
  if "norm.weight" in sd:
    params["norm"] = {"scale": f32(take("norm.weight")), "bias": f32(take("norm.bias"))}
  else:
    # Global-pool fine-tuned MAE checkpoints replace `norm` with `fc_norm`
    # after pooling: the token norm is then the identity.
    params["norm"] = {"scale": np.ones(width, np.float32), "bias": np.zeros(width, np.float32)}
  model_cfg = dict(name="vit", variant="Ti", width=int(width), depth=int(depth),
                   num_heads=int(heads), patch_size=int(patch),
                   mlp_ratio=float(mlp_hidden / width) if mlp_hidden else 4.0, posemb=posemb,
                   num_prefix=int(k))
  if "block0" in params and "ls1" in params["block0"]:
    model_cfg["layer_scale"] = 1.0      # any value: the loaded gammas replace the init
  extras = {k: v for k, v in sd.items() if k not in used}
  bad = sorted(k for k in used if not np.isfinite(f32(sd[k])).all())
  if bad:
    raise ValueError(f"the checkpoint holds NaN/Inf weights in {len(bad)} tensors: "
                     f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; refusing to load them.")
  check_tree(model_cfg, params, grid)
  return model_cfg, {"params": params}, extras


def check_tree(model_cfg: Dict[str, Any], params, grid: Tuple[int, int]):
  """Raises unless `params` has exactly the paths and shapes of a freshly
  initialised ssl_jax ViT of `model_cfg`."""
  module = models.build(model_cfg)
  p = model_cfg["patch_size"]
  x = jax.ShapeDtypeStruct((1, grid[0] * p, grid[1] * p, 3), jnp.float32)
  ref = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)["params"]
  flat = lambda t: {jax.tree_util.keystr(k): tuple(np.shape(v))
                    for k, v in jax.tree_util.tree_flatten_with_path(t)[0]}
  want, got = flat(ref), flat(params)
  bad = sorted(set(want) ^ set(got)) + sorted(k for k in set(want) & set(got) if want[k] != got[k])
  if bad:
    raise ValueError(f"imported params do not match ssl_jax ViT {model_cfg}: {bad[:10]}")


def save_safetensors(path: str, params, model_cfg: Dict[str, Any], grid: Tuple[int, int] = None,
                     head=None) -> str:
  """Writes timm-format safetensors; the ssl_jax model config rides in the
  metadata so `load_safetensors` needs no num_heads."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  if grid is None and model_cfg.get("posemb", "sincos2d") == "learn":
    grid = _square_grid(np.asarray(params["pos_embedding"]).shape[1])
  sd = to_timm(params, model_cfg, grid, head)
  meta = {"format": "pt", "ssl_jax_model": json.dumps(dict(model_cfg)),
          "grid": json.dumps(list(grid) if grid else None)}
  save_file(sd, path, metadata=meta)
  return path


def load_safetensors(path: str, num_heads: Optional[int] = None):
  """timm-format safetensors (ours or timm's) -> (model_cfg, variables, extras)."""
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  with safe_open(path, framework="numpy") as f:
    meta = f.metadata() or {}
    sd = {k: f.get_tensor(k) for k in f.keys()}
  ours = json.loads(meta["ssl_jax_model"]) if "ssl_jax_model" in meta else {}
  model_cfg, variables, extras = from_timm(
      sd, num_heads=num_heads or ours.get("num_heads"), posemb=ours.get("posemb"))
  if ours:
    model_cfg = dict(ours, **{k: model_cfg[k] for k in ("width", "depth", "num_heads",
                                                          "patch_size", "mlp_ratio", "posemb",
                                                          "num_prefix")},
                     layer_scale=model_cfg.get("layer_scale"))
  return model_cfg, variables, extras


def load_checkpoint(path: str, num_heads: Optional[int] = None, key: Optional[str] = None):
  """`.safetensors` or a PyTorch `.pth` / `.pt` / `.bin` (official MAE: weights
  under "model"; DINO: a bare state dict, or "teacher" in full checkpoints)."""
  if path.endswith(".safetensors"):
    return load_safetensors(path, num_heads)
  from ssl_jax.interop import torch_pickle  # pylint: disable=g-import-not-at-top
  return from_timm(torch_pickle.state_dict(torch_pickle.load(path), key), num_heads)


def _as_encoder(model_cfg, variables, extras, source: str, dtype: str) -> export_lib.Encoder:
  return export_lib.Encoder(models.build(model_cfg, dtype), variables, model_cfg,
                            {"source": os.path.abspath(source), "unused_keys": sorted(extras)})


def encoder_from_checkpoint(path: str, num_heads: Optional[int] = None, key: Optional[str] = None,
                            dtype: str = "float32") -> export_lib.Encoder:
  return _as_encoder(*load_checkpoint(path, num_heads, key), path, dtype)


def encoder_from_state_dict(sd: Dict[str, np.ndarray], source: str,
                            num_heads: Optional[int] = None,
                            dtype: str = "float32") -> export_lib.Encoder:
  """A state dict already read from `source` (ssl_jax.interop.load_encoder)."""
  return _as_encoder(*from_timm(sd, num_heads), source, dtype)


def _trained_image_size(info) -> Optional[int]:
  """data.image_size of the pre-training config an export carries, if any."""
  try:
    cfg = info.get("config")
    return int((json.loads(cfg) if isinstance(cfg, str) else cfg)["data"]["image_size"])
  except (TypeError, KeyError, ValueError):
    return None


def exportable(model_cfg: Dict[str, Any]) -> bool:
  """timm's VisionTransformer has an equivalent: a ViT without RoPE."""
  return model_cfg.get("name") == "vit" and model_cfg.get("posemb", "sincos2d") != "rope"


def export_encoder(encoder: export_lib.Encoder, path: str, image_size: int = None) -> str:
  """An ssl_jax ViT Encoder -> timm safetensors at `path` (a file, or a
  folder that gets `timm_vit.safetensors`)."""
  cfg = dict(encoder.model_cfg)
  if cfg.get("name") != "vit":
    raise ValueError(f"timm export supports ViT encoders only, got model {cfg.get('name')!r}.")
  if os.path.isdir(path):
    path = os.path.join(path, SAFETENSORS_NAME)
  size = image_size or encoder.info.get("image_size") or _trained_image_size(encoder.info)
  p = encoder.module.patch_size
  grid = (size // p, size // p) if size else None
  full_cfg = dict(cfg, width=encoder.module.width, depth=encoder.module.depth,
                  num_heads=encoder.module.num_heads, patch_size=p,
                  mlp_ratio=encoder.module.mlp_ratio, posemb=encoder.module.posemb,
                  num_prefix=encoder.module.num_prefix)
  return save_safetensors(path, encoder.variables["params"], full_cfg, grid)
