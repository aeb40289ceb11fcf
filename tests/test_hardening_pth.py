"""Hostile and broken `.pth` files: the reader raises a clear CheckpointError
in-process, never reads outside a storage, never crashes (issue 12, item 1).

The files are written opcode by opcode (no torch here), so every field a
stranger controls (offset, size, stride, element counts, storage types,
globals, the zip itself) can be set to anything.
"""
import io
import pickle
import zipfile

import numpy as np
import pytest

from ssl_jax.interop import torch_pickle

CheckpointError = torch_pickle.CheckpointError


def _val(x) -> bytes:
  """Opcodes that push a plain value (int, str, bool, None, tuple of those)."""
  return pickle.dumps(x, protocol=2)[2:-1]       # strip PROTO and STOP


def _global(module: str, name: str) -> bytes:
  return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _tuple(*parts: bytes) -> bytes:
  return b"(" + b"".join(parts) + b"t"


def storage_ref(key="0", numel=4, kind="FloatStorage", module="torch") -> bytes:
  return _tuple(_val("storage"), _global(module, kind), _val(key), _val("cpu"),
                _val(numel)) + b"Q"                      # BINPERSID


def tensor(offset=0, size=(4,), stride=(1,), storage=None) -> bytes:
  storage = storage_ref() if storage is None else storage
  args = _tuple(storage, _val(offset), _val(size), _val(stride), _val(False),
                _global("collections", "OrderedDict") + b")R")
  return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"   # REDUCE


def state(**entries: bytes) -> bytes:
  body = b"".join(_val(k) + v for k, v in entries.items())
  return b"\x80\x02}(" + body + b"u."                    # {k: v, ...}


def write(path, pkl: bytes, storages=None, byteorder="little"):
  storages = {"0": np.arange(4, dtype=np.float32)} if storages is None else storages
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", pkl)
    zf.writestr("archive/byteorder", byteorder)
    for key, arr in storages.items():
      zf.writestr(f"archive/data/{key}", arr if isinstance(arr, bytes) else arr.tobytes())
  return str(path)


def test_well_formed_tensors_read_exactly(tmp_path):
  st = {"0": np.arange(12, dtype=np.float32)}
  pkl = state(full=tensor(0, (3, 4), (4, 1), storage_ref(numel=12)),
              transposed=tensor(0, (4, 3), (1, 4), storage_ref(numel=12)),
              tail=tensor(10, (2,), (1,), storage_ref(numel=12)),
              scalar=tensor(5, (), (), storage_ref(numel=12)),
              empty=tensor(12, (0, 3), (3, 1), storage_ref(numel=12)),
              expanded=tensor(2, (3, 2), (0, 1), storage_ref(numel=12)))
  out = torch_pickle.load(write(tmp_path / "ok.pth", pkl, st))
  ref = np.arange(12, dtype=np.float32)
  np.testing.assert_array_equal(out["full"], ref.reshape(3, 4))
  np.testing.assert_array_equal(out["transposed"], ref.reshape(3, 4).T)
  np.testing.assert_array_equal(out["tail"], [10, 11])
  assert out["scalar"].shape == () and float(out["scalar"]) == 5
  assert out["empty"].shape == (0, 3)
  np.testing.assert_array_equal(out["expanded"], [[2, 3]] * 3)


