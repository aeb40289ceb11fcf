"""Discrete visual tokenizers: BEiT's target generator, behind one interface.

BEiT (Bao et al. 2022, Sec. 2.2) uses DALL-E's pre-trained dVAE (8192 codes);
its weights cannot be downloaded here, so the one shipped implementation is a
k-means codebook over patch pixels fitted offline (`kmeans.py`, fitted by
`python -m ssl_jax.tokenizers.fit`): a deviation every BEiT config names.

A tokenizer file is an `.npz` whose `kind` names a registered implementation;
`load(path)` returns a `Tokenizer`: `vocab_size`, `patch_size`, `params` (a
dict of arrays: the method keeps them as frozen `constants`) and a pure
`encode(params, images [B, H, W, C]) -> int32 [B, N]` (one code per patch,
row-major, like `ops.patches.patchify`).
"""
import os
from typing import Any, Callable, Dict, NamedTuple

import numpy as np

from ssl_jax.registry import Registry

TOKENIZERS = Registry("tokenizer kind")


class Tokenizer(NamedTuple):
  kind: str
  vocab_size: int
  patch_size: int
  params: Dict[str, Any]
  encode: Callable[..., Any]


def save(path: str, kind: str, patch_size: int, **arrays) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, kind=np.asarray(kind), patch_size=np.asarray(patch_size), **arrays)
  return path


def load(path: str) -> Tokenizer:
  if not path or not os.path.exists(path):
    raise FileNotFoundError(
        f"tokenizer file {path!r} not found. Fit one with `python -m ssl_jax.tokenizers.fit "
        "--out <file>.npz` (see configs/beit.py) and point the config's mim.tokenizer at it.")
  with np.load(path) as f:
    arrays = {k: np.asarray(f[k]) for k in f.files}
  kind = str(arrays.pop("kind"))
  patch_size = int(arrays.pop("patch_size"))
  build = TOKENIZERS.get(kind)
  return build(patch_size, arrays)


def _register_builtin():
  from ssl_jax.tokenizers import kmeans  # pylint: disable=g-import-not-at-top
  TOKENIZERS.register("kmeans", kmeans.tokenizer)


_register_builtin()
