"""Training: packing trajectories, the jitted update, SFT and RL updates, checkpoints, the run driver."""
from rstar_jax.train import checkpoint, metrics, optim, packing, rl, sft, step
from rstar_jax.train.checkpoint import Checkpointer
from rstar_jax.train.metrics import MetricsWriter, read_metrics
from rstar_jax.train.optim import TrainState, init_train_state, make_optimizer, reset_at_steps
from rstar_jax.train.packing import PackedBatch, pack_trajectories
from rstar_jax.train.rl import RLUpdater, RolloutGroups
from rstar_jax.train.step import (Objective, grpo_objective, jit_logprobs, jit_train_step, make_logprob_fn,
                                  make_train_step, sft_objective, token_logprobs)

__all__ = [
    "Checkpointer", "MetricsWriter", "Objective", "PackedBatch", "RLUpdater", "RolloutGroups", "TrainState",
    "checkpoint", "grpo_objective", "init_train_state", "jit_logprobs", "jit_train_step", "make_logprob_fn",
    "make_optimizer", "make_train_step", "metrics", "optim", "pack_trajectories", "packing", "read_metrics",
    "reset_at_steps", "rl", "sft", "sft_objective", "step", "token_logprobs",
]
