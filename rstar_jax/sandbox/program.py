"""Runs a program's source as `__main__` inside a confined child, like `python source.py`.

The child is a fork of a zygote that already imported the preloaded modules, so it resets the
interpreter state a fresh interpreter would have: new unbuffered stdio on fds 0-2 (everything
written before a crash or a kill has reached the pipe; PYTHONUNBUFFERED semantics), a fresh
`__main__` module (so pickling functions the program defines works), `sys.argv`/`sys.path`
of a script in the working directory, and fresh seeds for the preloaded random generators
(`random` is reseeded by `os.fork` itself, numpy's global generator here).

Exit paths follow the interpreter: an uncaught exception prints its traceback and exits 1;
`SystemExit` exits with its code (a non-int code is printed and exits 1); atexit handlers
and non-daemon threads are finished first. `execution time` (PAPER.md §3.3) is measured from
just before the program starts to its exit and written to the status descriptor as
b"E" + float64; a program that leaves through `os._exit` or a signal reports nothing, and the
parent uses its own wall time.
"""
import atexit
import io
import os
import struct
import sys
import time
import traceback
import types

SOURCE_PATH = "/tmp/source.py"
STATUS_FD = 3
STARTED = b"S"
ELAPSED = b"E"
ELAPSED_FORMAT = "<d"


def _stdio() -> None:
  sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)),
                                                encoding="utf-8")
  sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, "w", closefd=False),
                                                  encoding="utf-8", write_through=True)
  sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.FileIO(2, "w", closefd=False),
                                                  encoding="utf-8", errors="backslashreplace",
                                                  write_through=True)


def _reseed() -> None:
  numpy_random = sys.modules.get("numpy.random")
  if numpy_random is not None:
    numpy_random.seed()
  tempfile = sys.modules.get("tempfile")
  if tempfile is not None:
    tempfile.tempdir = None


def _exit_code(exc: SystemExit) -> int:
  if exc.code is None:
    return 0
  if isinstance(exc.code, int):
    return exc.code & 0xFF
  print(exc.code, file=sys.stderr)
  return 1


def _finish() -> None:
  """What the interpreter does before exiting: threads, atexit, flushing."""
  threading = sys.modules.get("threading")
  if threading is not None:
    threading._shutdown()  # pylint: disable=protected-access
  atexit._run_exitfuncs()  # pylint: disable=protected-access
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except Exception:  # pylint: disable=broad-except
      pass


def run(source: str) -> None:
  """Runs `source` as the main program and exits the process (never returns)."""
  with open(SOURCE_PATH, "w", encoding="utf-8") as f:
    f.write(source)
  _stdio()
  _reseed()
  main = types.ModuleType("__main__")
  main.__file__ = SOURCE_PATH
  main.__builtins__ = __builtins__
  sys.modules["__main__"] = main
  sys.argv = [SOURCE_PATH]
  sys.path[0] = os.path.dirname(SOURCE_PATH)
  os.write(STATUS_FD, STARTED)
  exit_code = 0
  start = time.perf_counter()
  try:
    exec(compile(source, SOURCE_PATH, "exec"), main.__dict__)  # pylint: disable=exec-used
  except SystemExit as e:
    exit_code = _exit_code(e)
  except BaseException as e:  # pylint: disable=broad-except
    # Without this function's frame: the traceback starts in the program, as python's does.
    traceback.print_exception(type(e), e, e.__traceback__.tb_next)
    exit_code = 1
  try:
    _finish()
  except SystemExit as e:
    exit_code = _exit_code(e)
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
  elapsed = time.perf_counter() - start
  try:
    os.write(STATUS_FD, ELAPSED + struct.pack(ELAPSED_FORMAT, elapsed))
  except OSError:
    pass
  os._exit(exit_code)