HOSTILE = {
    # (offset, size, stride, storage numel 4): expected message
    "offset past the end": ((3, (2,), (1,)), "out of bounds"),
    "huge size": ((0, (1 << 40,), (1,)), "out of bounds"),
    "stride overflow": ((0, (2, 2), (1 << 62, 1 << 62)), "out of bounds"),
    "int64 wrap-around": ((0, (3,), ((1 << 64) - 1,)), "out of bounds"),
    "negative stride": ((3, (4,), (-1,)), "negative"),
    "negative size": ((0, (-1, 4), (4, 1)), "negative"),
    "negative offset": ((-8, (4,), (1,)), "negative"),
    "rank mismatch": ((0, (2, 2), (1,)), "differ in length"),
    "float size": ((0, (2.5,), (1,)), "must be an integer"),
    "size not a tuple": ((0, "abcd", (1,)), "tuple of integers"),
    "expanded memory bomb": ((0, (1 << 20, 1 << 20), (0, 0)), "expands"),
    "too many dims": ((0, (1,) * 65, (1,) * 65), "dimensions"),
    "empty tensor past the end": ((9, (0,), (1,)), "past the end"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_out_of_bounds_views_are_refused(tmp_path, case):
  (offset, size, stride), match = HOSTILE[case]
  path = write(tmp_path / "bad.pth", state(w=tensor(offset, size, stride)))
  with pytest.raises(CheckpointError, match=match) as e:
    torch_pickle.load(path)
  assert "bad.pth" in str(e.value)


def test_storage_records_are_checked(tmp_path):
  f32 = {"0": np.arange(4, dtype=np.float32)}
  cases = [
      # more elements declared than the file holds
      (state(w=tensor(storage=storage_ref(numel=1 << 40))), f32, "declares"),
      # right count, wrong dtype: 4 doubles need 32 bytes, the file has 16
      (state(w=tensor(storage=storage_ref(kind="DoubleStorage"))), f32, "holds 16 bytes"),
      (state(w=tensor(storage=storage_ref(numel=-1))), f32, "declares -1"),
      (state(w=tensor(storage=storage_ref(kind="QUInt8Storage"))), f32,
       "unknown storage type.*Valid storage types: .*FloatStorage"),
      (state(w=tensor(storage=storage_ref(kind="FloatStorage", module="os"))), f32,
       "unknown storage type"),
      (state(w=tensor(storage=storage_ref(key="../../etc/passwd"))), f32, "storage key"),
      (state(w=tensor(storage=storage_ref(key="7"))), f32, "missing from the archive"),
      (state(w=tensor(storage=_val(3))), f32, "not a storage record"),
      (state(w=tensor(storage=_val(("storage", 1, "0", "cpu", 4)) + b"Q")), f32,
       "unknown storage type"),
      (state(w=_val(("junk",)) + b"Q"), f32, "malformed persistent id"),
      # the same storage declared with two sizes
      (state(a=tensor(storage=storage_ref(numel=4)), b=tensor(storage=storage_ref(numel=2))),
       f32, "declared twice"),
  ]
  for i, (pkl, st, match) in enumerate(cases):
    with pytest.raises(CheckpointError, match=match):
      torch_pickle.load(write(tmp_path / f"s{i}.pth", pkl, st))


def test_pickle_cannot_tamper_with_rebuilders(tmp_path):
  # BUILD on a storage type would swap its dtype in a permissive reader.
  tampered = _global("torch", "FloatStorage") + _val({"dtype": "V1000"}) + b"b"
  pkl = state(w=tensor(storage=_tuple(_val("storage"), tampered, _val("0"), _val("cpu"),
                                      _val(4)) + b"Q"))
  with pytest.raises(CheckpointError, match="modify storage type"):
    torch_pickle.load(write(tmp_path / "t.pth", pkl))
  # _rebuild_from_type_v2 only calls the tensor / parameter rebuilders.
  call = (_global("torch._tensor", "_rebuild_from_type_v2") +
          _tuple(_global("collections", "OrderedDict"), _val(None), _val(()), _val(None)) + b"R")
  with pytest.raises(CheckpointError, match="untrusted function"):
    torch_pickle.load(write(tmp_path / "f.pth", state(w=call)))
  with pytest.raises(CheckpointError, match="byteorder"):
    torch_pickle.load(write(tmp_path / "b.pth", state(w=tensor()), byteorder="middle"))


def test_strict_mode_refuses_unknown_globals(tmp_path):
  ns = _global("argparse", "Namespace") + b")R"
  path = write(tmp_path / "args.pth", state(w=tensor(), args=ns))
  out = torch_pickle.load(path)                       # default: inert record
  assert isinstance(out["args"], torch_pickle.Opaque)
  with pytest.raises(CheckpointError, match=r"argparse\.Namespace.*allow-list"):
    torch_pickle.load(path, strict=True)


def _valid_file_bytes(tmp_path) -> bytes:
  st = {"0": np.arange(64, dtype=np.float32)}
  pkl = state(a=tensor(0, (8, 8), (8, 1), storage_ref(numel=64)),
              b=tensor(3, (4, 2), (1, 8), storage_ref(numel=64)))
  return open(write(tmp_path / "valid.pth", pkl, st), "rb").read()


def test_truncated_and_corrupted_zips_fail_cleanly(tmp_path):
  blob = _valid_file_bytes(tmp_path)
  path = tmp_path / "cut.pth"
  for cut in sorted(set(range(0, len(blob), max(1, len(blob) // 40))) | {len(blob) - 1}):
    path.write_bytes(blob[:cut])
    with pytest.raises(CheckpointError):
      torch_pickle.load(str(path))
  rng = np.random.default_rng(0)
  for _ in range(60):                       # random byte flips anywhere in the zip
    b = bytearray(blob)
    for pos in rng.integers(0, len(b), 3):
      b[pos] ^= int(rng.integers(1, 256))
    path.write_bytes(bytes(b))
    try:
      torch_pickle.load(str(path))
    except CheckpointError:
      pass


def test_fuzzed_pickles_raise_or_read_only_storage_elements(tmp_path):
  """Random views and mutated pickle opcodes (with a valid zip CRC): each load
  either raises CheckpointError or returns exactly the elements the view
  addresses inside the storage (its values are their own indices)."""
  rng = np.random.default_rng(1)
  n = 32
  st = {"0": np.arange(n, dtype=np.float32)}
  for i in range(120):
    ndim = int(rng.integers(0, 4))
    size = tuple(int(x) for x in rng.integers(0, 7, ndim))
    stride = tuple(int(x) for x in rng.integers(-2, 9, ndim))
    offset = int(rng.integers(-2, n + 3))
    path = write(tmp_path / "v.pth", state(w=tensor(offset, size, stride, storage_ref(numel=n))), st)
    idx = offset + sum(np.indices(size)[k] * stride[k] for k in range(ndim)) if ndim else offset
    in_bounds = (offset >= 0 and min(stride, default=0) >= 0 and
                 (offset <= n if 0 in size else np.max(idx) < n))
    if in_bounds:
      np.testing.assert_array_equal(torch_pickle.load(path)["w"], np.asarray(idx, np.float32))
    else:
      with pytest.raises(CheckpointError):
        torch_pickle.load(path)
  pkl = state(a=tensor(0, (4, 8), (8, 1), storage_ref(numel=n)),
              b=tensor(3, (4, 2), (1, 8), storage_ref(numel=n)))
  for i in range(300):
    b = bytearray(pkl)
    for pos in rng.integers(0, len(b), int(rng.integers(1, 4))):
      b[pos] = int(rng.integers(0, 256))
    path = write(tmp_path / "m.pth", bytes(b), st)
    try:
      out = torch_pickle.load(path)
    except CheckpointError:
      continue
    for arr in _arrays(out):
      assert np.isin(arr, st["0"]).all()       # never bytes from outside the storage


def _arrays(obj):
  if isinstance(obj, np.ndarray):
    yield obj
  elif isinstance(obj, dict):
    for v in obj.values():
      yield from _arrays(v)
  elif isinstance(obj, (list, tuple)):
    for v in obj:
      yield from _arrays(v)


def test_big_endian_and_bool_storages(tmp_path):
  st = {"0": np.arange(4, dtype=">f4").tobytes(), "1": bytes([0, 1, 2, 255])}
  pkl = state(f=tensor(), m=tensor(storage=storage_ref("1", 4, "BoolStorage")))
  out = torch_pickle.load(write(tmp_path / "be.pth", pkl, st, byteorder="big"))
  np.testing.assert_array_equal(out["f"], [0, 1, 2, 3])
  assert out["m"].dtype == np.bool_ and out["m"].tolist() == [False, True, True, True]
