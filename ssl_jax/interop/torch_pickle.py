"""Reads PyTorch `.pth` checkpoints (the zip format of torch >= 1.6) into
numpy arrays, without torch and without running code from the file.

A `.pth` is a zip holding `<name>/data.pkl` (a pickle whose tensors refer to
storages by key) and one raw little-endian buffer per storage under
`<name>/data/<key>`. The unpickler below resolves only the globals a state
dict needs (tensor / parameter rebuilders, storage dtypes, OrderedDict);
anything else (argparse.Namespace in MAE's `args`, optimizer classes, ...)
becomes an inert `Opaque` record, so loading never imports or calls code
named by the file.
"""
import collections
import pickle
import zipfile
from typing import Any, Dict, Optional

import ml_dtypes
import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128, "UntypedStorage": np.uint8,
}


class Opaque:
  """Stand-in for a global the reader does not trust: keeps its name and
  whatever arguments / state the pickle gave it, and does nothing else."""
  qualname = "?"

  def __init__(self, *args, **kwargs):
    self.args, self.kwargs, self.state = args, kwargs, None

  def __setstate__(self, state):
    self.state = state

  def __repr__(self):
    return f"Opaque({self.qualname})"


def _opaque_class(module: str, name: str):
  return type(f"Opaque[{module}.{name}]", (Opaque,), {"qualname": f"{module}.{name}"})


class _StorageType:
  def __init__(self, name: str):
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  del requires_grad, backward_hooks, metadata
  size, stride = tuple(size), tuple(stride)
  if not size:
    return np.array(storage[storage_offset])
  item = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(
      storage[storage_offset:], shape=size, strides=tuple(s * item for s in stride),
      writeable=False)
  return np.array(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
  del requires_grad, backward_hooks, state
  return data


def _rebuild_from_type_v2(func, new_type, args, state):
  del new_type, state
  return func(*args)


_SAFE_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.nn.parameter", "Parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
  """Restricted unpickler: known-safe globals only, storages from the zip."""

  def __init__(self, file, zf: zipfile.ZipFile, prefix: str, byteorder: str):
    super().__init__(file)
    self._zf, self._prefix, self._byteorder = zf, prefix, byteorder
    self._storages: Dict[str, np.ndarray] = {}

  def find_class(self, module, name):
    if (module, name) in _SAFE_GLOBALS:
      return _SAFE_GLOBALS[(module, name)]
    if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
      return _StorageType(name)
    return _opaque_class(module, name)

  def persistent_load(self, pid):
    kind, storage_type, key, _, numel = pid[:5]
    if kind != "storage":
      raise pickle.UnpicklingError(f"unsupported persistent id {kind!r} in the checkpoint.")
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}.")
    if key not in self._storages:
      raw = self._zf.read(f"{self._prefix}/data/{key}")
      count = int(numel) if numel is not None else -1
      arr = np.frombuffer(raw, dtype=storage_type.dtype, count=count)
      self._storages[key] = arr.byteswap() if self._byteorder == "big" else arr
    return self._storages[key]


def load(path: str) -> Any:
  """The unpickled object of a `.pth` file, tensors as numpy arrays."""
  if not zipfile.is_zipfile(path):
    raise ValueError(
        f"{path} is not a zip-format PyTorch checkpoint. Legacy (torch < 1.6) files "
        "are not supported: re-save it with `torch.save(obj, path)` on torch >= 1.6.")
  with zipfile.ZipFile(path) as zf:
    pkl = [n for n in zf.namelist() if n.endswith("data.pkl")]
    if len(pkl) != 1:
      raise ValueError(f"{path}: expected one data.pkl in the archive, found {pkl}.")
    prefix = pkl[0][:-len("/data.pkl")]
    byteorder = "little"
    if f"{prefix}/byteorder" in zf.namelist():
      byteorder = zf.read(f"{prefix}/byteorder").decode().strip()
    with zf.open(pkl[0]) as f:
      return _Unpickler(f, zf, prefix, byteorder).load()


# Where official checkpoints keep their weights: MAE wraps them under "model",
# DINO's full training checkpoints under "teacher" / "student", Lightning /
# DeiT style under "state_dict".
STATE_DICT_KEYS = ("model", "state_dict", "teacher", "model_ema", "student")


def state_dict(obj: Any, key: Optional[str] = None) -> Dict[str, np.ndarray]:
  """Finds the flat {name: array} state dict inside a loaded checkpoint and
  strips wrapper prefixes (DDP `module.`, DINO `backbone.`)."""
  if key is not None:
    if not isinstance(obj, dict) or key not in obj:
      valid = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
      raise KeyError(f"checkpoint has no entry {key!r}. Valid entries: {valid}.")
    obj = obj[key]
  elif isinstance(obj, dict) and not any(isinstance(v, np.ndarray) for v in obj.values()):
    for k in STATE_DICT_KEYS:
      if k in obj and isinstance(obj[k], dict):
        obj = obj[k]
        break
    else:
      raise ValueError("found no state dict in the checkpoint; its entries are "
                       f"{', '.join(map(str, obj))}. Pass key=... to choose one.")
  sd = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
  for prefix in ("module.", "encoder."):
    if sd and all(k.startswith(prefix) for k in sd):
      sd = {k[len(prefix):]: v for k, v in sd.items()}
  if any(k.startswith("backbone.") for k in sd):
    # DINO: backbone.* is the ViT; its projection head.* must not be taken
    # for timm's classifier `head`, so it is renamed.
    sd = {(k[len("backbone."):] if k.startswith("backbone.") else "projection_" + k): v
          for k, v in sd.items()}
  return sd
