"""One verification, in-process and without a time limit: is a response's answer correct?

Combines extraction scope and equivalence rule (PAPER.md §4, §11 rows 11 and 13):
  scope "full_response" (released): candidate = `extract.prime_extract(response)`;
  scope "answer_tag" (paper): candidate = last `\\boxed{}` in the last `<answer>` block, and a
    response without one is wrong.
  strict_integer=False (released): correct if the PRIME grader accepts the candidate or
    math-verify accepts the response (full_response) / `\\boxed{candidate}` (answer_tag) against
    `\\boxed{answer}`, as rStar@ecbfb94 `fused_compute_score.compute_score` does.
  strict_integer=True: correct iff candidate and answer spell the same integer
    (`integers.canonical_integer`: thousands separators only in groups of three, so a list such
    as "1, 2" is no integer).
Call it through `pool.VerifierPool` (or `scorer.Scorer`), which bounds its time.
"""
import dataclasses
import functools
import logging
import threading

from math_verify import grader as mv_grader
from math_verify import parser as mv_parser

from rstar_jax.rewards import extract, integers, prime

SCOPES = ("full_response", "answer_tag")

_GOLD_TARGETS = (mv_parser.LatexExtractionConfig(),)
_PRED_TARGETS = (mv_parser.ExprExtractionConfig(), mv_parser.LatexExtractionConfig())
_MATH_VERIFY_TIMEOUT_S = 5  # math-verify's defaults for parse and verify


@dataclasses.dataclass(frozen=True)
class Verdict:
  """The outcome of one verification.

  Attributes:
    correct: whether the answer is accepted.
    candidate: the extracted answer string the rules looked at (None: nothing to extract).
  """
  correct: bool
  candidate: str | None


def check_options(scope: str, strict_integer: bool) -> None:
  """Raises ValueError naming `reward.scope` / `reward.strict_integer` if either is invalid."""
  if scope not in SCOPES:
    raise ValueError(f"reward.scope must be one of {SCOPES}, got {scope!r}")
  if not isinstance(strict_integer, bool):
    raise ValueError(f"reward.strict_integer must be a bool, got {strict_integer!r}")


@functools.lru_cache(maxsize=4096)
def _parse_gold(answer: str, timeout_s: int | None) -> list:
  # The same truth is checked against every rollout of its prompt.
  return mv_parser.parse("\\boxed{" + answer + "}", _GOLD_TARGETS, parsing_timeout=timeout_s)


def math_verify_correct(prediction_text: str, answer: str) -> bool:
  """math-verify's verdict as the released scorer computes it (`math_metric`, any pair equal).

  Gold `LatexExtractionConfig` on `\\boxed{answer}`, prediction `ExprExtractionConfig` +
  `LatexExtractionConfig` on `prediction_text`; an error or an unparsable gold counts as wrong.
  math-verify's own 5 s timeouts use SIGALRM and raise outside the main thread, so there they
  are switched off (the worker calls from its main thread and is bounded from outside anyway).
  """
  timeout_s = (_MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread()
               else None)
  try:
    gold = _parse_gold(answer, timeout_s)
    if not gold:
      return False
    prediction = mv_parser.parse(prediction_text, _PRED_TARGETS, parsing_timeout=timeout_s)
    return bool(prediction) and mv_grader.verify(gold, prediction, timeout_seconds=timeout_s)
  except Exception:  # pylint: disable=broad-except  # the released scorer counts errors as 0
    return False


def verify(response: str, answer: str, scope: str = "full_response",
           strict_integer: bool = False) -> Verdict:
  """Decides whether `response` answers `answer` (rules in the module docstring).

  Args:
    response: the model's text after the generation prompt (all turns, tool responses included).
    answer: the ground truth, e.g. "42".
    scope: "full_response" or "answer_tag" (config `reward.scope`).
    strict_integer: exact integer equality instead of the released leniency
      (config `reward.strict_integer`).

  Returns:
    A `Verdict`.
  """
  check_options(scope, strict_integer)
  if scope == "answer_tag":
    candidate = extract.answer_tag_extract(response)
    if candidate is None:
      return Verdict(False, None)
    prediction_text = "\\boxed{" + candidate + "}"
  else:
    _, candidate = extract.prime_extract(response)
    prediction_text = response
  if strict_integer:
    truth = integers.canonical_integer(answer)
    value = integers.canonical_integer(candidate)
    return Verdict(truth is not None and value == truth, candidate)
  correct = (prime.prime_correct(candidate, answer) or
             math_verify_correct(prediction_text, answer))
  return Verdict(correct, candidate)


def quiet_math_verify_logs() -> None:
  """Silences math-verify's per-call warnings ("did not manage to extract ...") in a worker."""
  logging.getLogger("math_verify").setLevel(logging.ERROR)
