"""Rollouts of problems: n agent rollouts per problem, scored as each one finishes; and the
policy-backed rollout function of the stage-3 hard-problem filter (`data.hard_filter`).

  batch = await rollout_problems(engine, tools, tokenizer, problems, n, config, seed, scorer=scorer)
  batch.groups[p][s], batch.rewards[p, s], batch.timing
  with RolloutRuntime(lambda: sandbox.Pool(pool_config)) as runtime:
    rollout_fn = policy_rollout_fn(engine, tokenizer, config, scorer, runtime)
  data.hard_filter.filter_hard_problems(problems, rollout_fn, ...)

Problems are any objects with `id`, `problem` and `answer` (`data.records.Problem`). Rollout s of
the problem with key k (default: its id) has rid "{k}/s{s}" and sampling seed
crc32("{seed}/{k}/s{s}"), so its samples do not depend on which other problems share the call
(chunking, resume). The RL loop passes keys holding the step and the batch position, so a
problem that appears twice in a batch, or again in a later epoch, draws fresh samples.

Scoring overlaps generation: a rollout is handed to the scorer (in a worker thread) the moment
it ends, while the others still decode. `RolloutTiming` reports how much of the scoring time
fell inside generation.
"""
import asyncio
import contextlib
import dataclasses
import time
import zlib
from typing import Any, Callable, Sequence

import numpy as np

from rstar_jax import chat
from rstar_jax import rewards
from rstar_jax.chat import tokenization
from rstar_jax.rollout import agent_loop
from rstar_jax.rollout import jax_engine
from rstar_jax.rollout import runtime as rollout_runtime


def rollout_seed(seed: int, rid: str) -> int:
  """The sampling seed of the rollout `rid` in a run seeded `seed`."""
  return zlib.crc32(f"{seed}/{rid}".encode())


@dataclasses.dataclass(frozen=True)
class RolloutTiming:
  """Wall-clock accounting of one `rollout_problems` call.

  Attributes:
    generate_s: from the start to the end of the last rollout (generation and tool calls).
    score_s: summed duration of the verifications.
    score_hidden_s: the part of score_s that ran before generation ended (overlapped).
    total_s: from the start until the last score was in.
  """
  generate_s: float
  score_s: float
  score_hidden_s: float
  total_s: float

  @property
  def score_hidden_fraction(self) -> float:
    """score_hidden_s / score_s (1.0 when there was nothing to score)."""
    return self.score_hidden_s / self.score_s if self.score_s > 0 else 1.0


@dataclasses.dataclass
class ProblemRollouts:
  """groups: [P][n] AgentRollouts; rewards: float64 [P, n] (None without a scorer)."""
  groups: list[list[agent_loop.AgentRollout]]
  rewards: np.ndarray | None
  timing: RolloutTiming


def _caller(engine: agent_loop.Engine):
  """The engine's per-rollout caller context (lockstep accounting), if it has one."""
  make = getattr(engine, "caller", None)
  return make() if make is not None else contextlib.nullcontext()


async def rollout_problems(engine: agent_loop.Engine, tools: agent_loop.Tools,
                           tokenizer: tokenization.Tokenizer, problems: Sequence[Any], n: int,
                           config: agent_loop.AgentConfig, seed: int, *,
                           keys: Sequence[str] | None = None,
                           scorer: rewards.Scorer | None = None,
                           on_done: Callable[[int], None] | None = None) -> ProblemRollouts:
  """n concurrent rollouts of each problem's prompt (`chat.prompt_text` in config.chat_format).

  Args:
    engine, tools, tokenizer, config: as `agent_loop.run_agent` takes them.
    problems: P problems.
    n: rollouts per problem.
    seed: the run's sampling seed (module docstring).
    keys: P distinct rollout keys (default: the problem ids, which must then be distinct).
    scorer: scores each finished rollout (truncated ones as its config says); None: no rewards.
    on_done: called with the number of finished rollouts after each one ends (progress).

  Returns:
    `ProblemRollouts` with groups [P][n] in order.
  """
  keys = [p.id for p in problems] if keys is None else list(keys)
  if len(keys) != len(problems) or len(set(keys)) != len(keys):
    raise ValueError(f"need {len(problems)} distinct rollout keys, got {len(set(keys))} distinct of "
                     f"{len(keys)}")
  start = time.monotonic()
  generation_end = [start]
  score_spans: list[tuple[float, float]] = []
  finished = [0]

  async def one(prompt_ids, key, s, answer):
    rid = f"{key}/s{s}"
    async with _caller(engine):
      result = await agent_loop.run_agent(engine, tools, tokenizer, prompt_ids, config, rid,
                                          rollout_seed(seed, rid))
    generation_end[0] = max(generation_end[0], time.monotonic())
    finished[0] += 1
    if on_done is not None:
      on_done(finished[0])
    if scorer is None:
      return result, None
    began = time.monotonic()
    reward = await scorer.ascore(result.record.response_text, answer, result.truncated)
    score_spans.append((began, time.monotonic()))
    return result, reward

  async def group(problem, key):
    prompt_ids = tokenizer.encode(chat.prompt_text(problem.problem, config.chat_format))
    return await asyncio.gather(*(one(prompt_ids, key, s, problem.answer) for s in range(n)))

  outcomes = await asyncio.gather(*(group(p, k) for p, k in zip(problems, keys)))
  end = time.monotonic()
  hidden = sum(max(0.0, min(b, generation_end[0]) - a) for a, b in score_spans)
  timing = RolloutTiming(generation_end[0] - start, sum(b - a for a, b in score_spans), hidden, end - start)
  groups = [[result for result, _ in outcome] for outcome in outcomes]
  scores = None if scorer is None else np.array(
      [[reward for _, reward in outcome] for outcome in outcomes], np.float64).reshape(len(problems), n)
  return ProblemRollouts(groups, scores, timing)


def policy_rollout_fn(engine, tokenizer: tokenization.Tokenizer, config: agent_loop.AgentConfig,
                      scorer: rewards.Scorer, runtime: rollout_runtime.RolloutRuntime, seed: int = 0):
  """`rollout_fn(problems, n) -> rewards [P, n]` for `data.hard_filter`: the policy on `engine`
  rolls each problem n times with the runtime's tools. A `JaxEngine` runs in lockstep, so a rerun
  over the same problems repeats its rollouts; any other engine (a `Router` over rollout servers)
  is used as it is."""
  def rollout_fn(problems, n: int) -> np.ndarray:
    generator = (jax_engine.AsyncJaxEngine(engine, lockstep=True) if isinstance(engine, jax_engine.JaxEngine)
                 else engine)
    return runtime.run(rollout_problems(generator, runtime.tools, tokenizer, problems, n, config, seed,
                                        scorer=scorer)).rewards

  return rollout_fn
