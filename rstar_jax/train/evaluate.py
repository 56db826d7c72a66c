"""Agentic evaluation of a policy: rollouts with real tool calls, scored (PAPER.md §10).

  metrics = evaluate_policy(config.eval, cfg, params, tokenizer, problems, out_dir, runtime, mesh_rules, fmt)
  metrics = evaluate_rollouts(config.eval, router, tokenizer, problems, out_dir, runtime)   # on servers

Each of the first `eval.num_problems` problems (0: all) is rolled `eval.num_samples` = k times
by the agent loop (`rollout.rollout_problems`) on the JAX engine in lockstep (so a rerun repeats
every rollout) or on rollout servers (SGLang or `rstar-serve`, through `rollout.Router`), with the tool calls run by an in-process sandbox pool (root needed) or by a
running `rstar-sandbox serve` at `eval.sandbox_url`, and scored with `reward` options (truncated
responses score 0). Metrics (PAPER.md §10 reports avg@16 at temperature 0.6):
  eval/avg@k                   mean reward over all rollouts (mean pass@1); also eval/accuracy
  eval/pass@k                  fraction of problems with at least one correct rollout
  eval/num_problems, eval/num_rollouts
  eval/response_tokens_mean    response tokens (model and environment) per rollout
  eval/model_tokens_mean       tokens the policy wrote per rollout
  eval/tool_calls_mean         tool calls per rollout
  eval/tool_error_ratio        erroneous calls / calls (`rl.tool_error_counts`, structured)
  eval/positive_tool_error_ratio  the same over correct rollouts (P Fig. 4)
  eval/one_answer_fraction     rollouts with exactly one answer (`rl.answer_count`)
  eval/finish/{reason}         fraction of rollouts per `rollout.FINISH_REASONS`
  eval/accuracy/{family}       mean reward per problem family, where problems name one (synthetic task)
  eval/time_s, eval/rollouts_per_s
Files in out_dir: eval.json (the metrics), eval_problems.jsonl (per problem: id, answer, rewards,
num_correct), eval_samples.jsonl (every rollout: id, sample, reward, finish reason, tool
statuses, response text) and eval_samples.md (a few rollouts per outcome, readable).
"""
import collections
import json
import math
import os
import time
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
from rstar_jax.sandbox import processes
from rstar_jax.train import progress

EVAL_FILE = "eval.json"
_SAMPLES_SHOWN = 4  # rollouts per outcome (correct / wrong) in eval_samples.md


def sandbox_limits(timeout_s: float = sandbox.Limits.timeout_s, cpu_s: int = 0) -> sandbox.Limits:
  """The in-process pool's limits of config.sandbox: `timeout_s` wall-clock seconds per run and
  `cpu_s` CPU seconds per process (0: timeout_s rounded up)."""
  return sandbox.Limits(timeout_s=timeout_s, cpu_s=cpu_s or None)


def tools_for(sandbox_url: str, workers: int, api_key_file: str = "",
              limits: sandbox.Limits = sandbox.Limits()):
  """A running sandbox service's client (sending the key read from `api_key_file`, if given), or
  an in-process pool of `workers` zygotes (as root, or rootless) whose runs have `limits`."""
  if sandbox_url:
    return sandbox.SandboxClient(sandbox_url, api_key=processes.read_api_key(api_key_file))
  return sandbox.Pool(sandbox.PoolConfig(workers=workers, limits=limits))


def rollout_stats(groups: Sequence[Sequence[rollout.AgentRollout]], scores: np.ndarray,
                  prefix: str) -> dict[str, float]:
  """Rollout statistics of scored rollouts [P][n] under `prefix` (e.g. "eval/", "rollout/")."""
  flat = [r for group in groups for r in group]
  correct = scores.reshape(-1) > 0
  errors, calls = np.array([rl.tool_error_counts(r.record) for r in flat], np.int64).reshape(-1, 2).T
  finishes = collections.Counter(r.finish_reason for r in flat)
  response = np.array([len(r.trajectory.response_ids) for r in flat], np.float64)
  model = np.array([r.trajectory.num_model_tokens for r in flat], np.float64)
  stats = {
      "response_tokens_mean": float(response.mean()),
      "response_tokens_max": float(response.max()),
      "model_tokens_mean": float(model.mean()),
      "tool_calls_mean": float(calls.mean()),
      "tool_error_ratio": float(errors.sum() / max(calls.sum(), 1)),
      "positive_tool_error_ratio": float(errors[correct].sum() / max(calls[correct].sum(), 1)),
      "no_tool_fraction": float(np.mean(calls == 0)),
      "one_answer_fraction": float(np.mean([rl.answer_count(r.record.response_text) == 1 for r in flat])),
      "truncated_fraction": finishes["length"] / len(flat),
  }
  stats.update({f"finish/{reason}": finishes[reason] / len(flat) for reason in rollout.FINISH_REASONS})
  return {prefix + k: v for k, v in stats.items()}


