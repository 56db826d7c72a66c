"""N-gram decontamination of training problems against evaluation sets (PAPER.md §8).

A training problem is contaminated when it shares any word n-gram (n = 8 in the
paper) with an evaluation problem, or when its whole word sequence equals an
evaluation problem's (this catches texts shorter than n words, which have no
n-gram). Words are the maximal runs of letters and digits of the NFKC-casefolded
text, so punctuation, LaTeX braces and spacing do not hide an overlap:
"Find $x^2+y^2$." -> ["find", "x", "2", "y", "2"].
"""
import re
import unicodedata
from typing import Iterable, Sequence

from absl import logging

from rstar_jax.data import records

_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
  """The word sequence used for n-grams: letter/digit runs of the normalized text."""
  return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def _ngrams(tokens: Sequence[str], n: int) -> Iterable[str]:
  for i in range(len(tokens) - n + 1):
    yield " ".join(tokens[i:i + n])


class NgramIndex:
  """The n-grams of a set of evaluation problems, for overlap queries.

  Args:
    problems: the evaluation problems (their `source` names the benchmark).
    n: the n-gram length in words; PAPER.md §8 uses 8.
  """

  def __init__(self, problems: Sequence[records.Problem], n: int = 8):
    if not isinstance(n, int) or n < 1:
      raise ValueError(f"n must be a positive integer, got {n!r}")
    self.n = n
    self._grams: dict[str, str] = {}
    self._whole: dict[str, str] = {}
    for problem in problems:
      tokens = words(problem.problem)
      self._whole.setdefault(" ".join(tokens), problem.source)
      for gram in _ngrams(tokens, n):
        self._grams.setdefault(gram, problem.source)
    self.num_problems = len(problems)

  def match(self, text: str) -> str | None:
    """The source of an evaluation problem overlapping `text`, or None."""
    tokens = words(text)
    whole = self._whole.get(" ".join(tokens))
    if whole is not None:
      return whole
    for gram in _ngrams(tokens, self.n):
      source = self._grams.get(gram)
      if source is not None:
        return source
    return None


def decontaminate(problems: Sequence[records.Problem], index: NgramIndex,
                  stats: records.DataStats) -> list[records.Problem]:
  """Drops problems that overlap the index; counts them as "contaminated".

  Logs how many were dropped per evaluation source. `stats.kept` is reduced by the
  number dropped.
  """
  kept, hits = [], {}
  for problem in problems:
    source = index.match(problem.problem)
    if source is None:
      kept.append(problem)
    else:
      hits[source] = hits.get(source, 0) + 1
  dropped = len(problems) - len(kept)
  if dropped:
    stats.skip("contaminated", dropped)
    stats.kept -= dropped
  logging.info("decontamination (%d-grams, %d evaluation problems): dropped %d of %d %s",
               index.n, index.num_problems, dropped, len(problems),
               dict(sorted(hits.items())))
  return kept
