"""The zygote's run bookkeeping: deadlines name runs, not pids, so a reused pid is safe.

Runs here are bookkeeping records about this test's own process (the pid whose /proc/PID/stat
they read), so two records with one pid stand for a pid the kernel handed out twice.
  python -m pytest -q tests/sandbox_runs_test.py
"""
import os

from rstar_jax.sandbox import runs


def _run(job_id: int, start: float, deadline: float) -> runs.Run:
  return runs.Run(job_id, slot=0, pid=os.getpid(), start=start, deadline=deadline,
                  fds=(100, 101, 102))


def test_stale_deadline_of_an_ended_run_spares_a_later_run_with_its_pid():
  deadlines = runs.Deadlines()
  first = _run(1, start=0.0, deadline=4.0)
  deadlines.push(first.deadline, first)
  first.set_reaped(0, cpu_s=0.01, end=1.0)  # exits normally at t=1, its entry stays
  second = _run(2, start=2.0, deadline=6.0)  # the same pid, reused
  deadlines.push(second.deadline, second)
  assert deadlines.pop_due(4.5) == []  # the stale entry is dropped, the new run untouched
  assert deadlines.next_time() == 6.0
  assert deadlines.pop_due(6.0) == [second]
  assert deadlines.next_time() is None


def test_due_runs_come_in_time_order_and_only_once():
  deadlines = runs.Deadlines()
  late, early = _run(1, 0.0, 3.0), _run(2, 0.0, 1.0)
  deadlines.push(late.deadline, late)
  deadlines.push(early.deadline, early)
  deadlines.push(1.0, late)  # two entries at one time: order of pushing
  assert deadlines.pop_due(0.5) == []
  assert deadlines.pop_due(1.0) == [early, late]
  assert deadlines.pop_due(5.0) == [late]
  assert deadlines.pop_due(9.0) == []


def test_reaped_run_records_how_it_ended():
  run = _run(1, 0.0, 4.0)
  assert not run.reaped and run.is_runnable()  # this process, running while it reads its stat
  run.set_reaped(256, cpu_s=0.5, end=2.0)
  assert run.reaped and (run.wait_status, run.cpu_s, run.end) == (256, 0.5, 2.0)
  assert not run.is_runnable()
