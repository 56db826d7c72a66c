"""Checkpoints with orbax: the train state plus a JSON record, last N kept, saved asynchronously.

Layout: `workdir/checkpoints/<step>/{state,meta}`. `state` is the TrainState pytree (params,
optimizer state, step, run key) restored directly into its shardings; `meta` is JSON: the stage,
the data iterator's state, the config and anything else the loop needs to continue exactly.

Guarantees:
- A save is atomic: orbax writes into a temporary directory and renames it when complete, so a
  run killed mid-save leaves the previous checkpoints as they were (the partial one is ignored).
- Old checkpoints are removed only after a newer one is complete (max_to_keep); a save that fails
  deletes nothing.
- Restore takes the newest readable checkpoint. One that cannot be read (corrupt or partial) is
  reported, moved aside to `workdir/checkpoints_unreadable/<step>` (kept, not deleted) and the
  previous one is used.
- In a multi-process run every process restores the same step: they try process 0's steps,
  newest first, and a step whose files any process cannot see whole (`_looks_whole`: both items'
  metadata present and parsable) is set aside for all of them, and so is one whose restore raises
  on any of them. (A restore that fails on one process inside orbax's own collectives can still
  leave the others waiting until JAX's heartbeat timeout.)
"""
import json
import os
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from rstar_jax.train import distributed
from rstar_jax.train.optim import TrainState

UNREADABLE_DIR = "checkpoints_unreadable"


class Checkpointer:
  """Saves and restores (TrainState, meta dict) under `directory`.

  Args:
    directory: where step directories live (created if missing).
    max_to_keep: newest checkpoints kept; older ones are deleted after a newer save completes.
    async_save: write in a background thread (the step loop continues meanwhile).
  """

  def __init__(self, directory: str, max_to_keep: int = 3, async_save: bool = True):
    if max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
    self.directory = os.path.abspath(directory)
    self._options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=async_save)
    self._manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(self.directory, options=self._options, item_names=("state", "meta"))

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: TrainState, meta: dict[str, Any]) -> None:
    """Starts saving `state` and `meta` (JSON-able) as checkpoint `step`."""
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)))

  def wait(self) -> None:
    """Blocks until pending saves are complete; raises if one failed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def restore_latest(self, like: TrainState) -> tuple[TrainState, dict[str, Any]] | None:
    """The newest checkpoint every process can read, as (state placed like `like`, meta), or None
    if there is none (module docstring)."""
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
    for step in reversed(distributed.broadcast_from_zero(self.steps())):
      if distributed.any_process(not self._looks_whole(step)):
        self._set_aside(step, "its metadata is missing or unreadable on at least one process")
        continue
      restored, error = None, ""
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except
        error = f"{type(e).__name__}: {e}"
      if not distributed.any_process(bool(error)):
        return restored.state, dict(restored.meta)
      self._set_aside(step, error or "another process could not restore it")
    return None

  def _looks_whole(self, step: int) -> bool:
    """Whether this process sees step's `meta` and `state` metadata files and can parse them."""
    try:
      for item in ("meta/metadata", "state/_METADATA"):
        with open(os.path.join(self.directory, str(step), item), encoding="utf-8") as f:
          json.load(f)
      return True
    except Exception:  # pylint: disable=broad-except  # whatever it is, every process must vote
      return False

  def _set_aside(self, step: int, reason: str) -> None:
    """Moves an unreadable checkpoint out of the way (never deletes it) and reopens the manager."""
    target_dir = os.path.join(os.path.dirname(self.directory), UNREADABLE_DIR)
    target = os.path.join(target_dir, f"{step}-{int(time.time())}")
    logging.error("checkpoint %d in %s is unreadable (%s); moving it to %s and trying the previous one",
                  step, self.directory, reason, target)
    self._manager.close()

    def move() -> None:
      os.makedirs(target_dir, exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), target)

    # moved before any process lists the steps again; a failed move is raised on every process
    distributed.on_process_zero(move, f"setting checkpoint {step} aside")
    self._manager = self._open()
