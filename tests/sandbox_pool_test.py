"""The executor pool in process: zygote death and replacement, queueing, uid blocks, results.

  python -m pytest -q tests/sandbox_pool_test.py
"""
import ast
import asyncio
import contextlib
import os
import pathlib
import signal
import threading
import uuid

import pytest

from rstar_jax import sandbox
from rstar_jax.sandbox import config
from rstar_jax.sandbox import isolation
from rstar_jax.sandbox import pool as pool_lib


class _Loop:
  """An event loop on its own thread, so pools outlive one test's coroutine."""

  def __init__(self):
    self.loop = asyncio.new_event_loop()
    self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
    self.thread.start()

  def run(self, coroutine, timeout_s: float = 120.0):
    return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

  def close(self):
    self.loop.call_soon_threadsafe(self.loop.stop)
    self.thread.join()
    self.loop.close()


@pytest.fixture(scope="module")
def loop():
  runner = _Loop()
  yield runner
  runner.close()


def _config(**kwargs) -> config.PoolConfig:
  limits = config.Limits(**{"timeout_s": 2.0, **kwargs.pop("limits", {})})
  return config.PoolConfig(**{"workers": 1, "jobs_per_worker": 2, "limits": limits, **kwargs})


@pytest.fixture(scope="module")
def pool(loop):
  p = pool_lib.Pool(_config(jobs_per_worker=4))
  loop.run(p.start())
  yield p
  loop.run(p.close())


def test_preloaded_modules_and_stdin(loop, pool):
  result = loop.run(pool.run("import sympy\nx = sympy.Symbol('x')\n"
                             "print(sympy.factor(x**2 - int(input())))", "9"))
  assert (result.status, result.stdout, result.exit_code) == ("ok", "(x - 3)*(x + 3)\n", 0)


def test_numpy_random_differs_between_runs(loop, pool):
  code = "import numpy as np\nprint(np.random.randint(0, 2**62))"
  first, second = (loop.run(pool.run(code)) for _ in range(2))
  assert first.status == second.status == "ok" and first.stdout != second.stdout


def test_queue_holds_more_jobs_than_slots_and_drops_none(loop):
  async def go():
    async with pool_lib.Pool(_config(jobs_per_worker=2)) as p:
      return await asyncio.gather(*(p.run(f"import os, time\ntime.sleep(0.05)\n"
                                          f"print({i}, os.getuid())") for i in range(20)))
  results = loop.run(go())
  assert [r.stdout.split()[0] for r in results] == [str(i) for i in range(20)]
  assert len({r.stdout.split()[1] for r in results}) == 2  # one uid per slot


def _intervals(loop, code: str, count: int) -> list[tuple[float, float]]:
  async def go():
    async with pool_lib.Pool(_config(jobs_per_worker=4, runnable_per_worker=1)) as p:
      return await asyncio.gather(*(p.run(code) for _ in range(count)))
  return sorted(tuple(map(float, r.stdout.split())) for r in loop.run(go()))


def test_cpu_bound_runs_wait_for_a_runnable_slot(loop):
  busy = ("import time\nstart = time.time()\nwhile time.time() - start < 0.3:\n  pass\n"
          "print(start, time.time())")
  intervals = _intervals(loop, busy, 3)
  for (_, end), (next_start, _) in zip(intervals, intervals[1:]):
    assert next_start >= end  # never two busy runs at once with runnable_per_worker=1


def test_sleeping_runs_do_not_hold_the_cpu_admission(loop):
  sleepy = "import time\nstart = time.time()\ntime.sleep(0.5)\nprint(start, time.time())"
  intervals = _intervals(loop, sleepy, 3)
  assert max(s for s, _ in intervals) < min(e for _, e in intervals)  # all three overlap


