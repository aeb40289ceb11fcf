"""Representation and attention analyses over exported encoders.

- `cka`: layer-wise minibatch CKA between two encoders (002 Sec. 4.2, Eq. 1).
- `attention_stats`: per-head attention distance / entropy (002 Eq. 2-4) and
  query-key normalised mutual information (001 App. A.1).
- `attention_maps`: attention of chosen queries overlaid on real photos.
- `spatial_corr`: spatial correlation of output feature maps (000 App. D).
- `instance_attention`: on multi-object canvases, attention a patch puts on
  its own instance vs the others (001 Fig. 6) and Fig. 5's NMI / distance.
- `photos`: the sample photos the figures use.
- `run`: the "analyze" protocol, every analysis above as PNG + JSON.

Plots use matplotlib's Agg backend, so nothing here needs a display.
"""
import hashlib
import json
import os
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np


def fingerprint(encoder) -> str:
  """Short hash of an encoder's weights: names its output folder, so the
  pre-trained encoder and its random-init twin do not overwrite each other."""
  h = hashlib.sha1()
  for leaf in jax.tree.leaves(encoder.variables)[:8]:
    h.update(np.asarray(leaf, np.float32).ravel()[:256].tobytes())
  return h.hexdigest()[:8]


def returns(encoder, key: str, images, **kwargs) -> bool:
  """Whether the encoder's output holds `key` when applied with `kwargs`."""
  try:
    out = jax.eval_shape(lambda v, x: encoder.module.apply(v, x, train=False, **kwargs),
                         encoder.variables, jnp.asarray(images[:1]))
  except TypeError:
    return False
  return key in out


def load_reference(path: str, image_size: int = None):
  """An export folder, a timm safetensors file or an MAE / DINO / DINOv2
  `.pth` (position table resampled to `image_size`)."""
  from ssl_jax import interop  # pylint: disable=g-import-not-at-top
  return interop.load_encoder(path, image_size=image_size)


def run(config, encoder, data, mesh) -> Dict[str, float]:
  """Protocol "analyze": every analysis on `data.test_images[:num_images]`,
  PNG + JSON under `<output_dir>/<model>-<fingerprint>/`.

  `config.eval.analyze`: num_images, batch_size, output_dir, references
  ({name: export path or checkpoint} compared in CKA / attention / spatial
  plots), compare_random_init (add a random-init twin as a reference),
  map_blocks (blocks whose attention maps are drawn on the photos), photos,
  canvas (instance attention and NMI / distance on Fashion-MNIST canvases:
  {num_images, batch_size, num_items, scale, ...}; off when unset).
  """
  del mesh
  from ssl_jax.analysis import attention_maps, attention_stats, cka, spatial_corr  # pylint: disable=g-import-not-at-top
  from ssl_jax.evaluate import segmentation_data  # pylint: disable=g-import-not-at-top
  a = config.eval.analyze
  images = np.asarray(data.test_images[:a.num_images])
  batches = [images[s:s + a.batch_size] for s in range(0, len(images), a.batch_size)]
  batches = [b for b in batches if len(b) >= 4]          # unbiased HSIC needs n >= 4
  name = encoder.model_cfg.get("name", "encoder")
  out_dir = os.path.join(a.get("output_dir") or config.eval.get("output_dir") or "analysis",
                         f"{name}-{fingerprint(encoder)}")
  os.makedirs(out_dir, exist_ok=True)
  models_ = {"encoder": encoder}
  for ref_name, path in dict(a.get("references") or {}).items():
    models_[ref_name] = load_reference(path, images.shape[1])
  if a.get("compare_random_init", True):
    from ssl_jax.evaluate import random_init  # pylint: disable=g-import-not-at-top
    # "random-init", not "random_init": the eval table strips "_random_init".
    models_["random-init"] = random_init(encoder, images, config.seed)

  results, files = {}, {}
  vit = returns(encoder, "attn", images, return_attn=True)
  if vit:
    stats = {n: attention_stats.head_statistics(m, batches) for n, m in models_.items()
             if returns(m, "attn", images, return_attn=True)}
    files["attention_stats"] = attention_stats.save(stats, out_dir)
    for k in ("distance", "entropy", "nmi"):
      results[f"attn_{k}_last"] = float(np.mean(stats["encoder"][k][-1]))
      results[f"attn_{k}_mean"] = float(np.mean(stats["encoder"][k]))
    mean, std = segmentation_data.pixel_stats(config, data)
    if getattr(encoder.module, "num_prefix", 1) > 1:          # SemanticMIM proxies (003 Fig. 9)
      from ssl_jax.analysis import proxy_exclusivity  # pylint: disable=g-import-not-at-top
      excl = proxy_exclusivity.exclusivity(encoder, batches)
      files["proxy_exclusivity"] = proxy_exclusivity.save(excl, out_dir)
      results["proxy_mean_pairwise_cosine"] = excl["mean_pairwise_cosine"]
    files["attention_maps"] = attention_maps.save_photo_maps(
        encoder, out_dir, images.shape[1], mean, std, tuple(a.get("map_blocks", (-1,))),
        tuple(a.get("photos", attention_maps.photos_lib.PHOTOS)))
  if returns(encoder, "normed", images, return_hidden=True):
    for ref_name, ref in models_.items():
      if not returns(ref, "normed", images, return_hidden=True):
        continue
      matrix = cka.layerwise_cka(encoder, ref, batches)
      files[f"cka_{ref_name}"] = cka.save(matrix, out_dir, "encoder", ref_name)
      if matrix.shape[0] == matrix.shape[1]:
        results[f"cka_diag_vs_{ref_name}"] = float(np.mean(np.diag(matrix)))
  if vit and a.get("canvas"):
    from ssl_jax.analysis import instance_attention  # pylint: disable=g-import-not-at-top
    res, files["canvas"] = instance_attention.canvas_analysis(
        models_, images.shape[1], a.canvas, os.path.join(out_dir, "canvas"))
    results.update(res)
  scores = {n: spatial_corr.encoder_spatial_correlation(m, batches) for n, m in models_.items()}
  files["spatial_corr"] = spatial_corr.save(scores, out_dir)
  results["spatial_corr"] = float(np.mean(scores["encoder"]))
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump({"results": results, "files": files}, f, indent=2)
  return results
