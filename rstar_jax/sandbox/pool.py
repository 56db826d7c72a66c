"""The executor: warm zygote processes behind one asyncio queue, answering every job once.

`Pool.run(source, stdin)` runs `source` as a Python program (`python source.py` semantics,
stdin fed from `stdin`) and returns an ExecutionResult. Each run is a fork of a zygote that
imported the preloaded modules (default numpy, sympy) once, confined before the program
starts (`zygote`, `isolation`).

What is covered (each claim has an adversarial test in tests/sandbox_protection_test.py):
- Runaway code: the parent SIGKILLs the run at the wall-clock limit, whatever the program
  does (busy loops, sleeps, handlers for SIGALRM/SIGTERM/SIGXCPU); status timeout, the output
  written before the kill is kept.
- Escaping the kill: each run is pid 1 of its own PID namespace, so when it ends, every
  process it started is dead, `setsid` and double forks included, before the answer is sent.
- Fork bombs: RLIMIT_NPROC on the run's own uid (no other run shares it).
- Memory: RLIMIT_AS per process (MemoryError, status memory_limit), and a budget per run
  (`Limits.run_memory_bytes`) over all its processes, polled by the zygote, which kills a run
  over it (memory_limit): a run that forks many children cannot hold more than its budget, give
  or take what it allocates within one poll. The pool admits runs so that their budgets fit the
  host (`PoolConfig.runs_per_worker`).
- Output floods: the parent keeps at most `output_bytes` per stream while reading, then kills
  the run (status output_limit); nothing unbounded is buffered.
- Disk: RLIMIT_FSIZE per file; the run's /tmp (its working directory) and the other
  world-writable directories are a fresh size-capped tmpfs that vanishes with the run, so
  nothing is written to the host's disks and nothing survives to the next call. The
  interpreter's own directories that lived there (a virtual environment under /tmp) are bound
  back read-only, and `start` refuses to serve if a first run cannot read every directory the
  zygote imports from (`SELF_CHECK`).
- Network: the zygote's network namespace has no interface up; any connection fails.
- Host files and processes: the run has its own unprivileged uid and gid, no supplementary
  groups and no_new_privs (set-uid programs do not help), sees a /proc of its own processes
  only, and cannot signal the zygote or the service (other uid, invisible pid). Rootless, it
  is the caller's uid with no capabilities in a user namespace of its own, on a read-only
  filesystem with the caller's home hidden (tests/sandbox_rootless_test.py).
- Environment: a fixed clean environment, only fds 0-3 open, stdin from an in-memory file.

What is not covered:
- The kernel is shared: kernel exploits and side channels are out of scope, and there is no
  seccomp filter. The run memory budget is enforced by polling, not by a cgroup: between two
  polls (`memory.POLL_S`) a run can allocate past it.
- Runs that one zygote executes at the same time share its network namespace (they can talk
  over abstract unix sockets) and the memory image it had when it forked them (a run can
  read the code and partial output of calls that zygote was handling), and all of a zygote's
  runs share its hash seed.
- The program is pid 1 of its namespace, so signals it sends itself whose default action is
  to terminate (os.kill(os.getpid(), SIGTERM), signal.alarm without a handler) are ignored.
- Other world-writable directories than /tmp and `PoolConfig.writable_dirs` stay writable.
Verdict: fit for untrusted model-written code on a host or VM that holds no secrets; not a
replacement for a VM boundary against an attacker with a kernel exploit.

Scheduling: jobs go, in arrival order, to the zygote with the most free slots; a zygote never
holds more than `jobs_per_worker` (fewer where the run memory budgets would not fit), so the queue (not the zygotes) absorbs bursts, and no job
ever times out while waiting. A zygote starts a held job only while fewer than
`runnable_per_worker` of its runs are on a CPU (see `zygote`), so that CPU-bound snippets get
enough of a core to finish within the wall-clock limit while sleeping ones hold no core.
Zygotes are fresh interpreters (`python -m rstar_jax.sandbox.zygote`), so nothing of the
service (aiohttp, redis, the event loop) is in the image they fork from. When a zygote dies,
each job it held runs again, up to `max_attempts` runs, then is answered sandbox_error; the
zygote is replaced, with a growing delay if replacements keep failing.

As root, the pool takes a block of `config.UID_BLOCK` uids from `uid_base`, held by an flock,
so two pools on one host never share uids. Started by any other user it runs rootless (user
namespaces; see `isolation` for what changes), or refuses to start saying how to enable them.
Zygotes die with the thread that started them (PR_SET_PDEATHSIG): start the pool in the thread
that runs its event loop.
"""
import asyncio
import collections
import dataclasses
import fcntl
import logging
import os
import socket
import subprocess
import sys
import tempfile

