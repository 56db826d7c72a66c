"""Seeded comparisons of the GRPO-RoC maths against plain-Python ports of the released code, over
many random groups (not only hand examples).

The ports below are written from PAPER.md §5.3 (rStar@ecbfb94 `down_sample/roc.py`:
`resample_of_correct`, `calc_error_ratio_penalty_weights`, `calc_format_penalty_weights`),
§5.5 (J-shang/verl@d0dc976 `compute_grpo_outcome_advantage`) and §6 (`compute_policy_loss_vanilla`
with the dual clip), in the loop-and-list style of the originals, and compared with `rl` in its
"code" preset on thousands of seeded random cases.
  python -m pytest -q tests/rl_reference_test.py
"""
import math
import re

import numpy as np
import pytest

from rstar_jax import rl

# ------------------------------------------------------------------ the ports


def released_error_penalty(text):
  blocks = re.findall(r"<tool_response>.*?</tool_response>", text, re.DOTALL)
  if not blocks:
    return 0.5
  return len([b for b in blocks if "error" in b.lower()]) / len(blocks)


def released_format_penalty(text):
  if "<answer>" not in text or "</answer>" not in text:
    return 1.0
  closed = len(re.findall(r"<answer>.*?</answer>", text, re.DOTALL))
  if text.count("<answer>") != closed or text.count("</answer>") != closed:
    return 1.0
  turns = len(re.findall(r"<\|im_start\|>assistant.*?<\|im_end\|>", text, re.DOTALL))
  if turns == 0:
    return 1.0
  return min((closed - 1) / turns, 1.0)


def released_roc(rewards, penalties, keep, min_neg=2, min_pos=2):
  """Kept indices of one group: positives sorted by penalty (stable), negatives in rollout order."""
  n = len(rewards)
  if n < keep:
    return []
  if n == keep:
    return list(range(n))
  negatives = [i for i in range(n) if rewards[i] <= 0]
  positives = sorted([i for i in range(n) if rewards[i] > 0], key=lambda i: penalties[i])
  k_neg = round(len(negatives) * keep / n)
  k_pos = round(len(positives) * keep / n)
  if k_neg <= min(min_neg, len(negatives)):
    k_neg = min(min_neg, len(negatives))
    k_pos = keep - k_neg
  if k_pos <= min(min_pos, len(positives)):
    k_pos = min(min_pos, len(positives))
    k_neg = keep - k_pos
  chosen = positives[:k_pos] + negatives[:k_neg]
  assert len(chosen) == keep
  return sorted(chosen)


def released_advantages(rewards, epsilon=1e-6):
  n = len(rewards)
  if n == 1:
    mean, std = 0.0, 1.0
  else:
    mean = sum(rewards) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (n - 1))
  return [(r - mean) / (std + epsilon) for r in rewards]


def released_token_loss(logp, old_logp, advantage, eps_low=0.2, eps_high=0.28, clip_c=3.0):
  ratio = math.exp(max(-20.0, min(20.0, logp - old_logp)))
  loss1 = -advantage * ratio
  loss2 = -advantage * min(max(ratio, 1 - eps_low), 1 + eps_high)
  clipped = max(loss1, loss2)
  if advantage < 0:
    clipped = min(clipped, -advantage * clip_c)
  return clipped


# ------------------------------------------------------------------ random cases

_BLOCKS = ["Tool call success\nstdout: 42\n", "Tool call failure\nreason: \nstderr: NameError: x\n",
           "Tool call failure\nreason: worker_timeout\n", "Failed to decode tool call: Expecting value",
           "stdout: relative error 0.1\n", "Error when executing tool: 'X'"]


def _random_response(rng):
  parts = []
  for _ in range(rng.integers(0, 4)):
    parts.append("<reason>r</reason>\n<tool_call>\n{}\n</tool_call><|im_end|><|im_start|>user\n<tool_response>\n"
                 + _BLOCKS[rng.integers(len(_BLOCKS))] + "\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
  answers = rng.choice(["", "<answer>\\boxed{1}</answer>", "<answer>1</answer><answer>2</answer>",
                        "<answer>open", "x</answer>"])
  return "".join(parts) + "<reason>done</reason>\n" + answers + "<|im_end|>"


def test_code_preset_penalties_equal_the_released_ones_on_random_responses():
  rng = np.random.default_rng(0)
  for _ in range(2000):
    text = _random_response(rng)
    record = rl.RolloutRecord((), 1, text)
    assert rl.error_penalty(record, "substring") == released_error_penalty(text), text
    assert rl.format_penalty(record, "response", "balanced") == released_format_penalty(text), text


@pytest.mark.parametrize("n, keep", [(32, 16), (16, 8), (8, 4), (4, 4), (3, 4)])
def test_code_preset_roc_keeps_what_the_released_rule_keeps(n, keep):
  rng = np.random.default_rng(n * 100 + keep)
  for case in range(3000):
    rewards = (rng.random(n) < rng.random()).astype(np.float64)
    # penalties on a coarse grid, so that ties (resolved by rollout order) are frequent
    p_err = rng.integers(0, 3, n) / 2.0
    p_format = rng.integers(0, 2, n) * 1.0
    expected = released_roc(rewards, p_err + p_format, keep)
    kept = rl.resample_on_correct(rewards, p_err, p_format, keep, seed=case, mode="code")
    assert kept.tolist() == expected, (rewards, p_err + p_format)


def test_group_advantages_equal_the_released_grpo_advantages():
  rng = np.random.default_rng(1)
  for _ in range(500):
    n = int(rng.integers(1, 17))
    rewards = rng.integers(0, 2, n).astype(np.float64) * rng.choice([1.0, 0.5])
    got = np.asarray(rl.group_advantages(rewards[None]))[0]
    np.testing.assert_allclose(got, released_advantages(rewards.tolist()), rtol=1e-6, atol=1e-6)  # fp32


def test_token_loss_equals_the_released_dual_clip_loss():
  rng = np.random.default_rng(2)
  logp = rng.normal(-2.0, 1.0, (64, 32))
  old_logp = logp + rng.normal(0.0, 0.4, logp.shape)
  advantages = rng.normal(0.0, 1.5, 64)
  got = np.asarray(rl.token_policy_loss(logp, old_logp, advantages, eps_low=0.2, eps_high=0.28, dual_clip=3.0))
  expected = [[released_token_loss(logp[b, t], old_logp[b, t], advantages[b]) for t in range(32)] for b in range(64)]
  np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-6)  # fp32