def pass_at_k(num_correct: np.ndarray, n: int, k: int) -> float:
  """Mean over problems of the unbiased pass@k, 1 - C(n - c, k) / C(n, k) (Chen et al. 2021)."""
  if not 1 <= k <= n:
    raise ValueError(f"k must be in [1, n={n}], got {k}")
  return float(np.mean([1.0 - math.comb(n - int(c), k) / math.comb(n, k) for c in num_correct]))


def _by_family(problems: Sequence[data.Problem], scores: np.ndarray) -> dict[str, float]:
  """eval/accuracy/<family> for problems whose meta names a family (the synthetic task)."""
  rows = collections.defaultdict(list)
  for problem, row in zip(problems, scores):
    if "family" in problem.meta:
      rows[problem.meta["family"]].append(row)
  return {f"eval/accuracy/{family}": float(np.mean(rows[family])) for family in sorted(rows)}


def _readable(problems, groups, scores) -> str:
  """Markdown with up to _SAMPLES_SHOWN correct and wrong rollouts, whole responses."""
  shown = {True: [], False: []}
  for problem, group, row in zip(problems, groups, scores):
    for s, (result, reward) in enumerate(zip(group, row)):
      bucket = shown[bool(reward > 0)]
      if len(bucket) < _SAMPLES_SHOWN:
        bucket.append((problem, s, result, reward))
  parts = ["# Evaluation samples\n"]
  for outcome, title in ((True, "Correct"), (False, "Wrong")):
    parts.append(f"## {title}\n")
    for problem, s, result, reward in shown[outcome]:
      parts.append(f"### {problem.id} sample {s}: reward {reward:.0f}, finish {result.finish_reason}, "
                   f"tools {list(result.record.tool_statuses)}\n\nProblem: {problem.problem}  \n"
                   f"Answer: {problem.answer}\n\n```text\n{result.record.response_text}\n```\n")
  return "\n".join(parts)


def evaluate_policy(eval_config: ml_collections.ConfigDict, cfg: models.ModelConfig, params,
                    tokenizer: chat.Tokenizer, problems: Sequence[data.Problem], out_dir: str,
                    runtime: rollout.RolloutRuntime, mesh_rules: models.MeshRules | None = None,
                    chat_format: chat.ChatFormat = chat.DEFAULT_FORMAT,
                    reward_config: rewards.RewardConfig | None = None,
                    label: str = "eval", *,
                    environment: rollout.ToolEnvironment = rollout.ToolEnvironment()) -> dict[str, float]:
  """`evaluate_rollouts` on a JAX engine of `params` in this process (lockstep, so a rerun repeats
  its rollouts); also reads eval_config.num_slots."""
  problems = list(problems)[:eval_config.num_problems or None]
  prompt_tokens = max(len(tokenizer.encode(chat.prompt_text(p.problem, chat_format))) for p in problems)
  engine = rollout.JaxEngine(cfg, params, num_slots=eval_config.num_slots,
                             max_length=prompt_tokens + eval_config.max_response_length,
                             eos_token_ids=cfg.eos_token_ids, seed=eval_config.seed,
                             vocab_limit=tokenizer.vocab_size, mesh_rules=mesh_rules)
  return evaluate_rollouts(eval_config, rollout.AsyncJaxEngine(engine, lockstep=True), tokenizer, problems, out_dir,
                           runtime, chat_format, reward_config, label, environment=environment)


