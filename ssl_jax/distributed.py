"""Joining the processes of a multi-host job before JAX touches a device.

`SSL_JAX_DISTRIBUTED=1` (launch/tpu_pod.sh sets it) makes `main` call
`jax.distributed.initialize()`. On a Cloud TPU pod, SLURM or Open MPI, JAX
finds the coordinator, the process count and this process's id itself. Where
it cannot (plain GPU hosts, several processes on one machine, the localhost
test) name them:

  SSL_JAX_COORDINATOR=host0:1234 SSL_JAX_NUM_PROCESSES=2 SSL_JAX_PROCESS_ID=0

CPU processes exchange collectives through gloo (JAX 0.10.2's default for
CPU; named so that older versions, whose default had no cross-process
collectives, work too; it only concerns the CPU backend).
"""
import itertools
import os

ENV = "SSL_JAX_DISTRIBUTED"


def requested() -> bool:
  return os.environ.get(ENV, "") not in ("", "0")


def initialize():
  """Calls jax.distributed.initialize() once if SSL_JAX_DISTRIBUTED is set."""
  if not requested():
    return
  import jax  # pylint: disable=g-import-not-at-top
  if not os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):   # the user's choice wins
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if os.environ.get("SSL_JAX_COORDINATOR"):
    kwargs = dict(coordinator_address=os.environ["SSL_JAX_COORDINATOR"],
                  num_processes=int(os.environ["SSL_JAX_NUM_PROCESSES"]),
                  process_id=int(os.environ["SSL_JAX_PROCESS_ID"]))
  jax.distributed.initialize(**kwargs)


_BARRIERS = itertools.count()   # same sequence in every process: unique barrier keys


def barrier(name: str, timeout_s: int = 24 * 3600):
  """Every process waits here for the others (no-op with one process).

  A barrier of JAX's coordination service (through Orbax's helper), not a
  device collective: the waiting processes sleep instead of spinning, nothing
  is compiled, and the timeout (24 h) is explicit: long enough for process
  0's evaluation of a large split.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return
  from orbax.checkpoint import multihost  # pylint: disable=g-import-not-at-top
  multihost.get_barrier_sync_fn()(key=f"ssl_jax/{name}/{next(_BARRIERS)}",
                                  timeout_ms=timeout_s * 1000)
