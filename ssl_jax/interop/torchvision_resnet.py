"""torchvision ResNet state dicts -> ssl_jax `models/resnet.py` variables.

The layout of torchvision's `resnet18/34/50/101` (v1.5: stride on the 3x3),
which DINO's and converted SimCLR / MoCo ResNet-50 checkpoints share:
`conv1` (7x7 stem), `bn1`, `layer{1..4}.{i}.{conv1,bn1,conv2,bn2[,conv3,bn3]}`,
`layer*.0.downsample.{0: conv, 1: bn}` and an optional classifier `fc`
(DINO's backbone checkpoint has none). Convolutions are OIHW in torch, HWIO
in flax; BatchNorm `weight`/`bias` are flax params `scale`/`bias`,
`running_mean`/`running_var` the `batch_stats` `mean`/`var`. These are the
frozen teachers of 004 Tab. 4 (DINO / SimCLR ResNet-50), loaded by
`ssl_jax.interop.load_encoder`.
"""
import os
import re
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import export as export_lib
from ssl_jax import models
from ssl_jax.models import resnet

# Wrapper prefixes of MoCo (`module.encoder_q.`), SimCLR converters and
# Lightning (`model.`, `resnet.`); torch_pickle.state_dict strips `module.`,
# `encoder.` and DINO's `backbone.` already.
_PREFIXES = ("module.", "encoder_q.", "model.", "resnet.", "backbone.", "encoder.")
_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def _strip(sd):
  if any(k.startswith("encoder_q.") for k in sd):
    # MoCo: the query encoder; encoder_k and the queue are training state.
    sd = {k: v for k, v in sd.items() if k.startswith("encoder_q.")}
  for prefix in _PREFIXES:
    if sd and all(k.startswith(prefix) for k in sd):
      sd = {k[len(prefix):]: v for k, v in sd.items()}
  return sd


def matches(sd: Dict[str, Any]) -> bool:
  """True for a torchvision-layout ResNet state dict."""
  keys = _strip(dict(sd))
  return "conv1.weight" in keys and "layer1.0.conv1.weight" in keys


def _variant(sd) -> str:
  kind = "bottleneck" if "layer1.0.conv3.weight" in sd else "basic"
  depths = tuple(1 + max([int(m.group(1)) for k in sd
                          for m in [re.match(rf"layer{s}\.(\d+)\.", k)] if m], default=-1)
                 for s in range(1, 5))
  width = int(np.shape(sd["conv1.weight"])[0])
  stem_kernel = int(np.shape(sd["conv1.weight"])[-1])
  for name, (k, d, w, cifar) in resnet.VARIANTS.items():
    if (k, d, w, cifar) == (kind, depths, width, stem_kernel != 7):
      return name
  valid = ", ".join(f"{n} ({k}, {d})" for n, (k, d, _, _) in resnet.VARIANTS.items())
  raise ValueError(f"torchvision ResNet with {kind} blocks {depths}, stem width {width} and "
                   f"a {stem_kernel}x{stem_kernel} stem matches no ssl_jax ResNet variant. "
                   f"Valid: {valid}.")


def from_torchvision(state: Dict[str, np.ndarray]) -> Tuple[Dict[str, Any], Dict[str, Any],
                                                            Dict[str, np.ndarray]]:
  """torchvision ResNet state dict -> (model_cfg, variables, extras).

  `extras` holds what the encoder does not use (`fc`, projection heads).
  """
  sd = {k: np.asarray(v) for k, v in _strip(dict(state)).items()}
  if not matches(sd):
    raise KeyError("not a torchvision ResNet state dict: expected conv1.weight and "
                   f"layer1.0.conv1.weight; it has e.g. {sorted(sd)[:8]}.")
  variant = _variant(sd)
  used = set()
  variables = {"params": {}, "batch_stats": {}}

  def put(scope, leaf_coll, leaf, value):
    node = variables[leaf_coll]
    for s in scope:
      node = node.setdefault(s, {})
    node[leaf] = np.asarray(value, np.float32)

  def conv(torch_name, scope):
    used.add(torch_name + ".weight")
    put(scope, "params", "kernel", sd[torch_name + ".weight"].transpose(2, 3, 1, 0))  # OIHW->HWIO

  def bn(torch_name, scope):
    for t, (coll, leaf) in _BN.items():
      used.add(f"{torch_name}.{t}")
      put(scope, coll, leaf, sd[f"{torch_name}.{t}"])
    used.add(f"{torch_name}.num_batches_tracked")

  conv("conv1", ["stem_conv"])
  bn("bn1", ["stem_bn"])
  kind, depths, _, _ = resnet.VARIANTS[variant]
  convs = ("conv1", "bn1", "conv2", "bn2") + (("conv3", "bn3") if kind == "bottleneck" else ())
  for s, n in enumerate(depths):
    for i in range(n):
      t, block = f"layer{s + 1}.{i}.", f"stage{s + 1}_block{i}"
      for name in convs:
        (conv if name.startswith("conv") else bn)(t + name, [block, name])
      if t + "downsample.0.weight" in sd:
        conv(t + "downsample.0", [block, "down_conv"])
        bn(t + "downsample.1", [block, "down_bn"])
  model_cfg = dict(name="resnet", variant=variant)
  check_tree(model_cfg, variables)
  extras = {k: v for k, v in sd.items() if k not in used}
  return model_cfg, variables, extras


def check_tree(model_cfg: Dict[str, Any], variables):
  """Raises unless `variables` has exactly the paths and shapes of a freshly
  initialised ssl_jax ResNet of `model_cfg` (e.g. a downsample missing)."""
  module = models.build(model_cfg)
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  ref = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
  flat = lambda t: {jax.tree_util.keystr(k): tuple(np.shape(v))
                    for k, v in jax.tree_util.tree_flatten_with_path(t)[0]}
  want, got = flat(ref), flat(variables)
  bad = sorted(set(want) ^ set(got)) + sorted(k for k in set(want) & set(got) if want[k] != got[k])
  if bad:
    raise ValueError(f"imported torchvision weights do not match ssl_jax ResNet {model_cfg}: "
                     f"{bad[:10]}")


def encoder_from_state_dict(sd: Dict[str, np.ndarray], source: str,
                            dtype: str = "float32") -> export_lib.Encoder:
  model_cfg, variables, extras = from_torchvision(sd)
  return export_lib.Encoder(models.build(model_cfg, dtype), variables, model_cfg,
                            {"source": os.path.abspath(source), "unused_keys": sorted(extras)})
