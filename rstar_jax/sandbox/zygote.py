"""The zygote: a warm process that forks one confined child per snippet and supervises it.

A pool starts each zygote as `python -m rstar_jax.sandbox.zygote FD INDEX UID_START CONFIG`
(FD: its end of a unix socket pair). The zygote dies with its parent, moves into its own
network/IPC/mount namespaces, imports the preloaded modules once (and warms them up, see
WARMUPS), keeps only CLEAN_ENV as its environment, freezes its objects out of the garbage
collector, backs its heap with huge pages and answers `("ready", pid, interpreter dirs)` (or `("error", text)`).
Then, single-threaded around one epoll loop:

* `("run", job_id, source, stdin)` frames start a run in a free slot; slot s runs as uid
  UID_START + s, so no two running snippets share a uid (RLIMIT_NPROC counts per snippet);
  in rootless mode (`isolation.rootless()`) each run has a user namespace of its own instead.
  A run is a fork that is pid 1 of a new PID namespace, confined (`isolation`), running
  `program.run`; a fork the kernel refuses (EAGAIN, ENOMEM) answers that job sandbox_error
  and leaves the zygote able to start the next one. Jobs wait here, in arrival order, while
  no slot is free or while `max_runnable` runs are runnable (state R in /proc/PID/stat;
  checked again every ADMISSION_RECHECK_S), so CPU-bound runs are not spread over more runs
  than the cores can serve within their wall-clock limit.
* The children's stdout/stderr pipes are read as data arrives, each kept up to
  `limits.output_bytes`; past that the run is killed (output_limit).
* At the wall-clock deadline the parent SIGKILLs the run's pid 1; the kernel then kills every
  process of its namespace, whatever the snippet did (signal handlers, setsid, fork). Every
  `memory.POLL_S` it sums the memory of each run's processes (`memory`) and kills a run over
  `limits.run_memory_bytes` the same way (memory_limit). Exits
  are noticed through SIGCHLD on the wakeup fd and reaped with wait4 (CPU time used tells a
  CPU-limit kill). Once pid 1 is reaped, nothing of the run is left; its pipes are drained and
  `("result", job_id, status, stdout, stderr, exit_code, wall_time_s)` goes back.
* A run that was killed but does not die within `REAP_GRACE_S` (stuck in the kernel) is
  answered anyway; its slot stays taken until it is reaped.
When the parent closes the socket, the zygote kills its runs and exits. What each run
produced and when it must be looked at again is kept by `runs`.
"""
import collections
import gc
import importlib
import os
import pwd
import resource
import selectors
import signal
import socket
import struct
import sys
import time

from rstar_jax.sandbox import config as config_lib
from rstar_jax.sandbox import frames
from rstar_jax.sandbox import isolation
from rstar_jax.sandbox import memory
from rstar_jax.sandbox import program
from rstar_jax.sandbox import result as result_lib
from rstar_jax.sandbox import runs as runs_lib

REAP_GRACE_S = 2.0
ADMISSION_RECHECK_S = 0.005
_READ_SIZE = 1 << 16
_SETUP_FAILED = b"F"
_SETUP_EXIT_CODE = 125
_ELAPSED = struct.Struct(program.ELAPSED_FORMAT)
# Run once after a module is preloaded (PoolConfig.warmup): first calls import submodules
# lazily and fill caches, which would otherwise cost every child again (sympy's first
# factor/solve/integrate: about 30 ms of a 40 ms snippet).
WARMUPS = {
    "sympy": ("x = sympy.Symbol('x')\n"
              "sympy.factor(x**2 - 1); sympy.solve(x**2 - x, x); sympy.integrate(x**3, x)\n"
              "sympy.expand((x + 1)**3); sympy.simplify(sympy.sin(x)**2 + sympy.cos(x)**2)\n"
              "sympy.Rational(1, 3) + sympy.sqrt(2); sympy.isprime(97); sympy.factorint(360)\n"
              "sympy.Matrix([[1, 2], [3, 4]]).det(); sympy.limit(sympy.sin(x) / x, x, 0)\n"
              "sympy.diff(sympy.exp(x) * x, x); sympy.series(sympy.exp(x), x, 0, 3)\n"
              "sympy.N(sympy.pi, 20); sympy.nsimplify(0.5); sympy.latex(x**2)\n"),
    "numpy": ("numpy.linalg.det(numpy.eye(2)); numpy.linalg.solve(numpy.eye(2), numpy.ones(2))\n"
              "numpy.random.rand(); numpy.fft.fft(numpy.ones(4))\n"),
}


