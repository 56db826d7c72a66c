"""Rollouts of problems: n agent rollouts per problem, scored; and the policy-backed rollout
function of the stage-3 hard-problem filter (`data.hard_filter`).

  groups = await rollout_problems(engine, tools, tokenizer, problems, n, config, seed)   # [P][n]
  rollout_fn = policy_rollout_fn(engine, tokenizer, config, scorer, lambda: sandbox.Pool(pool_cfg))
  data.hard_filter.filter_hard_problems(problems, rollout_fn, ...)

Problems are any objects with `id`, `problem` and `answer` (`data.records.Problem`). Rollout s of
problem `id` has rid "{id}/s{s}" and sampling seed crc32("{seed}/{id}/s{s}"), so its samples do not
depend on which other problems share the call (chunking, resume).
"""
import asyncio
import contextlib
import zlib
from typing import Any, Callable, Sequence

import numpy as np

from rstar_jax import chat
from rstar_jax import rewards
from rstar_jax.chat import tokenization
from rstar_jax.rollout import agent_loop
from rstar_jax.rollout import jax_engine


def rollout_seed(seed: int, rid: str) -> int:
  """The sampling seed of the rollout `rid` in a run seeded `seed`."""
  return zlib.crc32(f"{seed}/{rid}".encode())


async def rollout_problems(engine: agent_loop.Engine, tools: agent_loop.Tools,
                           tokenizer: tokenization.Tokenizer, problems: Sequence[Any], n: int,
                           config: agent_loop.AgentConfig, seed: int,
                           chat_format: chat.ChatFormat = chat.DEFAULT_FORMAT
                           ) -> list[list[agent_loop.AgentRollout]]:
  """n concurrent rollouts of each problem's prompt (`chat.prompt_text`); [P][n] in order."""
  async def group(problem):
    prompt_ids = tokenizer.encode(chat.prompt_text(problem.problem, chat_format))
    rids = [f"{problem.id}/s{s}" for s in range(n)]
    return list(await asyncio.gather(*(
        agent_loop.run_agent(engine, tools, tokenizer, prompt_ids, config, rid, rollout_seed(seed, rid))
        for rid in rids)))

  return list(await asyncio.gather(*(group(p) for p in problems)))


def score_groups(scorer: rewards.Scorer, problems: Sequence[Any],
                 groups: Sequence[Sequence[agent_loop.AgentRollout]]) -> np.ndarray:
  """Rewards [P, n] of the rollouts' response texts against each problem's answer (truncated
  rollouts as the scorer's config says)."""
  flat = [(r.record.response_text, p.answer, r.truncated) for p, g in zip(problems, groups) for r in g]
  results = scorer.results(*map(list, zip(*flat))) if flat else []
  return np.array([r.score for r in results], np.float64).reshape(len(groups), -1)


def policy_rollout_fn(engine: jax_engine.JaxEngine, tokenizer: tokenization.Tokenizer,
                      config: agent_loop.AgentConfig, scorer: rewards.Scorer,
                      tools_factory: Callable[[], contextlib.AbstractAsyncContextManager],
                      seed: int = 0, chat_format: chat.ChatFormat = chat.DEFAULT_FORMAT):
  """`rollout_fn(problems, n) -> rewards [P, n]` for `data.hard_filter`: the policy on `engine`
  rolls each problem n times with tools from `tools_factory()` (entered for the call, e.g.
  `lambda: sandbox.Pool(pool_config)` or `lambda: sandbox.SandboxClient(url)`)."""
  def rollout_fn(problems, n: int) -> np.ndarray:
    async def run():
      async with tools_factory() as tools:
        return await rollout_problems(jax_engine.AsyncJaxEngine(engine), tools, tokenizer, problems,
                                      n, config, seed, chat_format)

    return score_groups(scorer, problems, asyncio.run(run()))

  return rollout_fn
