"""Multi-process JAX: `initialize(config.distributed)` runs before anything touches a device.

config.distributed.mode:
  "none"      one process (the default).
  "auto"      `jax.distributed.initialize()` without arguments: JAX reads the coordinator, the
              process count and this process's index from the cluster environment (SLURM, Cloud
              TPU VMs, Open MPI, Kubernetes); launch/slurm_train.sh and launch/tpu_vm.sh use it.
  "explicit"  coordinator_address ("host:port" of process 0), num_processes and process_id.
In a multi-process run every process executes the same program on the global arrays: each holds
the whole packed batch (the data streams read it whole, which is cheap next to the step) and
gives the devices it owns their rows; metrics and policies are written by process 0, checkpoints
by all (orbax coordinates them). RL rollouts (and the stage-3 filter) run on rollout servers,
driven by process 0, which broadcasts each step's rollouts to the others; the weights written for
the servers are gathered from all processes and written by process 0.
"""
import pickle
from typing import Any, Callable, TypeVar

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from rstar_jax.train.config_lib import ConfigError

MODES = ("none", "auto", "explicit")
T = TypeVar("T")


def initialize(distributed: ml_collections.ConfigDict | None) -> None:
  """Joins the processes of a multi-process run (a no-op for mode "none" or no config)."""
  mode = "none" if distributed is None else distributed.mode
  if mode not in MODES:
    raise ConfigError(f"config.distributed.mode={mode!r} must be one of {MODES}")
  if mode == "none":
    return
  if mode == "auto":
    jax.distributed.initialize()
  else:
    if not distributed.coordinator_address or distributed.num_processes < 1 or not (
        0 <= distributed.process_id < distributed.num_processes):
      raise ConfigError(
          f"config.distributed (mode 'explicit'): coordinator_address={distributed.coordinator_address!r}, "
          f"num_processes={distributed.num_processes}, process_id={distributed.process_id} must name the "
          "coordinator's host:port, a positive process count and this process's index below it")
    jax.distributed.initialize(coordinator_address=distributed.coordinator_address,
                               num_processes=distributed.num_processes, process_id=distributed.process_id)
  logging.info("distributed: process %d of %d, %d local devices", jax.process_index(), jax.process_count(),
               jax.local_device_count())


def is_writer() -> bool:
  """Whether this process writes the run's files (process 0)."""
  return jax.process_index() == 0


def process_zero_first(name: str, prepare: Callable[[], T]) -> T:
  """`prepare()` on process 0, then on the others once it is done, so files it writes into the
  shared workdir (data, tokenizer, config.json) are read, not rewritten. An error on process 0 is
  raised on every process (none is left waiting). `name` labels the step in that error."""
  if jax.process_count() == 1:
    return prepare()
  results = []
  on_process_zero(lambda: results.append(prepare()), name)  # only the outcome travels
  return results[0] if is_writer() else prepare()


_CHUNK_BYTES = 16 * 2**20  # one compiled broadcast, whatever the payload's size


def broadcast_from_zero(value: Any) -> Any:
  """Process 0's `value` (any picklable object) on every process, sent in fixed-size chunks."""
  if jax.process_count() == 1:
    return value
  data = pickle.dumps(value) if is_writer() else b""
  header = np.array([-(-len(data) // _CHUNK_BYTES), len(data) % _CHUNK_BYTES], np.int32)
  num_chunks, last = (int(x) for x in multihost_utils.broadcast_one_to_all(header))
  parts = []
  for i in range(num_chunks):
    chunk = np.zeros(_CHUNK_BYTES, np.uint8)
    if is_writer():
      piece = np.frombuffer(data[i * _CHUNK_BYTES:(i + 1) * _CHUNK_BYTES], np.uint8)
      chunk[:piece.size] = piece
    received = np.asarray(multihost_utils.broadcast_one_to_all(chunk))
    parts.append(received[:last] if i == num_chunks - 1 and last else received)
  return value if is_writer() else pickle.loads(b"".join(p.tobytes() for p in parts))


class ProcessZeroError(RuntimeError):
  """What failed on process 0, raised on the other processes of a multi-process run."""


def on_process_zero(run: Callable[[], T], name: str = "process 0's step") -> T:
  """`run()` on process 0 only; its result on every process. If it raises, process 0 re-raises and
  the others raise ProcessZeroError with its message, so no process waits for a collective forever."""
  if jax.process_count() == 1:
    return run()
  outcome, error = None, None
  if is_writer():
    try:
      outcome = ("ok", run())
    except Exception as e:  # pylint: disable=broad-except
      error = e
      outcome = ("error", f"{type(e).__name__}: {e}")
  status, payload = broadcast_from_zero(outcome)
  if error is not None:
    raise error
  if status == "error":
    raise ProcessZeroError(f"{name} failed on process 0: {payload}")
  return payload


def any_process(flag: bool) -> bool:
  """Whether `flag` is true on any process (every process calls it: a collective)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.array(flag))))


def barrier(name: str) -> None:
  """Waits until every process has reached the barrier `name` (a no-op for one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
