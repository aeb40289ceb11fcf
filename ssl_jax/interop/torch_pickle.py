"""Reads PyTorch `.pth` checkpoints (the zip format of torch >= 1.6) into
numpy arrays, without torch and without running code from the file.

A `.pth` is a zip holding `<name>/data.pkl` (a pickle whose tensors refer to
storages by key) and one raw little-endian buffer per storage under
`<name>/data/<key>`. The unpickler below resolves only the globals a state
dict needs (tensor / parameter rebuilders, storage dtypes, OrderedDict);
anything else (argparse.Namespace in MAE's `args`, optimizer classes, ...)
becomes an inert `Opaque` record (or, with `strict=True`, an error like
torch's `weights_only=True`), so loading never imports or calls code named
by the file.

Files come from strangers, so every number in them is checked before it is
used: each storage is read with exactly the bytes its declared element count
needs, and each tensor's (offset, size, stride) must address elements inside
its storage before a numpy view is made. A hostile or truncated file raises
`CheckpointError` naming the file and the problem; it never reads memory
outside the file or crashes the process.
"""
import collections
import math
import os
import pickle
import struct
import zipfile
import zlib
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


# At most this many dimensions (torch's own limit is 64).
_MAX_NDIM = 64
# A tensor may address more elements than its storage holds only through
# overlapping (e.g. zero, "expanded") strides; materialising such a view
# copies it, so it is refused above this many bytes (a memory bomb otherwise).
_MAX_EXPANDED_BYTES = 1 << 30


class CheckpointError(ValueError):
  """A `.pth` file that is malformed, truncated or hostile."""


class _StorageType:
  """What `torch.FloatStorage` & co. resolve to: a name from the allow-list.
  Immutable, so a pickle BUILD cannot swap its dtype."""
  __slots__ = ("name",)

  def __init__(self, name: str):
    object.__setattr__(self, "name", name)

  def __setattr__(self, key, value):
    raise CheckpointError(f"the pickle tries to modify storage type {self.name}.")

  def __setstate__(self, state):
    raise CheckpointError(f"the pickle tries to modify storage type {self.name}.")

  @property
  def dtype(self) -> np.dtype:
    return np.dtype(_STORAGE_DTYPES[self.name])

  def __repr__(self):
    return f"torch.{self.name}"


class _Storage(np.ndarray):
  """A storage's flat, read-only elements; only `persistent_load` makes these,
  so a tensor can tell a real storage from anything else the pickle passes."""


def _int(value, what: str) -> int:
  if isinstance(value, bool) or not isinstance(value, int):
    raise CheckpointError(f"tensor {what} must be an integer, got {type(value).__name__} "
                          f"{value!r:.60}.")
  return value


