"""Instance-level attention on the multi-object canvas: the number behind
001 Fig. 6 (App. A.2), plus Fig. 5's per-layer NMI and attention distance
(App. A.1) measured on the same canvases.

Fig. 6 shows that with a query patch on an object, 001's model attends to
that object instance and not to the other objects. Per block, with the
attention averaged over heads (as Fig. 6) and restricted to patch tokens
(attention_stats.patch_attention), over every query patch lying on an
instance:
- `own`: attention mass on the patches of the query's own instance;
- `other`: mass on the patches of the other instances;
- `background`: the rest (1 - own - other);
- `contrast`: mean own mass per own patch / mean other mass per other-
  instance patch, over queries whose canvas holds another instance. 1.0 is
  instance-blind attention (uniform or attending to "objects" alike); above
  1 the query's own instance is preferred, patch for patch.
A patch belongs to the instance covering most of its pixels (background
when background covers most).
"""
import json
import os
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.analysis import attention_stats

KEYS = ("own", "other", "background", "contrast")


def patch_instances(instance_masks: np.ndarray, grid) -> np.ndarray:
  """[N, H, W] instance ids -> [N, gh * gw] majority id per patch (ties: lower id)."""
  m = np.asarray(instance_masks)
  n, h, w = m.shape
  gh, gw = grid
  if h % gh or w % gw:
    raise ValueError(f"a {h}x{w} mask does not tile into a {gh}x{gw} patch grid.")
  blocks = m.reshape(n, gh, h // gh, gw, w // gw).transpose(0, 1, 3, 2, 4).reshape(n, gh * gw, -1)
  k = int(m.max()) + 1
  counts = (blocks[..., None] == np.arange(k)).sum(-2)                # [N, P, K]
  return counts.argmax(-1).astype(np.int32)


def instance_mass_sums(attn, inst):
  """attn [B, H, N, N] (rows = queries over patch keys, summing to 1), inst
  [B, N] -> sums over the batch's instance queries: [7] = (own, other,
  background, own density, other density on queries with other instances,
  #queries, #queries with other instances)."""
  a = attn.astype(jnp.float32).mean(1)                                # mean over heads
  q, k = inst[:, :, None], inst[:, None, :]
  is_q = (inst > 0).astype(jnp.float32)                               # [B, N]
  same = ((q == k) & (q > 0)).astype(jnp.float32)
  other = ((k > 0) & (k != q) & (q > 0)).astype(jnp.float32)
  own_m, other_m = (a * same).sum(-1), (a * other).sum(-1)
  bg_m = (a * (k == 0)).sum(-1)
  n_own, n_other = same.sum(-1), other.sum(-1)
  has_other = is_q * (n_other > 0)
  own_d = own_m / jnp.maximum(n_own, 1.0)
  other_d = other_m / jnp.maximum(n_other, 1.0)
  return jnp.stack([(own_m * is_q).sum(), (other_m * is_q).sum(), (bg_m * is_q).sum(),
                    (own_d * has_other).sum(), (other_d * has_other).sum(),
                    is_q.sum(), has_other.sum()])


def summarise(sums: np.ndarray) -> Dict[str, np.ndarray]:
  """[..., 7] sums -> {own, other, background, contrast} means."""
  s = np.asarray(sums, np.float64)
  nq, no = np.maximum(s[..., 5], 1.0), np.maximum(s[..., 6], 1.0)
  return {"own": s[..., 0] / nq, "other": s[..., 1] / nq, "background": s[..., 2] / nq,
          "contrast": (s[..., 3] / no) / np.maximum(s[..., 4] / no, 1e-12)}


def instance_statistics(encoder, images: np.ndarray, instance_masks: np.ndarray,
                        batch_size: int = 64) -> Dict[str, np.ndarray]:
  """Per block {own, other, background, contrast}: arrays [depth]."""
  probe = jax.eval_shape(lambda v, x: encoder.module.apply(v, x, train=False, return_attn=True),
                         encoder.variables, jnp.asarray(images[:1]))
  if "attn" not in probe:
    raise ValueError("instance attention needs an encoder that returns `attn` (a ViT).")
  grid = attention_stats._grid(probe, images)  # pylint: disable=protected-access
  inst = patch_instances(instance_masks, grid)

  @jax.jit
  def sums(variables, x, ids):
    out = encoder.module.apply(variables, x, train=False, return_attn=True)
    n = out["patch"].shape[1]
    return jnp.stack([instance_mass_sums(attention_stats.patch_attention(a, n), ids)
                      for a in out["attn"]])                          # [depth, 7]

  total = 0.0
  for s in range(0, len(images), batch_size):
    total = total + np.asarray(sums(encoder.variables, jnp.asarray(images[s:s + batch_size]),
                                    jnp.asarray(inst[s:s + batch_size])), np.float64)
  return summarise(total)


def canvas_analysis(models_: Dict[str, object], image_size: int, cfg, out_dir: str):
  """Instance attention and head statistics (Fig. 5) of every ViT in
  `models_` on `cfg.num_images` test canvases. Returns (results of
  models_["encoder"], files)."""
  from ssl_jax.evaluate import canvas_data  # pylint: disable=g-import-not-at-top
  cfg = {} if isinstance(cfg, bool) else dict(cfg)
  kw = canvas_data.canvas_kwargs(dict(cfg, image_size=cfg.get("image_size") or image_size))
  canvas = canvas_data.fashion_mnist_canvases("test", int(cfg.get("num_images", 256)), **kw)
  images = canvas.normalised()
  bs = int(cfg.get("batch_size", 64))
  batches = [images[s:s + bs] for s in range(0, len(images), bs)]
  inst, heads = {}, {}
  for name, m in models_.items():
    try:
      inst[name] = instance_statistics(m, images, canvas.instance_masks, bs)
    except ValueError:
      continue                                        # not a ViT: no attention
    heads[name] = attention_stats.head_statistics(m, batches)
  if "encoder" not in inst:
    return {}, {}
  files = save(inst, out_dir)
  files["head_stats"] = attention_stats.save(heads, os.path.join(out_dir, "head_stats"))
  e = inst["encoder"]
  results = {f"canvas_inst_{k}_last": float(e[k][-1]) for k in KEYS}
  results["canvas_inst_contrast_mean"] = float(np.mean(e["contrast"]))
  for k in ("distance", "nmi"):
    results[f"canvas_attn_{k}_last"] = float(np.mean(heads["encoder"][k][-1]))
  return results, files


def save(stats_by_model: Dict[str, Dict[str, np.ndarray]], out_dir: str) -> Dict[str, str]:
  """JSON of every model's per-block numbers and a plot of own / other mass
  and contrast per block."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "instance_attention.json")
  with open(path, "w") as f:
    json.dump({m: {k: np.asarray(v).tolist() for k, v in s.items()}
               for m, s in stats_by_model.items()}, f)
  fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=120)
  for name, s in stats_by_model.items():
    x = np.arange(1, len(s["own"]) + 1)
    line, = axes[0].plot(x, s["own"], "-o", ms=3, label=f"{name} own")
    axes[0].plot(x, s["other"], "--o", ms=3, color=line.get_color(), label=f"{name} other")
    axes[1].plot(x, s["contrast"], "-o", ms=3, color=line.get_color(), label=name)
  axes[0].set_ylabel("attention mass")
  axes[1].set_ylabel("own / other mass per patch")
  axes[1].axhline(1.0, color="gray", lw=0.8)
  depth = max(len(s["own"]) for s in stats_by_model.values())
  for ax in axes:
    ax.set_xticks(np.arange(1, depth + 1))
    ax.set_xlabel("block")
    ax.legend(fontsize=6)
  fig.tight_layout()
  png = os.path.join(out_dir, "instance_attention.png")
  fig.savefig(png)
  plt.close(fig)
  return {"json": path, "png": png}

