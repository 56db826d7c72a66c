"""Run memory accounting (`sandbox.memory`) and memory admission (`PoolConfig.runs_per_worker`),
against hand-computed values and real processes."""
import subprocess
import sys

import pytest

from rstar_jax.sandbox import config
from rstar_jax.sandbox import memory

MIB = config.MIB

MEMINFO = (b"MemTotal:       24683664 kB\nMemFree:         1000000 kB\n"
           b"MemAvailable:   23649972 kB\nBuffers:          100 kB\n")


def test_available_bytes_reads_memavailable_and_the_tightest_cgroup_headroom():
  assert memory.available_bytes(MEMINFO, cgroup_limits=()) == 23649972 * 1024
  assert memory.available_bytes(MEMINFO, cgroup_limits=(8 << 30, 6 << 30)) == 6 << 30
  assert memory.available_bytes(MEMINFO, cgroup_limits=(64 << 30,)) == 23649972 * 1024


def test_available_bytes_of_this_host_is_positive_and_at_most_its_memory():
  with open("/proc/meminfo", "rb") as f:
    total = int(f.read().split(b"MemTotal:")[1].split()[0]) * 1024
  assert 0 < memory.available_bytes() <= total


def _tree(children: int, child_mib: int):
  """A python process with `children` forked children, each holding `child_mib` MiB it wrote;
  returns (process, child pids) once all have filled their memory."""
  code = f"""
import os, sys, time
kids = []
for _ in range({children}):
  r, w = os.pipe()
  pid = os.fork()
  if pid == 0:
    block = bytearray({child_mib} << 20)
    for i in range(0, len(block), 4096):
      block[i] = 1
    os.write(w, b"x")
    time.sleep(60)
    os._exit(0)
  os.read(r, 1)
  kids.append(pid)
print(" ".join(map(str, kids)), flush=True)
time.sleep(60)
"""
  process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
  kids = [int(p) for p in process.stdout.readline().split()]
  return process, kids


def test_run_processes_lists_the_whole_tree_and_pss_counts_each_childs_memory():
  process, kids = _tree(children=3, child_mib=40)
  try:
    pids = memory.run_processes(process.pid)
    assert sorted(pids) == sorted([process.pid, *kids])
    held = memory.proportional_bytes(pids)
    # 3 x 40 MiB written by the children, plus the interpreters' own (shared) pages
    assert 3 * 40 * MIB <= held < 3 * 40 * MIB + 60 * MIB
  finally:
    process.kill()
    process.wait()


def test_a_gone_process_counts_nothing():
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  assert memory.run_processes(process.pid) == []
  assert memory.proportional_bytes([process.pid]) == 0


def test_runs_per_worker_fits_the_budgets_into_the_host():
  limits = config.Limits(run_memory_bytes=512 * MIB)
  pool = config.PoolConfig(workers=2, jobs_per_worker=16, limits=limits)
  assert pool.runs_per_worker(available_bytes=64 << 30) == 16  # 48 GiB / (2 x 0.5) = 48 >= 16
  assert pool.runs_per_worker(available_bytes=8 << 30) == 6  # 6 GiB / (2 x 0.5 GiB)
  explicit = config.PoolConfig(workers=2, jobs_per_worker=16, limits=limits,
                               host_memory_bytes=3 << 30)
  assert explicit.runs_per_worker(available_bytes=64 << 30) == 3
  with pytest.raises(ValueError, match=r"2 workers x 512 MiB per run > 768 MiB"):
    pool.runs_per_worker(available_bytes=1 << 30)
  with pytest.raises(ValueError, match="host_memory_bytes must be > 0"):
    config.PoolConfig(host_memory_bytes=0)
