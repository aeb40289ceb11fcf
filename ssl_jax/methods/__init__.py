"""Method registry: `config.method` is the only switch between methods."""
import importlib

from ssl_jax.registry import Registry

METHODS = Registry("method")

# Each module registers itself on import; add a new method's module here.
_MODULES = ("mae", "dmae", "cr2pq", "qbheat", "mocov2", "supervised", "dino", "ibot", "dinov2",
            "posfield", "simmim", "maskfeat", "beit", "semanticmim",
            # Evaluation jobs: objectives over an exported encoder (configs/eval/).
            "linear_probe", "finetune", "decoder_probe")


def get(name: str):
  return METHODS.get(name)


for _m in _MODULES:
  importlib.import_module(f"ssl_jax.methods.{_m}")
