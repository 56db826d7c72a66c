"""A zygote's bookkeeping of its runs: what each child produced, and when it must be acted on.

`Run` holds one child's pipes' contents, why the parent killed it (if it did), and how it
ended. `Deadlines` is the heap of times at which the zygote must look at a run again (its
wall-clock deadline, then the reap grace after a kill). Each entry names its run, not its pid:
a run that exits leaves its entry behind, and the kernel may hand the same pid to a later run
before that entry comes due; the stale entry then concerns a run that has ended and is
skipped, so the later run keeps its own deadline.
"""
import heapq
import itertools
import os


class Run:
  """One running child and what it produced so far.

  Attributes:
    job_id, slot, pid: the job, the slot (and so uid) it runs in, the child's pid (pid 1 of
      its own PID namespace, seen from the zygote).
    start, deadline: monotonic times of the fork and of the wall-clock limit.
    out, err, status_pipe: bytes read so far from stdout, stderr and the status pipe.
    buffers: read fd -> the buffer it fills, for the pipes still open.
    killed: None, "timeout", "output" or "memory": why the parent killed it.
    memory_held: the bytes its processes held when it was killed over its memory budget.
    capped: an output stream went past the byte cap.
    kill_time: when the parent killed it.
    wait_status, cpu_s, end: set once it is reaped (wait4 status, CPU seconds, time).
    answered: its result was sent.
  """

  def __init__(self, job_id, slot: int, pid: int, start: float, deadline: float, fds):
    self.job_id, self.slot, self.pid = job_id, slot, pid
    self._stat_fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    self.start, self.deadline = start, deadline
    self.out, self.err, self.status_pipe = bytearray(), bytearray(), bytearray()
    self.buffers = dict(zip(fds, (self.out, self.err, self.status_pipe)))
    self.status_fd = fds[2]
    self.killed = None
    self.capped = False
    self.memory_held = 0
    self.kill_time = 0.0
    self.wait_status = None
    self.cpu_s = 0.0
    self.end = None
    self.answered = False

  @property
  def reaped(self) -> bool:
    """Whether the child has been reaped (nothing of the run is left)."""
    return self.wait_status is not None

  def is_runnable(self) -> bool:
    """Whether the child's pid 1 is in state R (running or waiting for a CPU)."""
    if self.reaped:
      return False
    try:
      head = os.pread(self._stat_fd, 64, 0)
    except OSError:  # exited, not reaped yet
      return False
    return head[head.rfind(b")") + 2:][:1] == b"R"

  def set_reaped(self, wait_status: int, cpu_s: float, end: float) -> None:
    """Records how the child ended (from wait4) and releases its /proc handle."""
    self.wait_status, self.cpu_s, self.end = wait_status, cpu_s, end
    os.close(self._stat_fd)


class Deadlines:
  """A heap of (time, run) entries; `pop_due` returns the runs still alive whose time came."""

  def __init__(self):
    self._heap: list = []
    self._serial = itertools.count()  # orders equal times without comparing runs

  def push(self, when: float, run: Run) -> None:
    """Asks to look at `run` again at monotonic time `when`."""
    heapq.heappush(self._heap, (when, next(self._serial), run))

  def next_time(self) -> float | None:
    """The earliest time of an entry, or None when there is none."""
    return self._heap[0][0] if self._heap else None

  def pop_due(self, now: float) -> list[Run]:
    """Removes the entries due at `now`; returns their runs that are not reaped, in order."""
    due = []
    while self._heap and self._heap[0][0] <= now:
      run = heapq.heappop(self._heap)[2]
      if not run.reaped:
        due.append(run)
    return due
