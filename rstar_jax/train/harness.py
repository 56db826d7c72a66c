"""The step harness SFT and RL share: restore, metrics truncation on resume, the non-finite check,
progress with ETA, and the checkpoint cadence.

  harness = StepHarness(workdir, config.checkpoint)
  state, meta = harness.restore(state)              # newest checkpoint, or (state, None)
  for step in ...:
    ...
    harness.finish_step(step, state, row, meta, total=last_step, save=step % every == 0)
  harness.close()

Steps are global: one numbering over a run's phases (SFT steps, then RL steps), used as the
checkpoint index and as `step` in metrics.jsonl. A restored checkpoint at step k drops the
metrics rows of steps > k, which the resumed run recomputes identically. A row with a
non-finite value stops the run before anything of that step is written or saved, naming the
step and the checkpoint that stays the newest.
"""
import json
import math
import time
from typing import Any, Mapping

import ml_collections
from absl import logging

from rstar_jax.train import checkpoint as checkpoint_lib
from rstar_jax.train import metrics as metrics_lib
from rstar_jax.train import progress
from rstar_jax.train.optim import TrainState


class StepHarness:
  """Checkpoints under workdir/checkpoints and metrics in workdir/metrics.jsonl for a step loop.

  Args:
    workdir: the run directory.
    checkpoint_config: config.checkpoint (max_to_keep, async_save).
  """

  def __init__(self, workdir: str, checkpoint_config: ml_collections.ConfigDict):
    self.checkpointer = checkpoint_lib.Checkpointer(
        f"{workdir}/checkpoints", checkpoint_config.max_to_keep, checkpoint_config.async_save)
    self.writer = metrics_lib.MetricsWriter(workdir)
    self.workdir = workdir
    self._phase_start: tuple[float, int] | None = None

  def restore(self, like: TrainState) -> tuple[TrainState, dict[str, Any] | None]:
    """(the newest readable checkpoint's state and meta) or (like, None); drops later metrics rows."""
    restored = self.checkpointer.restore_latest(like)
    step = 0
    if restored is not None:
      like, meta = restored
      step = self.checkpoint_step(meta)
      logging.info("resumed from checkpoint %d (%s)", step, meta.get("phase", "?"))
    self.writer.truncate_after(step)
    return like, None if restored is None else meta

  @staticmethod
  def checkpoint_step(meta: Mapping[str, Any]) -> int:
    return int(meta["global_step"])

  def last_saved(self) -> int:
    steps = self.checkpointer.steps()
    return steps[-1] if steps else 0

  def start_phase(self, first_step: int) -> None:
    """Starts the ETA clock for a loop whose next step is `first_step`."""
    self._phase_start = (time.monotonic(), first_step)

  def check_finite(self, step: int, row: Mapping[str, Any]) -> None:
    """Raises FloatingPointError naming the step and the non-finite metrics."""
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
      raise FloatingPointError(
          f"non-finite {', '.join(sorted(bad))} at step {step}; nothing of this step was saved, and "
          f"checkpoint {self.last_saved()} stays the newest (resume from it with other settings)")

  def eta(self, step: int, last_step: int) -> str:
    """The ETA to `last_step` from the pace since `start_phase`."""
    if self._phase_start is None or step <= self._phase_start[1] - 1:
      return "?"
    began, first = self._phase_start
    per_step = (time.monotonic() - began) / (step - first + 1)
    return progress.format_eta(per_step * (last_step - step))

  def finish_step(self, step: int, state: TrainState, row: Mapping[str, Any], meta: Mapping[str, Any],
                  save: bool) -> dict[str, Any]:
    """Checks the row, writes it as metrics step `step`, saves a checkpoint if `save`."""
    self.check_finite(step, row)
    written = self.writer.write(step, row)
    if save:
      self.save(step, state, meta)
    return written

  def save(self, step: int, state: TrainState, meta: Mapping[str, Any]) -> None:
    self.checkpointer.save(step, state, {**json.loads(json.dumps(dict(meta))), "global_step": step})

  def close(self) -> None:
    self.checkpointer.close()
    self.writer.close()
