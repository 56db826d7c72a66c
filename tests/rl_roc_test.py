"""Tests of rstar_jax.rl.roc: counts, class balance, minimums, edge cases, seeds, statistics.

Run: python -m pytest -q tests/rl_roc_test.py
"""
import itertools

import numpy as np
import pytest

from rstar_jax.rl import roc


def _group(num_pos, num_neg, p_total=None):
  """Rewards with the positives first, p_err = p_total (0 by default), p_format = 0."""
  rewards = np.array([1.0] * num_pos + [0.0] * num_neg)
  p_err = np.zeros(num_pos + num_neg) if p_total is None else np.asarray(p_total, float)
  return rewards, p_err, np.zeros(num_pos + num_neg)


@pytest.mark.parametrize("num_neg, num_pos, code, paper", [
    (7, 25, (4, 12), (3, 13)),    # round(3.5) = 4 (even), round(12.5) = 12 (even)
    (9, 23, (4, 12), (4, 12)),    # round(4.5) = 4, round(11.5) = 12
    (11, 21, (6, 10), (5, 11)),   # round(5.5) = 6, round(10.5) = 10
    (16, 16, (8, 8), (8, 8)),
    (1, 31, (1, 15), (0, 16)),    # round(0.5) = 0 <= min(2, 1): keep the 1 negative
    (2, 30, (2, 14), (1, 15)),    # round(1) = 1 <= 2: raised to 2
    (3, 29, (2, 14), (1, 15)),    # round(1.5) = 2 <= 2: stays 2
    (5, 27, (2, 14), (2, 14)),    # round(2.5) = 2 <= min(2, 5): stays 2
    (31, 1, (15, 1), (15, 1)),    # round(0.5) = 0 <= min(2, 1): keep the 1 positive
    (30, 2, (14, 2), (15, 1)),
    (0, 32, (0, 16), (0, 16)),    # all positive
    (32, 0, (16, 0), (16, 0)),    # all negative
])
def test_class_counts_match_hand_computed(num_neg, num_pos, code, paper):
  assert roc.class_counts(num_neg, num_pos, 16, "code") == code
  assert roc.class_counts(num_neg, num_pos, 16, "paper") == paper
  assert roc.class_counts(num_neg, num_pos, 16) == code  # the default count rule