class Zygote:
  """The supervisor loop of one zygote (module docstring)."""

  def __init__(self, sock: socket.socket, config: config_lib.PoolConfig, uid_start: int):
    self._sock = sock
    self._limits = config.limits
    rootless = isolation.rootless()
    self._uids = [None if rootless else uid_start + s for s in range(config.jobs_per_worker)]
    self._free = list(range(config.jobs_per_worker - 1, -1, -1))
    self._max_runnable = config.max_runnable
    self._recheck_at = None  # when to try admitting waiting jobs again
    self._memory_check_at = None  # when to sum the runs' memory again
    # RLIMIT_AS holds a single process under the run budget unless it is the larger of the two
    self._measure_single = self._limits.memory_bytes > self._limits.run_memory_bytes
    self._bind_dirs = isolation.existing_dirs(config.writable_dirs)
    # the interpreter's directories a run's fresh tmpfs would hide (a virtual environment under /tmp)
    self._interpreter_dirs = isolation.interpreter_dirs()
    self._keep_dirs = isolation.dirs_under(self._interpreter_dirs, ("/tmp",) + self._bind_dirs)
    self._rlimits = {
        resource.RLIMIT_AS: self._limits.memory_bytes,
        resource.RLIMIT_CPU: self._limits.cpu_seconds,
        resource.RLIMIT_FSIZE: self._limits.file_size_bytes,
        resource.RLIMIT_NOFILE: self._limits.open_files,
        resource.RLIMIT_NPROC: self._limits.processes,
    }
    # rootless, runs are the caller's uid: hide its home directory (resolved before the user
    # namespace makes this process uid 0) and make every mount read-only
    hide = (os.environ.get("HOME", ""), pwd.getpwuid(os.getuid()).pw_dir) if rootless else ()
    self._pid_ns_fd = isolation.enter_zygote_namespaces(rootless)
    isolation.expose_paths(self._interpreter_dirs, hide=hide)
    if rootless:
      isolation.make_mounts_read_only()
    self._selector = selectors.EpollSelector()
    self._decoder = frames.FrameDecoder()
    self._outbox = bytearray()
    self._want_write = False
    self._waiting = collections.deque()
    self._runs: dict[int, runs_lib.Run] = {}  # pid -> run, until it is reaped
    self._by_fd: dict[int, runs_lib.Run] = {}
    self._deadlines = runs_lib.Deadlines()
    self._closing = False
    wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
    sock.setblocking(False)
    self._selector.register(sock, selectors.EVENT_READ, self._on_socket)
    self._selector.register(wakeup_r, selectors.EVENT_READ, self._on_wakeup)

  def serve(self) -> None:
    """Answers the parent until it closes the socket."""
    self.send(("ready", os.getpid(), list(self._interpreter_dirs)))
    while not self._closing:
      wake = [t for t in (self._deadlines.next_time(), self._recheck_at, self._memory_check_at)
              if t is not None]
      timeout = max(0.0, min(wake) - time.monotonic()) if wake else None
      for key, mask in self._selector.select(timeout):
        key.data(key.fd, mask)
      self._check_deadlines()
      self._check_memory()
      if self._recheck_at is not None and time.monotonic() >= self._recheck_at:
        self._start_waiting()

  # ---------------------------------------------------------------- control socket
  def send(self, message) -> None:
    """Queues a message for the parent; it is written as the socket accepts it."""
    was_empty = not self._outbox
    self._outbox += frames.encode_frame(message)
    if was_empty:
      self._flush()

  def _flush(self) -> None:
    try:
      sent = self._sock.send(self._outbox)
    except BlockingIOError:
      sent = 0
    del self._outbox[:sent]
    if bool(self._outbox) != self._want_write:  # watch for room only while data waits
      self._want_write = bool(self._outbox)
      events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._want_write else 0)
      self._selector.modify(self._sock, events, self._on_socket)

  def _on_socket(self, fd: int, mask: int) -> None:
    del fd
    if mask & selectors.EVENT_WRITE:
      self._flush()
    if not mask & selectors.EVENT_READ:
      return
    try:
      data = self._sock.recv(1 << 20)
    except BlockingIOError:
      return
    if not data:  # the parent is gone: so is every run
      self._closing = True
      for run in self._runs.values():
        os.kill(run.pid, signal.SIGKILL)
      return
    for kind, job_id, source, stdin in self._decoder.feed(data):
      if kind != "run":
        raise ValueError(f"unknown zygote message {kind!r}")
      self._waiting.append((job_id, source, stdin))
    self._start_waiting()

  # ---------------------------------------------------------------- starting runs
  def _start_waiting(self) -> None:
    self._recheck_at = None
    while self._waiting and self._free:
      if sum(run.is_runnable() for run in self._runs.values()) >= self._max_runnable:
        self._recheck_at = time.monotonic() + ADMISSION_RECHECK_S
        return
      job_id, source, stdin = self._waiting.popleft()
      self._start(job_id, source, stdin, self._free.pop())

  def _start(self, job_id, source: str, stdin: bytes, slot: int) -> None:
    pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(3)]
    start = time.monotonic()
    try:
      pid = self._fork()
    except OSError as e:
      for fd in (fd for pipe in pipes for fd in pipe):
        os.close(fd)
      self._free.append(slot)
      self.send(("result", job_id, "sandbox_error", b"", f"fork failed: {e}".encode(), None,
                 time.monotonic() - start))
      return
    if pid == 0:
      self._child(source, stdin, self._uids[slot], pipes)
    read_fds = []
    for read_fd, write_fd in pipes:
      os.close(write_fd)
      os.set_blocking(read_fd, False)
      read_fds.append(read_fd)
    run = runs_lib.Run(job_id, slot, pid, start, start + self._limits.timeout_s, read_fds)
    self._runs[pid] = run
    for fd in read_fds:
      self._by_fd[fd] = run
      self._selector.register(fd, selectors.EVENT_READ, self._on_output)
    self._deadlines.push(run.deadline, run)
    if self._memory_check_at is None:
      self._memory_check_at = start + memory.POLL_S

  def _fork(self) -> int:
    """fork() into a new PID namespace (the child is its pid 1); returns the pid, 0 in the child.

    Later forks of the zygote land in its own namespace again whether or not the fork
    succeeded: after a failed fork (EAGAIN, ENOMEM) the namespace set up for it is dropped,
    so the next run gets a fresh one instead of every later unshare failing.
    """
    isolation.new_pid_namespace()
    pid = -1
    try:
      pid = os.fork()
    finally:
      if pid != 0:
        isolation.restore_pid_namespace(self._pid_ns_fd)
    return pid

  def _child(self, source: str, stdin: bytes, uid: int, pipes) -> None:
    """In the forked child: confine, then run the program; never returns."""
    fds_ready = False
    try:
      signal.set_wakeup_fd(-1)
      signal.signal(signal.SIGCHLD, signal.SIG_DFL)
      # A write past RLIMIT_FSIZE fails with EFBIG ("File too large") instead of killing.
      signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
      isolation.set_child_fds(stdin=stdin, stdout_fd=pipes[0][1], stderr_fd=pipes[1][1],
                              status_fd=pipes[2][1])
      fds_ready = True
      isolation.confine_child(uid=uid, workdir_bytes=self._limits.workdir_bytes,
                              bind_dirs=self._bind_dirs, rlimits=self._rlimits, keep_dirs=self._keep_dirs)
      program.run(source)
    except BaseException as e:  # pylint: disable=broad-except
      if fds_ready:
        os.write(program.STATUS_FD, _SETUP_FAILED + f"{type(e).__name__}: {e}".encode())
    finally:
      os._exit(_SETUP_EXIT_CODE)

  # ---------------------------------------------------------------- output, kills, exits
  def _on_output(self, fd: int, mask: int) -> None:
    del mask
    run = self._by_fd.get(fd)
    if run is not None:  # else closed by a drain earlier in the same round of events
      self._read(run, fd, draining=False)

  def _read(self, run: runs_lib.Run, fd: int, draining: bool) -> bool:
    """Reads once from one of the run's pipes; False once that pipe is closed or empty."""
    try:
      data = os.read(fd, _READ_SIZE)
    except BlockingIOError:
      if draining:  # dead run, a writer still open elsewhere: keep what we have
        self._close_fd(run, fd)
      return False
    buffer = run.buffers[fd]
    room = self._limits.output_bytes - len(buffer)
    buffer += data[:room]
    if not data or len(data) > room:
      if data and fd != run.status_fd:
        run.capped = True
        self._kill(run, "output")
      self._close_fd(run, fd)
      return False
    return True

  def _close_fd(self, run: runs_lib.Run, fd: int) -> None:
    self._selector.unregister(fd)
    os.close(fd)
    del self._by_fd[fd]
    del run.buffers[fd]

  def _kill(self, run: runs_lib.Run, reason: str) -> None:
    if run.killed is None and not run.reaped:
      run.killed, run.kill_time = reason, time.monotonic()
      os.kill(run.pid, signal.SIGKILL)
      self._deadlines.push(run.kill_time + REAP_GRACE_S, run)

  def _check_deadlines(self) -> None:
    now = time.monotonic()
    for run in self._deadlines.pop_due(now):
      if run.killed is None:
        self._kill(run, "timeout")
      elif not run.answered and now >= run.kill_time + REAP_GRACE_S:
        self._answer(run)  # killed but not dead yet; the slot stays taken until it is

  def _check_memory(self) -> None:
    """Kills the runs whose processes hold more than the run budget together (when due)."""
    now = time.monotonic()
    if self._memory_check_at is None or now < self._memory_check_at:
      return
    self._memory_check_at = now + memory.POLL_S if self._runs else None
    for run in list(self._runs.values()):
      if run.killed is not None:
        continue
      pids = memory.run_processes(run.pid)
      if len(pids) > 1 or self._measure_single:
        held = memory.proportional_bytes(pids)
        if held > self._limits.run_memory_bytes:
          run.memory_held = held
          self._kill(run, "memory")

  def _on_wakeup(self, fd: int, mask: int) -> None:
    del mask
    try:
      os.read(fd, 4096)
    except BlockingIOError:
      pass
    while True:
      try:
        pid, wait_status, usage = os.wait4(-1, os.WNOHANG)
      except ChildProcessError:
        break
      if pid == 0:
        break
      run = self._runs.pop(pid, None)
      if run is None:
        continue
      run.set_reaped(wait_status, usage.ru_utime + usage.ru_stime, time.monotonic())
      for read_fd in list(run.buffers):
        while self._read(run, read_fd, draining=True):
          pass
      if not run.answered:
        self._answer(run)
      self._free.append(run.slot)
    self._start_waiting()

  def _answer(self, run: runs_lib.Run) -> None:
    """Sends the run's result (its pipes may still be open if it is not reaped yet)."""
    run.answered = True
    wall = (run.end or time.monotonic()) - run.start
    status_pipe = bytes(run.status_pipe)
    exit_code = None
    if run.wait_status is not None and run.killed is None:
      exit_code = os.waitstatus_to_exitcode(run.wait_status)
    if status_pipe.startswith(_SETUP_FAILED):
      status, stderr = "sandbox_error", b"sandbox set-up failed: " + status_pipe[1:]
    elif not status_pipe.startswith(program.STARTED) and run.killed is None:
      status = "sandbox_error"
      stderr = f"sandbox set-up failed (exit status {exit_code})".encode()
    else:
      stderr = bytes(run.err)
      cpu_limited = exit_code == -signal.SIGXCPU or (
          exit_code == -signal.SIGKILL and run.cpu_s >= self._limits.cpu_seconds + 0.9)
      if run.killed == "memory":
        stderr += memory_message(run.memory_held, self._limits.run_memory_bytes).encode()
      status = result_lib.classify(exit_code, stderr.decode("utf-8", "replace"),
                                   timed_out=run.killed == "timeout",
                                   output_capped=run.capped,
                                   cpu_limited=cpu_limited,
                                   memory_capped=run.killed == "memory")
      tail = status_pipe[-1 - _ELAPSED.size:]
      if run.killed is None and len(status_pipe) > _ELAPSED.size and tail[:1] == program.ELAPSED:
        wall = min(wall, max(0.0, _ELAPSED.unpack(tail[1:])[0]))
    self.send(("result", run.job_id, status, bytes(run.out), stderr,
               None if status == "sandbox_error" else exit_code, wall))


