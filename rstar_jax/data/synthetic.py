"""A synthetic integer-answer task where running Python helps, generated from a seed.

Five families at three difficulty levels (the numbers grow with the level):

| family        | level 1                    | level 2                          | level 3                        |
|---------------|----------------------------|----------------------------------|--------------------------------|
| product       | 3-digit x 3-digit          | 5-digit x 4-digit                | three 4-6 digit factors        |
| modular       | a^e mod m, e <= 40         | e <= 2000, m <= 2000             | e <= 10^6, m <= 10^6           |
| digit_sum     | digit sum of a^e, e <= 9   | a^e, e <= 120                    | n!, n <= 1000, or e <= 1000    |
| counting      | 1..N divisible by a or b   | by a or b but not c, N <= 10^4   | 1..N with digit sum s, N<=10^5 |
| number_theory | gcd(a, b)                  | sum of divisors of n <= 20000    | number of primes below N<=5e4  |

Every problem also carries three Python snippets used by `sft_traces`: `code`
prints the answer, `broken_code` raises a real Python error (SyntaxError,
NameError, TypeError, ZeroDivisionError), and `buggy_code` runs but computes
something else (a typo, `and` for `or`, an operator-precedence slip, a missing
`+ 1`). Reference answers are computed here by other means (inclusion-exclusion, a
digit DP, a sieve, factorization), so a snippet's output is a real check.

Determinism: every number is drawn from SHA-256 of (seed, split, item, attempt,
counter), so the files are byte-identical for a seed on any platform and Python
version. Splits: items cycle through the families and then the levels; a split
redraws an item whose text is in `exclude`, so generating the splits in turn, each
excluding the texts of all before it (`synthetic_task.synthetic_splits`: eval, train,
sft), puts no problem text in two splits. (The templates are shared, so n-gram
decontamination does not apply to this task.)

Sizes: problem texts are 18-73 characters; the PAPER.md §2.2 prompt around them
adds 1,862 tokens with `chat.CharTokenizer` (one per character or special token).
"""
import bisect
import dataclasses
import functools
import hashlib
import math
from typing import Callable, Sequence

from rstar_jax.data import records

FAMILIES = ("product", "modular", "digit_sum", "counting", "number_theory")
LEVELS = (1, 2, 3)
_MAX_ATTEMPTS = 1000


@dataclasses.dataclass(frozen=True)
class SyntheticItem:
  """A synthetic problem (meta: family, level) with its three snippets."""
  problem: records.Problem
  code: str
  broken_code: str
  buggy_code: str


class Draw:
  """Deterministic draws from SHA-256 of a label and a counter (platform-independent)."""

  def __init__(self, *label: object):
    self._key = "/".join(str(part) for part in label)
    self._count = 0

  def _next(self) -> int:
    digest = hashlib.sha256(f"{self._key}/{self._count}".encode()).digest()
    self._count += 1
    return int.from_bytes(digest[:8], "big")

  def integer(self, low: int, high: int) -> int:
    """Uniform in [low, high] (bias below 2**-40 for the ranges used here)."""
    return low + self._next() % (high - low + 1)

  def uniform(self) -> float:
    """Uniform in [0, 1)."""
    return self._next() / 2.0**64

  def distinct(self, low: int, high: int, count: int) -> list[int]:
    values: list[int] = []
    while len(values) < count:
      value = self.integer(low, high)
      if value not in values:
        values.append(value)
    return values


# Each family: (draw, level) -> (text, answer, code, broken_code, buggy_code).
_Family = Callable[[Draw, int], tuple[str, int, str, str, str]]


def _product(draw: Draw, level: int):
  digits = {1: (3, 3), 2: (5, 4), 3: (draw.integer(4, 6), draw.integer(4, 6), draw.integer(4, 6))}
  factors = [draw.integer(10**(d - 1) + 1, 10**d - 1) for d in digits[level]]
  expr = " * ".join(map(str, factors))
  first = str(factors[0])
  # The buggy snippet swaps the leading-most pair of unequal adjacent digits of the first
  # factor (never making a leading 0): a change of about 1% or more, so even the lenient
  # released grader (rel_tol 1e-4, PAPER.md §4) scores the result wrong.
  swap = next((i for i in range(len(first) - 1)
               if first[i] != first[i + 1] and (i or first[1] != "0")), None)
  typo = (first[:swap] + first[swap + 1] + first[swap] + first[swap + 2:] if swap is not None
          else first[:-1] + str((int(first[-1]) + 1) % 10))
  return (f"What is {expr}?", math.prod(factors), f"print({expr})", f"print({expr}",
          f"print({' * '.join([typo] + [str(f) for f in factors[1:]])})")


