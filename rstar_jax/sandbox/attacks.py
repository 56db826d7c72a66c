"""Snippets that attack an executor, with the status a contained run answers.

Shared by the adversarial battery (tests/sandbox_protection_test.py, which also checks what is
left behind) and the benchmark's adversarial table (benchmarks/sandbox_bench.py --adversarial,
which runs them on any Code Judge compatible service and measures how long the answer took and
how much host memory the attack held meanwhile).
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Attack:
  """One attack: its name, the program, and the status our sandbox answers (contained)."""
  name: str
  code: str
  contained_status: str


ATTACKS = (
    Attack("busy loop", "print('start', flush=True)\nwhile True:\n  pass\n", "timeout"),
    Attack("signal handlers", "import signal, time\n"
           "for s in (signal.SIGALRM, signal.SIGTERM, signal.SIGXCPU, signal.SIGINT):\n"
           "  signal.signal(s, lambda *a: print('survived', flush=True))\n"
           "signal.alarm(1)\n"
           "while True:\n"
           "  time.sleep(0.01)\n", "timeout"),
    Attack("fork bomb", "import os\n"
           "while True:\n"
           "  try:\n"
           "    os.fork()\n"
           "  except OSError:\n"
           "    pass\n", "timeout"),
    Attack("memory hog", "x = bytearray(2 << 30)\n", "memory_limit"),
    # each child stays under a 384 MiB address-space limit; together they would hold 6 GB
    Attack("forking allocator", "import os, time\n"
           "for _ in range(30):\n"
           "  if os.fork() == 0:\n"
           "    block = b'x' * (200 << 20)\n"
           "    time.sleep(30)\n"
           "print('forked')\n"
           "time.sleep(30)\n", "memory_limit"),
    Attack("1 GB print", "import sys\nfor _ in range(1000):\n  sys.stdout.write('x' * 1_000_000)\n",
           "output_limit"),
)
BY_NAME = {attack.name: attack for attack in ATTACKS}
