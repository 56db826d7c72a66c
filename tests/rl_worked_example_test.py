"""PAPER.md §5.4's worked example end to end: one prompt, 32 rollouts (25 correct, 7 wrong).

Rollout texts are built byte for byte in the §2.4 / §3.3 formats, measured by
`groups.rollout_penalties`, selected by `groups.select_groups` and checked against the
table of §5.4 (penalties, counts, code selection, advantages, paper-mode statistics).

Run: python -m pytest -q tests/rl_worked_example_test.py
"""
import numpy as np
import pytest

from rstar_jax.rl import advantages
from rstar_jax.rl import groups
from rstar_jax.rl import penalties
from rstar_jax.rl import roc

ENV = ("<|im_start|>user\n<tool_response>\n{}\n</tool_response><|im_end|>\n"
       "<|im_start|>assistant\n<reason>")
CALL = ('<tool_call>\n{"name": "python_code_with_standard_io", "arguments": '
        '{"code": "print(6*7)", "input": ""}}\n</tool_call>')
TOOL_TEXT = {
    "ok": "Tool call success\nstdout: 42\n\nexecution time: 0.00s",
    "runtime_error": ("Tool call failure\nreason: \nstdout: hi\n\nstderr: ZeroDivisionError: "
                      "division by zero\n\nexecution time: 0.03s"),
    "timeout": "Tool call failure\nreason: worker_timeout\nstdout: start\n\nexecution time: 4.01s",
}
ANSWER = "</reason>\n<answer>\nSo the answer is \\boxed{42}.\n</answer>"


def _record(statuses, answers_per_turn):
  """A rollout whose turn i ends with a call answered with statuses[i], then a final turn.

  answers_per_turn[i] is the answer blocks turn i writes (len(statuses) + 1 entries).
  """
  text = ""
  for status, num_answers in zip(statuses, answers_per_turn):
    text += "reasoning " + ANSWER * num_answers + CALL + "<|im_end|>" + ENV.format(
        TOOL_TEXT[status])
  final = answers_per_turn[-1]
  text += "checked " + (ANSWER * final if final else "\\boxed{42}") + "<|im_end|>"
  return penalties.RolloutRecord(tuple(statuses), len(statuses) + 1, text)


# kind: (count, record, paper p_total, code p_total), the rows of PAPER.md §5.4.
KINDS = {
    "clean": (9, _record(["ok"] * 3, [0, 0, 0, 1]), 0.0, 0.0),
    "one_error": (6, _record(["ok", "runtime_error", "ok", "ok"], [0, 0, 0, 0, 1]), 0.25, 0.25),
    "no_tool": (4, _record([], [1]), 0.5, 1.5),
    "two_answers": (3, _record(["ok", "ok"], [0, 1, 1]), 1 / 3, 0.5),
    "timeout_no_tag": (3, _record(["ok", "timeout"], [0, 0, 0]), 1.5, 1.0),
}
WRONG = _record(["ok", "runtime_error"], [0, 0, 1])
# A fixed interleaving of the 25 correct and 7 wrong rollouts.
ORDER = np.random.default_rng(0).permutation(
    [kind for kind, (count, *_) in KINDS.items() for _ in range(count)] + ["wrong"] * 7)
RECORDS = [WRONG if kind == "wrong" else KINDS[kind][1] for kind in ORDER]
REWARDS = np.array([[0.0 if kind == "wrong" else 1.0 for kind in ORDER]])


@pytest.mark.parametrize("mode, column", [("paper", 2), ("code", 3)])
def test_worked_example_penalties_match_table(mode, column):
  config = roc.RoCConfig.preset(mode)
  for kind, row in KINDS.items():
    record = row[1]
    p_total = (penalties.error_penalty(record, config.err_detect) +
               penalties.format_penalty(record, config.format_turns, config.format_tags))
    assert p_total == pytest.approx(row[column]), kind


def test_worked_example_default_penalties_equal_paper_values():
  pens = groups.rollout_penalties([RECORDS])
  paper = {kind: row[2] for kind, row in KINDS.items()}
  for n, kind in enumerate(ORDER):
    if kind != "wrong":
      assert pens.p_err[0, n] + pens.p_format[0, n] == pytest.approx(paper[kind]), kind


def test_worked_example_counts():
  assert roc.class_counts(7, 25, 16, "paper") == (3, 13)
  assert roc.class_counts(7, 25, 16, "code") == (4, 12)


def test_worked_example_code_keeps_clean_then_first_errors_and_first_negatives():
  selection = groups.select_groups(REWARDS, groups.rollout_penalties([RECORDS], "code"),
                                   16, 0, "code")
  kept = np.flatnonzero(selection.keep_mask[0])
  expected = (list(np.flatnonzero(ORDER == "clean")) +
              list(np.flatnonzero(ORDER == "one_error")[:3]) +
              list(np.flatnonzero(ORDER == "wrong")[:4]))
  assert kept.tolist() == sorted(expected)
  # Advantages over 12 positives and 4 negatives: mean 0.75, unbiased std 0.4472.
  adv = selection.advantages[0]
  np.testing.assert_allclose(adv[kept][REWARDS[0, kept] > 0], 0.559, atol=5e-4)
  np.testing.assert_allclose(adv[kept][REWARDS[0, kept] == 0], -1.677, atol=5e-4)


def test_worked_example_advantage_table():
  rows = [(13, 3, 0.465, -2.016), (12, 4, 0.559, -1.677), (10, 6, 0.75, -1.25)]
  for num_pos, num_neg, a_pos, a_neg in rows:
    adv = np.asarray(advantages.group_advantages(
        np.array([1.0] * num_pos + [0.0] * num_neg, np.float32)))
    np.testing.assert_allclose(adv[:num_pos], a_pos, atol=5e-4)
    np.testing.assert_allclose(adv[num_pos:], a_neg, atol=5e-4)


def test_worked_example_paper_mode_statistics_over_seeds():
  pens = groups.rollout_penalties([RECORDS], "paper")
  num_draws = 4000
  kinds_kept = {kind: 0 for kind in KINDS}
  all_clean = 0
  for seed in range(num_draws):
    kept = roc.resample_on_correct(REWARDS[0], pens.p_err[0], pens.p_format[0], 16, seed,
                                   "paper")
    kinds = ORDER[kept]
    assert (kinds == "wrong").sum() == 3
    for kind in KINDS:
      kinds_kept[kind] += (kinds == kind).sum()
    all_clean += (kinds == "clean").sum() == 9
  assert all_clean / num_draws == pytest.approx(0.99, abs=0.01)
  # PAPER.md §5.4 (2·10^5 draws): the 4 slots beside the clean rollouts hold on average
  # 2.15 from the 0.25 group, 0.85 two-answer, 0.80 no-tool and 0.21 from the 1.5 group.
  mean = {kind: count / num_draws for kind, count in kinds_kept.items()}
  for kind, expected in [("one_error", 2.15), ("two_answers", 0.85), ("no_tool", 0.80),
                         ("timeout_no_tag", 0.21)]:
    assert mean[kind] == pytest.approx(expected, abs=0.05), kind
  # Paper-mode advantages: 13 positives, 3 negatives in every draw.
  selection = groups.select_groups(REWARDS, pens, 16, 0, "paper")
  adv = selection.advantages[0][selection.keep_mask[0]]
  np.testing.assert_allclose(np.sort(np.unique(adv.round(3))), [-2.016, 0.465])
