"""Group-normalized GRPO advantages and the equal-reward group filter (PAPER.md §5.1, §5.5).

Shapes: a group is the last axis, `[..., N]` (e.g. `[P, N]`: P prompts, N rollouts each).
Both functions are pure jax.numpy and work under `jax.jit` and `jax.vmap`.
"""
import chex
import jax.numpy as jnp

STD_KINDS = ("unbiased", "population")
# torch.allclose defaults, which the released filter uses (rStar@ecbfb94
# `down_sample/reject_sampling.py`).
EQUAL_RTOL = 1e-5
EQUAL_ATOL = 1e-8


def group_advantages(rewards: chex.Array, mask: chex.Array | None = None, *,
                     std: str = "unbiased", epsilon: float = 1e-6) -> chex.Array:
  """GRPO advantages normalized within each group's kept rollouts [P Eq. 7].

  For a group with kept set K (mask > 0) of size n and rewards r:
    mu    = (1/n) sum_{i in K} r_i
    sigma = sqrt(sum_{i in K} (r_i - mu)^2 / (n - 1))   std="unbiased" (torch.std, released)
    sigma = sqrt(sum_{i in K} (r_i - mu)^2 / n)         std="population"
    A_i   = (r_i - mu) / (sigma + epsilon) for i in K, and 0 for i not in K.
  A group with n = 1 uses mu = 0 and sigma = 1 and a group with n = 0 gets zeros
  (J-shang/verl@d0dc976 `compute_grpo_outcome_advantage`; `norm_adv_by_std_in_grpo=True`).

  Args:
    rewards: [..., N] float, the sequence rewards (sum of token-level rewards).
    mask: [..., N] bool or 0/1, the kept rollouts (RoC's selection); None keeps all.
    std: "unbiased" (default, released) or "population".
    epsilon: added to sigma, >= 0 (released 1e-6).

  Returns:
    [..., N] advantages, the dtype of `rewards`; broadcast them over each response's tokens.
  """
  rewards = jnp.asarray(rewards)
  chex.assert_rank(rewards, {1, 2, 3})
  chex.assert_type(rewards, float)
  if mask is not None:
    chex.assert_equal_shape([rewards, mask])
  if std not in STD_KINDS:
    raise ValueError(f"`std` must be one of {STD_KINDS}, got {std!r}")
  if not epsilon >= 0:
    raise ValueError(f"`epsilon` must be >= 0, got {epsilon!r}")
  kept = jnp.ones(rewards.shape, bool) if mask is None else jnp.asarray(mask) > 0
  weight = kept.astype(rewards.dtype)
  count = weight.sum(-1, keepdims=True)
  safe_count = jnp.maximum(count, 1)
  mean = (rewards * weight).sum(-1, keepdims=True) / safe_count
  sq_dev = ((rewards - mean) ** 2 * weight).sum(-1, keepdims=True)
  dof = count - 1 if std == "unbiased" else count
  sigma = jnp.sqrt(sq_dev / jnp.maximum(dof, 1))
  is_single = count == 1
  mean = jnp.where(is_single, 0.0, mean)
  sigma = jnp.where(is_single, 1.0, sigma)
  return jnp.where(kept, (rewards - mean) / (sigma + epsilon), 0.0).astype(rewards.dtype)


def equal_reward_mask(rewards: chex.Array, reference: chex.Array | float | None = None
                      ) -> chex.Array:
  """Marks the groups whose rewards are all equal, which GRPO-RoC drops (PAPER.md §5.1 step 3).

  A group is equal when, for every j, |ref - r_j| <= atol + rtol·|r_j| with ref = r_0 by
  default, rtol = 1e-5 and atol = 1e-8: `torch.allclose(r_0, r)` as released
  (`reject_equal_reward`). Such a group has zero advantages and no gradient.

  Args:
    rewards: [..., N] float.
    reference: None (compare with each group's first reward), or a value broadcastable to
      [..., 1], e.g. 0.0 to find the all-zero groups.

  Returns:
    [...] bool, True for a group to drop.
  """
  rewards = jnp.asarray(rewards)
  chex.assert_rank(rewards, {1, 2, 3})
  chex.assert_type(rewards, float)
  ref = rewards[..., :1] if reference is None else jnp.asarray(reference, rewards.dtype)
  close = jnp.abs(ref - rewards) <= EQUAL_ATOL + EQUAL_RTOL * jnp.abs(rewards)
  return jnp.all(close, axis=-1)
