"""One RL step's group selection over P prompts x N rollouts (PAPER.md §5.1 steps 3-6).

`rollout_penalties` turns the rollouts' records into penalty arrays; `select_groups` drops
the groups whose rewards are all equal, runs RoC in every other group (seeded per group),
normalizes the advantages over each kept group and reports the batch metrics under the
released names (rStar@ecbfb94 `down_sample/`; PAPER.md §10):

  down_sampling/before_sampling_trace_num       P·N
  down_sampling/after_sampling_trace_num        rollouts kept for the update
  reject_equal_reward/solve_equal_total         groups with all rewards equal
  reject_equal_reward/solve_non_equal_total     the other groups
  reject_equal_reward/solve_equal_total_ratio   solve_equal_total / P (all-correct and all-wrong)
  reject_equal_reward/solve_equal_zeros         equal groups with all rewards 0
  reject_equal_reward/solve_equal_non_all_zeros equal groups with rewards != 0 (all correct)
  roc_error_ratio/global_err_ratio      errors / tool calls over the rollouts of the surviving
                                        groups, before down-sampling, both classes (released)
  roc_error_ratio/penalty_weight        mean p_err over the same rollouts
  roc_answer_format/answer_per_rollout_mean, zero_answer_count, one_answer_count,
  gt_one_answer_count                   answers per rollout (`penalties.answer_count`) over
                                        the same rollouts
and two of ours, the errors among positives of P Fig. 4:
  roc_error_ratio/positive_err_ratio       errors / tool calls, positives of surviving groups
  roc_error_ratio/kept_positive_err_ratio  the same over the positives RoC kept.
The released code computes the roc_* metrics only when some group survives; here they are
0 when none does.
"""
from typing import NamedTuple, Sequence

import numpy as np

from rstar_jax.rl import advantages as advantages_lib
from rstar_jax.rl import penalties
from rstar_jax.rl import roc


class RolloutPenalties(NamedTuple):
  """Per-rollout penalty arrays, each [P, N].

  Attributes:
    p_err: float64, `penalties.error_penalty`.
    p_format: float64, `penalties.format_penalty`.
    num_errors: int64, erroneous tool calls (`penalties.tool_error_counts`).
    num_calls: int64, tool calls.
    num_answers: int64, `penalties.answer_count`.
  """
  p_err: np.ndarray
  p_format: np.ndarray
  num_errors: np.ndarray
  num_calls: np.ndarray
  num_answers: np.ndarray


class GroupSelection(NamedTuple):
  """What `select_groups` keeps.

  Attributes:
    keep_mask: [P, N] bool, the rollouts of the update.
    advantages: [P, N] float32, group-normalized over each group's kept rollouts; 0 where
      not kept.
    kept_indices: [K] int64, `flatnonzero(keep_mask)`: row-major indices into the P·N
      rollouts, ascending.
    metrics: flat dict of Python floats (module docstring).
  """
  keep_mask: np.ndarray
  advantages: np.ndarray
  kept_indices: np.ndarray
  metrics: dict[str, float]


def rollout_penalties(records: Sequence[Sequence[penalties.RolloutRecord]],
                      config: "str | roc.RoCConfig | None" = None) -> RolloutPenalties:
  """Measures every rollout of P groups as `config` says (err_detect, format_turns/tags).

  Args:
    records: P sequences of N RolloutRecords each.
    config: a RoCConfig or a preset name (None, "paper", "code").

  Returns:
    RolloutPenalties of [P, N] arrays.
  """
  config = roc.RoCConfig.preset(config)
  sizes = {len(group) for group in records}
  if len(sizes) > 1:
    raise ValueError(f"`records` must hold the same number of rollouts per group, got sizes "
                     f"{sorted(sizes)}")
  rows = []
  for p, group in enumerate(records):
    row = []
    for n, record in enumerate(group):
      if not isinstance(record, penalties.RolloutRecord):
        raise ValueError(f"records[{p}][{n}] must be a RolloutRecord, got "
                         f"{type(record).__name__}")
      num_errors, num_calls = penalties.tool_error_counts(record, config.err_detect)
      row.append((penalties.error_penalty(record, config.err_detect),
                  penalties.format_penalty(record, config.format_turns, config.format_tags),
                  num_errors, num_calls,
                  penalties.answer_count(record.response_text, config.format_tags)))
    rows.append(row)
  shape = (len(records), sizes.pop() if sizes else 0)
  columns = np.asarray(rows, dtype=np.float64).reshape(shape + (5,))
  return RolloutPenalties(p_err=columns[..., 0], p_format=columns[..., 1],
                          num_errors=columns[..., 2].astype(np.int64),
                          num_calls=columns[..., 3].astype(np.int64),
                          num_answers=columns[..., 4].astype(np.int64))


def _ratio(numerator, denominator) -> float:
  return float(numerator) / float(denominator) if denominator else 0.0


