"""Rollout engines and the agent loop: token-exact generation with tool calls, in process or on
SGLang-compatible servers (`server`, `sglang_client`, `router`, `weight_sync`, `local_servers`).

  engine = rollout.JaxEngine(cfg, params, num_slots=8, max_length=4096, eos_token_ids=eos_ids)
  results = engine.generate([rollout.GenerateRequest(rid, prompt_ids, rollout.SamplingParams())])
  agent = await rollout.run_agent(rollout.AsyncJaxEngine(engine), pool, tokenizer, prompt_ids,
                                  rollout.AgentConfig(), rid)
"""
from rstar_jax.rollout.agent_loop import FINISH_REASONS, AgentConfig, AgentRollout, run_agent
from rstar_jax.rollout.jax_engine import AsyncJaxEngine, EngineLoad, GenerateRequest, GenerateResult, JaxEngine
from rstar_jax.rollout.problem_rollouts import (ProblemRollouts, RolloutTiming, policy_rollout_fn,
                                                rollout_problems, rollout_seed)
from rstar_jax.rollout.router import ResponseEstimate, Router, ServerView, choose_server
from rstar_jax.rollout.runtime import RolloutRuntime
from rstar_jax.rollout.sampling import SamplingParams, sample_tokens
from rstar_jax.rollout.sglang_client import SGLangEngine, ServerError, ServerLoad, ServerUnavailable
from rstar_jax.rollout.tool_environment import ToolEnvironment

__all__ = [
    "FINISH_REASONS", "AgentConfig", "AgentRollout", "run_agent", "AsyncJaxEngine", "EngineLoad",
    "GenerateRequest", "GenerateResult", "JaxEngine", "ProblemRollouts", "RolloutTiming", "policy_rollout_fn",
    "rollout_problems", "rollout_seed", "ResponseEstimate", "Router", "ServerView", "choose_server", "RolloutRuntime",
    "SamplingParams", "sample_tokens", "SGLangEngine", "ServerError", "ServerLoad", "ServerUnavailable",
    "ToolEnvironment",
]
