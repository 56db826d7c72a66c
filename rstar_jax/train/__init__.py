"""Training: packing trajectories, the jitted update, SFT and RL loops, checkpoints, the run driver."""
from rstar_jax.train import optim, packing, step
from rstar_jax.train.optim import TrainState, init_train_state, make_optimizer, reset_optimizer
from rstar_jax.train.packing import PackedBatch, pack_trajectories
from rstar_jax.train.step import (Objective, grpo_objective, jit_logprobs, jit_train_step, make_logprob_fn,
                                  make_train_step, sft_objective, token_logprobs)

__all__ = [
    "Objective", "PackedBatch", "TrainState", "grpo_objective", "init_train_state", "jit_logprobs",
    "jit_train_step", "make_logprob_fn", "make_optimizer", "make_train_step", "optim", "pack_trajectories",
    "packing", "reset_optimizer", "sft_objective", "step", "token_logprobs",
]
