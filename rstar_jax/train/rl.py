"""One GRPO-RoC policy update from a step's rollouts (PAPER.md §5.1 steps 3-7).

  updater = RLUpdater(cfg, rl_config, optimizer, mesh_rules, like=state)
  state, metrics = updater.update(state, rollouts, seed=(config.seed, step))

`rollouts` holds P prompts x N rollouts: each a `chat.Trajectory` (prompt + response token ids as
generated, loss mask 1 only on the policy's tokens), its reward and its `rl.RolloutRecord`. The
update drops equal-reward groups, runs RoC in each other group (seeded per group), normalizes
advantages over each kept group, packs the kept trajectories into fixed-shape microbatches,
recomputes the old log-probs with the current parameters (§11 row 19, the default), and takes one
optimizer step on the PPO-clip loss. When no group survives, the state is returned unchanged.

Loss aggregation (`loss_agg`, PAPER.md §11 row 17): "token_mean" (default) divides the summed
token losses by every policy token of the update batch, L = sum_t l_t / N; "group_token_mean" is
the paper's Eq. 6, a token mean per prompt group then a mean over groups,
L = (1/P') sum_g (1/n_g) sum_{t in g} l_t, obtained by scaling each token's mask by N / (P' n_g).
Old log-probs (§11 row 19): recomputed by the trainer (default), or the sampler's when
`use_sampler_logprobs` (the rollouts then carry them).

Reads rl_config.{keep, roc (RoCConfig overrides, may be empty), roc_mode (None|"paper"|"code"),
reject_equal, adv_std, adv_epsilon, eps_low, eps_high, dual_clip, loss_agg, use_sampler_logprobs,
row_length, rows_per_microbatch, num_microbatches, logits_chunk}.
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


LOSS_AGGREGATIONS = ("token_mean", "group_token_mean")


@dataclasses.dataclass(frozen=True)
class RolloutGroups:
  """One step's rollouts: trajectories and records [P][N], rewards float [P, N], and optionally the
  sampler's log-probs [P][N] (float [n] per trajectory, aligned with its token ids)."""
  trajectories: Sequence[Sequence[chat.Trajectory]]
  rewards: np.ndarray
  records: Sequence[Sequence[rl.RolloutRecord]]
  sampler_logprobs: Sequence[Sequence[np.ndarray]] | None = None

  def __post_init__(self):
    if not self.trajectories or not self.trajectories[0]:
      raise ValueError("rollouts must hold at least one group of at least one trajectory")
    rewards = np.asarray(self.rewards, np.float64)
    shape = (len(self.trajectories), len(self.trajectories[0]))
    if rewards.shape != shape or any(len(g) != shape[1] for g in self.trajectories):
      raise ValueError(f"rewards has shape {rewards.shape} but trajectories are {shape[0]} groups of "
                       f"sizes {sorted({len(g) for g in self.trajectories})}")
    for name in ("records", "sampler_logprobs"):
      value = getattr(self, name)
      if value is not None and [len(g) for g in value] != [len(g) for g in self.trajectories]:
        raise ValueError(f"{name} must have the same [P][N] layout as trajectories")
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
    if rl_config.loss_agg not in LOSS_AGGREGATIONS:
      raise ValueError(f"config.rl.loss_agg={rl_config.loss_agg!r} must be one of {LOSS_AGGREGATIONS}")
    self.config = rl_config
    self.roc_config = rl.RoCConfig.preset(rl_config.roc_mode, **dict(rl_config.roc))
    objective = step.grpo_objective(rl_config.eps_low, rl_config.eps_high, rl_config.dual_clip)
    self._train_step = step.jit_train_step(
        step.make_train_step(cfg, objective, optimizer, mesh_rules, rl_config.logits_chunk), like, mesh_rules)
    self._logprobs = step.jit_logprobs(step.make_logprob_fn(cfg, mesh_rules, rl_config.logits_chunk),
                                       like, mesh_rules)

  def _mask_scales(self, rollouts: RolloutGroups, selection: rl.GroupSelection) -> list[float] | None:
    """Per kept trajectory, N / (P' n_g) for "group_token_mean"; None for "token_mean"."""
    if self.config.loss_agg == "token_mean":
      return None
    num_rollouts = selection.keep_mask.shape[1]
    tokens = np.array([[int(t.loss_mask[1:].sum()) for t in group] for group in rollouts.trajectories])
    kept_tokens = np.where(selection.keep_mask, tokens, 0)
    per_group = kept_tokens.sum(axis=1)
    num_groups = int((selection.keep_mask.any(axis=1)).sum())
    scale = per_group.sum() / (num_groups * np.maximum(per_group, 1))
    return [float(scale[i // num_rollouts]) for i in selection.kept_indices]

  def pack(self, rollouts: RolloutGroups, selection: rl.GroupSelection) -> packing.PackedBatch:
    kept = selection.kept_indices
    flat = [t for group in rollouts.trajectories for t in group]
    logprobs = None
    if self.config.use_sampler_logprobs:
      if rollouts.sampler_logprobs is None:
        raise ValueError("config.rl.use_sampler_logprobs=True but the rollouts carry no sampler log-probs")
      flat_logprobs = [lp for group in rollouts.sampler_logprobs for lp in group]
      logprobs = [flat_logprobs[i] for i in kept]
    return packing.pack_trajectories(
        [flat[i].token_ids for i in kept], [flat[i].loss_mask for i in kept],
        [float(a) for a in selection.advantages.reshape(-1)[kept]], row_length=self.config.row_length,
        rows_per_microbatch=self.config.rows_per_microbatch, num_microbatches=self.config.num_microbatches,
        mask_scales=self._mask_scales(rollouts, selection), old_logprobs=logprobs)

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
    if not self.config.use_sampler_logprobs:
      batch = batch._replace(old_logp=np.asarray(self._logprobs(state.params, batch)))
    state, step_metrics = self._train_step(state, batch)
    return state, {**metrics, **{k: float(v) for k, v in jax.device_get(step_metrics).items()},
                   "update/skipped": 0.0}