def _int_tuple(value, what: str):
  if not isinstance(value, (tuple, list)):
    raise CheckpointError(f"tensor {what} must be a tuple of integers, got "
                          f"{type(value).__name__}.")
  if len(value) > _MAX_NDIM:
    raise CheckpointError(f"tensor {what} has {len(value)} dimensions (at most {_MAX_NDIM}).")
  return tuple(_int(v, what) for v in value)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  """torch._utils._rebuild_tensor_v2, bounds-checked: a copy of the elements
  `storage[offset + sum(i_k * stride_k)]`, all of which must lie in storage."""
  del requires_grad, backward_hooks, metadata
  if not isinstance(storage, _Storage):
    raise CheckpointError(f"a tensor's storage is a {type(storage).__name__}, not a storage "
                          "record of the file.")
  offset = _int(storage_offset, "storage offset")
  size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
  if len(size) != len(stride):
    raise CheckpointError(f"tensor size {size} and stride {stride} differ in length.")
  if offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
    raise CheckpointError(f"negative tensor offset / size / stride: offset {offset}, "
                          f"size {size}, stride {stride}.")
  numel = math.prod(size)          # Python ints: no overflow
  n_storage = storage.shape[0]
  if numel == 0:
    if offset > n_storage:
      raise CheckpointError(f"tensor offset {offset} is past the end of its storage "
                            f"({n_storage} elements).")
    return np.zeros(size, storage.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= n_storage:
    raise CheckpointError(
        f"tensor (offset {offset}, size {size}, stride {stride}) reaches element {last} of "
        f"a storage of {n_storage} elements: out of bounds.")
  item = storage.dtype.itemsize
  if numel > n_storage and numel * item > _MAX_EXPANDED_BYTES:
    raise CheckpointError(
        f"tensor of size {size} expands a storage of {n_storage} elements to "
        f"{numel * item / 2**30:.1f} GiB through overlapping strides {stride}; refused.")
  base = np.asarray(storage).view(np.ndarray)
  view = np.lib.stride_tricks.as_strided(
      base[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False)
  return np.array(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
  del requires_grad, backward_hooks, state
  return data


def _rebuild_from_type_v2(func, new_type, args, state):
  del new_type, state
  if func not in _REBUILDERS:
    raise CheckpointError(f"_rebuild_from_type_v2 with an untrusted function {func!r}.")
  if not isinstance(args, tuple):
    raise CheckpointError("_rebuild_from_type_v2 arguments are not a tuple.")
  return func(*args)


_SAFE_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.nn.parameter", "Parameter"): _rebuild_parameter,
}
_REBUILDERS = (_rebuild_tensor_v2, _rebuild_parameter)


class _Unpickler(pickle.Unpickler):
  """Restricted unpickler: known-safe globals only, storages from the zip."""

  def __init__(self, file, zf: zipfile.ZipFile, prefix: str, byteorder: str, strict: bool):
    super().__init__(file)
    self._zf, self._prefix, self._byteorder, self._strict = zf, prefix, byteorder, strict
    self._storages: Dict[str, np.ndarray] = {}

  def find_class(self, module, name):
    if (module, name) in _SAFE_GLOBALS:
      return _SAFE_GLOBALS[(module, name)]
    if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if self._strict:
      raise CheckpointError(
          f"the pickle names the global {module}.{name}, which is not on the allow-list "
          "(tensor / parameter rebuilders, torch.*Storage, collections.OrderedDict); "
          "load with strict=False to keep it as an inert Opaque record.")
    return _opaque_class(module, name)

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or len(pid) < 5:
      raise CheckpointError(f"malformed persistent id {pid!r:.80}.")
    kind, storage_type, key, _, numel = pid[:5]
    if kind != "storage":
      raise CheckpointError(f"unsupported persistent id {kind!r:.40} (expected 'storage').")
    if not isinstance(storage_type, _StorageType):
      raise CheckpointError(
          f"unknown storage type {storage_type!r:.80}. Valid storage types: "
          f"{', '.join(sorted(_STORAGE_DTYPES))}.")
    if not isinstance(key, str) or not key or "/" in key or ".." in key:
      raise CheckpointError(f"malformed storage key {key!r:.80}.")
    numel = _int(numel, "storage element count")
    if numel < 0:
      raise CheckpointError(f"storage {key} declares {numel} elements.")
    if key not in self._storages:
      self._storages[key] = self._read_storage(key, storage_type.dtype, numel)
    arr = self._storages[key]
    if arr.dtype != storage_type.dtype or arr.shape[0] != numel:
      raise CheckpointError(f"storage {key} is declared twice with different types or sizes.")
    return arr

  def _read_storage(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
    name = f"{self._prefix}/data/{key}"
    try:
      info = self._zf.getinfo(name)
    except KeyError:
      raise CheckpointError(f"storage {key} is missing from the archive ({name}).") from None
    need = numel * dtype.itemsize
    if info.file_size < need:
      raise CheckpointError(f"storage {key} declares {numel} {dtype} elements ({need} bytes) "
                            f"but {name} holds {info.file_size} bytes.")
    with self._zf.open(info) as f:
      raw = f.read(need)          # exactly what the declared elements need
    if len(raw) != need:
      raise CheckpointError(f"storage {key} is truncated: {len(raw)} of {need} bytes.")
    if dtype == np.bool_:        # any non-zero byte is True, as in torch
      arr = np.frombuffer(raw, np.uint8, count=numel) != 0
    else:
      arr = np.frombuffer(raw, dtype=dtype, count=numel)
    if self._byteorder == "big":
      arr = arr.byteswap()
    arr = arr.view(_Storage)
    arr.flags.writeable = False
    return arr


_FILE_ERRORS = (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, zlib.error, struct.error,
                TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError,
                MemoryError, RecursionError, UnicodeDecodeError, NotImplementedError,
                OSError)      # a corrupt zip directory seeks to negative offsets


def load(path: str, strict: bool = False) -> Any:
  """The unpickled object of a `.pth` file, tensors as numpy arrays.

  strict: refuse any global outside the allow-list (torch's `weights_only`);
  by default they become inert `Opaque` records (MAE's argparse `args`).
  Raises `CheckpointError` (a ValueError) naming the file and the problem.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint file {path} does not exist.")
  if not zipfile.is_zipfile(path):
    raise CheckpointError(
        f"{path} is not a zip-format PyTorch checkpoint (or the zip is truncated). Legacy "
        "(torch < 1.6) files are not supported: re-save it with `torch.save(obj, path)` on "
        "torch >= 1.6.")
  try:
    with zipfile.ZipFile(path) as zf:
      names = zf.namelist()
      pkl = [n for n in names if n.endswith("data.pkl")]
      if len(pkl) != 1:
        raise CheckpointError(f"expected one data.pkl in the archive, found {pkl}.")
      prefix = pkl[0][:-len("/data.pkl")]
      byteorder = "little"
      if f"{prefix}/byteorder" in names:
        byteorder = zf.read(f"{prefix}/byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
          raise CheckpointError(f"unknown byteorder {byteorder!r:.40}; valid: little, big.")
      with zf.open(pkl[0]) as f:
        return _Unpickler(f, zf, prefix, byteorder, strict).load()
  except CheckpointError as e:
    raise CheckpointError(f"{path}: {e}") from None
  except _FILE_ERRORS as e:
    raise CheckpointError(f"{path}: malformed checkpoint ({type(e).__name__}: {e}).") from e


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
