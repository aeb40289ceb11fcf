"""One process of tests/test_multihost.py's 2-process job (not a test module).

  python -m tests.multihost_worker ROOT PROCESS_ID PORT

Joins the job through ssl_jax.distributed (localhost coordinator, gloo CPU
collectives, 4 simulated devices per process), pre-trains `mae_tiny_job()`
in ROOT/full (checkpoints at steps 2 and 4, export, process-0 kNN), then
"kills" it: process 0 copies only the step-2 checkpoint to ROOT/resumed and
the same job resumes there; then `eval_job.run` (mode "eval", streaming kNN)
on the export. Writes ROOT/result<PROCESS_ID>.json.
"""
import json
import os
import shutil
import sys
import time

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


def mae_tiny_job(input_shards: int = 0):
  """configs/mae.py:tiny on a (data 2, fsdp 4) mesh with every array FSDP-
  sharded (the export gathers them across hosts), kNN on a few test images
  at step 2 and at the end."""
  from ssl_jax import config_files  # pylint: disable=g-import-not-at-top
  c = config_files.load_module(os.path.join(CONFIGS, "mae.py")).get_config("tiny")
  c.mesh = [("data", 2), ("fsdp", 4)]
  c.fsdp_min_size = 0
  c.data.input_shards = input_shards
  c.eval.protocols = ("knn",)
  c.eval_every = 2                # kNN at step 2 too (process 0; the others wait)
  c.eval.knn.k = 5
  c.eval.max_eval_examples = 24
  c.eval.compare_random_init = False
  return c


def use_compilation_cache(path: str):
  """Every compile goes to disk at `path`: the resumed run reuses the first
  run's train step. (Not shared between processes: the keys hold the device
  assignment, so the 1-process run and the other process miss.)"""
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main(root: str, process_id: int, port: str):
  # -O0: the suite's LLVM level (tests/conftest.py), also that of the in-process reference.
  os.environ.update(XLA_FLAGS="--xla_force_host_platform_device_count=4 "
                    "--xla_backend_optimization_level=0", JAX_PLATFORMS="cpu",
                    SSL_JAX_DISTRIBUTED="1", SSL_JAX_COORDINATOR=f"localhost:{port}",
                    SSL_JAX_NUM_PROCESSES="2", SSL_JAX_PROCESS_ID=str(process_id))
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import jax  # pylint: disable=g-import-not-at-top  (after XLA_FLAGS)
  from ssl_jax import distributed, train  # pylint: disable=g-import-not-at-top
  distributed.initialize()
  assert (jax.process_count(), jax.device_count()) == (2, 8)
  use_compilation_cache(os.path.join(root, f"xla_cache{process_id}"))
  full, resumed = os.path.join(root, "full"), os.path.join(root, "resumed")
  cpu = {"start": time.process_time()}
  results = {"full": train.train(mae_tiny_job(), full)}
  cpu["full"] = time.process_time()
  if process_id == 0:
    shutil.copytree(os.path.join(full, "checkpoints", "2"),
                    os.path.join(resumed, "checkpoints", "2"))
  distributed.barrier("copied the step-2 checkpoint")
  results["resumed"] = train.train(mae_tiny_job(), resumed)
  cpu["resumed"] = time.process_time()
  # `mode = "eval"` on the export (python -m ssl_jax.main --config configs/eval/knn.py ...).
  from ssl_jax import config_defaults, eval_job  # pylint: disable=g-import-not-at-top
  job = config_defaults.eval_config("knn")
  job.encoder = os.path.join(full, "export")
  train_job = mae_tiny_job()
  job.data, job.eval = train_job.data, train_job.eval
  job.eval.knn.stream = True      # train features streamed over process 0's devices
  results["eval_job"] = eval_job.run(job, os.path.join(root, "eval_job"))
  cpu["eval_job"] = time.process_time()
  results["cpu_s"] = cpu      # CPU seconds at the end of each phase (the test's cost)
  with open(os.path.join(root, f"result{process_id}.json"), "w") as f:
    json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
