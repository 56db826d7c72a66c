"""One verification, in-process: is a response's answer correct?

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
Time: `verify(..., timeout_s=t)` ends the verification itself after t seconds (a real-time
interval timer, so the main thread only) and reports it as `timed_out`, as a value. math-verify's
own SIGALRM timeouts are then off: they share that timer, and their fixed 5 s would outlast any
shorter limit. Without `timeout_s` nothing is bounded. Call it through `pool.VerifierPool` (or
`scorer.Scorer`), whose workers set `timeout_s` just below the pool's hard limit, so a slow
verification returns a value and the hard limit (a kill) is left for what a signal cannot stop: a
single long C call, or a grader that swallows the deadline.
"""
import contextlib
import dataclasses
import functools
import logging
import signal
import threading

from math_verify import grader as mv_grader
from math_verify import parser as mv_parser

from rstar_jax.rewards import extract, integers, prime

SCOPES = ("full_response", "answer_tag")

_GOLD_TARGETS = (mv_parser.LatexExtractionConfig(),)
_PRED_TARGETS = (mv_parser.ExprExtractionConfig(), mv_parser.LatexExtractionConfig())


@dataclasses.dataclass(frozen=True)
class Verdict:
  """The outcome of one verification.

  Attributes:
    correct: whether the answer is accepted.
    candidate: the extracted answer string the rules looked at (None: nothing to extract, or
      the deadline came first).
    timed_out: the verification reached its `timeout_s` and was stopped (`correct` is False).
  """
  correct: bool
  candidate: str | None
  timed_out: bool = False


class _DeadlineReached(BaseException):
  """Raised by the timer; a BaseException, so the graders' `except Exception` cannot catch it."""


def _raise_deadline(signum, frame):
  del signum, frame
  raise _DeadlineReached()


@contextlib.contextmanager
def _deadline(timeout_s: float):
  """Raises `_DeadlineReached` in the calling (main) thread once `timeout_s` seconds pass."""
  previous = signal.signal(signal.SIGALRM, _raise_deadline)
  signal.setitimer(signal.ITIMER_REAL, timeout_s)
  try:
    yield
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def check_options(scope: str, strict_integer: bool) -> None:
  """Raises ValueError naming `reward.scope` / `reward.strict_integer` if either is invalid."""
  if scope not in SCOPES:
    raise ValueError(f"reward.scope must be one of {SCOPES}, got {scope!r}")
  if not isinstance(strict_integer, bool):
    raise ValueError(f"reward.strict_integer must be a bool, got {strict_integer!r}")


@functools.lru_cache(maxsize=4096)
def _parse_gold(answer: str) -> list:
  # The same truth is checked against every rollout of its prompt.
  return mv_parser.parse("\\boxed{" + answer + "}", _GOLD_TARGETS, parsing_timeout=None)


def math_verify_correct(prediction_text: str, answer: str) -> bool:
  """math-verify's verdict as the released scorer computes it (`math_metric`, any pair equal).

  Gold `LatexExtractionConfig` on `\\boxed{answer}`, prediction `ExprExtractionConfig` +
  `LatexExtractionConfig` on `prediction_text`; an error or an unparsable gold counts as wrong.
  math-verify's own timeouts are off (module docstring: `verify`'s deadline bounds the call).
  """
  try:
    gold = _parse_gold(answer)
    if not gold:
      return False
    prediction = mv_parser.parse(prediction_text, _PRED_TARGETS, parsing_timeout=None)
    return bool(prediction) and mv_grader.verify(gold, prediction, timeout_seconds=None)
  except Exception:  # pylint: disable=broad-except  # the released scorer counts errors as 0
    return False


def verify(response: str, answer: str, scope: str = "full_response",
           strict_integer: bool = False, timeout_s: float | None = None) -> Verdict:
  """Decides whether `response` answers `answer` (rules in the module docstring).

  Args:
    response: the model's text after the generation prompt, all turns and tool responses
      included, special tokens kept (`scorer` module docstring).
    answer: the ground truth, e.g. "42".
    scope: "full_response" or "answer_tag" (config `reward.scope`).
    strict_integer: exact integer equality instead of the released leniency
      (config `reward.strict_integer`).
    timeout_s: stop after this many seconds and report `timed_out` (main thread only); None
      sets no limit. The SIGALRM timer interrupts Python code only: a computation inside one C
      call (sympy evaluating 9^(9^(9^9)) as an integer power) runs to its end first. For model
      output use `rewards.VerifierPool` or `Scorer`, whose worker processes are killed at the
      deadline.

  Returns:
    A `Verdict`.
  """
  check_options(scope, strict_integer)
  if timeout_s is None:
    return _verify(response, answer, scope, strict_integer)
  if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
    raise ValueError(f"timeout_s must be a positive number or None, got {timeout_s!r}")
  if threading.current_thread() is not threading.main_thread():
    raise ValueError("timeout_s needs the main thread (it sets a SIGALRM timer); call verify "
                     "through rewards.VerifierPool from other threads")
  try:
    with _deadline(timeout_s):
      return _verify(response, answer, scope, strict_integer)
  except _DeadlineReached:
    return Verdict(False, None, timed_out=True)


def _verify(response: str, answer: str, scope: str, strict_integer: bool) -> Verdict:
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
