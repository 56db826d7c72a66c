"""Curriculum stages from config: records, stage of a step, validation messages.

  python -m pytest -q tests/data_curriculum_test.py
"""
import ml_collections
import pytest

from rstar_jax import data

# PAPER.md §7: 300 + 85 + 125 steps, 8K -> 12K -> 12K, T 10/10/15, stage 3 filtered + reset.
PAPER_STAGES = [
    dict(name="stage1", train_files=["problems:rl42k.jsonl"], max_response_tokens=8192,
         max_turns=10, steps=300),
    dict(name="stage2", train_files=["problems:rl42k.jsonl"], max_response_tokens=12288,
         max_turns=10, steps=85),
    dict(name="stage3", train_files=["problems:rl42k.jsonl"], max_response_tokens=12288,
         max_turns=15, steps=125, reset_optimizer=True, hard_filter_samples=8),
]


def test_paper_stages_become_records_with_step_ranges():
  curriculum = data.curriculum_from_config(PAPER_STAGES)
  assert curriculum.total_steps == 510
  s1, s2, s3 = curriculum.stages
  assert (s1.first_step, s1.end_step, s2.first_step, s3.first_step, s3.end_step) == (0, 300, 300, 385, 510)
  assert (s1.reset_optimizer, s1.hard_filter_samples) == (False, 0)
  assert s2.reset_optimizer is False
  assert (s3.max_turns, s3.reset_optimizer, s3.hard_filter_samples) == (15, True, 8)
  assert s3.train_files == ("problems:rl42k.jsonl",) and s3.field == "config.data.stages[2]"


@pytest.mark.parametrize("step, name", [(0, "stage1"), (299, "stage1"), (300, "stage2"),
                                        (384, "stage2"), (385, "stage3"), (509, "stage3")])
def test_stage_at_returns_the_stage_of_a_global_step(step, name):
  assert data.curriculum_from_config(PAPER_STAGES).stage_at(step).name == name


def test_reset_steps_are_the_first_steps_of_resetting_stages():
  assert data.curriculum_from_config(PAPER_STAGES).reset_steps() == (385,)  # 300 + 85
  every = [dict(s, reset_optimizer=True) for s in PAPER_STAGES]
  assert data.curriculum_from_config(every).reset_steps() == (300, 385)  # step 0 is fresh anyway
  never = [dict(s, reset_optimizer=False) for s in PAPER_STAGES]
  assert data.curriculum_from_config(never).reset_steps() == ()


def test_stage_at_rejects_steps_outside_the_curriculum():
  curriculum = data.curriculum_from_config(PAPER_STAGES)
  with pytest.raises(ValueError, match=r"step must be an integer in \[0, 510\), got 510"):
    curriculum.stage_at(510)


def test_config_dict_stages_are_accepted():
  config = ml_collections.ConfigDict({"data": {"stages": [ml_collections.ConfigDict(s)
                                                          for s in PAPER_STAGES]}})
  assert data.curriculum_from_config(config.data.stages).total_steps == 510


def _with(index, **changes):
  stages = [dict(s) for s in PAPER_STAGES]
  for key, value in changes.items():
    if value is None:
      del stages[index][key]
    else:
      stages[index][key] = value
  return stages


@pytest.mark.parametrize("stages, message", [
    (_with(1, steps=0), r"config\.data\.stages\[1\]\.steps=0: must be a positive integer"),
    (_with(0, max_turns=True), r"config\.data\.stages\[0\]\.max_turns=True: must be a positive integer"),
    (_with(0, warmup_steps=20), r"stages\[0\]\.warmup_steps: not a stage setting; .*optim\.warmup_steps"),
    (_with(2, reset_optimizer=1), r"stages\[2\]\.reset_optimizer=1: must be a bool"),
    (_with(0, max_turn=5), r"stages\[0\]\.max_turn: unknown key"),
    (_with(1, steps=None), r"stages\[1\]\.steps: missing \(required\)"),
    (_with(0, train_files="problems:x.jsonl"), r"stages\[0\]\.train_files='problems:x.jsonl': must be a non-empty list"),
    (_with(2, name="stage1"), r"stages\[2\]\.name='stage1': already used by config\.data\.stages\[0\]"),
    (_with(0, hard_filter_samples=2.5), r"stages\[0\]\.hard_filter_samples=2.5"),
    ([], r"config\.data\.stages=\[\]: must be a non-empty list"),
    (["stage1"], r"config\.data\.stages\[0\]='stage1': expected a dict"),
])
def test_bad_stage_config_names_key_path_and_value(stages, message):
  with pytest.raises(ValueError, match=message):
    data.curriculum_from_config(stages)
