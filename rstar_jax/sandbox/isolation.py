"""Kernel isolation for the sandbox: the zygote's namespaces and each child's confinement.

Two modes, chosen by who starts the pool (`rootless()`):
* as root, each run gets its own unprivileged uid (below);
* rootless (any other user), the zygote first enters a user namespace in which its own uid is
  root (`enter_user_namespace`), which lets it create the same namespaces and mounts; every run is
  then the caller's uid outside, so instead of a uid of its own each run gets a nested user
  namespace (its process count, RLIMIT_NPROC, is its own again), no capabilities at all, the whole
  filesystem read-only except its private tmpfs mounts, and the caller's home directory hidden
  (`make_mounts_read_only`, `hide_dirs`). What changes against root mode: a run can read what the
  caller can read outside the home directory, and a zygote's runs share one uid (they still cannot
  see or signal each other: each is alone in its PID namespace).

In this order:
* once per zygote, `enter_zygote_namespaces(without_root)`: a new network namespace (no interface is up,
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
  regain root); rootless, a nested user namespace and no capabilities instead of the uid.
The environment is the zygote's, which holds only CLEAN_ENV once it has started.
Errors raise OSError naming the call that failed.
"""
import ctypes
import fcntl
import os
import resource
import signal
import stat
import subprocess
import sys

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 0x1, 0x2, 0x4, 0x8, 0x20
_MS_BIND, _MS_REC, _MS_PRIVATE = 0x1000, 0x4000, 0x40000
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE = 1, 4
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_DROP = 24
_SYS_MOUNT_SETATTR = 442  # the same number on x86-64 and arm64
_AT_FDCWD, _AT_RECURSIVE, _MOUNT_ATTR_RDONLY = -100, 0x8000, 0x1
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
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


def rootless() -> bool:
  """Whether the sandbox runs in rootless mode (module docstring): the caller is not root."""
  return os.geteuid() != 0


def unavailable_reason() -> str | None:
  """Why a sandbox pool cannot start here (not root and no user namespaces), or None.

  Probes in a fresh interpreter, so the caller (which may hold threads) never forks.
  """
  if not rootless():
    return None
  probe = subprocess.run([sys.executable, "-c", "from rstar_jax.sandbox import isolation\n"
                          "isolation.enter_user_namespace()"], capture_output=True, text=True, check=False)
  if probe.returncode == 0:
    return None
  lines = probe.stderr.strip().splitlines()
  return lines[-1] if lines else f"the user-namespace probe exited with status {probe.returncode}"


def _write(path: str, text: str) -> None:
  with open(path, "w") as f:
    f.write(text)


def enter_user_namespace() -> None:
  """Moves the caller into a new user namespace where uid and gid 0 are its own uid and gid (the
  only ids there); it holds every capability over namespaces created from there on.

  Raises:
    OSError: the host refuses unprivileged user namespaces, saying how to enable them.
  """
  uid, gid = os.geteuid(), os.getegid()
  try:
    _call("unshare", _CLONE_NEWUSER)
  except OSError as e:
    raise OSError(e.errno, f"{e.strerror}. The sandbox runs without root in a user namespace, and this "
                  "host refuses to create one. Enable unprivileged user namespaces (sysctl "
                  "user.max_user_namespaces=15000; on Debian kernel.unprivileged_userns_clone=1; on "
                  "Ubuntu 24.04+ kernel.apparmor_restrict_unprivileged_userns=0), or run as root") from e
  _write("/proc/self/setgroups", "deny")
  _write("/proc/self/uid_map", f"0 {uid} 1")
  _write("/proc/self/gid_map", f"0 {gid} 1")


def make_mounts_read_only() -> None:
  """Makes every mount of the caller's (private) mount namespace read-only (mount_setattr)."""
  global _libc
  if _libc is None:
    _libc = ctypes.CDLL(None, use_errno=True)
  attr = (ctypes.c_uint64 * 4)(_MOUNT_ATTR_RDONLY, 0, 0, 0)  # set, clear, propagation, userns fd
  if _libc.syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, b"/", _AT_RECURSIVE, ctypes.byref(attr),
                   ctypes.sizeof(attr)) != 0:
    errno = ctypes.get_errno()
    raise OSError(errno, f"mount_setattr('/', read-only, recursive): {os.strerror(errno)}")


def drop_capabilities() -> None:
  """Empties the caller's capability sets and bounding set (rootless runs are uid 0 of their user
  namespace: without this they could remount what the zygote made read-only)."""
  with open("/proc/sys/kernel/cap_last_cap") as f:
    last = int(f.read())
  for cap in range(last + 1):
    prctl(_PR_CAPBSET_DROP, cap)
  header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
  data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable, for two 32-bit words
  _call("capset", ctypes.byref(header), ctypes.byref(data))


