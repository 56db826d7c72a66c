"""Host malloc for XLA:CPU processes: keep freed memory in the process instead of unmapping it.

XLA:CPU allocates an execution's temporary buffers afresh and frees them when it ends (hundreds of
MB to GB for a train step). glibc serves blocks above 32 MiB with mmap and unmaps them on free, and
XLA's worker threads allocate from arenas of their own, so every step faults its buffers in again
and the kernel zeroes each page (`clear_page` is a fifth of a train step's time under perf). The
glibc tunables in `TUNABLES` (large blocks from the heap, freed memory kept up to 64 GiB, one arena
for all threads) remove that: the CPU train step of `benchmarks/train_bench.py` on one core takes
5.6 s instead of 7.9 s, and the same process's PyTorch step gains too (see WORKSPACE_NOTES.md).
The cost: a process keeps the heap of its peak, as a caching allocator does.

glibc reads its tunables only at process start, so the entry points (`rstar_jax.main`, `.eval`,
`.serve`, the JAX benchmarks, the `rstar-serve` console script through `serve_cli`) call
`reexec_with_kept_memory()` above their other imports: it re-executes the same command line once
with GLIBC_TUNABLES set (same pid, arguments, descriptors) before JAX loads. Set RSTAR_JAX_HOST_MALLOC=system to keep the system's defaults. Processes
that should not inherit the tunables (the sandbox's zygotes) start with `untuned_environment`.
This module imports only the standard library (level 0: the sandbox uses it without JAX).
"""
import os
import platform
import sys

TUNABLES = ("glibc.malloc.mmap_max=0", f"glibc.malloc.trim_threshold={64 << 30}", "glibc.malloc.arena_max=1")
OPT_OUT_VARIABLE = "RSTAR_JAX_HOST_MALLOC"


def tuned_environment(environ: dict[str, str]) -> dict[str, str] | None:
  """The environment to re-execute with: `environ` with TUNABLES added to GLIBC_TUNABLES (settings
  of the user's there kept, ours after them); None when nothing is to change (opted out, or every
  tunable already set).

  Raises:
    ValueError: RSTAR_JAX_HOST_MALLOC is neither 'kept' (the default) nor 'system'.
  """
  choice = environ.get(OPT_OUT_VARIABLE, "kept")
  if choice not in ("kept", "system"):
    raise ValueError(f"{OPT_OUT_VARIABLE} must be 'kept' or 'system', got {choice!r}")
  if choice == "system":
    return None
  present = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t]
  missing = [t for t in TUNABLES if t not in present]
  if not missing:
    return None
  return {**environ, "GLIBC_TUNABLES": ":".join(present + missing)}


def reexec_with_kept_memory() -> None:
  """Re-executes this process with `tuned_environment` on glibc Linux, unless it already runs so.
  Call it first thing in an entry point, before threads or JAX start; it returns only when no
  re-execution is needed."""
  if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
    return
  environ = tuned_environment(dict(os.environ))
  if environ is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, environ)


def untuned_environment(environ: dict[str, str]) -> dict[str, str]:
  """`environ` with TUNABLES taken out of GLIBC_TUNABLES (the user's own settings kept; the variable
  dropped when nothing is left): a child process runs under glibc's defaults again."""
  kept = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t and t not in TUNABLES]
  environ = {k: v for k, v in environ.items() if k != "GLIBC_TUNABLES"}
  return {**environ, "GLIBC_TUNABLES": ":".join(kept)} if kept else environ
