"""The GRPO-RoC update from rollout groups: selection, packing, old log-probs, one step."""
import jax
import ml_collections
import numpy as np
import pytest

from rstar_jax import chat, models, rl
from rstar_jax.train import optim
from rstar_jax.train import rl as rl_train
import tiny_models

CFG = tiny_models.tiny_config("qwen3", vocab_size=96)


def _rl_config(**overrides):
  config = dict(keep=2, roc={}, roc_mode=None, reject_equal=True, adv_std="unbiased", adv_epsilon=1e-6,
                eps_low=0.2, eps_high=0.28, dual_clip=3.0, loss_agg="token_mean", use_sampler_logprobs=False,
                temperature=1.0, updates_per_step=1, row_length=32, rows_per_microbatch=2, num_microbatches=None,
                logits_chunk=0)
  return ml_collections.ConfigDict({**config, **overrides})


def _trajectory(rng, prompt_len=4, response_len=6, env=(2, 4)):
  ids = rng.integers(0, 96, prompt_len + response_len).astype(np.int32)
  mask = np.zeros_like(ids)
  mask[prompt_len:] = 1
  mask[prompt_len + env[0]:prompt_len + env[1]] = 0  # an environment segment
  return chat.Trajectory(ids, mask, prompt_len)


def _record():
  return rl.RolloutRecord(("ok",), 2, "<answer>\\boxed{1}</answer>")


def _setup(seed=0):
  optimizer = optim.make_optimizer(ml_collections.ConfigDict(dict(
      learning_rate=1e-3, warmup_steps=0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, max_grad_norm=1.0)))
  state = optim.init_train_state(models.init_params(CFG, jax.random.key(seed)), optimizer, seed)
  return optimizer, state


def test_update_drops_equal_groups_and_matches_hand_computed_loss():
  rng = np.random.default_rng(0)
  trajectories = [[_trajectory(rng, response_len=6 + n) for n in range(2)], [_trajectory(rng) for _ in range(2)]]
  rollouts = rl_train.RolloutGroups(trajectories, np.array([[1.0, 0.0], [1.0, 1.0]]),
                                    [[_record()] * 2, [_record()] * 2])
  optimizer, state = _setup()
  updater = rl_train.RLUpdater(CFG, _rl_config(), optimizer, None, state)
  before = jax.device_get(state.params)
  state, metrics = updater.update(state, rollouts, seed=(0, 1))
  assert metrics["update/skipped"] == 0.0 and int(state.step) == 1
  assert metrics["reject_equal_reward/solve_equal_total"] == 1.0
  assert metrics["down_sampling/after_sampling_trace_num"] == 2.0
  # Group 0 keeps both: rewards (1, 0), unbiased std 1/sqrt(2), so A = +-0.5 / 0.70711 = +-0.70711.
  # At ratio 1 the token-mean loss is -(A+ n+ + A- n-) / (n+ + n-), n = policy targets per trajectory.
  n_pos, n_neg = int(trajectories[0][0].loss_mask[1:].sum()), int(trajectories[0][1].loss_mask[1:].sum())
  a = 0.5 / np.sqrt(0.5)
  assert (n_pos, n_neg) == (4, 5)
  np.testing.assert_allclose(metrics["loss/policy"], -(a * n_pos - a * n_neg) / (n_pos + n_neg), rtol=1e-4)
  assert metrics["policy/num_tokens"] == n_pos + n_neg
  assert metrics["policy/ratio_max"] == pytest.approx(1.0, abs=1e-6)
  changed = [not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(state.params))]
  assert all(changed)


def test_update_with_no_surviving_group_leaves_state_unchanged():
  rng = np.random.default_rng(1)
  rollouts = rl_train.RolloutGroups([[_trajectory(rng) for _ in range(2)]], np.ones((1, 2)), [[_record()] * 2])
  optimizer, state = _setup()
  new_state, metrics = rl_train.RLUpdater(CFG, _rl_config(), optimizer, None, state).update(state, rollouts, 0)
  assert metrics["update/skipped"] == 1.0 and new_state is state


def test_mismatched_rollout_layout_is_named():
  rng = np.random.default_rng(2)
  with pytest.raises(ValueError, match=r"rewards has shape \(1, 3\) but trajectories are 1 groups of sizes \[2\]"):
    rl_train.RolloutGroups([[_trajectory(rng), _trajectory(rng)]], np.ones((1, 3)), [[_record()] * 2])


def test_keep_larger_than_the_group_and_empty_rollouts_are_named():
  rng = np.random.default_rng(3)
  rollouts = rl_train.RolloutGroups([[_trajectory(rng) for _ in range(2)]], np.array([[1.0, 0.0]]), [[_record()] * 2])
  optimizer, state = _setup()
  updater = rl_train.RLUpdater(CFG, _rl_config(keep=4), optimizer, None, state)
  with pytest.raises(ValueError, match="config.rl.keep=4 exceeds the 2 rollouts per prompt"):
    updater.update(state, rollouts, 0)
  with pytest.raises(ValueError, match="at least one group"):
    rl_train.RolloutGroups([], np.zeros((0, 0)), [])


def _two_group_rollouts(rng):
  trajectories = [[_trajectory(rng, response_len=6 + n) for n in range(2)],
                  [_trajectory(rng, response_len=9 + 3 * n) for n in range(2)]]
  return rl_train.RolloutGroups(trajectories, np.array([[1.0, 0.0], [0.0, 1.0]]), [[_record()] * 2] * 2)


