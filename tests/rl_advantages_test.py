"""Tests of rstar_jax.rl.advantages: group normalization and the equal-reward filter.

Run: python -m pytest -q tests/rl_advantages_test.py
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rstar_jax.rl import advantages

VARIANTS = [pytest.param(jax.jit, id="jit"), pytest.param(lambda f: f, id="nojit")]


@pytest.mark.parametrize("variant", VARIANTS)
def test_group_advantages_unbiased_match_hand_computed(variant):
  # [1, 1, 1, 0]: mean 0.75, unbiased var (3·0.25² + 0.75²) / 3 = 0.25, std 0.5.
  rewards = jnp.asarray([[1.0, 1.0, 1.0, 0.0]])
  adv = variant(advantages.group_advantages)(rewards)
  np.testing.assert_allclose(adv, [[0.5, 0.5, 0.5, -1.5]], rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_group_advantages_population_match_hand_computed(variant):
  # Population std sqrt(0.75 / 4) = 0.4330.
  rewards = jnp.asarray([[1.0, 1.0, 1.0, 0.0]])
  fn = variant(functools.partial(advantages.group_advantages, std="population", epsilon=0.0))
  sigma = math.sqrt(0.75 / 4)
  np.testing.assert_allclose(fn(rewards), [[0.25 / sigma] * 3 + [-0.75 / sigma]], rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_group_advantages_with_mask_equal_advantages_of_kept_subset(variant):
  rewards = jnp.asarray([[1.0, 0.0, 1.0, 1.0, 0.0, 0.0], [0.3, 0.9, 0.1, 0.5, 0.7, 0.2]])
  mask = jnp.asarray([[1, 1, 0, 1, 1, 0], [0, 1, 1, 1, 1, 1]], bool)
  adv = variant(advantages.group_advantages)(rewards, mask)
  for p in range(2):
    kept = np.flatnonzero(mask[p])
    np.testing.assert_allclose(adv[p, kept], advantages.group_advantages(rewards[p, kept]),
                               rtol=1e-6)
    assert np.all(np.asarray(adv[p])[~np.asarray(mask[p])] == 0.0)


def test_group_advantages_single_kept_rollout_uses_mean_0_std_1():
  rewards = jnp.asarray([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
  mask = jnp.asarray([[1, 0, 0], [0, 0, 0]])
  adv = advantages.group_advantages(rewards, mask)
  np.testing.assert_allclose(adv, [[1.0 / (1.0 + 1e-6), 0.0, 0.0], [0.0, 0.0, 0.0]],
                             rtol=1e-7)


def test_group_advantages_zero_when_rewards_equal():
  adv = advantages.group_advantages(jnp.ones((2, 5)))
  assert np.all(np.asarray(adv) == 0.0)


def test_group_advantages_vmap_over_steps_equals_each_step():
  rewards = jnp.asarray(np.random.default_rng(0).random((3, 4, 8)), jnp.float32)
  batched = jax.vmap(advantages.group_advantages)(rewards)
  for k in range(3):
    np.testing.assert_allclose(batched[k], advantages.group_advantages(rewards[k]), rtol=1e-6)


def test_group_advantages_rejects_bad_arguments():
  with pytest.raises(ValueError, match="std"):
    advantages.group_advantages(jnp.ones((2, 4)), std="biased")
  with pytest.raises(ValueError, match="epsilon"):
    advantages.group_advantages(jnp.ones((2, 4)), epsilon=-1.0)
  with pytest.raises(AssertionError):
    advantages.group_advantages(jnp.ones((2, 4)), jnp.ones((2, 3)))
  with pytest.raises(AssertionError):
    advantages.group_advantages(jnp.ones((2, 4), jnp.int32))


@pytest.mark.parametrize("variant", VARIANTS)
def test_equal_reward_mask_flags_groups_equal_within_allclose_tolerance(variant):
  rewards = jnp.asarray([[1.0, 1.0, 1.0],
                         [0.0, 0.0, 0.0],
                         [1.0, 0.0, 1.0],
                         [1.0, 1.0 + 1e-6, 1.0],   # |diff| 1e-6 <= 1e-8 + 1e-5·1
                         [1.0, 1.0 + 1e-3, 1.0],
                         [0.0, 1e-9, 0.0],         # 1e-9 <= 1e-8
                         [0.0, 1e-7, 0.0]])
  fn = variant(advantages.equal_reward_mask)
  np.testing.assert_array_equal(fn(rewards), [True, True, False, True, False, True, False])
  all_zero = variant(functools.partial(advantages.equal_reward_mask, reference=0.0))(rewards)
  np.testing.assert_array_equal(all_zero, [False, True, False, False, False, True, False])