def select_groups(rewards, rollout_pens: RolloutPenalties, keep: int,
                  seed: int | Sequence[int], config: "str | roc.RoCConfig | None" = None, *,
                  reject_equal: bool = True, std: str = "unbiased",
                  epsilon: float = 1e-6) -> GroupSelection:
  """Equal-reward filter, RoC per group and GRPO advantages for one step's batch.

  Group p keeps `roc.resample_on_correct(rewards[p], p_err[p], p_format[p], keep,
  roc.group_seed(seed, p), config)` unless `reject_equal` and its rewards are all equal
  (`advantages.equal_reward_mask`), in which case it keeps nothing. Advantages are
  `advantages.group_advantages(rewards, keep_mask, std=std, epsilon=epsilon)`.

  Args:
    rewards: [P, N] float.
    rollout_pens: RolloutPenalties of [P, N] arrays, from `rollout_penalties`.
    keep: the kept group size G >= 1 (16 in the recipe, N = 32).
    seed: int >= 0 or a sequence of them, e.g. (config seed, step); group p draws from
      `numpy.random.default_rng(roc.group_seed(seed, p))`, i.e. entropy (*seed, p).
    config: a RoCConfig or a preset name (None, "paper", "code").
    reject_equal: drop equal-reward groups (released `reject_equal_reward`, on in the recipe).
    std: "unbiased" (released) or "population", for `group_advantages`.
    epsilon: added to the group std (released 1e-6).

  Returns:
    A GroupSelection.
  """
  config = roc.RoCConfig.preset(config)
  rewards = np.asarray(rewards)
  if rewards.ndim != 2 or not np.issubdtype(rewards.dtype, np.floating):
    raise ValueError(f"`rewards` must be a [P, N] float array, got dtype {rewards.dtype} "
                     f"shape {rewards.shape}")
  for name, array in zip(RolloutPenalties._fields, rollout_pens):
    if np.shape(array) != rewards.shape:
      raise ValueError(f"`rollout_pens.{name}` must have shape {rewards.shape} like "
                       f"`rewards`, got {np.shape(array)}")
  num_prompts = rewards.shape[0]

  is_equal = np.asarray(advantages_lib.equal_reward_mask(rewards))
  is_zero = np.asarray(advantages_lib.equal_reward_mask(rewards, 0.0))
  survives = ~is_equal if reject_equal else np.ones(num_prompts, bool)
  keep_mask = np.zeros(rewards.shape, bool)
  for p in np.flatnonzero(survives):
    kept = roc.resample_on_correct(rewards[p], rollout_pens.p_err[p], rollout_pens.p_format[p],
                                   keep, roc.group_seed(seed, int(p)), config)
    keep_mask[p, kept] = True
  advantages = np.asarray(advantages_lib.group_advantages(
      rewards.astype(np.float32), keep_mask, std=std, epsilon=epsilon))

  is_pos = rewards > 0
  scope = np.broadcast_to(survives[:, None], rewards.shape)
  answers = rollout_pens.num_answers[scope]
  num_equal = int(is_equal.sum())
  metrics = {
      "down_sampling/before_sampling_trace_num": float(rewards.size),
      "down_sampling/after_sampling_trace_num": float(keep_mask.sum()),
      "reject_equal_reward/solve_non_equal_total": float(num_prompts - num_equal),
      "reject_equal_reward/solve_equal_total": float(num_equal),
      "reject_equal_reward/solve_equal_total_ratio": _ratio(num_equal, num_prompts),
      "reject_equal_reward/solve_equal_zeros": float((is_equal & is_zero).sum()),
      "reject_equal_reward/solve_equal_non_all_zeros": float((is_equal & ~is_zero).sum()),
      "roc_error_ratio/global_err_ratio": _ratio(rollout_pens.num_errors[scope].sum(),
                                                 rollout_pens.num_calls[scope].sum()),
      "roc_error_ratio/penalty_weight": (float(rollout_pens.p_err[scope].mean())
                                         if scope.any() else 0.0),
      "roc_error_ratio/positive_err_ratio": _ratio(
          rollout_pens.num_errors[scope & is_pos].sum(),
          rollout_pens.num_calls[scope & is_pos].sum()),
      "roc_error_ratio/kept_positive_err_ratio": _ratio(
          rollout_pens.num_errors[keep_mask & is_pos].sum(),
          rollout_pens.num_calls[keep_mask & is_pos].sum()),
      "roc_answer_format/answer_per_rollout_mean": (float(answers.mean())
                                                    if scope.any() else 0.0),
      "roc_answer_format/zero_answer_count": float((answers == 0).sum()),
      "roc_answer_format/one_answer_count": float((answers == 1).sum()),
      "roc_answer_format/gt_one_answer_count": float((answers > 1).sum()),
  }
  return GroupSelection(keep_mask=keep_mask, advantages=advantages,
                        kept_indices=np.flatnonzero(keep_mask).astype(np.int64),
                        metrics=metrics)
