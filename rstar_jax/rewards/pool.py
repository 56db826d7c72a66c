"""Time-limited verification in persistent worker processes, usable from any thread.

sympy and math-verify can run for minutes on a pathological answer (`\\boxed{9^{9^{9^9}}}`), and
a SIGALRM deadline only works in a main thread. So each verification runs in a
separate worker process (`python -m rstar_jax.rewards.worker`, a fresh interpreter: no fork of a
threaded parent, no inherited XLA runtime) and the calling thread waits for the answer with a
deadline.

What it guarantees:
  * A call returns within `timeout_s` after its worker took the request, and reports `timed_out`
    when the verification did not finish. Two layers: the worker stops the verification itself
    at `worker_timeout_s(timeout_s)` = 7/8 of the limit (3.5 s of 4 s) and answers, so the
    worker lives on; if no answer has come at `timeout_s` (a single long C call, which a signal
    cannot interrupt), the worker is killed (SIGKILL) and reaped, and the next call on that slot
    starts a fresh one (~0.3-0.45 s of imports). Start-up is never counted in the limit.
  * No thread is started: the calling thread itself waits (`select` on the worker's pipe), so
    nothing is left behind, whether called from a thread pool or via `asyncio.to_thread`.
  * Up to `num_workers` calls run at once; more callers wait for a free worker.
  * A worker gets an address-space limit (`memory_limit_mb`, RLIMIT_AS); reaching it fails that
    verification (reported as an error, or the worker dies and is replaced), never the caller.
  * Workers exit when the pool is closed, and on their own if the parent dies (end of input, or
    the worker's watchdog within about a second while it is busy).
What it does not do: isolate the worker from the file system or network (it runs no user code:
graders only parse maths, see `safe_sympy`); bound CPU use other than by the time limit.
"""
import dataclasses
import json
import os
import pathlib
import select
import subprocess
import sys
import threading
import time