def test_run_memory_budgets_cap_the_runs_in_flight(loop):
  budget = config.Limits().run_memory_bytes
  sleepy = "import time\nstart = time.time()\ntime.sleep(0.2)\nprint(start, time.time())"
  async def go():
    async with pool_lib.Pool(_config(jobs_per_worker=4, host_memory_bytes=2 * budget)) as p:
      return p.capacity, await asyncio.gather(*(p.run(sleepy) for _ in range(6)))
  capacity, results = loop.run(go())
  assert capacity == 2
  intervals = [tuple(map(float, r.stdout.split())) for r in results]
  for start, _ in intervals:  # at no start were two other runs still going
    assert sum(s <= start < e for s, e in intervals) <= 2


def test_killed_zygote_job_runs_again_and_zygote_is_replaced(loop):
  async def go():
    async with pool_lib.Pool(_config()) as p:
      first_pid = p._zygotes[0].process.pid  # pylint: disable=protected-access
      job = asyncio.ensure_future(p.run("import time\ntime.sleep(0.5)\nprint('done')"))
      await asyncio.sleep(0.2)
      os.kill(first_pid, signal.SIGKILL)
      result = await job
      after = await p.run("print('next')")
      stats = await p.stats()
      new_pid = p._zygotes[0].process.pid  # pylint: disable=protected-access
      return first_pid, new_pid, result, after, stats
  first_pid, new_pid, result, after, stats = loop.run(go())
  assert (result.status, result.stdout) == ("ok", "done\n")
  assert after.stdout == "next\n" and new_pid != first_pid
  assert stats["worker_restarts"] == 1 and stats["workers_alive"] == 1


def _pids_controller() -> pathlib.Path | None:
  """The root of a writable cgroup hierarchy with the pids controller (v1 or v2), if any."""
  with open("/proc/self/mounts") as f:
    mounts = [line.split() for line in f]
  for _, target, fstype, options, *_ in mounts:
    root = pathlib.Path(target)
    if fstype == "cgroup" and "pids" in options.split(","):
      return root if os.access(root, os.W_OK) else None
    if fstype == "cgroup2" and "pids" in (root / "cgroup.controllers").read_text().split():
      try:
        (root / "cgroup.subtree_control").write_text("+pids")
      except OSError:
        return None
      return root
  return None


@contextlib.contextmanager
def _pids_limited(pid: int):
  """Moves `pid` into a new pids cgroup; yields its pids.max file; moves it back afterwards."""
  root = _pids_controller()
  if root is None:
    pytest.skip("no writable cgroup pids controller on this host")
  with open(f"/proc/{pid}/cgroup") as f:
    entries = [line.rstrip("\n").split(":", 2) for line in f]
  home = next((path for _, names, path in entries
               if "pids" in names.split(",") or (root.name != "pids" and names == "")), "/")
  group = root / f"rstar-sandbox-test-{uuid.uuid4().hex[:8]}"
  group.mkdir()
  try:
    (group / "cgroup.procs").write_text(str(pid))
    yield group / "pids.max"
  finally:
    (root / home.lstrip("/") / "cgroup.procs").write_text(str(pid))
    group.rmdir()


def test_refused_fork_answers_sandbox_error_and_the_zygote_runs_the_next_job(loop):
  # The kernel refuses the zygote's fork (EAGAIN: a pids cgroup limit at its current count).
  # The job answers sandbox_error; once forks are allowed again the same zygote runs jobs.
  async def go():
    async with pool_lib.Pool(_config()) as p:
      first = await p.run("print(1)")
      zygote_pid = p._zygotes[0].process.pid  # pylint: disable=protected-access
      with _pids_limited(zygote_pid) as pids_max:
        pids_max.write_text(pids_max.with_name("pids.current").read_text())
        refused = await p.run("print(2)")
        pids_max.write_text("max")
        after = [await p.run(f"print({i})") for i in (3, 4)]
      same_zygote = p._zygotes[0].process.pid == zygote_pid  # pylint: disable=protected-access
      return first, refused, after, same_zygote
  first, refused, after, same_zygote = loop.run(go())
  assert (first.status, first.stdout) == ("ok", "1\n")
  assert refused.status == "sandbox_error" and "Resource temporarily unavailable" in refused.stderr
  assert [(r.status, r.stdout) for r in after] == [("ok", "3\n"), ("ok", "4\n")]
  assert same_zygote


