"""Metrics: one flat dict per step to `workdir/metrics.jsonl` and TensorBoard (process 0 only).

Each line is `{"step": s, "<name>": value, ...}` with slash-separated names (`loss/policy`).
On resume from a checkpoint at step k, `truncate_after(k)` drops the lines of steps > k (they are
about to be recomputed identically), rewriting the file atomically; earlier lines are kept byte
for byte, so a resumed run's file equals an uninterrupted run's.
"""
import json
import math
import os
from typing import Any, Mapping

import jax
import numpy as np
from tensorboardX import SummaryWriter

METRICS_FILE = "metrics.jsonl"


def _plain(value: Any) -> Any:
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    value = np.asarray(value).item()
  if isinstance(value, float) and not math.isfinite(value):
    return repr(value)  # JSON has no inf/nan; keep it readable
  return value


def _step_of(line: str) -> int | None:
  """The step of a metrics line, or None for a blank or partly written (interrupted) line."""
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None


class MetricsWriter:
  """Appends metric rows to metrics.jsonl and TensorBoard scalars under `workdir/tensorboard`."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, METRICS_FILE)
    self._is_writer = jax.process_index() == 0
    self._tb = None
    if self._is_writer:
      os.makedirs(workdir, exist_ok=True)
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Writes one row; returns it as plain Python values."""
    row = {"step": int(step), **{k: _plain(v) for k, v in sorted(metrics.items())}}
    if self._is_writer:
      with open(self.path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
      self._scalars(step, {k: v for k, v in row.items() if k != "step"})
    return row

  def _scalars(self, step: int, metrics: Mapping[str, Any]) -> None:
    for name, value in sorted(metrics.items()):
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        # TensorBoard tags allow [A-Za-z0-9_./-]: "eval/avg@4" becomes "eval/avg_at_4"
        self._tb.add_scalar(name.replace("@", "_at_"), value, global_step=int(step))
    self._tb.flush()

  def scalars(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Writes numeric metrics to TensorBoard only (e.g. an evaluation at a phase end, which is not
    a training step's row)."""
    if self._is_writer:
      self._scalars(step, metrics)

  def truncate_after(self, step: int) -> None:
    """Drops rows with step > `step` (atomically); other lines are kept unchanged."""
    if not self._is_writer or not os.path.exists(self.path):
      return
    with open(self.path, encoding="utf-8") as f:
      lines = f.readlines()
    kept = [line for line in lines if (row_step := _step_of(line)) is not None and row_step <= step]
    if len(kept) == len(lines):
      return
    tmp = self.path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.writelines(kept)
    os.replace(tmp, self.path)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The rows of workdir/metrics.jsonl (none if it does not exist; a partly written line is skipped)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if _step_of(line) is not None]
