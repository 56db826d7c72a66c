"""Limits of one run and the shape of an executor pool, with their validation.

Defaults are the rStar2 launch values (PAPER.md §3.2): 4 s of wall time and 384 MiB of
address space (Code Judge's 256 MiB plus its 128 MiB interpreter allowance), the CPU-time
limit equal to the wall limit, no core files. The other limits have no released value; ours
keep a snippet from exhausting the host: 32 MiB per written file, 64 MiB for its whole
working directory, 256 open files, 32 processes/threads, 512 MiB for all of a run's processes
together, 1 MiB kept per output stream.
"""
import dataclasses
import json
import math
import os

MIB = 1 << 20
# uids handed to snippets: pools on one host take disjoint blocks of this size from UID_BASE.
UID_BASE = 2_000_000
UID_BLOCK = 1 << 16


def check_positive(owner: str, name: str, value, kind=int) -> None:
  """Raises ValueError naming `owner.name` unless `value` is a positive `kind` (int or float).

  A float argument also accepts an int; bools are never numbers here.
  """
  if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
    raise ValueError(f"{owner}.{name} must be an {kind.__name__}, got {value!r}")
  if not value > 0:
    raise ValueError(f"{owner}.{name} must be > 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Limits:
  """Per-run limits (module docstring).

  Attributes:
    timeout_s: wall-clock seconds from fork to kill (enforced by the parent).
    memory_bytes: RLIMIT_AS, the address space of each process.
    run_memory_bytes: the memory all of a run's processes may hold together (their summed
      proportional set size, `memory`, polled every `memory.POLL_S`); over it the run is killed
      (memory_limit). Pools admit runs so that these budgets fit the host.
    cpu_s: RLIMIT_CPU seconds per process; None means ceil(timeout_s).
    file_size_bytes: RLIMIT_FSIZE; a longer write fails with EFBIG ("File too large").
    open_files: RLIMIT_NOFILE.
    processes: RLIMIT_NPROC, processes and threads of the run's uid (its own uid).
    output_bytes: bytes kept per stream; more kills the run (status output_limit).
    workdir_bytes: size of the run's tmpfs (its /tmp and working directory).
  """
  timeout_s: float = 4.0
  memory_bytes: int = 384 * MIB
  run_memory_bytes: int = 512 * MIB
  cpu_s: int | None = None
  file_size_bytes: int = 32 * MIB
  open_files: int = 256
  processes: int = 32
  output_bytes: int = 1 * MIB
  workdir_bytes: int = 64 * MIB

  def __post_init__(self):
    check_positive("Limits", "timeout_s", self.timeout_s, float)
    for field in dataclasses.fields(self):
      if field.name not in ("timeout_s", "cpu_s"):
        check_positive("Limits", field.name, getattr(self, field.name))
    if self.cpu_s is not None:
      check_positive("Limits", "cpu_s", self.cpu_s)
    if self.open_files < 16:
      raise ValueError(f"Limits.open_files must be >= 16 (the interpreter needs some), "
                       f"got {self.open_files}")

  @property
  def cpu_seconds(self) -> int:
    """The RLIMIT_CPU soft limit in whole seconds."""
    return self.cpu_s if self.cpu_s is not None else math.ceil(self.timeout_s)


@dataclasses.dataclass(frozen=True)
class PoolConfig:
  """An executor pool: zygote processes, each running up to `jobs_per_worker` snippets.

  Attributes:
    workers: number of zygotes (None: one per CPU core).
    jobs_per_worker: snippets one zygote runs at the same time.
    runnable_per_worker: a zygote starts another snippet only while fewer than this many of
      its snippets are runnable (using or waiting for a CPU); snippets that sleep or block do
      not count. None: ceil(2 x cores / workers). This keeps CPU-bound snippets from sharing
      the cores so thinly that they hit the wall-clock limit, without idling slots that
      sleeping snippets hold.
    preload: modules each zygote imports once, so snippets import them for free.
    warmup: also make a few typical calls of the preloaded modules that `zygote.WARMUPS`
      knows (sympy, numpy), so that their lazy imports and caches are paid once.
    limits: per-run Limits.
    uid_base: first uid of the blocks pools take (UID_BLOCK uids each); no other process on
      the host may use these uids.
    writable_dirs: world-writable directories besides /tmp that each run sees as its own
      fresh tmpfs (those that exist on the host).
    max_attempts: runs of one job when its zygote dies under it; then sandbox_error.
    host_memory_bytes: the memory the pool's runs may hold together; None: 3/4 of what the host
      (or the pool's memory cgroup) has available when the pool starts. Each zygote runs at
      most `host_memory_bytes // (workers x limits.run_memory_bytes)` snippets at once
      (`runs_per_worker`).
    self_check: on start, run `pool.SELF_CHECK` and refuse to serve if a run cannot see the
      interpreter's files or import lazily from them.
  """
  workers: int | None = None
  jobs_per_worker: int = 16
  runnable_per_worker: int | None = None
  preload: tuple[str, ...] = ("numpy", "sympy")
  warmup: bool = True
  limits: Limits = Limits()
  uid_base: int = UID_BASE
  writable_dirs: tuple[str, ...] = ("/var/tmp", "/dev/shm", "/run/lock")
  max_attempts: int = 2
  host_memory_bytes: int | None = None
  self_check: bool = True

  def __post_init__(self):
    if self.workers is not None:
      check_positive("PoolConfig", "workers", self.workers)
    check_positive("PoolConfig", "jobs_per_worker", self.jobs_per_worker)
    if self.runnable_per_worker is not None:
      check_positive("PoolConfig", "runnable_per_worker", self.runnable_per_worker)
    check_positive("PoolConfig", "max_attempts", self.max_attempts)
    check_positive("PoolConfig", "uid_base", self.uid_base)
    if self.host_memory_bytes is not None:
      check_positive("PoolConfig", "host_memory_bytes", self.host_memory_bytes)
    if self.num_workers * self.jobs_per_worker > UID_BLOCK:
      raise ValueError(f"PoolConfig: workers ({self.num_workers}) x jobs_per_worker "
                       f"({self.jobs_per_worker}) exceeds the uid block ({UID_BLOCK})")
    for name in self.preload:
      if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
        raise ValueError(f"PoolConfig.preload: {name!r} is not a module name")
    for path in self.writable_dirs:
      if not isinstance(path, str) or not os.path.isabs(path) or path.rstrip("/") == "/tmp":
        raise ValueError(f"PoolConfig.writable_dirs: {path!r} must be an absolute path "
                         f"other than /tmp")

  @property
  def num_workers(self) -> int:
    """The number of zygotes."""
    return self.workers if self.workers is not None else (os.cpu_count() or 1)

  @property
  def max_runnable(self) -> int:
    """runnable_per_worker, resolved."""
    if self.runnable_per_worker is not None:
      return self.runnable_per_worker
    return math.ceil(2 * (os.cpu_count() or 1) / self.num_workers)

  def runs_per_worker(self, available_bytes: int) -> int:
    """Snippets one zygote may run at once: jobs_per_worker, fewer where the run memory budgets
    would not fit `host_memory_bytes` (None: 3/4 of `available_bytes`).

    Raises:
      ValueError: not even one run per zygote fits, naming the numbers.
    """
    host = self.host_memory_bytes
    if host is None:
      host = available_bytes * 3 // 4
    fit = host // (self.num_workers * self.limits.run_memory_bytes)
    if fit < 1:
      raise ValueError(
          f"the sandbox's run memory budgets do not fit: {self.num_workers} workers x "
          f"{self.limits.run_memory_bytes // MIB} MiB per run > {host // MIB} MiB for the pool "
          f"({'PoolConfig.host_memory_bytes' if self.host_memory_bytes else '3/4 of the available memory'}); "
          "lower Limits.run_memory_bytes or the number of workers")
    return min(self.jobs_per_worker, fit)

  def to_json(self) -> str:
    """The config as JSON (what a zygote receives on its command line)."""
    return json.dumps(dataclasses.asdict(self))

  @classmethod
  def from_json(cls, text: str) -> "PoolConfig":
    """Inverse of to_json."""
    fields = json.loads(text)
    fields["limits"] = Limits(**fields["limits"])
    fields["preload"] = tuple(fields["preload"])
    fields["writable_dirs"] = tuple(fields["writable_dirs"])
    return cls(**fields)
