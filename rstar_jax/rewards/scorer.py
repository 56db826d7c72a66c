"""The outcome reward r ∈ {0, 1} of a response (PAPER.md §4, §11 rows 11-13), config-driven.

    r = 0                                  if truncated and zero_on_truncation
    r = 1[verify(response, answer) holds]  otherwise (within timeout_s; a timeout gives 0)

`verify` is `verifier.verify` with the configured scope and strictness, run in a
`pool.VerifierPool` worker so a pathological expression cannot hang the caller. Defaults: the
released scope and leniency (whole response, PRIME grader then math-verify) and, as in the
paper, zero reward for truncated responses.

The response text a rollout is scored on is the one `rl.RolloutRecord.response_text` holds:
`tokenizer.decode(response_ids)` with special tokens kept, i.e. everything after the prompt's
generation prompt `<|im_start|>assistant\n<reason>`: every model turn (with its closing
`<|im_end|>` when the engine returned it) and every injected environment turn
(`<|im_start|>user\n<tool_response>...<|im_start|>assistant\n<reason>`, PAPER.md §2.4). This is
what the released reward scores for agent rollouts when trace text exists (PAPER.md §4); its
fallback decodes with `skip_special_tokens=True`. The verdict does not depend on the special
tokens being there (tests/rewards_scorer_test.py checks both decodings on every kind of agent
response): extraction reads the last answer phrase or `\boxed{}`, and a correct number that
appears only in a tool's output is not an answer.
"""
import asyncio
import atexit
import concurrent.futures
import dataclasses
import threading
from typing import Any, Mapping, Sequence

from rstar_jax.rewards import integers, pool, verifier


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  """Options of the reward (config section `reward`).

  Attributes:
    scope: "full_response" (released) or "answer_tag" (paper: `\\boxed{}` inside `<answer>`).
    strict_integer: exact integer equality instead of the released leniency (rel_tol 1e-4,
      ×/÷100); needs integer ground truths.
    zero_on_truncation: a response cut by the length budget scores 0 (paper, §4 [R]).
    timeout_s: hard limit of one verification; a timeout scores 0.
    num_workers: verifications that may run at once (one process each).
    memory_limit_mb: address-space limit of each worker process; 0 sets none.
  """
  scope: str = "full_response"
  strict_integer: bool = False
  zero_on_truncation: bool = True
  timeout_s: float = 4.0
  num_workers: int = 2
  memory_limit_mb: int = 2048

  def __post_init__(self):
    verifier.check_options(self.scope, self.strict_integer)
    if not isinstance(self.zero_on_truncation, bool):
      raise ValueError("reward.zero_on_truncation must be a bool, got "
                       f"{self.zero_on_truncation!r}")
    pool.check_limits(self.num_workers, self.timeout_s, self.memory_limit_mb, prefix="reward.")

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> "RewardConfig":
    """Reads the `reward` section of a config (absent keys keep their defaults)."""
    section = config.get("reward") or {}
    section = dict(section.to_dict() if hasattr(section, "to_dict") else section)
    unknown = sorted(set(section) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"unknown reward config keys {unknown}")
    return cls(**section)


@dataclasses.dataclass(frozen=True)
class RewardResult:
  """A reward with its reasons, for logging.

  Attributes:
    score: 1.0 or 0.0.
    correct: the verifier's verdict (False when not verified).
    truncated: the response was cut by the length budget.
    candidate: the extracted answer, when there was one.
    timed_out: the verification hit its time limit.
    error: a failure inside the verifier, or None.
  """
  score: float
  correct: bool
  truncated: bool
  candidate: str | None = None
  timed_out: bool = False
  error: str | None = None


class Scorer:
  """Scores responses against ground truths with a `RewardConfig`; thread-safe.

  Use as a context manager or call `close()` to stop its worker processes.

  Args:
    config: the options; keyword options override it, e.g.
      `Scorer(scope="answer_tag", strict_integer=True)`.
  """

  def __init__(self, config: RewardConfig | None = None, **options):
    self.config = dataclasses.replace(config or RewardConfig(), **options)
    self._pool = pool.VerifierPool(self.config.num_workers, self.config.timeout_s,
                                   self.config.memory_limit_mb)

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> "Scorer":
    """A scorer for the `reward` section of an experiment config."""
    return cls(RewardConfig.from_config(config))

  def _check(self, response: str, answer: str, truncated: bool) -> None:
    if not isinstance(response, str):
      raise ValueError(f"response must be a str, got {type(response).__name__}")
    if not isinstance(answer, str) or not answer.strip():
      raise ValueError(f"answer must be a non-empty str, got {answer!r}")
    if not isinstance(truncated, bool):
      raise ValueError(f"truncated must be a bool, got {truncated!r}")
    if self.config.strict_integer and integers.canonical_integer(answer) is None:
      raise ValueError(f"answer {answer!r} is not an integer, which reward.strict_integer=True "
                       "requires")

  def result(self, response: str, answer: str, truncated: bool = False) -> RewardResult:
    """The reward of one response (text as in the module docstring) with its reasons.

    Blocks until verified or timed out.
    """
    self._check(response, answer, truncated)
    if truncated and self.config.zero_on_truncation:
      return RewardResult(0.0, False, True)
    outcome = self._pool.verify(response, answer, self.config.scope, self.config.strict_integer)
    return RewardResult(float(outcome.correct), outcome.correct, truncated, outcome.candidate,
                        outcome.timed_out, outcome.error)

  def score(self, response: str, answer: str, truncated: bool = False) -> float:
    """1.0 if the response's answer is accepted (and not zeroed for truncation), else 0.0."""
    return self.result(response, answer, truncated).score

  async def ascore(self, response: str, answer: str, truncated: bool = False) -> float:
    """`score` for asyncio code: waits in a worker thread, so the event loop keeps running."""
    return (await asyncio.to_thread(self.result, response, answer, truncated)).score

  def results(self, responses: Sequence[str], answers: Sequence[str],
              truncated: Sequence[bool] | None = None) -> list[RewardResult]:
    """`result` for a batch, `num_workers` at a time, in input order."""
    if len(responses) != len(answers) or (truncated is not None and
                                          len(truncated) != len(responses)):
      raise ValueError(f"responses ({len(responses)}), answers ({len(answers)}) and truncated "
                       f"({'-' if truncated is None else len(truncated)}) must have one length")
    flags = [False] * len(responses) if truncated is None else list(truncated)
    with concurrent.futures.ThreadPoolExecutor(self.config.num_workers) as executor:
      return list(executor.map(self.result, responses, answers, flags))

  def start(self) -> None:
    """Starts the worker processes now rather than on the first call."""
    self._pool.start()

  def close(self) -> None:
    """Stops the worker processes. Idempotent."""
    self._pool.close()

  def __enter__(self) -> "Scorer":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


_default_scorer = None
_default_lock = threading.Lock()


def default_scorer() -> Scorer:
  """The process-wide `Scorer` with default options, created on first use, closed at exit."""
  global _default_scorer
  with _default_lock:
    if _default_scorer is None:
      _default_scorer = Scorer()
      atexit.register(_default_scorer.close)
    return _default_scorer


def score(response: str, answer: str, truncated: bool = False) -> float:
  """The reward with the default options (released scope and leniency, truncation scores 0).

  Args:
    response: the rollout's decoded response with special tokens kept, as
      `rl.RolloutRecord.response_text` (module docstring): all model and environment turns after
      the generation prompt.
    answer: the ground-truth answer.
    truncated: the response was cut by the length budget.

  Returns:
    1.0 or 0.0.
  """
  return default_scorer().score(response, answer, truncated)
