"""Row filters: answer normalization, the integer-answer rule, and deduplication.

PAPER.md §8: training problems must have integer answers (verifiers cannot reliably
equate algebraic forms), problems with enormous answers are dropped (they make
verifiers time out), and the mixed sources overlap, so problems are deduplicated.
"""
import re
import unicodedata
from typing import Any, Sequence

from rstar_jax.data import records

_WRAPPERS = (
    re.compile(r"^\$+(.*?)\$+$", re.S),          # $42$, $$42$$
    re.compile(r"^\\\((.*)\\\)$", re.S),          # \(42\)
    re.compile(r"^\\boxed\s*\{(.*)\}$", re.S),    # \boxed{42}
    re.compile(r"^\\text\s*\{(.*)\}$", re.S),     # \text{42}
)
_INTEGER = re.compile(r"[+-]?\d+(?:\.0+)?")
_GROUPED = re.compile(r"[+-]?\d{1,3}(?:[, ]\d{3})+")


def field_text(value: Any) -> str | None:
  """A scalar row field (answer, id, source) as a stripped string; None when absent or empty.

  Integral numbers (int, or a float with no fractional part, as Parquet exports
  often store answers) become their decimal digits; booleans, NaN and containers
  give None.
  """
  if value is None or isinstance(value, (bool, list, tuple, dict)):
    return None
  if isinstance(value, float):
    if value != value or value in (float("inf"), float("-inf")):
      return None
    value = int(value) if value.is_integer() else value
  text = str(value).strip()
  return text or None


def canonical_integer(answer: str) -> str | None:
  """The canonical decimal form of an integer answer, or None if it is not one.

  Accepted: optional sign, digits, an optional `.0…` tail, thousands separators in
  groups of three (`1,000`, `1{,}000`, `1\\,000`, `1 000`), and the wrappers `$…$`,
  `\\(…\\)`, `\\boxed{…}`, `\\text{…}`. Canonical form: `str(int(x))`, e.g.
  "+007" -> "7", "-1,024" -> "-1024", "$\\boxed{12}$" -> "12". Anything else (a
  fraction, a unit, a list, an expression) gives None.
  """
  text = answer.strip()
  changed = True
  while changed:
    changed = False
    for wrapper in _WRAPPERS:
      match = wrapper.match(text)
      if match:
        text, changed = match.group(1).strip(), True
  text = text.replace("{,}", ",").replace("\\,", " ").replace("\\ ", " ")
  if _GROUPED.fullmatch(text):
    text = text.replace(",", "").replace(" ", "")
  if not _INTEGER.fullmatch(text):
    return None
  return str(int(text.split(".")[0]))


def dedup_key(text: str) -> str:
  """Normalized problem text for duplicate detection: NFKC, casefold, one space."""
  return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def dedup(problems: Sequence[records.Problem], stats: records.DataStats) -> list[records.Problem]:
  """Keeps the first problem of each normalized text (see `dedup_key`).

  A later duplicate counts as "duplicate" when its answer equals the kept one's
  and as "duplicate_answer_conflict" when it differs (the first row wins either
  way; the count tells how noisy the labels are). `stats.kept` is reduced by the
  number dropped.
  """
  seen: dict[str, str] = {}
  kept = []
  for problem in problems:
    key = dedup_key(problem.problem)
    if key in seen:
      stats.skip("duplicate" if seen[key] == problem.answer else "duplicate_answer_conflict")
      stats.kept -= 1
      continue
    seen[key] = problem.answer
    kept.append(problem)
  return kept
