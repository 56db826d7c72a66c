"""Tests of rstar_jax.rl.groups: one step's filter, RoC per group, advantages and metrics.

Run: python -m pytest -q tests/rl_groups_test.py
"""
import numpy as np
import pytest

from rstar_jax.rl import groups
from rstar_jax.rl import penalties
from rstar_jax.rl import roc

# Four groups of four rollouts: all correct, all wrong, and two mixed groups.
REWARDS = np.array([[1.0, 1.0, 1.0, 1.0],
                    [0.0, 0.0, 0.0, 0.0],
                    [1.0, 0.0, 1.0, 0.0],
                    [0.0, 1.0, 1.0, 1.0]])
NUM_CALLS = np.array([[1, 1, 1, 1], [2, 2, 2, 2], [0, 2, 4, 1], [1, 3, 0, 2]])
NUM_ERRORS = np.array([[1, 0, 0, 0], [2, 2, 2, 2], [0, 0, 1, 1], [1, 0, 0, 1]])
P_ERR = np.where(NUM_CALLS > 0, NUM_ERRORS / np.maximum(NUM_CALLS, 1), 0.5)
P_FORMAT = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0.5, 0, 0]])
NUM_ANSWERS = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 2, 1], [0, 1, 1, 1]])
PENS = groups.RolloutPenalties(P_ERR, P_FORMAT, NUM_ERRORS, NUM_CALLS, NUM_ANSWERS)
# keep 2 of 4 with minimums of 1: each mixed group keeps 1 negative and 1 positive.
CODE = roc.RoCConfig.preset("code", min_neg=1, min_pos=1)


def test_select_groups_code_mode_matches_hand_computed():
  selection = groups.select_groups(REWARDS, PENS, 2, 0, CODE)
  # Group 2: positives 0 (p 0.5) and 2 (p 0.25) -> 2; first negative 1.
  # Group 3: positives 1, 2, 3 all at p_total 0.5 -> 1 (tie: lowest index); negative 0.
  expected = np.zeros((4, 4), bool)
  expected[2, [1, 2]] = expected[3, [0, 1]] = True
  np.testing.assert_array_equal(selection.keep_mask, expected)
  assert selection.kept_indices.tolist() == [9, 10, 12, 13]
  # Kept pairs {0, 1}: mean 0.5, unbiased std sqrt(0.5).
  a = 0.5 / (np.sqrt(0.5) + 1e-6)
  np.testing.assert_allclose(selection.advantages,
                             [[0, 0, 0, 0], [0, 0, 0, 0], [0, -a, a, 0], [-a, a, 0, 0]],
                             rtol=1e-6)
  assert selection.advantages.dtype == np.float32


def test_select_groups_metrics_match_hand_computed():
  metrics = groups.select_groups(REWARDS, PENS, 2, 0, CODE).metrics
  expected = {
      "down_sampling/before_sampling_trace_num": 16,
      "down_sampling/after_sampling_trace_num": 4,
      "reject_equal_reward/solve_non_equal_total": 2,
      "reject_equal_reward/solve_equal_total": 2,
      "reject_equal_reward/solve_equal_total_ratio": 0.5,
      "reject_equal_reward/solve_equal_zeros": 1,
      "reject_equal_reward/solve_equal_non_all_zeros": 1,
      # Over groups 2 and 3 only: errors 2 + 2, calls 7 + 6.
      "roc_error_ratio/global_err_ratio": 4 / 13,
      # p_err of groups 2 and 3: 0.5, 0, 0.25, 1 and 1, 0, 0.5, 0.5.
      "roc_error_ratio/penalty_weight": 3.75 / 8,
      # Positives: group 2 rollouts 0, 2 (1 / 4), group 3 rollouts 1, 2, 3 (1 / 5).
      "roc_error_ratio/positive_err_ratio": 2 / 9,
      # Kept positives: group 2 rollout 2 (1 / 4), group 3 rollout 1 (0 / 3).
      "roc_error_ratio/kept_positive_err_ratio": 1 / 7,
      "roc_answer_format/answer_per_rollout_mean": 7 / 8,
      "roc_answer_format/zero_answer_count": 2,
      "roc_answer_format/one_answer_count": 5,
      "roc_answer_format/gt_one_answer_count": 1,
  }
  assert metrics == pytest.approx(expected)
  assert all(isinstance(v, float) for v in metrics.values())


