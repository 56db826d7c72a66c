"""Load-test workloads with known answers: trivial prints and a mixed set of tool calls.

Each `Case` is a Code Judge submission (what goes over the wire) with its expected outcome, so
a load run counts an answer as wrong when its status or output differs, whatever the service.
Cases are deterministic functions of their index.

* `trivial(i)`: the program `print(i)` (not wrapped), the floor of a sandbox's cost.
* `mixed(i)`: rStar2-style cells (`wrap_code`) cycling through 40 kinds: 8 sympy
  (factor, solve, integrate, expand), 8 numpy (sums, determinants, matrix products), 8 pure
  Python loops, 6 errors (ZeroDivisionError, NameError, SyntaxError, IndexError, ValueError,
  TypeError), 4 reading stdin, 3 displaying a last expression, 1 sleeping past the limit,
  1 allocating 2 GiB (memory_limit), 1 math.comb.
"""
import dataclasses
from typing import Any

from rstar_jax.sandbox import result as result_lib
from rstar_jax.sandbox import wrapper

WORKLOADS = ("trivial", "mixed")


@dataclasses.dataclass(frozen=True)
class Case:
  """One submission and its expected outcome.

  Attributes:
    solution: the program sent as the submission's `solution`.
    stdin: its `input`.
    status: the expected ExecutionResult status.
    stdout: the exact expected stdout, or None to not check it.
    stderr_contains: a string the stderr must contain, or None.
  """
  solution: str
  stdin: str | None
  status: str
  stdout: str | None = None
  stderr_contains: str | None = None

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
  slot, k = i % 40, i // 40 % 50 + 2
  if slot < 8:
    code, out = _sympy(slot, k)
  elif slot < 16:
    code, out = _numpy(slot, k)
  elif slot < 24:
    code, out = _loop(slot, k)
  elif slot < 30:
    code, needle = _ERRORS[slot - 24]
    return Case(wrapper.wrap_code(code), None, "runtime_error", None, needle)
  elif slot < 34:
    return Case(wrapper.wrap_code("a, b = map(int, input().split())\nprint(a * b, a + b)"),
                f"{k} {slot}\n", "ok", f"{k * slot} {k + slot}\n")
  elif slot < 37:
    code, out = f"[j * {k} for j in range({slot - 32})]", repr([j * k for j in range(slot - 32)])
  elif slot == 37:
    # stdout unchecked: Code Judge adds a "Suicide from timeout." line (PAPER.md §3.3).
    return Case(wrapper.wrap_code("import time\nprint('waiting')\ntime.sleep(30)"), None,
                "timeout")
  elif slot == 38:
    return Case(wrapper.wrap_code("x = bytearray(2 << 30)"), None, "memory_limit", "",
                "MemoryError")
  else:
    code, out = f"import math\nprint(math.comb(40, {k % 40}))", str(_comb(40, k % 40))
  return Case(wrapper.wrap_code(code), None, "ok", out + "\n")


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
