"""Load-test workloads with known answers (trivial prints, a mixed set of tool calls), and a
load generator that sends them to a Code Judge API and counts right, wrong and lost answers.

Each `Case` is a Code Judge submission (what goes over the wire) with its expected outcome, so
a load run counts an answer as wrong when its status or output differs, whatever the service.
Cases are deterministic functions of their index. `send_requests` posts each case to `/run`
with a fixed number of requests open (tests/sandbox_load_test.py, benchmarks/sandbox_bench.py).

* `trivial(i)`: the program `print(i)` (not wrapped), the floor of a sandbox's cost.
* `mixed(i)`: rStar2-style cells (`wrap_code`) cycling through 44 kinds: 8 sympy
  (factor, solve, integrate, expand), 8 numpy (sums, determinants, matrix products), 8 pure
  Python loops, 6 errors (ZeroDivisionError, NameError, SyntaxError, IndexError, ValueError,
  TypeError), 4 reading stdin, 3 displaying a last expression, 1 sleeping past the limit,
  1 allocating 2 GiB (memory_limit), 1 math.comb, and 4 that import submodules on first use,
  which the zygote's warm-up does not (a definite integral and an improper one, sympy.solveset,
  numpy.polynomial): they fail when the interpreter's files are hidden from a run.
Every case names its kind, so a load run counts wrong answers by kind (`Tally.wrong_by_kind`).
"""
import asyncio
import collections
import dataclasses
import time
from typing import Any

import aiohttp

from rstar_jax.sandbox import codejudge
from rstar_jax.sandbox import result as result_lib
from rstar_jax.sandbox import wrapper

WORKLOADS = ("trivial", "mixed")
# Code Judge reasons that mean the service gave no usable answer.
_LOST_REASONS = ("queue_timeout", "internal_error")


@dataclasses.dataclass(frozen=True)
class Case:
  """One submission and its expected outcome.

  Attributes:
    solution: the program sent as the submission's `solution`.
    stdin: its `input`.
    kind: what the case exercises (sympy, numpy, loop, error, ...), for counting by kind.
    status: the expected ExecutionResult status.
    stdout: the exact expected stdout, or None to not check it.
    stderr_contains: a string the stderr must contain, or None.
  """
  solution: str
  stdin: str | None
  status: str
  stdout: str | None = None
  stderr_contains: str | None = None
  kind: str = "trivial"

  def submission(self) -> dict[str, Any]:
    """The Code Judge submission body."""
    return {"type": "python", "solution": self.solution, "input": self.stdin}

  def is_right(self, result: result_lib.ExecutionResult) -> bool:
    """Whether `result` is the expected outcome (from a Code Judge body: result_from_json)."""
    return (result.status == self.status
            and (self.stdout is None or result.stdout == self.stdout)
            and (self.stderr_contains is None or self.stderr_contains in result.stderr))


def trivial(i: int) -> Case:
  """`print(i)`."""
  return Case(f"print({i})", None, "ok", f"{i}\n")


def _sympy(kind: int, k: int) -> tuple[str, str]:
  head = "import sympy as sp\nx = sp.Symbol('x')\n"
  return [
      (f"{head}sp.factor(x**2 - {k * k})", f"(x - {k})*(x + {k})"),
      (f"{head}sp.solve(x**2 - {k}*x, x)", f"[0, {k}]"),
      (f"{head}sp.integrate(x**{k % 5 + 2}, x)", f"x**{k % 5 + 3}/{k % 5 + 3}"),
      (f"{head}print(sp.expand((x + {k})**2))", f"x**2 + {2 * k}*x + {k * k}"),
  ][kind % 4]


