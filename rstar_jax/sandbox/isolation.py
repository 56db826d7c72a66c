"""Kernel isolation for the sandbox: the zygote's namespaces and each child's confinement.

All as root, in this order:
* once per zygote, `enter_zygote_namespaces()`: a new network namespace (no interface is up,
  so no network at all), a new IPC namespace with System V IPC and POSIX message queues
  capped at zero (a snippet can leave nothing behind there), a private mount namespace so the
  children's mounts never reach the host; then `expose_paths` (the interpreter stays
  importable for unprivileged uids) and, after the preloads, `collapse_to_huge_pages`;
* per child, `new_pid_namespace()` before the fork (undone by `restore_pid_namespace`): the
  child is pid 1 of a fresh PID namespace, so when it exits the kernel kills every process it
  left behind, `setsid` included;
* in the child, `set_child_fds` (fds 0-3 only, stdin from an in-memory file), then
  `confine_child`: a new session, a private mount namespace with a fresh size-capped tmpfs on
  /tmp (its working directory) bound over the other world-writable directories, the
  interpreter's own directories that lived there (a virtual environment under /tmp) bound back
  read-only, its own /proc (only its processes are visible), rlimits, and finally its own
  unprivileged uid/gid with no supplementary groups and `no_new_privs` (set-uid binaries cannot
  regain root).
The environment is the zygote's, which holds only CLEAN_ENV once it has started.
Errors raise OSError naming the call that failed.
"""
import ctypes
import fcntl
import os
import resource
import signal
import stat
import sys

_CLONE_NEWNS = 0x00020000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 0x1, 0x2, 0x4, 0x8, 0x20
_MS_BIND, _MS_REC, _MS_PRIVATE = 0x1000, 0x4000, 0x40000
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE = 1, 4
_PR_SET_NO_NEW_PRIVS = 38
_MADV_COLLAPSE = 25
_HUGE_PAGE = 2 << 20

# Per-IPC-namespace limits written by the zygote: no System V shared memory, semaphores or
# message queues, no POSIX message queues (objects there would outlive the snippet).
_IPC_LIMITS = (("/proc/sys/kernel/shmmni", "0"), ("/proc/sys/kernel/shmall", "0"),
               ("/proc/sys/kernel/msgmni", "0"), ("/proc/sys/kernel/sem", "0 0 0 0"),
               ("/proc/sys/fs/mqueue/queues_max", "0"))
# The environment a snippet sees; single-threaded numerical libraries as in Code Judge.
CLEAN_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

_libc = None


def _call(name: str, *args) -> None:
  global _libc
  if _libc is None:
    _libc = ctypes.CDLL(None, use_errno=True)
  if getattr(_libc, name)(*args) != 0:
    errno = ctypes.get_errno()
    raise OSError(errno, f"{name}{args!r}: {os.strerror(errno)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
  _call("mount", source.encode(), target.encode(), fstype.encode() if fstype else None,
        ctypes.c_ulong(flags), data.encode() if data else None)


def prctl(option: int, value: int) -> None:
  """prctl(option, value); raises OSError."""
  _call("prctl", option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0),
        ctypes.c_ulong(0))


def die_with_parent() -> None:
  """SIGKILL this process when its parent exits (PR_SET_PDEATHSIG)."""
  prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def enter_zygote_namespaces() -> int:
  """Moves the calling zygote into new network, IPC and mount namespaces (module docstring).

  Returns:
    An open descriptor of the zygote's own PID namespace, for `restore_pid_namespace`.
  """
  _call("unshare", _CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWIPC)
  _mount("none", "/", None, _MS_REC | _MS_PRIVATE, None)
  for path, value in _IPC_LIMITS:
    with open(path, "w") as f:
      f.write(value)
  return os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)


def _closed_ancestor(path: str) -> str | None:
  """The highest proper ancestor of `path` that other users may not traverse, if any."""
  parts = path.strip("/").split("/")
  for i in range(len(parts) - 1):
    ancestor = "/" + "/".join(parts[:i + 1])
    if not os.stat(ancestor).st_mode & stat.S_IXOTH:
      return ancestor
  return None


