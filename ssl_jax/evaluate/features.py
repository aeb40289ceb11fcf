"""Frozen-encoder features, computed batch by batch, sharded over the mesh."""
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import config_check, sharding
from ssl_jax.progress import Progress
from ssl_jax.registry import check_choice

FEATURES = ("cls", "mean", "patch", "proxy_mean")


def select(out, feature: str, block: int = -1):
  """Picks the probed representation from an encoder's output dict.

  block -1: the final (normed) output; block k >= 0: the raw output of the
  k-th block (0-based; SemanticMIM probes the 7th block, i.e. k = 6).
  "cls" is prefix token 0; "proxy_mean" averages all K prefix tokens (CLS +
  SemanticMIM proxies / registers); "mean" averages the patch tokens only.
  """
  check_choice("eval feature", feature, FEATURES)
  prefix = out.get("prefix")
  if block != -1:
    if "hidden" not in out:
      raise ValueError("block-wise features need an encoder that returns `hidden` (a ViT).")
    tokens = out["hidden"][block]
    k = prefix.shape[1] if prefix is not None else tokens.shape[1] - out["patch"].shape[1]
    cls, prefix, patch = tokens[:, 0], tokens[:, :k], tokens[:, k:]
  else:
    cls, patch = out.get("cls"), out["patch"]
  if feature in ("cls", "proxy_mean"):
    if cls is None:
      raise ValueError(f"this encoder has no prefix (CLS) token for eval.feature={feature!r}; "
                       "use eval.feature='mean'.")
    if feature == "proxy_mean":
      return cls if prefix is None else prefix.mean(axis=1)
    return cls
  if feature == "mean":
    return patch.mean(axis=1)
  return patch


def check_block(module, block: int):
  """Block-wise features exist for ViT-family encoders only, and up to their
  depth; anything else is a setting to fix, said before anything compiles."""
  if block == -1:
    return
  name = type(module).__name__
  if "return_hidden" not in inspect.signature(type(module).__call__).parameters:
    raise config_check.ConfigError(
        f"eval block={block}: block-wise features need a ViT-family encoder, and this export's "
        f"{name} gives only its final feature map. Set the protocol's block to -1 (e.g. "
        "--config.eval.dense_probe.block=-1 or --config.eval.block=-1).")
  depth = getattr(module, "depth", None)
  if depth is not None and not -1 <= block < depth:
    raise config_check.ConfigError(
        f"eval block={block}: this export's {name} has {depth} blocks; valid: -1 (the final, "
        f"normed output) or 0..{depth - 1}.")


def apply_fn(encoder, feature: str, block: int):
  module = encoder.module
  check_block(module, block)
  kwargs = {"return_hidden": True} if block != -1 else {}

  def fn(variables, images):
    out = module.apply(variables, images, train=False, **kwargs)
    return select(out, feature, block).astype(jnp.float32)
  return fn


def extract(encoder, images: np.ndarray, feature: str = "cls", block: int = -1,
            batch_size: int = 512, mesh=None, variables=None) -> np.ndarray:
  """images [N, H, W, C] (normalised) -> features [N, ...] as numpy."""
  return extract_many(encoder, [images], feature, block, batch_size, mesh, variables)[0]


def extract_many(encoder, arrays, feature: str = "cls", block: int = -1,
                 batch_size: int = 512, mesh=None, variables=None):
  """Features of several image arrays with one compiled function."""
  run, batch_size = _compiled(encoder, feature, block, batch_size, mesh, variables)
  progress = Progress(f"features ({feature}, block {block})", sum(len(a) for a in arrays))
  results = []
  for images in arrays:
    outs = []
    for s in range(0, len(images), batch_size):
      outs.append(run(images[s:s + batch_size]))
      progress.update(len(outs[-1]))
    results.append(np.concatenate(outs))
  return results


def extract_stream(encoder, batches, feature: str = "cls", block: int = -1,
                   batch_size: int = 512, mesh=None, variables=None, total: int = 0,
                   phase: str = "features"):
  """(images, labels) batches of any size -> (features, labels) batches, one
  compile, sharded over `mesh`, a progress line over `total` images. Nothing
  is kept: memory is one batch (streaming kNN over a split of any size)."""
  run, batch_size = _compiled(encoder, feature, block, batch_size, mesh, variables)
  progress = Progress(f"{phase} ({feature}, block {block})", total)
  for images, labels in batches:
    for s in range(0, len(images), batch_size):
      feats = run(images[s:s + batch_size])
      progress.update(len(feats))
      yield feats, labels[s:s + batch_size]


_JITTED = {}


def _compiled(encoder, feature, block, batch_size, mesh, variables):
  """run(images [b <= batch_size, ...]) -> numpy features, b padded to the
  device count; and the batch size rounded to it."""
  mesh = mesh or sharding.make_mesh([("data", -1)])
  n_dev = mesh.devices.size
  batch_size = max(n_dev, (batch_size // n_dev) * n_dev)
  variables = encoder.variables if variables is None else variables
  in_sh = sharding.batch_sharding(mesh)
  key = (id(encoder.module), feature, block, mesh)
  if key not in _JITTED:    # one compile per module and batch shape: test + train, random twin
    fn = jax.jit(apply_fn(encoder, feature, block),
                 in_shardings=(sharding.replicated(mesh), in_sh), out_shardings=in_sh)
    _JITTED[key] = (encoder.module, fn)    # holding the module keeps its id unique
  fn = _JITTED[key][1]
  variables = jax.device_put(variables, sharding.replicated(mesh))

  def run(chunk):
    pad = (-len(chunk)) % n_dev
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    # Explicit put: jit refuses sharded numpy inputs in a multi-process job.
    feats = np.asarray(fn(variables, jax.device_put(chunk, in_sh)))
    return feats[:len(feats) - pad] if pad else feats
  return run, batch_size