def _modular(draw: Draw, level: int):
  ranges = {1: ((2, 9), (10, 40), (5, 30)), 2: ((2, 99), (100, 2000), (100, 2000)),
            3: ((100, 9999), (10**5, 10**6), (10**4, 10**6))}
  a, e, m = (draw.integer(*r) for r in ranges[level])
  return (f"What is the remainder when {a}^{e} is divided by {m}?", pow(a, e, m),
          f"print(pow({a}, {e}, {m}))", f"print(mod({a}**{e}, {m}))", f"print(pow({a}, {m}, {e}))")


def _digit_sum(draw: Draw, level: int):
  if level == 3 and draw.uniform() < 0.5:
    n = draw.integer(30, 1000)
    value = sum(int(d) for d in str(math.factorial(n)))
    code = f"import math\nprint(sum(int(d) for d in str(math.factorial({n}))))"
    return (f"What is the sum of the digits of {n}!?", value, code,
            f"print(sum(int(d) for d in str(factorial({n}))))",
            f"import math\nprint(len(str(math.factorial({n}))))")
  base = draw.integer(2, 999 if level != 2 else 99)
  exp = {1: (2, 9), 2: (30, 120), 3: (200, 1000)}[level]  # at most 3000 digits
  exp = draw.integer(*exp)
  value = sum(int(d) for d in str(base**exp))
  return (f"What is the sum of the digits of {base}^{exp}?", value,
          f"print(sum(int(d) for d in str({base}**{exp})))", f"print(sum(str({base}**{exp})))",
          f"print(sum(int(d) for d in str({base}*{exp})))")