def die_with_parent() -> None:
  """SIGKILL this process when its parent exits (PR_SET_PDEATHSIG)."""
  prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def enter_zygote_namespaces(without_root: bool) -> int:
  """Moves the calling zygote into new network, IPC and mount namespaces (module docstring); in
  rootless mode (`without_root`, decided by `rootless()` before this call makes the process uid 0)
  into a user namespace first.

  Returns:
    An open descriptor of the zygote's own PID namespace, for `restore_pid_namespace`.
  """
  if without_root:
    enter_user_namespace()
    _become_pid_1()
  _call("unshare", _CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWIPC)
  _mount("none", "/", None, _MS_REC | _MS_PRIVATE, None)
  if without_root:  # a /proc whose pids are the ones this process's forks return
    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None)
  for path, value in _IPC_LIMITS:
    with open(path, "w") as f:
      f.write(value)
  return os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)


def _become_pid_1() -> None:
  """Forks into a new PID namespace owned by the caller's user namespace; returns in the child
  (its pid 1), while the parent waits for it and exits with its status.

  Rootless, the zygote cannot return to the host's PID namespace after creating one for a run
  (setns needs privileges there), so it lives in a namespace of its own, which it may re-enter.
  """
  _call("unshare", _CLONE_NEWPID)
  pid = os.fork()
  if pid:
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
  die_with_parent()


def _closed_ancestor(path: str) -> str | None:
  """The highest proper ancestor of `path` that other users may not traverse, if any."""
  parts = path.strip("/").split("/")
  for i in range(len(parts) - 1):
    ancestor = "/" + "/".join(parts[:i + 1])
    if not os.stat(ancestor).st_mode & stat.S_IXOTH:
      return ancestor
  return None


def expose_paths(paths, hide=()) -> None:
  """Makes directories reachable by every uid in the caller's (private) mount namespace, and hides
  the `hide` directories except for those of `paths` below them.

  The interpreter and its import path may live below a directory only root can traverse
  (pyenv under /root). For each such blocking ancestor, and each directory of `hide`, a read-only
  tmpfs replaces it and holds bind mounts of just the needed directories, so snippets can import
  the standard library and site-packages but see nothing else that was there. Paths that are
  already reachable, or that do not exist, are left alone.
  """
  targets = sorted({os.path.realpath(p) for p in paths if p and os.path.isdir(p)})
  targets = [t for t in targets if not any(t.startswith(u + "/") for u in targets if u != t)]
  hidden = [os.path.realpath(h) for h in hide if os.path.isdir(h)]
  by_blocker: dict[str, list[str]] = {h: [] for h in hidden if not any(
      h == t or h.startswith(t + "/") for t in targets)}  # never hide the interpreter itself
  for target in targets:
    blocker = next((h for h in by_blocker if target.startswith(h + "/")), None) or _closed_ancestor(target)
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


def confine_child(*, uid: int | None, workdir_bytes: int, bind_dirs: tuple[str, ...],
                  rlimits: dict[int, int], keep_dirs: tuple[str, ...] = ()) -> None:
  """Confines the calling child (pid 1 of its PID namespace, still root); see module docstring.

  Args:
    uid: the unprivileged uid (and gid) the snippet runs as, unique among running snippets;
      None in rootless mode (a nested user namespace and no capabilities instead).
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
  owner = 0 if uid is None else uid
  _mount("tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV,
         f"size={workdir_bytes},nr_inodes=4096,mode=0700,uid={owner},gid={owner}")
  for path in bind_dirs:
    _mount("/tmp", path, None, _MS_BIND, None)
  for path, handle in handles:
    os.makedirs(path, mode=0o755, exist_ok=True)
    _mount(f"/proc/self/fd/{handle}", path, None, _MS_BIND | _MS_REC, None)
    _mount("none", path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, None)
    os.close(handle)
  _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None)
  os.chdir("/tmp")
  if uid is None:  # before the rlimits: RLIMIT_NPROC then counts this namespace's processes
    enter_user_namespace()
  for limit, value in rlimits.items():
    hard = value + 1 if limit == resource.RLIMIT_CPU else value
    resource.setrlimit(limit, (value, hard))
  resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
  if uid is None:
    drop_capabilities()
  else:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
  prctl(_PR_SET_NO_NEW_PRIVS, 1)
  # Changing uid cleared the dumpable flag; restore it so /proc/self stays the snippet's own.
  prctl(_PR_SET_DUMPABLE, 1)
