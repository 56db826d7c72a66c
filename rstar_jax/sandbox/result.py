"""The structured result of one sandboxed run, and how its status is decided.

A run ends in exactly one status:
  ok             the program exited 0 before every limit;
  runtime_error  it exited non-zero or was killed by a signal it caused (an exception, a
                 segfault, `sys.exit(3)`, a RLIMIT_FSIZE write error);
  timeout        the wall-clock limit was reached (the parent killed it), or the kernel
                 stopped it at the CPU-time limit;
  memory_limit   it failed with a `MemoryError` (RLIMIT_AS refused an allocation), or its
                 processes together held more than the run's memory budget (the parent
                 killed it; stderr ends with a MemoryError line saying so);
  output_limit   stdout or stderr grew past the byte cap, so the parent killed it;
  sandbox_error  the sandbox itself failed (set-up, a worker lost twice); not the code's fault.
"""
import dataclasses
import re

STATUSES = ("ok", "runtime_error", "timeout", "memory_limit", "output_limit", "sandbox_error")

# A MemoryError reported by the interpreter's traceback ("MemoryError", "MemoryError: ...")
# or by the §3.1 wrapper ("MemoryError: ...", "MemoryError at line 3: ..."). numpy's
# allocation failure displays itself as MemoryError too.
_MEMORY_ERROR = re.compile(r"^MemoryError\b", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class ExecutionResult:
  """What one run of a program produced.

  Attributes:
    status: one of STATUSES.
    stdout: everything the program wrote to stdout, decoded as UTF-8 (undecodable bytes
      become U+FFFD), at most the executor's byte cap.
    stderr: the same for stderr.
    exit_code: the exit status (negative: killed by that signal, as `subprocess` reports
      it); None when the parent killed the run (timeout, output_limit, the run's memory
      budget) or it never ran.
    wall_time_s: the `cost` / `execution time` of PAPER.md §3.3: seconds from the start of
      the program to its exit, measured inside the child, so start-up is excluded; when the
      program did not finish through the normal exit path (killed, `os._exit`), the wall
      time the parent measured from fork to the child's end.
  """
  status: str
  stdout: str
  stderr: str
  exit_code: int | None
  wall_time_s: float

  def __post_init__(self):
    if self.status not in STATUSES:
      raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


def classify(exit_code: int | None, stderr: str, *, timed_out: bool, output_capped: bool,
             cpu_limited: bool, memory_capped: bool = False) -> str:
  """The status of a finished run (module docstring), from what the parent observed.

  Args:
    exit_code: the decoded exit status (negative for a signal), None if the parent killed it.
    stderr: the program's stderr, where a MemoryError is recognised.
    timed_out: the parent killed the run at the wall-clock limit.
    output_capped: the parent killed the run because an output stream passed its cap.
    cpu_limited: the run ended on the CPU-time limit (SIGXCPU, or SIGKILL with the CPU time
      used at the hard limit).
    memory_capped: the parent killed the run because its processes held more than the run's
      memory budget.
  """
  if output_capped:
    return "output_limit"
  if memory_capped:
    return "memory_limit"
  if timed_out or cpu_limited:
    return "timeout"
  if exit_code == 0:
    return "ok"
  if _MEMORY_ERROR.search(stderr):
    return "memory_limit"
  return "runtime_error"