def evaluate_rollouts(eval_config: ml_collections.ConfigDict, engine, tokenizer: chat.Tokenizer,
                      problems: Sequence[data.Problem], out_dir: str, runtime: rollout.RolloutRuntime,
                      chat_format: chat.ChatFormat = chat.DEFAULT_FORMAT,
                      reward_config: rewards.RewardConfig | None = None, label: str = "eval", *,
                      environment: rollout.ToolEnvironment = rollout.ToolEnvironment()) -> dict[str, float]:
  """Rolls out on `engine` (an `AsyncJaxEngine`, or a `rollout.Router` over servers), scores and
  writes the evaluation (module docstring); returns its metrics.

  The tool calls go to `runtime.tools` (`rollout.RolloutRuntime` over `tools_for(...)`), in
  `environment` (the one the policy was trained in: tool text format, error report, cuts).
  Reads eval_config.{num_problems, num_samples, temperature, top_p, max_response_length,
  max_assistant_turns, seed, fixed_execution_time_s}.
  """
  problems = list(problems)[:eval_config.num_problems or None]
  n = eval_config.num_samples
  agent_config = rollout.AgentConfig(
      max_response_length=eval_config.max_response_length,
      max_assistant_turns=eval_config.max_assistant_turns, chat_format=chat_format, environment=environment,
      fixed_execution_time_s=eval_config.get("fixed_execution_time_s", None),
      sampling=rollout.SamplingParams(max_new_tokens=None, temperature=eval_config.temperature,
                                      top_p=eval_config.get("top_p", 1.0)))
  bar = progress.Progress(f"{label}: rollouts", len(problems) * n)
  logging.info("%s: %d problems x %d samples at temperature %g, up to %d response tokens and %d turns",
               label, len(problems), n, eval_config.temperature, eval_config.max_response_length,
               eval_config.max_assistant_turns)
  start = time.monotonic()
  with rewards.Scorer(reward_config) as scorer:
    batch = runtime.run(rollout.rollout_problems(engine, runtime.tools, tokenizer, problems, n, agent_config,
                                                 eval_config.seed, scorer=scorer, on_done=bar.update))
  elapsed = time.monotonic() - start
  groups, scores = batch.groups, batch.rewards
  num_correct = (scores > 0).sum(axis=1)
  metrics = {"eval/accuracy": float(scores.mean()), f"eval/avg@{n}": float(scores.mean()),
             f"eval/pass@{n}": pass_at_k(num_correct, n, n), "eval/num_problems": float(len(problems)),
             "eval/num_rollouts": float(len(problems) * n), "eval/time_s": elapsed,
             "eval/rollouts_per_s": len(problems) * n / max(elapsed, 1e-9),
             **rollout_stats(groups, scores, "eval/"), **_by_family(problems, scores)}
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
    data.write_jsonl_atomic(os.path.join(out_dir, "eval_problems.jsonl"), [
        {"id": p.id, "answer": p.answer, "rewards": row.tolist(), "num_correct": int(c), "meta": dict(p.meta)}
        for p, row, c in zip(problems, scores, num_correct)])
    data.write_jsonl_atomic(os.path.join(out_dir, "eval_samples.jsonl"), [
        {"id": p.id, "sample": s, "reward": float(scores[i, s]), "finish_reason": r.finish_reason,
         "tool_statuses": list(r.record.tool_statuses), "answer": p.answer, "response": r.record.response_text}
        for i, (p, group) in enumerate(zip(problems, groups)) for s, r in enumerate(group)])
    with open(os.path.join(out_dir, "eval_samples.md.tmp"), "w", encoding="utf-8") as f:
      f.write(_readable(problems, groups, scores))
    os.replace(os.path.join(out_dir, "eval_samples.md.tmp"), os.path.join(out_dir, "eval_samples.md"))
    data.write_json_atomic(os.path.join(out_dir, EVAL_FILE), metrics)
  logging.info("%s: %s", label, json.dumps({k: round(v, 4) for k, v in metrics.items()}))
  return metrics


def read_evaluation(out_dir: str) -> dict[str, float] | None:
  """The metrics an earlier `evaluate_policy` wrote to out_dir, or None."""
  path = os.path.join(out_dir, EVAL_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)
