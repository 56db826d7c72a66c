"""The GRPO-RoC policy update from a step's rollouts (PAPER.md §5.1 steps 3-7).

  updater = RLUpdater(cfg, rl_config, optimizer, mesh_rules, like=state)
  state, metrics = updater.update(state, rollouts, seed=(config.seed, step))

`rollouts` holds P prompts x N rollouts: each a `chat.Trajectory` (prompt + response token ids as
generated, loss mask 1 only on the policy's tokens), its reward, its `rl.RolloutRecord` and the
sampler's log-probs. The update drops equal-reward groups, runs RoC in each other group (seeded per
group), normalizes advantages over each kept group, splits the kept groups into
`updates_per_step` mini-batches (whole groups, in order; PAPER.md §6: 1), and takes one optimizer
step per mini-batch on the PPO-clip loss. When no group survives, the state is returned unchanged.

Old log-probs (§11 row 19): recomputed by the trainer before the first update (default), or the
sampler's when `use_sampler_logprobs`. With one update per step the recomputation equals the
current log-probs, so the update uses stop_gradient(log pi_theta) and skips that forward pass.
Log-probs are taken at the rollout temperature (`temperature`), as the sampler reports them.

Loss aggregation (`loss_agg`, PAPER.md §11 row 17): "token_mean" (default) divides the summed
token losses by every policy token of the mini-batch, L = sum_t l_t / N; "group_token_mean" is
the paper's Eq. 6, a token mean per prompt group then a mean over groups,
L = (1/P') sum_g (1/n_g) sum_{t in g} l_t, obtained by scaling each token's mask by N / (P' n_g).

Reads rl_config.{keep, roc (RoCConfig overrides, may be empty), roc_mode (None|"paper"|"code"),
reject_equal, adv_std, adv_epsilon, eps_low, eps_high, dual_clip, loss_agg, use_sampler_logprobs,
temperature, updates_per_step, row_length, rows_per_microbatch, num_microbatches, logits_chunk}.
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


def _skipped_update_metrics() -> dict[str, float]:
  """The update's metric names with value 0, for a step without an update (every row keeps the same
  columns)."""
  _, loss_metrics = rl.policy_loss_from_sums(rl.empty_policy_loss_sums())
  names = ["loss/policy", *loss_metrics, "grad/norm", "param/norm", "update/norm", "optim/lr",
           "rollout/kl_sampler_k3"]
  return {name: 0.0 for name in names}


class RLUpdater:
  """Holds the jitted log-prob and update functions of one model/optimizer/mesh."""

  def __init__(self, cfg: models.ModelConfig, rl_config: ml_collections.ConfigDict, optimizer,
               mesh_rules: models.MeshRules | None, like: TrainState):
    if rl_config.loss_agg not in LOSS_AGGREGATIONS:
      raise ValueError(f"config.rl.loss_agg={rl_config.loss_agg!r} must be one of {LOSS_AGGREGATIONS}")
    self.config = rl_config
    self.updates_per_step = rl_config.get("updates_per_step", 1)
    self.temperature = rl_config.get("temperature", 1.0)
    self.roc_config = rl.RoCConfig.preset(rl_config.roc_mode, **dict(rl_config.roc))
    self._recompute = not rl_config.use_sampler_logprobs and self.updates_per_step > 1
    objective = step.grpo_objective(
        rl_config.eps_low, rl_config.eps_high, rl_config.dual_clip,
        old_logprobs="current" if not rl_config.use_sampler_logprobs and not self._recompute else "batch")
    self._train_step = step.jit_train_step(
        step.make_train_step(cfg, objective, optimizer, mesh_rules, rl_config.logits_chunk, self.temperature),
        like, mesh_rules)
    self._logprobs = step.jit_logprobs(
        step.make_logprob_fn(cfg, mesh_rules, rl_config.logits_chunk, self.temperature), like, mesh_rules)

  def _mask_scales(self, rollouts: RolloutGroups, selection: rl.GroupSelection,
                   indices: np.ndarray) -> list[float] | None:
    """Per trajectory of `indices`, N / (P' n_g) over its mini-batch for "group_token_mean"."""
    if self.config.loss_agg == "token_mean":
      return None
    num_rollouts = selection.keep_mask.shape[1]
    flat = [t for group in rollouts.trajectories for t in group]
    tokens = {i: int(flat[i].loss_mask[1:].sum()) for i in indices}
    per_group: dict[int, int] = {}
    for i in indices:
      per_group[i // num_rollouts] = per_group.get(i // num_rollouts, 0) + tokens[i]
    total = sum(per_group.values())
    return [total / (len(per_group) * max(per_group[i // num_rollouts], 1)) for i in indices]

  def pack(self, rollouts: RolloutGroups, selection: rl.GroupSelection,
           indices: np.ndarray | None = None) -> packing.PackedBatch:
    """The packed mini-batch of the kept rollouts `indices` (default: all kept)."""
    indices = selection.kept_indices if indices is None else indices
    flat = [t for group in rollouts.trajectories for t in group]
    sampler = None
    if rollouts.sampler_logprobs is not None:
      flat_logprobs = [lp for group in rollouts.sampler_logprobs for lp in group]
      sampler = [flat_logprobs[i] for i in indices]
    elif self.config.use_sampler_logprobs:
      raise ValueError("config.rl.use_sampler_logprobs=True but the rollouts carry no sampler log-probs")
    return packing.pack_trajectories(
        [flat[i].token_ids for i in indices], [flat[i].loss_mask for i in indices],
        [float(a) for a in selection.advantages.reshape(-1)[indices]], row_length=self.config.row_length,
        rows_per_microbatch=self.config.rows_per_microbatch, num_microbatches=self.config.num_microbatches,
        mask_scales=self._mask_scales(rollouts, selection, indices),
        old_logprobs=sampler if self.config.use_sampler_logprobs else None, sampler_logprobs=sampler)

  def _minibatches(self, selection: rl.GroupSelection) -> list[np.ndarray]:
    """The kept indices split into updates_per_step runs of whole groups (as even as possible)."""
    num_rollouts = selection.keep_mask.shape[1]
    groups = np.unique(selection.kept_indices // num_rollouts)
    parts = [part for part in np.array_split(groups, min(self.updates_per_step, groups.size)) if part.size]
    return [selection.kept_indices[np.isin(selection.kept_indices // num_rollouts, part)] for part in parts]

  def update(self, state: TrainState, rollouts: RolloutGroups, seed) -> tuple[TrainState, dict[str, float]]:
    """Selects, packs, (recomputes old log-probs,) steps; returns (state, flat metrics)."""
    num_rollouts = rollouts.rewards.shape[1]
    if num_rollouts < self.config.keep:
      raise ValueError(f"config.rl.keep={self.config.keep} exceeds the {num_rollouts} rollouts per prompt: "
                       "RoC would drop every group")
    penalties = rl.rollout_penalties(rollouts.records, self.roc_config)
    selection = rl.select_groups(rollouts.rewards, penalties, self.config.keep, seed, self.roc_config,
                                 reject_equal=self.config.reject_equal, std=self.config.adv_std,
                                 epsilon=self.config.adv_epsilon)
    metrics = {**selection.metrics, **_reward_metrics(rollouts.rewards, rollouts.trajectories)}
    if selection.kept_indices.size == 0:  # the same columns as an update, zero
      return state, {**metrics, **_skipped_update_metrics(), "update/skipped": 1.0, "update/num_updates": 0.0}
    batches = [self.pack(rollouts, selection, part) for part in self._minibatches(selection)]
    if self._recompute:  # pi_old: the parameters before the step's first update
      batches = [b._replace(old_logp=np.asarray(self._logprobs(state.params, b))) for b in batches]
    step_metrics = []
    for batch in batches:
      state, device_metrics = self._train_step(state, batch)
      step_metrics.append({k: float(v) for k, v in jax.device_get(device_metrics).items()})
    # the mean over mini-batches (each update's own figures), the last learning rate
    merged = {k: float(np.mean([m[k] for m in step_metrics])) for k in step_metrics[0]}
    merged["optim/lr"] = step_metrics[-1]["optim/lr"]
    return state, {**metrics, **merged, "update/skipped": 0.0, "update/num_updates": float(len(batches))}
