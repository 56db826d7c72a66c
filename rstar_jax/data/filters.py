"""Row filters: row-field normalization and deduplication.

PAPER.md §8: the mixed sources overlap, so problems are deduplicated. (The integer-answer
rule is `rewards.canonical_integer`, shared with the strict reward.)
"""
import unicodedata
from typing import Any, Sequence

from rstar_jax.data import records


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