def _numpy(kind: int, k: int) -> tuple[str, str]:
  head = "import numpy as np\n"
  return [
      (f"{head}print(int(np.arange({k * 100}).sum()))", str(k * 100 * (k * 100 - 1) // 2)),
      (f"{head}print(round(float(np.linalg.det(np.array([[2.0, 1.0], [1.0, {k}.0]])))))",
       str(2 * k - 1)),
      (f"{head}a = np.eye(3, dtype=int) * {k}\nprint(int((a @ a).trace()))", str(3 * k * k)),
      (f"{head}print(np.array([{k}, 2, 3]).max())", str(max(k, 3))),
  ][kind % 4]


def _lazy_import(kind: int, k: int) -> tuple[str, str]:
  sympy_head = "import sympy as sp\nx = sp.Symbol('x')\n"
  return [
      (f"{sympy_head}print(sp.integrate(x**{k}, (x, 0, 2)))", str(_sympy_rational(2 ** (k + 1), k + 1))),
      (f"{sympy_head}print(sorted(sp.solveset(x**2 - {k * k}, x, sp.S.Reals)))", f"[{-k}, {k}]"),
      (f"from numpy.polynomial import polynomial as P\nprint(int(P.polyval(2, [1, {k}, 1])))", str(5 + 2 * k)),
      (f"{sympy_head}print(sp.integrate(sp.exp(-x) * x**{k % 6}, (x, 0, sp.oo)))", str(_factorial(k % 6))),
  ][kind % 4]


def _sympy_rational(numerator: int, denominator: int) -> str:
  """How sympy prints numerator/denominator in lowest terms."""
  divisor = _gcd(numerator, denominator)
  numerator, denominator = numerator // divisor, denominator // divisor
  return str(numerator) if denominator == 1 else f"{numerator}/{denominator}"


def _gcd(a: int, b: int) -> int:
  while b:
    a, b = b, a % b
  return a


def _factorial(n: int) -> int:
  value = 1
  for j in range(2, n + 1):
    value *= j
  return value


def _prime_count(n: int) -> int:
  sieve = bytearray([1]) * n
  sieve[0:2] = b"\0\0"
  for p in range(2, int(n ** 0.5) + 1):
    if sieve[p]:
      sieve[p * p::p] = bytes(len(range(p * p, n, p)))
  return sum(sieve)


def _loop(kind: int, k: int) -> tuple[str, str]:
  if kind % 2 == 0:
    n = 20_000 + 10 * k
    return (f"s = 0\nfor j in range({n}):\n  s += j * j\nprint(s)",
            str((n - 1) * n * (2 * n - 1) // 6))
  n = 5000 + k
  return (f"n = {n}\nsieve = [True] * n\nsieve[0] = sieve[1] = False\n"
          "for p in range(2, int(n ** 0.5) + 1):\n  if sieve[p]:\n"
          "    for q in range(p * p, n, p):\n      sieve[q] = False\nprint(sum(sieve))",
          str(_prime_count(n)))


_ERRORS = (("print(1 / (3 - 3))", "ZeroDivisionError"), ("print(undefined_name)", "NameError"),
           ("def f(:\n  pass", "SyntaxError"), ("print([1, 2][5])", "IndexError"),
           ("raise ValueError('bad value')", "ValueError"), ("print(len(5))", "TypeError"))


def mixed(i: int) -> Case:
  """The i-th case of the mixed set (module docstring)."""
  slot, k = i % 44, i // 44 % 50 + 2
  if slot < 8:
    (code, out), kind = _sympy(slot, k), "sympy"
  elif slot < 16:
    (code, out), kind = _numpy(slot, k), "numpy"
  elif slot < 24:
    (code, out), kind = _loop(slot, k), "loop"
  elif slot < 30:
    code, needle = _ERRORS[slot - 24]
    return Case(wrapper.wrap_code(code), None, "runtime_error", None, needle, kind="error")
  elif slot < 34:
    return Case(wrapper.wrap_code("a, b = map(int, input().split())\nprint(a * b, a + b)"),
                f"{k} {slot}\n", "ok", f"{k * slot} {k + slot}\n", kind="stdin")
  elif slot < 37:
    code, out = f"[j * {k} for j in range({slot - 32})]", repr([j * k for j in range(slot - 32)])
    kind = "display"
  elif slot == 37:
    # stdout unchecked: Code Judge adds a "Suicide from timeout." line (PAPER.md §3.3).
    return Case(wrapper.wrap_code("import time\nprint('waiting')\ntime.sleep(30)"), None,
                "timeout", kind="timeout")
  elif slot == 38:
    return Case(wrapper.wrap_code("x = bytearray(2 << 30)"), None, "memory_limit", "",
                "MemoryError", kind="memory")
  elif slot == 39:
    (code, out), kind = (f"import math\nprint(math.comb(40, {k % 40}))", str(_comb(40, k % 40))), "math"
  else:
    (code, out), kind = _lazy_import(slot, k), "lazy_import"
  return Case(wrapper.wrap_code(code), None, "ok", out + "\n", kind=kind)


def _comb(n: int, r: int) -> int:
  value = 1
  for j in range(r):
    value = value * (n - j) // (j + 1)
  return value


def case(workload: str, i: int) -> Case:
  """The i-th case of `workload` (one of WORKLOADS)."""
  if workload not in WORKLOADS:
    raise ValueError(f"workload must be one of {WORKLOADS}, got {workload!r}")
  return trivial(i) if workload == "trivial" else mixed(i)


def cases(workload: str, n: int) -> list[Case]:
  """The first n cases of `workload`: one of WORKLOADS, or "alternating" (trivial, mixed, ...)."""
  if workload == "alternating":
    return [case(WORKLOADS[i % 2], i // 2) for i in range(n)]
  return [case(workload, i) for i in range(n)]


@dataclasses.dataclass
class Tally:
  """What a load run got back so far.

  Attributes:
    sent: requests sent (read it while the run goes on for progress).
    right, wrong: answers that are / are not the case's expected outcome.
    lost: no usable answer (connection error, non-200, queue_timeout or internal_error).
    latencies_s: seconds from sending each request to its answer, in completion order.
    wrong_examples: (case, answer body) of the first few wrong answers.
    wrong_by_kind: wrong answers per `Case.kind`.
  """
  sent: int = 0
  right: int = 0
  wrong: int = 0
  lost: int = 0
  latencies_s: list[float] = dataclasses.field(default_factory=list)
  wrong_examples: list[tuple[Case, dict]] = dataclasses.field(default_factory=list)
  wrong_by_kind: collections.Counter = dataclasses.field(default_factory=collections.Counter)


async def send_requests(url: str, run_cases: list[Case], in_flight: int, tally: Tally,
                        timeout_s: float = 900.0) -> None:
  """Posts each case to `url`/run as one submission, `in_flight` requests open at a time.

  Args:
    url: the service's base URL.
    run_cases: the cases, sent in order.
    in_flight: how many requests are open at once.
    tally: filled in as answers arrive.
    timeout_s: the limit of each request.
  """
  connector = aiohttp.TCPConnector(limit=in_flight)
  async with aiohttp.ClientSession(connector=connector,
                                   timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:

    async def sender() -> None:
      while tally.sent < len(run_cases):
        item = run_cases[tally.sent]
        tally.sent += 1
        sent = time.monotonic()
        try:
          async with session.post(url + "/run", json=item.submission()) as response:
            body = await response.json() if response.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
          body = None
        tally.latencies_s.append(time.monotonic() - sent)
        if body is None or body.get("reason") in _LOST_REASONS:
          tally.lost += 1
        elif item.is_right(codejudge.result_from_json(body)):
          tally.right += 1
        else:
          tally.wrong += 1
          tally.wrong_by_kind[item.kind] += 1
          if len(tally.wrong_examples) < 5:
            tally.wrong_examples.append((item, body))

    await asyncio.gather(*(sender() for _ in range(in_flight)))