from rstar_jax import host_malloc
from rstar_jax.sandbox import config as config_lib
from rstar_jax.sandbox import frames
from rstar_jax.sandbox import isolation
from rstar_jax.sandbox import memory
from rstar_jax.sandbox import result as result_lib

_MAX_RESTART_DELAY_S = 5.0
_MAX_UID_BLOCKS = 256


def _lock_uid_block(uid_base: int) -> tuple[int, int]:
  """Takes the first free uid block; returns (lock fd, first uid of the block)."""
  lock_dir = os.path.join(tempfile.gettempdir(), "rstar-sandbox-uids")
  os.makedirs(lock_dir, mode=0o700, exist_ok=True)
  info = os.lstat(lock_dir)
  if info.st_uid != os.geteuid() or not os.path.isdir(lock_dir) or os.path.islink(lock_dir):
    raise PermissionError(f"{lock_dir} must be a directory owned by uid {os.geteuid()}")
  for k in range(_MAX_UID_BLOCKS):
    start = uid_base + k * config_lib.UID_BLOCK
    fd = os.open(os.path.join(lock_dir, f"{start}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      return fd, start
    except BlockingIOError:
      os.close(fd)
  raise RuntimeError(f"all {_MAX_UID_BLOCKS} uid blocks from {uid_base} are taken")


@dataclasses.dataclass
class _Job:
  """A queued run; `frame` is its encoded ("run", job_id, source, stdin) message, built once at
  submission so dispatching and re-dispatching after a zygote death cannot fail on it."""
  job_id: int
  frame: bytes
  future: asyncio.Future
  attempts: int = 0


class _Zygote:
  """The pool's handle on one zygote process."""

  def __init__(self, index: int):
    self.index = index
    self.process: subprocess.Popen | None = None
    self.writer: asyncio.StreamWriter | None = None
    self.reader_task: asyncio.Task | None = None
    self.ready = False
    self.interpreter_dirs: tuple[str, ...] = ()  # what the zygote's imports read (its "ready" message)
    self.jobs: dict[int, _Job] = {}


# A first run that imports lazily from every interpreter directory (issue: a virtual environment
# under /tmp was hidden by each run's fresh /tmp, so imports not done by the zygote failed).
SELF_CHECK = """import os
hidden = [p for p in {paths!r} if not os.access(p, os.R_OK | os.X_OK)]
if hidden:
  raise SystemExit("not visible in a run: " + ", ".join(hidden))
try:
  import sympy
except ImportError:  # not installed: nothing to check
  sympy = None
if sympy is not None:
  x = sympy.Symbol("x")
  assert sympy.integrate(sympy.sin(x) * x, (x, 0, 1)) == sympy.sin(1) - sympy.cos(1)
print("ok")
"""


class Pool:
  """Runs programs in sandboxed children of warm zygotes (module docstring)."""

  def __init__(self, config: config_lib.PoolConfig = config_lib.PoolConfig()):
    self.config = config
    self._zygotes = [_Zygote(i) for i in range(config.num_workers)]
    self._queue: collections.deque[_Job] = collections.deque()
    self._next_id = 0
    self._uid_lock_fd = None
    self._uid_start = 0
    self._started = self._closed = False
    self._restart_failures = [0] * config.num_workers
    self._runs_per_worker = config.jobs_per_worker  # admitted at start (run memory budgets)
    self._tasks: set[asyncio.Task] = set()
    self.counters = collections.Counter()

  async def __aenter__(self) -> "Pool":
    await self.start()
    return self

  async def __aexit__(self, *exc) -> None:
    await self.close()

  async def start(self) -> None:
    """Starts every zygote; raises RuntimeError with the reason if one cannot start."""
    if self._closed or self._started:
      raise RuntimeError(f"the sandbox pool is already {'closed' if self._closed else 'started'}")
    self._runs_per_worker = self.config.runs_per_worker(memory.available_bytes())
    if self._runs_per_worker < self.config.jobs_per_worker:
      logging.warning("sandbox: %d runs per worker, not %d, so that %d MiB per run fits the host's "
                      "memory", self._runs_per_worker, self.config.jobs_per_worker,
                      self.config.limits.run_memory_bytes // config_lib.MIB)
    if isolation.rootless():
      logging.info("sandbox: rootless mode (not root): runs use user namespaces and share uid %d",
                   os.geteuid())
    else:
      self._uid_lock_fd, self._uid_start = _lock_uid_block(self.config.uid_base)
    self._started = True  # jobs submitted from now on wait for the zygotes
    started = await asyncio.gather(*(self._spawn(z) for z in self._zygotes),
                                   return_exceptions=True)
    errors = [e for e in started if isinstance(e, BaseException)]
    if errors:
      await self.close()
      raise RuntimeError(f"a sandbox zygote failed to start: {errors[0]}") from errors[0]
    if self.config.self_check:
      await self._self_check()

  async def _self_check(self) -> None:
    """Runs SELF_CHECK (every interpreter directory visible in a run, and a lazily importing sympy
    call where sympy is installed); refuses to serve, naming what failed, if it does not print ok."""
    paths = sorted({p for z in self._zygotes for p in z.interpreter_dirs})
    result = await self.run(SELF_CHECK.format(paths=paths))
    if result.status != "ok" or result.stdout != "ok\n":
      await self.close()
      detail = (result.stderr or result.stdout).strip().splitlines()
      raise RuntimeError(
          "the sandbox self-check failed: a snippet could not use the interpreter's files ("
          f"{detail[-1] if detail else result.status}). Runs get a fresh /tmp and "
          f"{', '.join(self.config.writable_dirs)}; an interpreter or packages that live only there "
          "are bound back read-only, so this points at another hidden path: install the project "
          "elsewhere, or report it")

  async def close(self) -> None:
    """Stops the zygotes (their runs are killed); queued jobs get sandbox_error."""
    self._closed = True
    tasks = list(self._tasks)
    for task in tasks:
      task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for job in self._queue:
      self._answer(job, lost_result("the sandbox pool was closed"))
    self._queue.clear()
    for z in self._zygotes:
      if z.writer is not None:
        z.writer.close()
    for z in self._zygotes:
      if z.reader_task is not None:
        await asyncio.gather(z.reader_task, return_exceptions=True)
      if z.process is not None:
        await asyncio.to_thread(z.process.wait)
    if self._uid_lock_fd is not None:
      os.close(self._uid_lock_fd)
      self._uid_lock_fd = None

  async def run(self, source: str, stdin: str | bytes | None = "") -> result_lib.ExecutionResult:
    """Runs `source` as a Python program with `stdin`; never raises for the program's faults.

    Raises:
      RuntimeError: the pool is not started (`async with Pool(...)` or `await pool.start()`)
        or already closed.
      TypeError: `source` is not a str or `stdin` not a str, bytes or None.
    """
    if not isinstance(source, str):
      raise TypeError(f"source must be a str, got {type(source).__name__}")
    if not isinstance(stdin, (str, bytes, type(None))):
      raise TypeError(f"stdin must be a str, bytes or None, got {type(stdin).__name__}")
    if self._closed:
      raise RuntimeError("the sandbox pool is closed")
    if not self._started:
      raise RuntimeError("the sandbox pool is not started: use `async with Pool(config) as "
                         "pool` or `await pool.start()`")
    if isinstance(stdin, str):
      stdin = stdin.encode("utf-8")
    job = _Job(self._next_id, frames.encode_frame(("run", self._next_id, source, stdin or b"")),
               asyncio.get_running_loop().create_future())
    self._next_id += 1
    self._queue.append(job)
    self.counters["submitted"] += 1
    self._dispatch()
    return await job.future

  @property
  def capacity(self) -> int:
    """Runs the pool executes at once: workers x runs per worker (admitted at start)."""
    return self.config.num_workers * self._runs_per_worker

  async def stats(self) -> dict[str, int]:
    """Counts for metrics: queued, running, workers alive, capacity, and the `counters`."""
    return {"queued": len(self._queue),
            "running": sum(len(z.jobs) for z in self._zygotes),
            "workers_alive": sum(z.ready for z in self._zygotes),
            "capacity": self.capacity,
            **self.counters}

  # ---------------------------------------------------------------- zygote lifecycle
  async def _spawn(self, z: _Zygote) -> None:
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    uid_start = self._uid_start + z.index * self.config.jobs_per_worker
    try:
      z.process = subprocess.Popen(
          [sys.executable, "-m", "rstar_jax.sandbox.zygote", str(child_sock.fileno()),
           str(z.index), str(uid_start), self.config.to_json()],
          pass_fds=(child_sock.fileno(),), stdin=subprocess.DEVNULL,
          # snippets run under glibc's defaults, not the host process's kept-memory tunables
          env=host_malloc.untuned_environment(dict(os.environ)))
    finally:
      child_sock.close()
    writer = None
    try:
      reader, writer = await asyncio.open_unix_connection(sock=parent_sock)
      message = await _read_message(reader)
      if message is None or message[0] != "ready":
        reason = message[1] if message else "it exited before it was ready"
        raise RuntimeError(f"zygote {z.index}: {reason}")
    except BaseException:  # including cancellation by close(): leave no process behind
      if writer is not None:
        writer.close()
      parent_sock.close()
      z.process.kill()
      await asyncio.to_thread(z.process.wait)
      raise
    z.writer, z.ready, z.interpreter_dirs = writer, True, tuple(message[2])
    z.reader_task = asyncio.create_task(self._read_results(z, reader))
    self._dispatch()

  async def _read_results(self, z: _Zygote, reader: asyncio.StreamReader) -> None:
    while (message := await _read_message(reader)) is not None:
      _, job_id, status, out, err, exit_code, wall = message
      job = z.jobs.pop(job_id, None)
      if job is None:  # a duplicate or unknown answer is logged, not fatal
        logging.error("sandbox zygote %d answered unknown job %s", z.index, job_id)
        continue
      self._answer(job, result_lib.ExecutionResult(
          status=status, stdout=out.decode("utf-8", "replace"),
          stderr=err.decode("utf-8", "replace"), exit_code=exit_code, wall_time_s=wall))
      self._restart_failures[z.index] = 0
      self._dispatch()
    await self._on_death(z)

  async def _on_death(self, z: _Zygote) -> None:
    z.ready = False
    z.writer.close()
    await asyncio.to_thread(z.process.wait)
    lost = list(z.jobs.values())
    z.jobs.clear()
    if self._closed:
      for job in lost:
        self._answer(job, lost_result("the sandbox pool was closed"))
      return
    logging.warning("sandbox zygote %d (pid %d) died with %d jobs: exit status %s", z.index,
                    z.process.pid, len(lost), z.process.returncode)
    self.counters["worker_restarts"] += 1
    for job in reversed(lost):
      job.attempts += 1
      if job.attempts >= self.config.max_attempts:
        self._answer(job, lost_result(
            f"the sandbox worker died {job.attempts} times under this job"))
      else:
        self._queue.appendleft(job)
    task = asyncio.create_task(self._restart(z))
    self._tasks.add(task)
    task.add_done_callback(self._tasks.discard)

  async def _restart(self, z: _Zygote) -> None:
    while not self._closed:
      delay = min(_MAX_RESTART_DELAY_S, 0.1 * (2 ** self._restart_failures[z.index] - 1))
      await asyncio.sleep(delay)
      try:
        await self._spawn(z)
        return
      except (OSError, RuntimeError) as e:
        self._restart_failures[z.index] += 1
        logging.error("restarting sandbox zygote %d failed: %s", z.index, e)

  # ---------------------------------------------------------------- dispatch
  def _dispatch(self) -> None:
    capacity = self._runs_per_worker
    outgoing: dict[_Zygote, list[bytes]] = {}
    while self._queue:
      z = min((z for z in self._zygotes if z.ready), key=lambda z: len(z.jobs), default=None)
      if z is None or len(z.jobs) >= capacity:
        break
      job = self._queue.popleft()
      if job.future.done():  # the caller went away while it waited
        continue
      z.jobs[job.job_id] = job
      outgoing.setdefault(z, []).append(job.frame)
    for z, batch in outgoing.items():
      z.writer.write(b"".join(batch))

  def _answer(self, job: _Job, result: result_lib.ExecutionResult) -> None:
    self.counters["completed"] += 1
    if not job.future.done():
      job.future.set_result(result)


def lost_result(reason: str) -> result_lib.ExecutionResult:
  """The sandbox_error result of a job the sandbox could not run, with `reason` as stderr."""
  return result_lib.ExecutionResult(status="sandbox_error", stdout="", stderr=reason,
                                    exit_code=None, wall_time_s=0.0)


async def _read_message(reader: asyncio.StreamReader):
  """The next zygote message, or None at end of stream."""
  try:
    header = await reader.readexactly(frames.FRAME_HEADER.size)
    (size,) = frames.FRAME_HEADER.unpack(header)
    return frames.decode_payload(await reader.readexactly(size))
  except (asyncio.IncompleteReadError, ConnectionError):
    return None