def test_group_token_mean_is_the_mean_of_per_group_token_means():
  rollouts = _two_group_rollouts(np.random.default_rng(4))
  optimizer, state = _setup()
  updater = rl_train.RLUpdater(CFG, _rl_config(loss_agg="group_token_mean"), optimizer, None, state)
  _, metrics = updater.update(state, rollouts, seed=0)
  a = 0.5 / np.sqrt(0.5)  # +-advantage of a (1, 0) group (unbiased std)
  group_means = []
  for group, rewards in zip(rollouts.trajectories, rollouts.rewards):
    n = [int(t.loss_mask[1:].sum()) for t in group]
    signs = np.where(rewards > 0, 1.0, -1.0)
    group_means.append(-sum(a * sg * k for sg, k in zip(signs, n)) / sum(n))  # ratio 1: l_t = -A
  np.testing.assert_allclose(metrics["loss/policy"], np.mean(group_means), rtol=1e-4)
  _, state = _setup()  # the update donated the first state
  token_mean = rl_train.RLUpdater(CFG, _rl_config(), optimizer, None, state).update(state, rollouts, 0)[1]
  assert abs(token_mean["loss/policy"] - metrics["loss/policy"]) > 1e-3  # the two rules differ here


def _sampler_logprobs(rollouts, params, temperature=1.0, shift=0.0):
  """[P][N] log softmax(z / temperature) of each token given the ones before it (the sampler's
  convention; entry 0 unused), minus `shift`."""
  out = []
  for group in rollouts.trajectories:
    row = []
    for t in group:
      z = np.asarray(models.logits(CFG, params, t.token_ids[None, :-1]), np.float64)[0] / temperature
      logp = z - z.max(-1, keepdims=True) - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
      row.append(np.concatenate([[0.0], logp[np.arange(len(t.token_ids) - 1), t.token_ids[1:]] - shift]))
    out.append(row)
  return out


def test_sampler_logprobs_replace_the_recomputed_old_logprobs():
  rollouts = _two_group_rollouts(np.random.default_rng(5))
  optimizer, state = _setup()
  shift = 0.05
  sampler = _sampler_logprobs(rollouts, state.params, shift=shift)
  rollouts = rl_train.RolloutGroups(rollouts.trajectories, rollouts.rewards, rollouts.records, sampler)
  updater = rl_train.RLUpdater(CFG, _rl_config(use_sampler_logprobs=True), optimizer, None, state)
  _, metrics = updater.update(state, rollouts, seed=0)
  np.testing.assert_allclose(metrics["policy/ratio_mean"], np.exp(shift), rtol=1e-4)
  np.testing.assert_allclose(metrics["policy/ratio_std"], 0.0, atol=1e-3)
  no_logprobs = rl_train.RolloutGroups(rollouts.trajectories, rollouts.rewards, rollouts.records)
  with pytest.raises(ValueError, match="use_sampler_logprobs=True but the rollouts carry no sampler log-probs"):
    updater.update(state, no_logprobs, seed=0)


def _mean_logprob(params, trajectory):
  logits = np.asarray(models.logits(CFG, params, trajectory.token_ids[None, :-1]), np.float64)[0]
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(
      -1, keepdims=True)
  picked = logp[np.arange(len(trajectory.token_ids) - 1), trajectory.token_ids[1:]]
  return float(picked[trajectory.loss_mask[1:] == 1].mean())


@pytest.mark.parametrize("updates_per_step", [1, 2])
def test_an_update_raises_the_logprobs_of_positive_trajectories_and_lowers_the_negative_ones(updates_per_step):
  rollouts = _two_group_rollouts(np.random.default_rng(6))
  optimizer, state = _setup()
  before = jax.device_get(state.params)
  updater = rl_train.RLUpdater(CFG, _rl_config(updates_per_step=updates_per_step), optimizer, None, state)
  state, metrics = updater.update(state, rollouts, seed=0)
  assert metrics["update/num_updates"] == updates_per_step and int(state.step) == updates_per_step
  for group, rewards in zip(rollouts.trajectories, rollouts.rewards):
    for trajectory, reward in zip(group, rewards):
      change = _mean_logprob(state.params, trajectory) - _mean_logprob(before, trajectory)
      assert change > 0 if reward > 0 else change < 0, (reward, change)


def test_two_updates_per_step_take_old_logprobs_from_the_parameters_before_the_first():
  rollouts = _two_group_rollouts(np.random.default_rng(7))
  optimizer, state = _setup()
  updater = rl_train.RLUpdater(CFG, _rl_config(updates_per_step=2), optimizer, None, state)
  _, metrics = updater.update(state, rollouts, seed=0)
  # the second mini-batch sees parameters one update away from pi_old: its ratios leave 1
  assert metrics["policy/ratio_std"] > 0 and metrics["policy/ratio_max"] > 1.0


def test_logprobs_are_taken_at_the_rollout_temperature():
  rollouts = _two_group_rollouts(np.random.default_rng(8))
  optimizer, state = _setup()
  temperature = 0.5
  sampler = _sampler_logprobs(rollouts, state.params, temperature)
  rollouts = rl_train.RolloutGroups(rollouts.trajectories, rollouts.rewards, rollouts.records, sampler)
  updater = rl_train.RLUpdater(CFG, _rl_config(temperature=temperature), optimizer, None, state)
  _, metrics = updater.update(state, rollouts, seed=0)
  assert metrics["rollout/kl_sampler_k3"] < 1e-9  # trainer and sampler agree at T = 0.5
