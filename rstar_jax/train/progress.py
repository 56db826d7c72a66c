"""Progress lines with counts, rate and ETA for long phases (SFT and RL steps, rollouts, filters).

  bar = Progress("eval: rollouts", total=400)
  bar.update(done)          # logs at most every `interval_s` seconds, and at the end
"""
import time

from absl import logging


def format_eta(seconds: float) -> str:
  """`1h02m03s`."""
  minutes, secs = divmod(int(max(seconds, 0)), 60)
  return f"{minutes // 60}h{minutes % 60:02d}m{secs:02d}s"


class Progress:
  """Logs `what: done/total (pct), rate/s, ETA` as work completes: at most every `interval_s`,
  and at the end when the phase lasted longer than that (short phases stay silent).

  Args:
    what: the phase, e.g. "eval: rollouts".
    total: units of work in the phase.
    interval_s: least time between two lines (the last unit always logs).
  """

  def __init__(self, what: str, total: int, interval_s: float = 10.0):
    self.what, self.total, self.interval_s = what, total, interval_s
    self._start = self._last = time.monotonic()

  def update(self, done: int) -> None:
    now = time.monotonic()
    if now - self._last < self.interval_s and (done < self.total or self._last == self._start):
      return
    self._last = now
    rate = done / max(now - self._start, 1e-9)
    eta = (self.total - done) / rate if rate > 0 else float("inf")
    logging.info("%s: %d/%d (%.0f%%), %.1f/s, ETA %s", self.what, done, self.total,
                 100 * done / max(self.total, 1), rate, format_eta(eta) if eta != float("inf") else "?")
