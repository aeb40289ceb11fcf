"""Test session setup: 8 simulated CPU devices (multi-device tests use them,
the rest run on device 0) and small, fast configs."""
import atexit
import os
import shutil
import tempfile

# Compiling, not running, is most of this suite's CPU time (tiny models, few
# steps). LLVM at -O0 compiles XLA's CPU kernels about a quarter faster (the
# every-method test: 69 -> 51 CPU-seconds); tests compare numbers, not speed,
# and the bit-exact ones compare runs made under the same flags.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_backend_optimization_level=0").strip()
# One persistent compilation cache for the session and the `ssl_jax.main`
# subprocesses it starts (they inherit the environment): the same program
# built by another test or another process is loaded, not compiled again.
_CACHE = tempfile.mkdtemp(prefix="ssl_jax_test_xla_cache_")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from ssl_jax.config_files import set_dotted  # noqa: E402  (re-exported for the tests)


def tiny_mae_config(**overrides):
  """A 2-block ViT MAE on 32x32 Fashion-MNIST: seconds per step on CPU."""
  from ssl_jax import config_defaults  # pylint: disable=g-import-not-at-top
  c = config_defaults.base_config()
  c.method = "mae"
  c.model = dict(name="vit", variant="Ti", width=32, depth=2, num_heads=4, patch_size=8)
  c.mae = dict(mask_ratio=0.75, norm_pix_loss=True, decoder=dict(width=32, depth=1, num_heads=4))
  c.batch_size = 16
  c.data.max_train_examples = 512
  c.data.shuffle_buffer = 512
  c.total_steps = 6
  c.optim.base_lr = 1e-3
  c.optim.warmup_steps = 2
  c.log_every = 1
  c.checkpoint_every = 2
  c.eval.protocols = ()
  return set_dotted(c, overrides)


@pytest.fixture
def tiny_config():
  return tiny_mae_config


def config_module(relpath: str):
  """A file under configs/ (not a package) as a module, e.g. "eval/knn.py"."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(__file__), "..", "configs", relpath)
  spec = importlib.util.spec_from_file_location("config_" + relpath.replace("/", "_")[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
