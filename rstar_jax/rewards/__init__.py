"""Outcome reward: answer extraction and time-limited verification (PAPER.md §4, §11 rows 11-13).

Level 0 (no JAX). `score(response, answer, truncated)` applies the defaults; `Scorer` takes the
`reward.*` options. See `scorer` for the formula, `verifier` for the rules, `pool` for the limits.
"""
from rstar_jax.rewards.extract import (
    ANSWER_BLOCK_RE, answer_block, answer_tag_extract, last_boxed, prime_extract)
from rstar_jax.rewards.integers import canonical_integer
from rstar_jax.rewards.pool import Outcome, VerifierPool, worker_timeout_s
from rstar_jax.rewards.scorer import RewardConfig, RewardResult, Scorer, default_scorer, score
from rstar_jax.rewards.verifier import SCOPES, Verdict, verify

__all__ = [
    "ANSWER_BLOCK_RE", "answer_block", "answer_tag_extract", "last_boxed", "prime_extract",
    "canonical_integer", "Outcome", "VerifierPool", "worker_timeout_s", "RewardConfig",
    "RewardResult", "Scorer", "default_scorer", "score", "SCOPES", "Verdict", "verify",
]