_ROOT = pathlib.Path(__file__).resolve().parents[2]  # the directory holding rstar_jax/
_START_TIMEOUT_S = 120.0
# The share of the hard limit a worker gives the verification itself; the rest (0.5 s of 4 s)
# is for the worker's signal handler to run and its answer to reach the parent.
_WORKER_TIMEOUT_FRACTION = 0.875


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What one verification in a worker came to.

  Attributes:
    correct: the verdict; False whenever the verification did not finish.
    candidate: the extracted answer, when the worker returned one.
    timed_out: the verification did not finish in time: the worker stopped it at its own
      deadline, or the pool killed the worker at the hard limit.
    error: a failure inside the worker (e.g. its memory limit), or None.
  """
  correct: bool
  candidate: str | None = None
  timed_out: bool = False
  error: str | None = None


def _is_int_not_bool(value) -> bool:
  """An `int` proper: `True` is an int to Python but no valid count."""
  return isinstance(value, int) and not isinstance(value, bool)


def check_limits(num_workers: int, timeout_s: float, memory_limit_mb: int,
                 prefix: str = "") -> None:
  """Raises ValueError naming the first invalid pool setting (`prefix` + its name)."""
  if not _is_int_not_bool(num_workers) or num_workers < 1:
    raise ValueError(f"{prefix}num_workers must be a positive int, got {num_workers!r}")
  if not (_is_int_not_bool(timeout_s) or isinstance(timeout_s, float)) or not timeout_s > 0:
    raise ValueError(f"{prefix}timeout_s must be a positive number, got {timeout_s!r}")
  if not _is_int_not_bool(memory_limit_mb) or memory_limit_mb < 0:
    raise ValueError(f"{prefix}memory_limit_mb must be a non-negative int, got "
                     f"{memory_limit_mb!r}")


def worker_timeout_s(timeout_s: float) -> float:
  """The deadline a worker sets its verification: `0.875 * timeout_s`, below the hard limit."""
  return _WORKER_TIMEOUT_FRACTION * timeout_s


class _WorkerExited(Exception):
  """The worker process closed its output."""


class _Worker:
  """One worker process; used by one thread at a time (the pool hands it out)."""

  def __init__(self, memory_limit_mb: int):
    self._memory_limit_mb = memory_limit_mb
    self._process = None
    self._buffer = b""
    self._ready = False

  @property
  def pid(self) -> int | None:
    return self._process.pid if self._process is not None else None

  def spawn(self) -> None:
    """Starts the process unless it runs; `wait_ready` must follow."""
    if self._process is not None and self._process.poll() is None:
      return
    self.stop()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH")) if p)
    self._process = subprocess.Popen(
        [sys.executable, "-m", "rstar_jax.rewards.worker",
         f"--memory_limit_mb={self._memory_limit_mb}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
    self._buffer = b""
    self._ready = False

  def wait_ready(self) -> None:
    """Waits for the worker's imports (not counted in any verification's time limit)."""
    if self._ready:
      return
    try:
      ready = self._read_line(time.monotonic() + _START_TIMEOUT_S)
    except _WorkerExited:
      ready = "end of output"
    self._ready = ready == {"ready": True}
    if not self._ready:
      self.stop()
      raise RuntimeError(f"verification worker failed to start (got {ready!r}); run "
                         "`python -m rstar_jax.rewards.worker` to see its error")

  def _read_line(self, deadline: float):
    """The next JSON line from the worker; None if the deadline passes.

    Raises:
      _WorkerExited: the worker closed its output (it died) before a full line.
    """
    fd = self._process.stdout.fileno()
    while b"\n" not in self._buffer:
      remaining = deadline - time.monotonic()
      if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
        return None
      chunk = os.read(fd, 65536)
      if not chunk:
        raise _WorkerExited()
      self._buffer += chunk
    line, self._buffer = self._buffer.split(b"\n", 1)
    return json.loads(line)

  def run(self, request: dict, timeout_s: float) -> Outcome:
    self.spawn()
    self.wait_ready()
    try:
      self._process.stdin.write((json.dumps(request) + "\n").encode())
      self._process.stdin.flush()
    except (BrokenPipeError, OSError):
      self.stop()
      return Outcome(False, error="worker exited while receiving the request")
    try:
      reply = self._read_line(time.monotonic() + timeout_s)
    except _WorkerExited:
      self.stop()
      return Outcome(False, error="worker exited during the verification")
    if reply is None:
      self.stop()
      return Outcome(False, timed_out=True)
    if "error" in reply:
      return Outcome(False, error=reply["error"])
    return Outcome(bool(reply["correct"]), candidate=reply["candidate"],
                   timed_out=bool(reply["timed_out"]))

  def stop(self) -> None:
    """Kills and reaps the process (if any)."""
    if self._process is None:
      return
    if self._process.poll() is None:
      self._process.kill()
    self._process.wait()
    self._ready = False
    for stream in (self._process.stdin, self._process.stdout):
      try:
        stream.close()
      except OSError:  # the pipe may already be broken
        pass
    self._process = None


class VerifierPool:
  """Runs `verifier.verify` in worker processes with a hard time limit per call.

  Workers start on first use (or by `start()`), never at construction. Thread-safe.

  Args:
    num_workers: how many verifications may run at once.
    timeout_s: the hard limit of one verification (PAPER.md §4: the released reward runs
      under the sandbox's 4 s); workers stop at `worker_timeout_s(timeout_s)` themselves.
    memory_limit_mb: RLIMIT_AS of each worker; 0 sets none.
  """

  def __init__(self, num_workers: int = 2, timeout_s: float = 4.0, memory_limit_mb: int = 2048):
    check_limits(num_workers, timeout_s, memory_limit_mb)
    self.timeout_s = float(timeout_s)
    self._workers = [_Worker(memory_limit_mb) for _ in range(num_workers)]
    self._idle = list(self._workers)
    self._available = threading.Condition()
    self._closed = False

  def _checkout(self) -> _Worker:
    with self._available:
      while not self._idle and not self._closed:
        self._available.wait()
      if self._closed:
        raise RuntimeError("VerifierPool is closed")
      return self._idle.pop()

  def _checkin(self, worker: _Worker) -> None:
    with self._available:
      if not self._closed:
        self._idle.append(worker)
        self._available.notify()
        return
    worker.stop()  # the pool was closed while this call ran

  def start(self) -> None:
    """Starts every worker now (in parallel), so the first calls do not wait for imports."""
    workers = [self._checkout() for _ in self._workers]
    try:
      for worker in workers:
        worker.spawn()
      for worker in workers:
        worker.wait_ready()
    finally:
      for worker in workers:
        self._checkin(worker)

  def verify(self, response: str, answer: str, scope: str = "full_response",
             strict_integer: bool = False) -> Outcome:
    """`verifier.verify(...)` in a worker, bounded by `timeout_s`; blocks the calling thread."""
    worker = self._checkout()
    try:
      return worker.run({"response": response, "answer": answer, "scope": scope,
                         "strict_integer": strict_integer,
                         "timeout_s": worker_timeout_s(self.timeout_s)}, self.timeout_s)
    finally:
      self._checkin(worker)

  def worker_pids(self) -> list[int]:
    """Process ids of the running workers (for monitoring and tests)."""
    return [w.pid for w in self._workers if w.pid is not None]

  def close(self) -> None:
    """Stops the idle workers now and the busy ones when their calls return. Idempotent."""
    with self._available:
      self._closed = True
      idle, self._idle = self._idle, []
      self._available.notify_all()
    for worker in idle:
      worker.stop()

  def __enter__(self) -> "VerifierPool":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