def test_job_gets_sandbox_error_after_max_attempts(loop):
  async def go():
    async with pool_lib.Pool(_config(max_attempts=1)) as p:
      job = asyncio.ensure_future(p.run("import time\ntime.sleep(5)"))
      await asyncio.sleep(0.2)
      os.kill(p._zygotes[0].process.pid, signal.SIGKILL)  # pylint: disable=protected-access
      return await job
  result = loop.run(go())
  assert result.status == "sandbox_error" and "died" in result.stderr


def test_two_pools_take_distinct_uid_blocks(loop):
  async def go():
    async with pool_lib.Pool(_config()) as a, pool_lib.Pool(_config()) as b:
      return [int((await p.run("import os\nprint(os.getuid())")).stdout) for p in (a, b)]
  uid_a, uid_b = loop.run(go())
  assert abs(uid_a - uid_b) >= config.UID_BLOCK


def test_bad_preload_fails_start_with_the_reason(loop):
  with pytest.raises(RuntimeError, match="No module named 'no_such_module_xyz'"):
    loop.run(pool_lib.Pool(_config(preload=("no_such_module_xyz",))).start())


def test_close_answers_queued_jobs(loop):
  async def go():
    p = pool_lib.Pool(_config(jobs_per_worker=1))
    await p.start()
    jobs = [asyncio.ensure_future(p.run("import time\ntime.sleep(5)")) for _ in range(3)]
    await asyncio.sleep(0.1)
    await p.close()
    return await asyncio.gather(*jobs)
  assert {r.status for r in loop.run(go())} == {"sandbox_error"}


def test_output_cap_is_exact(loop):
  async def go():
    async with pool_lib.Pool(_config(limits={"output_bytes": 1000})) as p:
      return await p.run("import sys\nsys.stderr.write('e' * 10)\nwhile True:\n  print('x' * 99)")
  result = loop.run(go())
  assert (result.status, result.stdout, result.stderr) == ("output_limit", ("x" * 99 + "\n") * 10,
                                                           "e" * 10)


@pytest.mark.parametrize("code, status, exit_code, stdout", [
    ("import os\nprint('kept')\nos._exit(4)", "runtime_error", 4, "kept\n"),
    ("import ctypes\nprint('kept')\nctypes.string_at(0)", "runtime_error", -signal.SIGSEGV,
     "kept\n"),
    ("import os, signal\nprint('kept')\nos.kill(os.getpid(), signal.SIGKILL)\nprint('still')",
     "ok", 0, "kept\nstill\n"),  # pid 1 of its namespace: a self-sent SIGKILL is ignored
])
def test_output_before_abnormal_exits_is_kept(loop, pool, code, status, exit_code, stdout):
  result = loop.run(pool.run(code))
  assert (result.status, result.exit_code, result.stdout) == (status, exit_code, stdout)


def test_execution_time_covers_the_program(loop, pool):
  result = loop.run(pool.run("import time\ntime.sleep(0.3)"))
  assert result.status == "ok" and 0.3 <= result.wall_time_s < 2.0


def test_invalid_utf8_output_is_replaced(loop, pool):
  result = loop.run(pool.run("import sys\nsys.stderr.buffer.write(b'\\xc3(')"))
  assert result.stderr == "\ufffd("


def test_run_before_start_raises(loop):
  with pytest.raises(RuntimeError, match="not started"):
    loop.run(pool_lib.Pool(_config()).run("print(1)"))


