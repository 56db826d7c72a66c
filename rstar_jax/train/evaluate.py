"""Agentic evaluation of a policy: rollouts with real tool calls, scored (PAPER.md §10).

  metrics = evaluate_policy(config.eval, cfg, params, tokenizer, problems, workdir, mesh_rules)

Each of the first `eval.num_problems` problems is rolled `eval.num_samples` times by the agent loop
(`rollout.rollout_problems`) on the JAX engine, with the tool calls run by an in-process sandbox pool
(root needed) or by a running `rstar-sandbox serve` at `eval.sandbox_url`, and scored with the
default reward (`rewards.Scorer`; truncated responses score 0). Metrics:
  eval/accuracy                mean reward over all rollouts (mean pass@1)
  eval/num_rollouts            P * n
  eval/response_tokens_mean    response tokens (model and environment) per rollout
  eval/tool_calls_mean         tool calls per rollout
  eval/tool_error_ratio        erroneous calls / calls (`rl.tool_error_counts`, structured)
  eval/one_answer_fraction     rollouts with exactly one answer (`rl.answer_count`)
  eval/finish/{reason}         fraction of rollouts per `rollout.FINISH_REASONS`
Written to workdir/eval.json; every rollout's problem id, reward, finish reason and response text
to workdir/eval_samples.jsonl.
"""
import asyncio
import collections
import json
import os
from typing import Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from rstar_jax import chat
from rstar_jax import data
from rstar_jax import models
from rstar_jax import rewards
from rstar_jax import rl
from rstar_jax import rollout
from rstar_jax import sandbox


def _tools(eval_config: ml_collections.ConfigDict):
  if eval_config.sandbox_url:
    return sandbox.SandboxClient(eval_config.sandbox_url)
  return sandbox.Pool(sandbox.PoolConfig(workers=eval_config.sandbox_workers))


def rollout_metrics(groups: Sequence[Sequence[rollout.AgentRollout]], scores: np.ndarray) -> dict[str, float]:
  """The module docstring's metrics of scored rollouts [P][n]."""
  flat = [r for group in groups for r in group]
  errors, calls = np.array([rl.tool_error_counts(r.record) for r in flat]).T
  finishes = collections.Counter(r.finish_reason for r in flat)
  metrics = {
      "eval/accuracy": float(scores.mean()),
      "eval/num_rollouts": float(len(flat)),
      "eval/response_tokens_mean": float(np.mean([len(r.trajectory.response_ids) for r in flat])),
      "eval/tool_calls_mean": float(calls.mean()),
      "eval/tool_error_ratio": float(errors.sum() / max(calls.sum(), 1)),
      "eval/one_answer_fraction": float(np.mean([rl.answer_count(r.record.response_text) == 1 for r in flat])),
  }
  metrics.update({f"eval/finish/{reason}": finishes[reason] / len(flat) for reason in rollout.FINISH_REASONS})
  return metrics


def evaluate_policy(eval_config: ml_collections.ConfigDict, cfg: models.ModelConfig, params,
                    tokenizer: chat.Tokenizer, problems: Sequence[data.Problem], workdir: str,
                    mesh_rules: models.MeshRules | None = None) -> dict[str, float]:
  """Rolls out, scores and writes the evaluation (module docstring); returns its metrics."""
  problems = list(problems)[:eval_config.num_problems]
  prompt_tokens = max(len(tokenizer.encode(chat.prompt_text(p.problem))) for p in problems)
  eos = cfg.eos_token_id if isinstance(cfg.eos_token_id, tuple) else (cfg.eos_token_id,)
  engine = rollout.JaxEngine(cfg, params, num_slots=eval_config.num_slots,
                             max_length=prompt_tokens + eval_config.max_response_length,
                             eos_token_ids=eos, seed=eval_config.seed, vocab_limit=tokenizer.vocab_size,
                             mesh_rules=mesh_rules)
  agent_config = rollout.AgentConfig(
      max_response_length=eval_config.max_response_length,
      max_assistant_turns=eval_config.max_assistant_turns,
      sampling=rollout.SamplingParams(max_new_tokens=None, temperature=eval_config.temperature))

  async def run():
    async with _tools(eval_config) as tools:
      return await rollout.rollout_problems(rollout.AsyncJaxEngine(engine), tools, tokenizer, problems,
                                            eval_config.num_samples, agent_config, eval_config.seed)

  logging.info("eval: %d problems x %d samples, up to %d response tokens and %d turns", len(problems),
               eval_config.num_samples, eval_config.max_response_length, eval_config.max_assistant_turns)
  groups = asyncio.run(run())
  with rewards.Scorer() as scorer:
    scores = rollout.score_groups(scorer, problems, groups)
  metrics = rollout_metrics(groups, scores)
  samples = [{"id": p.id, "sample": s, "reward": float(scores[i, s]), "finish_reason": r.finish_reason,
              "answer": p.answer, "response": r.record.response_text}
             for i, (p, group) in enumerate(zip(problems, groups)) for s, r in enumerate(group)]
  if jax.process_index() == 0:
    data.write_jsonl_atomic(os.path.join(workdir, "eval_samples.jsonl"), samples)
    data.write_json_atomic(os.path.join(workdir, "eval.json"), metrics)
  logging.info("eval: %s", json.dumps({k: round(v, 4) for k, v in metrics.items()}))
  return metrics
