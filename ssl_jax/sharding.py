"""Device mesh and regex partition rules (big_vision style).

The batch is split over every mesh axis. Each array of the train state is
matched by its "/"-joined path against `config.sharding_rules`; "fsdp" shards
its largest dimension divisible by the `fsdp` axis size, "replicate" copies
it. Optimizer moments have their parameter's path inside, so they follow
their parameter automatically.
"""
import re
from typing import Sequence, Tuple

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ssl_jax.registry import check_choice

RULE_KINDS = ("replicate", "fsdp")


def make_mesh(mesh_cfg: Sequence[Tuple[str, int]], devices=None) -> Mesh:
  devices = devices if devices is not None else jax.devices()
  names = [n for n, _ in mesh_cfg]
  sizes = [int(s) for _, s in mesh_cfg]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh {mesh_cfg}: at most one axis may be -1.")
  known = int(np.prod([s for s in sizes if s != -1]))
  if len(devices) % known:
    raise ValueError(f"mesh {mesh_cfg} does not divide {len(devices)} devices.")
  sizes = [len(devices) // known if s == -1 else s for s in sizes]
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f"mesh {mesh_cfg} -> {sizes} needs {int(np.prod(sizes))} "
                     f"devices; {len(devices)} are available.")
  try:
    arr = mesh_utils.create_device_mesh(sizes, devices)
  except (AssertionError, ValueError, NotImplementedError):
    arr = np.asarray(devices).reshape(sizes)
  return Mesh(arr, names)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(tuple(mesh.axis_names)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def process_mesh(mesh: Mesh) -> Mesh:
  """This process's devices of `mesh` as one "data" axis (`mesh` itself with
  one process): process-0-only evaluation feeds host numpy arrays, which a
  mesh spanning other hosts cannot take."""
  if jax.process_count() == 1:
    return mesh
  local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
  return Mesh(np.asarray(local), ("data",))


def to_host(x) -> np.ndarray:
  """The whole value of `x` as numpy, also when its shards live on several
  hosts (FSDP over a pod): then a collective every process must call."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def path_str(path) -> str:
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _fsdp_spec(shape, axis_size: int, axis: str, min_size: int) -> P:
  if axis_size <= 1 or int(np.prod(shape)) < min_size:
    return P()
  dims = sorted(range(len(shape)), key=lambda d: -shape[d])
  for d in dims:
    if shape[d] % axis_size == 0:
      spec = [None] * len(shape)
      spec[d] = axis
      return P(*spec)
  return P()


def tree_shardings(tree, mesh: Mesh, rules, min_size: int = 2 ** 14,
                   fsdp_axis: str = "fsdp"):
  """NamedSharding for every leaf of `tree` (arrays or ShapeDtypeStructs)."""
  compiled = [(re.compile(r), check_choice("sharding rule", k, RULE_KINDS)) for r, k in rules]
  axis_size = mesh.shape.get(fsdp_axis, 1)

  def leaf_sharding(path, leaf):
    name = path_str(path)
    shape = getattr(leaf, "shape", ())
    for rx, kind in compiled:
      if rx.search(name):
        if kind == "fsdp" and len(shape):
          return NamedSharding(mesh, _fsdp_spec(shape, axis_size, fsdp_axis, min_size))
        return NamedSharding(mesh, P())
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(leaf_sharding, tree)


def bytes_per_device(tree) -> int:
  """Bytes the largest-loaded device holds for `tree` (sharded jax Arrays)."""
  per_dev = {}
  for leaf in jax.tree.leaves(tree):
    for shard in getattr(leaf, "addressable_shards", []):
      per_dev[shard.device] = per_dev.get(shard.device, 0) + shard.data.nbytes
  return max(per_dev.values()) if per_dev else 0