@pytest.mark.parametrize("source, stdin, message", [
    (b"print(1)", "", "source must be a str, got bytes"),
    ("print(1)", 7, "stdin must be a str, bytes or None, got int"),
])
def test_a_bad_submission_fails_its_caller_and_the_pool_keeps_serving(loop, pool, source, stdin,
                                                                      message):
  with pytest.raises(TypeError, match=message):
    loop.run(pool.run(source, stdin))
  assert loop.run(pool.run("print(2)")).stdout == "2\n"


def test_run_after_close_raises(loop):
  p = pool_lib.Pool(_config())
  loop.run(p.start())
  loop.run(p.close())
  with pytest.raises(RuntimeError, match="closed"):
    loop.run(p.run("print(1)"))


@pytest.mark.parametrize("kwargs, message", [
    ({"workers": 0}, "PoolConfig.workers must be > 0"),
    ({"jobs_per_worker": 70000}, "exceeds the uid block"),
    ({"writable_dirs": ("/tmp",)}, "other than /tmp"),
    ({"runnable_per_worker": 0}, "runnable_per_worker must be > 0"),
])
def test_config_errors_name_the_field(kwargs, message):
  with pytest.raises(ValueError, match=message):
    config.PoolConfig(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"open_files": 4}, "open_files must be >= 16"),
    ({"timeout_s": 0}, "timeout_s must be > 0"),
    ({"memory_bytes": 1.5}, "memory_bytes must be an int"),
])
def test_limits_errors_name_the_field(kwargs, message):
  with pytest.raises(ValueError, match=message):
    sandbox.Limits(**kwargs)


def test_packages_under_tmp_stay_importable_read_only_in_runs(loop, tmp_path, monkeypatch):
  """A virtual environment (here: a package dir on PYTHONPATH) under /tmp, which each run's fresh
  /tmp used to hide: a submodule imported lazily inside a run is found, the directory is read-only,
  and /tmp holds nothing else."""
  site = tmp_path / "site"
  assert str(site).startswith("/tmp/")
  (site / "lazypkg").mkdir(parents=True)
  (site / "lazypkg" / "__init__.py").write_text("def value():\n  from lazypkg import deep\n  return deep.VALUE\n")
  (site / "lazypkg" / "deep.py").write_text("VALUE = 42\n")
  site.chmod(0o755)
  (site / "lazypkg").chmod(0o755)
  monkeypatch.setenv("PYTHONPATH", str(site))  # on the zygotes' sys.path, never imported by them

  async def main():
    async with sandbox.Pool(_config(preload=())) as p:
      return (await p.run("import lazypkg\nprint(lazypkg.value())"),
              await p.run(f"open({str(site / 'new.txt')!r}, 'w')"),
              await p.run("import os\nprint(sorted(os.listdir('/tmp')))\nopen('/tmp/mine', 'w').write('x')"))

  imported, write, listing = loop.run(main())
  assert (imported.status, imported.stdout) == ("ok", "42\n"), imported.stderr
  assert write.status == "runtime_error" and "Read-only file system" in write.stderr
  # the program, the path to site and to the project's own directories where they live under /tmp
  bound_back = {p.split("/")[2] for p in isolation.dirs_under(isolation.interpreter_dirs(), ("/tmp",))}
  assert listing.status == "ok", listing.stderr
  assert ast.literal_eval(listing.stdout) == sorted({site.parts[2], "source.py", *bound_back})
  assert not (site / "new.txt").exists()


def test_start_refuses_when_a_run_cannot_see_the_interpreter(loop, tmp_path, monkeypatch):
  hidden = tmp_path / "closed"
  hidden.mkdir(mode=0o700)  # on sys.path, but no other uid may enter it
  monkeypatch.setenv("PYTHONPATH", str(hidden))

  async def main():
    async with sandbox.Pool(_config(preload=())):
      pass

  with pytest.raises(RuntimeError, match=f"the sandbox self-check failed: .*not visible in a run: .*{hidden}"):
    loop.run(main())
