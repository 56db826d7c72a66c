"""One GRPO-RoC policy update from a step's rollouts (PAPER.md §5.1 steps 3-7).

  updater = RLUpdater(cfg, rl_config, optimizer, mesh_rules, like=state)
  state, metrics = updater.update(state, rollouts, seed=(config.seed, step))

`rollouts` holds P prompts x N rollouts: each a `chat.Trajectory` (prompt + response token ids as
generated, loss mask 1 only on the policy's tokens), its reward and its `rl.RolloutRecord`. The
update drops equal-reward groups, runs RoC in each other group (seeded per group), normalizes
advantages over each kept group, packs the kept trajectories into fixed-shape microbatches,
recomputes the old log-probs with the current parameters (§11 row 19), and takes one optimizer
step on the token-mean PPO-clip loss. When no group survives, the state is returned unchanged.

Reads rl_config.{keep, roc (RoCConfig overrides, may be empty), roc_mode (None|"paper"|"code"),
reject_equal, adv_std, adv_epsilon, eps_low, eps_high, dual_clip, row_length, rows_per_microbatch,
num_microbatches, logits_chunk}.
"""
import dataclasses
from typing import Sequence

import jax
import ml_collections
import numpy as np

from rstar_jax import chat
from rstar_jax import models
from rstar_jax import rl
from rstar_jax.train import packing, step
from rstar_jax.train.optim import TrainState


@dataclasses.dataclass(frozen=True)
class RolloutGroups:
  """One step's rollouts: trajectories and records [P][N], rewards float [P, N]."""
  trajectories: Sequence[Sequence[chat.Trajectory]]
  rewards: np.ndarray
  records: Sequence[Sequence[rl.RolloutRecord]]

  def __post_init__(self):
    if not self.trajectories or not self.trajectories[0]:
      raise ValueError("rollouts must hold at least one group of at least one trajectory")
    rewards = np.asarray(self.rewards, np.float64)
    shape = (len(self.trajectories), len(self.trajectories[0]))
    if rewards.shape != shape or any(len(g) != shape[1] for g in self.trajectories):
      raise ValueError(f"rewards has shape {rewards.shape} but trajectories are {shape[0]} groups of "
                       f"sizes {sorted({len(g) for g in self.trajectories})}")
    if [len(g) for g in self.records] != [len(g) for g in self.trajectories]:
      raise ValueError("records must have the same [P][N] layout as trajectories")
    object.__setattr__(self, "rewards", rewards)


def _reward_metrics(rewards: np.ndarray, trajectories) -> dict[str, float]:
  lengths = np.array([[t.num_model_tokens for t in g] for g in trajectories], np.float64)
  return {"reward/mean": float(rewards.mean()), "reward/solve_all": float((rewards > 0).all(1).mean()),
          "reward/solve_none": float((rewards <= 0).all(1).mean()),
          "response/model_tokens_mean": float(lengths.mean()), "response/model_tokens_max": float(lengths.max())}


class RLUpdater:
  """Holds the jitted log-prob and update functions of one model/optimizer/mesh."""

  def __init__(self, cfg: models.ModelConfig, rl_config: ml_collections.ConfigDict, optimizer,
               mesh_rules: models.MeshRules | None, like: TrainState):
    self.config = rl_config
    self.roc_config = rl.RoCConfig.preset(rl_config.roc_mode, **dict(rl_config.roc))
    objective = step.grpo_objective(rl_config.eps_low, rl_config.eps_high, rl_config.dual_clip)
    self._train_step = step.jit_train_step(
        step.make_train_step(cfg, objective, optimizer, mesh_rules, rl_config.logits_chunk), like, mesh_rules)
    self._logprobs = step.jit_logprobs(step.make_logprob_fn(cfg, mesh_rules, rl_config.logits_chunk),
                                       like, mesh_rules)

  def pack(self, rollouts: RolloutGroups, selection: rl.GroupSelection) -> packing.PackedBatch:
    flat = [t for group in rollouts.trajectories for t in group]
    kept = selection.kept_indices
    return packing.pack_trajectories(
        [flat[i].token_ids for i in kept], [flat[i].loss_mask for i in kept],
        [float(a) for a in selection.advantages.reshape(-1)[kept]], row_length=self.config.row_length,
        rows_per_microbatch=self.config.rows_per_microbatch, num_microbatches=self.config.num_microbatches)

  def update(self, state: TrainState, rollouts: RolloutGroups, seed) -> tuple[TrainState, dict[str, float]]:
    """Selects, packs, recomputes old log-probs and steps; returns (state, flat metrics)."""
    num_rollouts = rollouts.rewards.shape[1]
    if num_rollouts < self.config.keep:
      raise ValueError(f"config.rl.keep={self.config.keep} exceeds the {num_rollouts} rollouts per prompt: "
                       "RoC would drop every group")
    penalties = rl.rollout_penalties(rollouts.records, self.roc_config)
    selection = rl.select_groups(rollouts.rewards, penalties, self.config.keep, seed, self.roc_config,
                                 reject_equal=self.config.reject_equal, std=self.config.adv_std,
                                 epsilon=self.config.adv_epsilon)
    metrics = {**selection.metrics, **_reward_metrics(rollouts.rewards, rollouts.trajectories)}
    if selection.kept_indices.size == 0:
      return state, {**metrics, "update/skipped": 1.0}
    batch = self.pack(rollouts, selection)
    batch = batch._replace(old_logp=np.asarray(self._logprobs(state.params, batch)))
    state, step_metrics = self._train_step(state, batch)
    return state, {**metrics, **{k: float(v) for k, v in jax.device_get(step_metrics).items()},
                   "update/skipped": 0.0}