def test_select_groups_without_reject_keeps_equal_groups_at_zero_advantage():
  selection = groups.select_groups(REWARDS, PENS, 2, 0, CODE, reject_equal=False)
  assert selection.keep_mask.sum(axis=1).tolist() == [2, 2, 2, 2]
  # Group 0 (all positive): the two lowest p_total, 1 and 2 (ties at 0: lowest indices).
  assert np.flatnonzero(selection.keep_mask[0]).tolist() == [1, 2]
  assert np.all(selection.advantages[:2] == 0.0)
  assert selection.metrics["roc_error_ratio/global_err_ratio"] == pytest.approx(
      (1 + 8 + 4) / (4 + 8 + 13))


def test_select_groups_seeds_each_group_with_group_seed():
  rng = np.random.default_rng(5)
  rewards = (rng.random((6, 12)) < 0.5).astype(np.float64)
  rewards[:, 0], rewards[:, 1] = 1.0, 0.0  # no equal groups
  pens = groups.RolloutPenalties(rng.random((6, 12)), rng.random((6, 12)),
                                 *np.zeros((3, 6, 12), np.int64))
  for mode in (None, "paper"):
    selection = groups.select_groups(rewards, pens, 6, (11, 4), mode)
    for p in range(6):
      kept = roc.resample_on_correct(rewards[p], pens.p_err[p], pens.p_format[p], 6,
                                     (11, 4, p), mode)
      assert np.flatnonzero(selection.keep_mask[p]).tolist() == kept.tolist()
    again = groups.select_groups(rewards, pens, 6, (11, 4), mode)
    np.testing.assert_array_equal(selection.keep_mask, again.keep_mask)
    other = groups.select_groups(rewards, pens, 6, (11, 5), mode)
    assert not np.array_equal(selection.keep_mask, other.keep_mask)


def test_select_groups_with_every_group_equal_keeps_nothing():
  selection = groups.select_groups(np.ones((2, 4)), groups.RolloutPenalties(
      *np.zeros((5, 2, 4))), 2, 0)
  assert selection.kept_indices.size == 0
  assert selection.metrics["reject_equal_reward/solve_equal_total_ratio"] == 1.0
  assert selection.metrics["roc_error_ratio/penalty_weight"] == 0.0
  assert selection.metrics["roc_answer_format/answer_per_rollout_mean"] == 0.0


def test_rollout_penalties_follow_config_detection():
  tool_text = ("<|im_start|>user\n<tool_response>\nTool call failure\nreason: worker_timeout\n"
               "execution time: 4.01s\n</tool_response><|im_end|>\n<|im_start|>assistant\n<reason>")
  record = penalties.RolloutRecord(("timeout",), 2, "a <tool_call>{}</tool_call><|im_end|>" +
                                   tool_text + "<answer>1</answer><|im_end|>")
  no_tool = penalties.RolloutRecord((), 1, "<answer>2</answer><|im_end|>")
  structured = groups.rollout_penalties([[record, no_tool]])
  np.testing.assert_allclose(structured.p_err, [[1.0, 0.5]])
  np.testing.assert_allclose(structured.p_format, [[0.0, 0.0]])
  assert structured.num_errors.tolist() == [[1, 0]] and structured.num_calls.tolist() == [[1, 0]]
  assert structured.num_answers.tolist() == [[1, 1]]
  code = groups.rollout_penalties([[record, no_tool]], "code")
  np.testing.assert_allclose(code.p_err, [[0.0, 0.5]])
  np.testing.assert_allclose(code.p_format, [[0.0, 1.0]])


def test_group_functions_reject_bad_inputs():
  record = penalties.RolloutRecord((), 1, "")
  with pytest.raises(ValueError, match="same number of rollouts"):
    groups.rollout_penalties([[record, record], [record]])
  with pytest.raises(ValueError, match=r"records\[0\]\[1\]"):
    groups.rollout_penalties([[record, "text"]])
  with pytest.raises(ValueError, match="p_format"):
    groups.select_groups(REWARDS, PENS._replace(p_format=P_FORMAT[:2]), 2, 0, CODE)
  with pytest.raises(ValueError, match="rewards"):
    groups.select_groups(REWARDS[0], PENS, 2, 0, CODE)
