"""Rollout engines: token-exact generation for the agent loop.

  engine = rollout.JaxEngine(cfg, params, num_slots=8, max_length=4096, eos_token_ids=eos_ids)
  results = engine.generate([rollout.GenerateRequest(rid, prompt_ids, rollout.SamplingParams())])
"""
from rstar_jax.rollout.jax_engine import AsyncJaxEngine, GenerateRequest, GenerateResult, JaxEngine
from rstar_jax.rollout.sampling import SamplingParams, sample_tokens

__all__ = ["AsyncJaxEngine", "GenerateRequest", "GenerateResult", "JaxEngine", "SamplingParams", "sample_tokens"]
