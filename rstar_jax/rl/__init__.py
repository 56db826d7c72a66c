"""GRPO-RoC maths: RoC down-sampling, group advantages and the policy loss (PAPER.md §5-§6).

Pure functions on arrays (numpy on the host for RoC, jax.numpy for advantages and losses);
no I/O. Modules: `penalties` (p_err, p_format), `roc` (Resample-on-Correct for one group),
`advantages` (group normalization, equal-reward filter), `groups` (one step's batch of
groups and its metrics), `losses` (token-mean PPO-clip with Clip-Higher).
"""
from rstar_jax.rl import advantages
from rstar_jax.rl import groups
from rstar_jax.rl import losses
from rstar_jax.rl import penalties
from rstar_jax.rl import roc
from rstar_jax.rl.advantages import equal_reward_mask
from rstar_jax.rl.advantages import group_advantages
from rstar_jax.rl.groups import GroupSelection
from rstar_jax.rl.groups import rollout_penalties
from rstar_jax.rl.groups import RolloutPenalties
from rstar_jax.rl.groups import select_groups
from rstar_jax.rl.losses import add_policy_loss_sums
from rstar_jax.rl.losses import empty_policy_loss_sums
from rstar_jax.rl.losses import policy_loss
from rstar_jax.rl.losses import policy_loss_from_sums
from rstar_jax.rl.losses import policy_loss_sums
from rstar_jax.rl.losses import PolicyLossSums
from rstar_jax.rl.losses import token_policy_loss
from rstar_jax.rl.penalties import answer_count
from rstar_jax.rl.penalties import error_penalty
from rstar_jax.rl.penalties import format_penalty
from rstar_jax.rl.penalties import RolloutRecord
from rstar_jax.rl.penalties import tool_error_counts
from rstar_jax.rl.roc import class_counts
from rstar_jax.rl.roc import group_seed
from rstar_jax.rl.roc import resample_on_correct
from rstar_jax.rl.roc import RoCConfig
from rstar_jax.rl.roc import total_penalty

__all__ = [
    "GroupSelection",
    "PolicyLossSums",
    "RoCConfig",
    "RolloutPenalties",
    "RolloutRecord",
    "add_policy_loss_sums",
    "advantages",
    "answer_count",
    "class_counts",
    "empty_policy_loss_sums",
    "equal_reward_mask",
    "error_penalty",
    "format_penalty",
    "group_advantages",
    "group_seed",
    "groups",
    "losses",
    "penalties",
    "policy_loss",
    "policy_loss_from_sums",
    "policy_loss_sums",
    "resample_on_correct",
    "roc",
    "rollout_penalties",
    "select_groups",
    "token_policy_loss",
    "tool_error_counts",
    "total_penalty",
]
