"""Memory accounting for the sandbox: what one run holds, and what the host can give the pool.

A run is charged the proportional set size (PSS, /proc/PID/smaps_rollup) summed over its
processes: a page mapped by k processes counts 1/k to each. So pages a run's processes share with
each other (copy-on-write after a fork inside the run) are counted once in full, private pages in
full, and the zygote's pages that a run only reads count the run's share of their mappers (at
most the zygote's own resident size, ~65 MiB with numpy and sympy preloaded). RLIMIT_AS alone
caps each process, not a run: 30 forked children of 120 MiB each held ~3.6 GB at once.

The zygote polls (`run_processes`, `proportional_bytes`) every `POLL_S`; a run may overshoot its
budget by what it allocates within one poll. Reading smaps_rollup costs ~0.2 ms per process, so
single-process runs, which RLIMIT_AS already holds under the budget, are not read at all.
"""
import os

POLL_S = 0.05
_KIB = 1024


def run_processes(pid: int) -> list[int]:
  """`pid` and every process below it, from /proc/PID/task/TID/children (host pids).

  Processes that exit while they are listed are left out; a fork that lands between two reads
  is seen at the next poll.
  """
  found, pending = [], [pid]
  while pending:
    p = pending.pop()
    try:
      tasks = os.listdir(f"/proc/{p}/task")
    except OSError:  # exited
      continue
    found.append(p)
    for tid in tasks:
      try:
        with open(f"/proc/{p}/task/{tid}/children", "rb") as f:
          pending.extend(int(c) for c in f.read().split())
      except OSError:
        continue
  return found


def proportional_bytes(pids) -> int:
  """The summed PSS of `pids` in bytes (processes gone meanwhile count 0)."""
  total = 0
  for pid in pids:
    try:
      with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
        text = f.read()
    except OSError:
      continue
    total += _field_kib(text, b"Pss:") * _KIB + _field_kib(text, b"SwapPss:") * _KIB
  return total


def _field_kib(text: bytes, name: bytes) -> int:
  """The kB value of line `name` in a /proc key-value file (0 when absent)."""
  start = text.find(b"\n" + name)
  if start < 0:
    if not text.startswith(name):
      return 0
    start = -1
  return int(text[start + 1 + len(name):].split(None, 1)[0])


def available_bytes(meminfo: bytes | None = None, cgroup_limits: tuple[int, ...] | None = None) -> int:
  """Memory this host can still give: MemAvailable, or less where our cgroup caps memory.

  Args:
    meminfo: the text of /proc/meminfo (read when None).
    cgroup_limits: free bytes under each memory limit of our cgroups (read when None:
      `cgroup_headroom()`).
  """
  if meminfo is None:
    with open("/proc/meminfo", "rb") as f:
      meminfo = f.read()
  available = _field_kib(meminfo, b"MemAvailable:") * _KIB
  if cgroup_limits is None:
    cgroup_limits = cgroup_headroom()
  return min((available, *cgroup_limits))


def cgroup_headroom() -> tuple[int, ...]:
  """Limit minus usage of this process's memory cgroup (v2 memory.max, v1 limit_in_bytes), where
  one is set and readable; () otherwise (no limit, or cgroups not mounted where expected)."""
  try:
    with open("/proc/self/cgroup") as f:
      lines = f.read().splitlines()
  except OSError:
    return ()
  headroom = []
  for line in lines:
    _, controllers, path = line.split(":", 2)
    if controllers == "":
      files = (f"/sys/fs/cgroup{path}/memory.max", f"/sys/fs/cgroup{path}/memory.current")
    elif "memory" in controllers.split(","):
      base = f"/sys/fs/cgroup/memory{path}"
      files = (f"{base}/memory.limit_in_bytes", f"{base}/memory.usage_in_bytes")
    else:
      continue
    try:
      with open(files[0]) as f:
        limit = f.read().strip()
      with open(files[1]) as f:
        usage = int(f.read())
    except (OSError, ValueError):
      continue
    if limit.isdigit() and int(limit) < 1 << 60:  # "max" or v1's huge value: no limit
      headroom.append(max(0, int(limit) - usage))
  return tuple(headroom)
