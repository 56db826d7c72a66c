"""Training: packing, the jitted update, SFT, the GRPO-RoC step loop through curriculum stages, agent
evaluation, checkpoints, metrics and plots, the run driver."""
from rstar_jax.train import (checkpoint, evaluate, grpo, harness, metrics, optim, packing, rl, sft, step,
                             validate)
from rstar_jax.train.checkpoint import Checkpointer
from rstar_jax.train.config_lib import ConfigError
from rstar_jax.train.evaluate import evaluate_policy, pass_at_k
from rstar_jax.train.grpo import GrpoTrainer
from rstar_jax.train.harness import StepHarness
from rstar_jax.train.metrics import MetricsWriter, read_metrics
from rstar_jax.train.optim import TrainState, init_train_state, make_optimizer, reset_at_steps
from rstar_jax.train.packing import PackedBatch, pack_trajectories
from rstar_jax.train.rl import RLUpdater, RolloutGroups
from rstar_jax.train.step import (Objective, grpo_objective, jit_logprobs, jit_train_step, make_logprob_fn,
                                  make_train_step, sft_objective)

__all__ = [
    "Checkpointer", "ConfigError", "GrpoTrainer", "MetricsWriter", "Objective", "PackedBatch", "RLUpdater",
    "RolloutGroups", "StepHarness", "TrainState", "checkpoint", "evaluate", "evaluate_policy", "grpo",
    "grpo_objective", "harness", "init_train_state", "jit_logprobs", "jit_train_step", "make_logprob_fn",
    "make_optimizer", "make_train_step", "metrics", "optim", "pack_trajectories", "packing", "pass_at_k",
    "read_metrics", "reset_at_steps", "rl", "sft", "sft_objective", "step", "validate",
]