def expose_paths(paths) -> None:
  """Makes directories reachable by every uid in the caller's (private) mount namespace.

  The interpreter and its import path may live below a directory only root can traverse
  (pyenv under /root). For each such blocking ancestor, a read-only tmpfs replaces it and
  holds bind mounts of just the needed directories, so snippets can import the standard
  library and site-packages but see nothing else that was there. Paths that are already
  reachable, or that do not exist, are left alone.
  """
  targets = sorted({os.path.realpath(p) for p in paths if p and os.path.isdir(p)})
  targets = [t for t in targets if not any(t.startswith(u + "/") for u in targets if u != t)]
  by_blocker: dict[str, list[str]] = {}
  for target in targets:
    blocker = _closed_ancestor(target)
    if blocker is not None:
      by_blocker.setdefault(blocker, []).append(target)
  for blocker, under in by_blocker.items():
    handles = [(t, os.open(t, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)) for t in under]
    _mount("tmpfs", blocker, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=1m")
    for target, handle in handles:
      os.makedirs(target, mode=0o755, exist_ok=True)
      _mount(f"/proc/self/fd/{handle}", target, None, _MS_BIND | _MS_REC, None)
      os.close(handle)
    _mount("none", blocker, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY, None)


def collapse_to_huge_pages() -> int:
  """Backs the caller's anonymous memory with 2 MiB pages where the kernel can (MADV_COLLAPSE).

  A fork copies, and a child's exit tears down, one page-table entry per 4 KiB page of the
  zygote's heap; after the collapse most of the heap (the preloaded modules) needs one entry
  per 2 MiB, which takes about half the fork cost off the zygote and some off every child.
  Only pages already in use are collapsed and the regions keep their flags, so memory the
  children allocate later is unaffected. Kernels without MADV_COLLAPSE (Linux < 6.1) or with
  THP disabled refuse the call, and nothing changes.

  Returns:
    The number of 2 MiB-aligned ranges the kernel collapsed.
  """
  global _libc
  if _libc is None:
    _libc = ctypes.CDLL(None, use_errno=True)
  madvise = _libc.madvise
  madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
  collapsed = 0
  with open("/proc/self/maps") as f:
    regions = [line.split() for line in f]
  for fields in regions:
    if fields[1] != "rw-p" or (len(fields) > 5 and fields[5] != "[heap]"):
      continue
    low, high = (int(x, 16) for x in fields[0].split("-"))
    low = (low + _HUGE_PAGE - 1) & ~(_HUGE_PAGE - 1)
    high &= ~(_HUGE_PAGE - 1)
    if high > low and madvise(low, high - low, _MADV_COLLAPSE) == 0:
      collapsed += 1
  return collapsed


def new_pid_namespace() -> None:
  """Makes the next forked child pid 1 of a new PID namespace (undo: restore_pid_namespace)."""
  _call("unshare", _CLONE_NEWPID)


def restore_pid_namespace(own_pid_ns_fd: int) -> None:
  """Lets later forks of the caller land in its own PID namespace again."""
  _call("setns", own_pid_ns_fd, _CLONE_NEWPID)


def existing_dirs(paths) -> tuple[str, ...]:
  """The paths that are directories on this host (the zygote resolves this once)."""
  return tuple(p for p in paths if os.path.isdir(p) and not os.path.islink(p))


def interpreter_dirs() -> tuple[str, ...]:
  """The real paths of the interpreter's directories: its prefixes, its executable's directory and
  every directory on sys.path (the standard library, site-packages, the project)."""
  paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
           *sys.path]
  return tuple(sorted({os.path.realpath(p) for p in paths if p and os.path.isdir(p)}))


def dirs_under(paths, covered) -> tuple[str, ...]:
  """The outermost of `paths` that lie inside one of the `covered` directories (which a run's
  fresh tmpfs hides), e.g. a virtual environment under /tmp."""
  covered = [os.path.realpath(c) for c in covered]
  inside = sorted({p for p in paths if any(p.startswith(c + "/") for c in covered)})
  return tuple(p for p in inside if not any(p.startswith(q + "/") for q in inside if q != p))


def set_child_fds(*, stdin: bytes, stdout_fd: int, stderr_fd: int, status_fd: int) -> None:
  """Gives a forked child exactly four descriptors, closing everything it inherited.

  fd 0 reads `stdin` from an in-memory file and then end of file; fds 1 and 2 are the write
  ends of the output pipes; fd 3 is the status pipe (close-on-exec, so programs the snippet
  executes do not get it).
  """
  stdin_fd = os.memfd_create("stdin", 0)
  os.write(stdin_fd, stdin)
  os.lseek(stdin_fd, 0, os.SEEK_SET)
  # Copy the descriptors above 3 first so that no dup2 below overwrites one still needed.
  moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (stdin_fd, stdout_fd, stderr_fd,
                                                         status_fd)]
  for target, fd in enumerate(moved):
    os.dup2(fd, target, inheritable=target < 3)
  os.closerange(4, 1 << 20)


def confine_child(*, uid: int, workdir_bytes: int, bind_dirs: tuple[str, ...],
                  rlimits: dict[int, int], keep_dirs: tuple[str, ...] = ()) -> None:
  """Confines the calling child (pid 1 of its PID namespace, still root); see module docstring.

  Args:
    uid: the unprivileged uid (and gid) the snippet runs as, unique among running snippets.
    workdir_bytes: the size of the fresh tmpfs mounted on /tmp (the working directory).
    bind_dirs: other world-writable directories, covered by the same tmpfs.
    rlimits: resource -> limit, applied as both soft and hard limit (RLIMIT_CPU gets a hard
      limit one second above the soft one, so SIGXCPU comes first).
    keep_dirs: directories under /tmp or `bind_dirs` that the run must still see (the
      interpreter's, `dirs_under(interpreter_dirs(), ...)`): bound back at the same path,
      read-only, on top of the fresh tmpfs (their parent directories are created in it, owned by
      root).
  The environment is not touched: the zygote already holds only CLEAN_ENV.
  """
  os.setsid()
  die_with_parent()
  _call("unshare", _CLONE_NEWNS)
  handles = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)) for path in keep_dirs]
  _mount("tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV,
         f"size={workdir_bytes},nr_inodes=4096,mode=0700,uid={uid},gid={uid}")
  for path in bind_dirs:
    _mount("/tmp", path, None, _MS_BIND, None)
  for path, handle in handles:
    os.makedirs(path, mode=0o755, exist_ok=True)
    _mount(f"/proc/self/fd/{handle}", path, None, _MS_BIND | _MS_REC, None)
    _mount("none", path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, None)
    os.close(handle)
  _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None)
  os.chdir("/tmp")
  for limit, value in rlimits.items():
    hard = value + 1 if limit == resource.RLIMIT_CPU else value
    resource.setrlimit(limit, (value, hard))
  resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
  os.setgroups([])
  os.setresgid(uid, uid, uid)
  os.setresuid(uid, uid, uid)
  prctl(_PR_SET_NO_NEW_PRIVS, 1)
  # Changing uid cleared the dumpable flag; restore it so /proc/self stays the snippet's own.
  prctl(_PR_SET_DUMPABLE, 1)
