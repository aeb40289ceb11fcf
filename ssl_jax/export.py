"""Encoder export: `<workdir>/export/` = encoder variables (Orbax) + encoder.json.

encoder.json holds the `ssl_jax.models.build` config that rebuilds the module,
so evaluation, analysis and frozen teachers (D-MAE, CR2PQ) need nothing else.
"""
import json
import os
from typing import Any, Dict, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from ssl_jax import models

ENCODER_JSON = "encoder.json"
VARIABLES_DIR = "variables"


class Encoder(NamedTuple):
  module: Any
  variables: Dict[str, Any]
  model_cfg: Dict[str, Any]
  info: Dict[str, Any]


def save(export_dir: str, model_cfg: Dict[str, Any], variables: Dict[str, Any],
         info: Dict[str, Any] = None) -> str:
  """Writes the encoder; overwrites an older export of the same workdir.

  Multi-host: every process calls it (Orbax's save synchronises them);
  process 0 writes the files.
  """
  export_dir = os.path.abspath(export_dir)
  os.makedirs(export_dir, exist_ok=True)
  host_vars = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), variables)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(os.path.join(export_dir, VARIABLES_DIR), host_vars, force=True)
  ckptr.wait_until_finished()
  if jax.process_index() == 0:   # Orbax's save above is collective; the json is one file
    with open(os.path.join(export_dir, ENCODER_JSON), "w") as f:
      json.dump({"model": dict(model_cfg), "info": info or {}}, f, indent=2, default=str)
  return export_dir


def load(export_dir: str, dtype: str = "float32") -> Encoder:
  """Rebuilds the module and loads its variables (host numpy arrays)."""
  export_dir = os.path.abspath(export_dir)
  meta_path = os.path.join(export_dir, ENCODER_JSON)
  if not os.path.exists(meta_path):
    raise FileNotFoundError(
        f"{export_dir} is not an ssl_jax export: {ENCODER_JSON} is missing. "
        "Pass the `export` folder a pre-training run wrote into its workdir.")
  with open(meta_path) as f:
    meta = json.load(f)
  variables = ocp.StandardCheckpointer().restore(os.path.join(export_dir, VARIABLES_DIR))
  module = models.build(meta["model"], dtype)
  return Encoder(module, variables, meta["model"], meta.get("info", {}))