@pytest.mark.parametrize("keep", [4, 6, 8, 16])
def test_class_counts_code_keep_minimums_and_sum_for_every_split(keep):
  n = 2 * keep
  for num_neg in range(n + 1):
    num_pos = n - num_neg
    k_neg, k_pos = roc.class_counts(num_neg, num_pos, keep, "code")
    assert k_neg + k_pos == keep
    assert 0 <= k_neg <= num_neg and 0 <= k_pos <= num_pos
    assert k_neg >= min(2, num_neg) and k_pos >= min(2, num_pos)
    p_neg, p_pos = roc.class_counts(num_neg, num_pos, keep, "paper")
    assert (p_neg, p_pos) == (num_neg // 2, keep - num_neg // 2)


def test_class_counts_keep_whole_or_nothing_when_group_small():
  assert roc.class_counts(3, 5, 8) == (3, 5)
  assert roc.class_counts(3, 4, 8) == (0, 0)
  assert roc.class_counts(3, 4, 8, "paper") == (0, 0)


def test_class_counts_raise_where_release_asserts():
  # min_neg + min_pos > keep.
  with pytest.raises(ValueError, match="min_neg"):
    roc.class_counts(4, 4, 3, roc.RoCConfig(min_neg=2, min_pos=2))
  # Odd keep without minimums: round(0.5) + round(2.5) = 2 != 3.
  with pytest.raises(ValueError, match="!= keep"):
    roc.class_counts(1, 5, 3, roc.RoCConfig(min_neg=-1, min_pos=-1))
  # The same split with the minimums: k_neg = min(2, 1) = 1, k_pos = 2.
  assert roc.class_counts(1, 5, 3, roc.RoCConfig(min_neg=1, min_pos=2)) == (1, 2)


def test_class_counts_negative_minimums_disable_the_rule():
  no_min = roc.RoCConfig(min_neg=-1, min_pos=-1)
  assert roc.class_counts(1, 31, 16, no_min) == (0, 16)
  assert roc.class_counts(31, 1, 16, no_min) == (16, 0)


@pytest.mark.parametrize("mode", [None, "paper", "code"])
def test_resample_on_correct_keeps_class_counts_sorted_unique(mode):
  rng = np.random.default_rng(0)
  for trial in range(50):
    num_pos = int(rng.integers(0, 33))
    rewards = rng.permutation(np.array([1.0] * num_pos + [0.0] * (32 - num_pos)))
    p_err, p_format = rng.choice([0, 0.25, 0.5], 32), rng.choice([0, 1 / 3, 1], 32)
    kept = roc.resample_on_correct(rewards, p_err, p_format, 16, trial, mode)
    assert kept.dtype == np.int64 and len(kept) == 16
    assert np.all(np.diff(kept) > 0)
    k_neg, k_pos = roc.class_counts(32 - num_pos, num_pos, 16, mode)
    assert (rewards[kept] > 0).sum() == k_pos and (rewards[kept] <= 0).sum() == k_neg


@pytest.mark.parametrize("mode", [None, "paper", "code"])
def test_resample_on_correct_small_groups(mode):
  rewards, p_err, p_format = _group(5, 3)
  assert roc.resample_on_correct(rewards, p_err, p_format, 9, 0, mode).tolist() == []
  np.testing.assert_array_equal(roc.resample_on_correct(rewards, p_err, p_format, 8, 0, mode),
                                np.arange(8))
  assert roc.resample_on_correct(np.zeros(0), np.zeros(0), np.zeros(0), 4, 0, mode).size == 0


def test_resample_on_correct_all_positive_code_keeps_lowest_penalties():
  rewards, p_err, p_format = _group(8, 0, [0.5, 0.0, 1.0, 0.25, 0.0, 0.5, 0.25, 1.5])
  kept = roc.resample_on_correct(rewards, p_err, p_format, 4, 0, "code")
  assert kept.tolist() == [1, 3, 4, 6]


def test_resample_on_correct_all_negative_code_keeps_first():
  rewards, p_err, p_format = _group(0, 8, [1.0] * 8)
  assert roc.resample_on_correct(rewards, p_err, p_format, 4, 0, "code").tolist() == [0, 1, 2, 3]


def test_resample_on_correct_all_negative_default_draws_uniformly():
  rewards, p_err, p_format = _group(0, 8)
  counts = np.zeros(8)
  for seed in range(4000):
    counts[roc.resample_on_correct(rewards, p_err, p_format, 4, seed)] += 1
  np.testing.assert_allclose(counts / 4000, 0.5, atol=0.04)


def test_resample_on_correct_ties_go_to_lower_index_when_sorted():
  # 6 positives with equal penalty, 4 negatives; keep 5: code counts round(2)=2, round(3)=3.
  rewards = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
  p_err = np.full(10, 0.25)
  kept = roc.resample_on_correct(rewards, p_err, np.zeros(10), 5, 0, "code")
  assert kept.tolist() == [0, 1, 2, 3, 4]  # first 2 negatives, first 3 positives
  for seed in range(5):  # the default also sorts positives; only negatives vary with seed
    kept = roc.resample_on_correct(rewards, p_err, np.zeros(10), 5, seed)
    assert [i for i in kept if rewards[i] > 0] == [1, 2, 4]


def test_resample_on_correct_is_deterministic_per_seed():
  rng = np.random.default_rng(3)
  rewards = (rng.random(32) < 0.6).astype(float)
  p_err, p_format = rng.random(32), rng.random(32)
  for mode in (None, "paper"):
    draws = [tuple(roc.resample_on_correct(rewards, p_err, p_format, 16, s, mode))
             for s in range(10)]
    again = [tuple(roc.resample_on_correct(rewards, p_err, p_format, 16, s, mode))
             for s in range(10)]
    assert draws == again
    assert len(set(draws)) > 1, mode
  np.testing.assert_array_equal(
      roc.resample_on_correct(rewards, p_err, p_format, 16, (7, 3), "paper"),
      roc.resample_on_correct(rewards, p_err, p_format, 16, roc.group_seed(7, 3), "paper"))
  code = {tuple(roc.resample_on_correct(rewards, p_err, p_format, 16, s, "code"))
          for s in range(5)}
  assert len(code) == 1


def _successive_sampling_probabilities(weights, k):
  """Exact P(subset) for k sequential draws without replacement, each draw ∝ weight."""
  probs = {}
  for order in itertools.permutations(range(len(weights)), k):
    p, remaining = 1.0, float(sum(weights))
    for i in order:
      p *= weights[i] / remaining
      remaining -= weights[i]
    key = tuple(sorted(order))
    probs[key] = probs.get(key, 0.0) + p
  return probs


def test_resample_on_correct_paper_matches_exact_successive_sampling():
  # 5 positives with p_total 0, 0.25, 0.5, 1, 1.5 (weights 100, 3.85, 1.96, 0.99, 0.66) and
  # 3 negatives; keep 4 of 8: the paper takes floor(3·4/8) = 1 negative and 3 positives.
  p_total = [0.0, 0.25, 0.5, 1.0, 1.5, 0.0, 0.0, 0.0]
  rewards = np.array([1.0] * 5 + [0.0] * 3)
  exact = _successive_sampling_probabilities([1 / (p + 0.01) for p in p_total[:5]], 3)
  counts = {}
  num_draws = 20000
  for seed in range(num_draws):
    kept = roc.resample_on_correct(rewards, np.array(p_total), np.zeros(8), 4, seed, "paper")
    positives = tuple(int(i) for i in kept if i < 5)
    counts[positives] = counts.get(positives, 0) + 1
  assert set(counts) <= set(exact)
  for subset, p in exact.items():
    # Binomial standard error below 0.0036; allow 4 of them.
    assert abs(counts.get(subset, 0) / num_draws - p) < 0.015, (subset, p)


def test_resample_on_correct_paper_keeps_penalized_positives_less_often():
  # 24 positives in 4 penalty levels of 6, 8 negatives; keep 16 (paper: 4 neg, 12 pos).
  p_total = np.repeat([0.0, 0.25, 0.5, 1.5], 6).tolist() + [0.0] * 8
  rewards = np.array([1.0] * 24 + [0.0] * 8)
  rate = np.zeros(32)
  num_draws = 3000
  for seed in range(num_draws):
    rate[roc.resample_on_correct(rewards, np.array(p_total), np.zeros(32), 16, seed,
                                 "paper")] += 1 / num_draws
  level = rate[:24].reshape(4, 6).mean(axis=1)
  assert level[0] > level[1] > level[2] > level[3]
  assert level[0] > 0.95 and level[3] < 0.2
  np.testing.assert_allclose(rate[24:], 0.5, atol=0.05)  # negatives: 4 of 8, uniformly


def test_resample_on_correct_penalty_switches_select_terms():
  rewards = np.array([1.0] * 4 + [0.0] * 4)
  p_err = np.array([1.0, 0.0, 0.5, 0.0, 0, 0, 0, 0])
  p_format = np.array([0.0, 1.0, 0.0, 0.5, 0, 0, 0, 0])
  both = roc.RoCConfig.preset("code")
  assert roc.resample_on_correct(rewards, p_err, p_format, 4, 0, both).tolist() == [
      2, 3, 4, 5]
  no_err = roc.RoCConfig.preset("code", use_error_penalty=False)
  assert roc.resample_on_correct(rewards, p_err, p_format, 4, 0, no_err).tolist() == [
      0, 2, 4, 5]
  no_fmt = roc.RoCConfig.preset("code", use_format_penalty=False)
  assert roc.resample_on_correct(rewards, p_err, p_format, 4, 0, no_fmt).tolist() == [
      1, 3, 4, 5]


def test_presets_set_the_documented_pieces():
  assert roc.RoCConfig.preset() == roc.RoCConfig(
      count_rule="code", pos_select="sort", neg_select="uniform", err_detect="structured",
      format_turns="all", format_tags="balanced")
  paper = roc.RoCConfig.preset("paper")
  assert (paper.count_rule, paper.pos_select, paper.neg_select, paper.format_tags) == (
      "paper", "inverse_weight", "uniform", "open")
  code = roc.RoCConfig.preset("code", neg_select="uniform")
  assert (code.err_detect, code.format_turns, code.neg_select) == (
      "substring", "response", "uniform")
  assert roc.RoCConfig.preset(code) == code
  assert roc.RoCConfig.preset(code, eps=0.1) == roc.RoCConfig(**{
      **code.__dict__, "eps": 0.1})


@pytest.mark.parametrize("call, message", [
    (lambda: roc.RoCConfig.preset("dapo"), "mode"),
    (lambda: roc.RoCConfig.preset(None, min_negatives=2), "min_negatives"),
    (lambda: roc.RoCConfig(count_rule="floor"), "count_rule"),
    (lambda: roc.RoCConfig(eps=0.0), "eps"),
    (lambda: roc.RoCConfig(min_pos=1.5), "min_pos"),
    (lambda: roc.RoCConfig(use_error_penalty=1), "use_error_penalty"),
    (lambda: roc.resample_on_correct(np.ones(4), np.zeros(3), np.zeros(3), 2, 0), "p_err"),
    (lambda: roc.resample_on_correct(np.ones(4), np.zeros(4), np.zeros(3), 2, 0), "p_format"),
    (lambda: roc.resample_on_correct(np.ones(4), -np.ones(4), np.zeros(4), 2, 0), ">= 0"),
    (lambda: roc.resample_on_correct(np.ones((2, 2)), np.zeros(4), np.zeros(4), 2, 0),
     "rewards"),
    (lambda: roc.resample_on_correct([1.0, np.nan], [0, 0], [0, 0], 1, 0), "finite"),
    (lambda: roc.resample_on_correct(np.ones(4), np.zeros(4), np.zeros(4), 0, 0), "keep"),
    (lambda: roc.resample_on_correct(np.ones(4), np.zeros(4), np.zeros(4), 2, -1), "seed"),
    (lambda: roc.resample_on_correct(np.ones(4), np.zeros(4), np.zeros(4), 2, 1.5), "seed"),
])
def test_bad_arguments_raise_value_errors_naming_them(call, message):
  with pytest.raises(ValueError, match=message):
    call()
