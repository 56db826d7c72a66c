"""A seeded, sharded, resumable Grain stream of batches over any in-memory items.

Stream. Epoch e is a permutation of the N items (Grain's index shuffle seeded with `s + e`, where s
is drawn from SHA-256 of `seed` so that nearby seeds, e.g. one per stage, do not share shifted
epoch orders); epochs follow each other without end, so a step's batch may straddle two epochs.
Global batch k is rows [kB, (k+1)B) of that stream, B the global batch size.

Sharding. Process p of P takes the stream rows p, p+P, p+2P, ... in batches of b = B/P, so process
p's k-th batch holds global rows kB + jP + p (j < b): the P processes together hold global batch
k, each row exactly once, and which global batch comes next does not depend on P.

Resume. `get_state()` is a small JSON-able dict (the next global batch index plus a fingerprint
of the items' keys, the seed and B); `set_state()` on a stream over the same items continues with
exactly the batches an uninterrupted run would have seen, also after a change of process count.
"""
import hashlib
from typing import Any, Callable, Generic, Mapping, Sequence, TypeVar

from absl import logging
import grain
import jax
import numpy as np

_STATE_VERSION = 1
Item = TypeVar("Item")
Batch = TypeVar("Batch")


def _shuffle_seed(seed: int) -> int:
  digest = hashlib.sha256(f"rstar_jax.data.pipeline/{seed}".encode()).digest()
  return int.from_bytes(digest[:4], "big")


def _fingerprint(keys: Sequence[str], seed: int, global_batch_size: int) -> str:
  digest = hashlib.sha256(f"{seed}\0{global_batch_size}\0".encode())
  for key in keys:
    digest.update(key.encode() + b"\0")
  return digest.hexdigest()[:16]


class _Gather:
  """Grain batch function: stream indices -> `collate` of those items."""

  def __init__(self, items: Sequence[Item], collate: Callable[[Sequence[Item]], Batch]):
    self._items = list(items)
    self._collate = collate

  def __call__(self, indices: Sequence[int]) -> Batch:
    return self._collate([self._items[int(i)] for i in indices])


class ShardedStream(Generic[Item, Batch]):
  """Yields this process's batch (`collate` of its items) for each step, forever.

  Args:
    items: the items, identical (and in the same order) on every process.
    global_batch_size: B, items per step over all processes.
    seed: shuffle seed in [0, 2**32).
    collate: turns a list of this process's items into a batch.
    key: a stable string per item (for the resume fingerprint).
    name: what the items are, for log lines and errors.
    process_index: this process's index p; default `jax.process_index()`.
    process_count: the number of processes P; default `jax.process_count()`. B must be a multiple of P.
  """

  def __init__(self, items: Sequence[Item], global_batch_size: int, seed: int,
               collate: Callable[[Sequence[Item]], Batch], key: Callable[[Item], str], *,
               name: str = "item", process_index: int | None = None, process_count: int | None = None):
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if not items:
      raise ValueError(f"no {name}s left to iterate over (every row was skipped; see the log)")
    if not isinstance(seed, int) or not 0 <= seed < 2**32:
      raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if not isinstance(process_count, int) or process_count < 1:
      raise ValueError(f"process_count must be a positive integer, got {process_count!r}")
    if not isinstance(process_index, int) or not 0 <= process_index < process_count:
      raise ValueError(f"process_index must be in [0, {process_count}), got {process_index!r}")
    if (not isinstance(global_batch_size, int) or global_batch_size < 1
        or global_batch_size % process_count):
      raise ValueError(f"global_batch_size must be a positive multiple of process_count="
                       f"{process_count}, got {global_batch_size!r}")
    self.name = name
    self.num_items = len(items)
    self.global_batch_size = global_batch_size
    self.batch_size = global_batch_size // process_count
    self.fingerprint = _fingerprint([key(item) for item in items], seed, global_batch_size)
    # Grain shuffles and shards indices; the batch function gathers the items (half the cost of
    # passing the items themselves through Grain's per-element bookkeeping).
    dataset = grain.MapDataset.range(len(items)).shuffle(seed=_shuffle_seed(seed)).repeat()
    dataset = dataset[process_index::process_count].batch(self.batch_size, batch_fn=_Gather(items, collate))
    # In-memory rows: no reader threads (Grain's advice for data already in memory).
    read_options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    self._iterator = iter(dataset.to_iter_dataset(read_options))
    if global_batch_size > self.num_items:
      logging.warning("%s stream: %d %ss per step exceed the %d %ss; every batch repeats some",
                      name, global_batch_size, name, self.num_items, name)
    logging.info("%s stream: %d %ss, %d per step (%d on process %d of %d), %.2f steps per epoch",
                 name, self.num_items, name, global_batch_size, self.batch_size, process_index,
                 process_count, self.num_items / global_batch_size)

  def __iter__(self) -> "ShardedStream[Item, Batch]":
    return self

  def __next__(self) -> Batch:
    return next(self._iterator)

  @property
  def step(self) -> int:
    """The index of the global batch the next `next()` returns."""
    return self._iterator.get_state()["next_index"]

  @property
  def epoch(self) -> float:
    """Passes over the items consumed so far (rows yielded / N, all processes)."""
    return self.step * self.global_batch_size / self.num_items

  def get_state(self) -> dict[str, Any]:
    """A JSON-able dict from which `set_state` resumes exactly."""
    return {"version": _STATE_VERSION, "step": self.step, "fingerprint": self.fingerprint,
            f"num_{self.name}s": self.num_items, "global_batch_size": self.global_batch_size}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Continues from a `get_state()` dict of a stream over the same items.

    The dict may come back from a checkpoint with numpy integers for its numbers.

    Raises:
      ValueError: the state is malformed, or comes from other items, another seed or another
        global batch size (the continuation would not be exact).
    """
    if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
      raise ValueError(f"data iterator state: expected a dict with version {_STATE_VERSION}, "
                       f"got {state!r}")
    if state.get("fingerprint") != self.fingerprint:
      raise ValueError(
          f"data iterator state comes from another stream: fingerprint {state.get('fingerprint')!r} "
          f"({state.get(f'num_{self.name}s')} {self.name}s, global_batch_size="
          f"{state.get('global_batch_size')}) != {self.fingerprint!r} ({self.num_items} {self.name}s, "
          f"global_batch_size={self.global_batch_size}); the {self.name}s, seed or batch size "
          "changed since it was saved")
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
      raise ValueError(f"data iterator state: step must be a non-negative integer, got {step!r}")
    self._iterator.set_state({"next_index": int(step)})