def _multiples(n: int, divisors: Sequence[int]) -> int:
  """#{1 <= k <= n : some d in divisors divides k}, by inclusion-exclusion."""
  total = 0
  for mask in range(1, 1 << len(divisors)):
    chosen = [d for i, d in enumerate(divisors) if mask >> i & 1]
    total += (-1)**(len(chosen) + 1) * (n // math.lcm(*chosen))
  return total


def _digit_sum_count(n: int, s: int) -> int:
  """#{0 <= k <= n : digit sum of k is s}, by a digit DP over the decimal digits of n."""
  digits = [int(d) for d in str(n)]

  @functools.lru_cache(maxsize=None)
  def count(pos: int, remaining: int, tight: bool) -> int:
    if remaining < 0:
      return 0
    if pos == len(digits):
      return int(remaining == 0)
    top = digits[pos] if tight else 9
    return sum(count(pos + 1, remaining - d, tight and d == top) for d in range(top + 1))

  return count(0, s, True)


def _counting(draw: Draw, level: int):
  if level == 3:
    n, s = draw.integer(10**4, 10**5), draw.integer(5, 30)
    loop = f"n in range(1, {n + 1})"
    return (f"How many integers from 1 to {n} have digits summing to {s}?",
            _digit_sum_count(n, s), f"print(sum(1 for {loop} if sum(map(int, str(n))) == {s}))",
            f"print(sum(1 for {loop} if sum(str(n)) == {s}))",
            f"print(sum(1 for {loop} if n % 9 == {s % 9}))")
  if level == 1:
    n, (a, b) = draw.integer(50, 200), draw.distinct(2, 9, 2)
    loop = f"n in range(1, {n + 1})"
    test = f"n % {a} == 0 or n % {b} == 0"
    return (f"How many integers from 1 to {n} are divisible by {a} or {b}?",
            _multiples(n, (a, b)), f"print(sum(1 for {loop} if {test}))",
            f"print(len(n for {loop} if {test}))",
            f"print(sum(1 for {loop} if {test.replace(' or ', ' and ')}))")
  n, (a, b, c) = draw.integer(1000, 10**4), draw.distinct(2, 13, 3)
  loop = f"n in range(1, {n + 1})"
  either = f"n % {a} == 0 or n % {b} == 0"
  answer = _multiples(n, (a, b, c)) - _multiples(n, (c,))  # |A u B u C| - |C| = |(A u B) \ C|
  return (f"How many integers from 1 to {n} are divisible by {a} or {b} but not by {c}?", answer,
          f"print(sum(1 for {loop} if ({either}) and n % {c} != 0))",
          f"print(len(n for {loop} if ({either}) and n % {c} != 0))",
          f"print(sum(1 for {loop} if {either} and n % {c} != 0))")


@functools.lru_cache(maxsize=1)
def _primes_below(limit: int) -> tuple[int, ...]:
  sieve = bytearray([1]) * limit
  sieve[:2] = b"\0\0"
  for p in range(2, math.isqrt(limit - 1) + 1):
    if sieve[p]:
      sieve[p * p::p] = bytearray(len(range(p * p, limit, p)))
  return tuple(i for i in range(limit) if sieve[i])


def _divisor_sum(n: int) -> int:
  """sigma(n) from the prime factorization: prod (p^(k+1) - 1) / (p - 1)."""
  total, p = 1, 2
  while p * p <= n:
    k = 0
    while n % p == 0:
      n, k = n // p, k + 1
    total *= (p**(k + 1) - 1) // (p - 1)
    p += 1
  return total * (n + 1 if n > 1 else 1)


def _number_theory(draw: Draw, level: int):
  if level == 1:
    g, (x, y) = draw.integer(2, 30), draw.distinct(2, 30, 2)
    a, b = g * x, g * y
    return (f"What is the greatest common divisor of {a} and {b}?", math.gcd(a, b),
            f"import math\nprint(math.gcd({a}, {b}))", f"print(gcd({a}, {b}))",
            f"import math\nprint(math.lcm({a}, {b}))")
  if level == 2:
    n = draw.integer(1000, 20000)
    return (f"What is the sum of all positive divisors of {n}?", _divisor_sum(n),
            f"print(sum(d for d in range(1, {n + 1}) if {n} % d == 0))",
            f"print(sum(d for d in range({n + 1}) if {n} % d == 0))",
            f"print(sum(d for d in range(1, {n}) if {n} % d == 0))")
  n = draw.integer(5000, 50000)
  primes = _primes_below(50000)
  return (f"How many primes are less than {n}?", bisect.bisect_left(primes, n),
          f"print(sum(all(n % d for d in range(2, int(n**0.5) + 1)) for n in range(2, {n})))",
          f"print(sum(isprime(n) for n in range(2, {n})))",
          f"print(sum(all(n % d for d in range(2, int(n**0.5))) for n in range(2, {n})))")


_GENERATORS: dict[str, _Family] = {
    "product": _product, "modular": _modular, "digit_sum": _digit_sum,
    "counting": _counting, "number_theory": _number_theory,
}


def synthetic_problems(seed: int, split: str, count: int, *, families: Sequence[str] = FAMILIES,
             levels: Sequence[int] = LEVELS,
             exclude: frozenset[str] = frozenset()) -> list[SyntheticItem]:
  """Generates `count` problems of one split.

  Args:
    seed: the task seed.
    split: the split name (part of every draw, e.g. "train", "eval", "sft").
    count: number of problems.
    families: families to cycle through (item i has family i mod F).
    levels: levels to cycle through (item i has level (i // F) mod L).
    exclude: problem texts that must not appear (e.g. those of the splits drawn before).

  Returns:
    Items with ids "synthetic/{split}/{i:06d}" and meta {"family", "level"}.
  """
  for family in families:
    if family not in _GENERATORS:
      raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
  for level in levels:
    if level not in LEVELS:
      raise ValueError(f"unknown level {level!r}; expected one of {LEVELS}")
  if not families or not levels:
    raise ValueError("families and levels must be non-empty")
  if not isinstance(count, int) or count < 0:
    raise ValueError(f"count must be a non-negative integer, got {count!r}")
  taken = set(exclude)
  items = []
  for i in range(count):
    family, level = families[i % len(families)], levels[(i // len(families)) % len(levels)]
    for attempt in range(_MAX_ATTEMPTS):
      text, answer, code, broken, buggy = _GENERATORS[family](Draw(seed, split, i, attempt), level)
      if text not in taken:
        break
    else:
      raise ValueError(f"{split} item {i}: no unused {family} level-{level} problem in "
                       f"{_MAX_ATTEMPTS} draws; ask for fewer problems")
    taken.add(text)
    problem = records.Problem(f"synthetic/{split}/{i:06d}", text, str(answer), "synthetic",
                              {"family": family, "level": level})
    items.append(SyntheticItem(problem, code, broken, buggy))
  return items
