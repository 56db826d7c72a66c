"""Rollout engines and the agent loop: token-exact generation with tool calls.

  engine = rollout.JaxEngine(cfg, params, num_slots=8, max_length=4096, eos_token_ids=eos_ids)
  results = engine.generate([rollout.GenerateRequest(rid, prompt_ids, rollout.SamplingParams())])
  agent = await rollout.run_agent(rollout.AsyncJaxEngine(engine), pool, tokenizer, prompt_ids,
                                  rollout.AgentConfig(), rid)
"""
from rstar_jax.rollout.agent_loop import FINISH_REASONS, AgentConfig, AgentRollout, run_agent
from rstar_jax.rollout.jax_engine import AsyncJaxEngine, GenerateRequest, GenerateResult, JaxEngine
from rstar_jax.rollout.problem_rollouts import (ProblemRollouts, RolloutTiming, policy_rollout_fn,
                                                rollout_problems, rollout_seed)
from rstar_jax.rollout.runtime import RolloutRuntime
from rstar_jax.rollout.sampling import SamplingParams, sample_tokens

__all__ = [
    "FINISH_REASONS", "AgentConfig", "AgentRollout", "run_agent", "AsyncJaxEngine", "GenerateRequest",
    "GenerateResult", "JaxEngine", "ProblemRollouts", "RolloutTiming", "policy_rollout_fn",
    "rollout_problems", "rollout_seed", "RolloutRuntime", "SamplingParams", "sample_tokens",
]