def memory_message(held: int, budget: int) -> str:
  """The stderr line of a run killed over its memory budget (classified memory_limit)."""
  mib = config_lib.MIB
  return (f"MemoryError: the program's processes held {held / mib:.0f} MiB together, over the "
          f"sandbox's {budget / mib:.0f} MiB per run\n")


def main(argv: list[str]) -> int:
  """Entry point: `python -m rstar_jax.sandbox.zygote FD INDEX UID_START CONFIG_JSON`."""
  fd, uid_start, config_json = int(argv[0]), int(argv[2]), argv[3]
  isolation.die_with_parent()
  os.chdir("/")
  config = config_lib.PoolConfig.from_json(config_json)
  # Before any preload: numerical libraries must not start thread pools in a process that forks.
  os.environ.update({k: v for k, v in isolation.CLEAN_ENV.items() if k.endswith("_THREADS")})
  sock = socket.socket(fileno=fd)
  try:
    zygote = Zygote(sock, config, uid_start)
    for name in config.preload:
      module = importlib.import_module(name)
      if config.warmup and name in WARMUPS:
        exec(WARMUPS[name], {name: module})  # pylint: disable=exec-used
  except Exception as e:  # pylint: disable=broad-except
    sock.sendall(frames.encode_frame(("error", f"{type(e).__name__}: {e}")))
    return 1
  # The children's environment, set once here rather than in every child.
  os.environ.clear()
  os.environ.update(isolation.CLEAN_ENV)
  gc.collect()
  gc.freeze()
  isolation.collapse_to_huge_pages()
  zygote.serve()
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
