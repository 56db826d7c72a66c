"""The synthetic task: deterministic problems, disjoint splits, truthful snippets.

  python -m pytest -q tests/data_synthetic_test.py
"""
import collections
import pathlib
import subprocess
import sys

import pytest

from rstar_jax import data
from rstar_jax.train import config_lib
from rstar_jax.data import synthetic


def test_reference_answers_match_hand_counts():
  assert synthetic._multiples(100, (3, 5)) == 47          # 33 + 20 - 6
  assert synthetic._multiples(30, (2, 3, 5)) == 22        # 30 minus the 8 coprime to 30: 1, 7, ..., 29
  assert synthetic._digit_sum_count(100, 1) == 3          # 1, 10, 100
  assert synthetic._digit_sum_count(99, 18) == 1          # 99
  assert synthetic._divisor_sum(12) == 28                 # 1+2+3+4+6+12
  assert synthetic._divisor_sum(1000) == 2340             # (1+2+4+8)(1+5+25+125)
  assert synthetic._divisor_sum(97) == 98
  assert len(synthetic._primes_below(100)) == 25


def test_same_seed_gives_identical_problems_on_any_platform():
  first = data.synthetic_problems(0, "train", 40)
  assert first == data.synthetic_problems(0, "train", 40)
  assert first != data.synthetic_problems(1, "train", 40)
  # SHA-256 draws: the same text everywhere (581 * 311 = 180691 by hand).
  assert (first[0].problem.problem, first[0].problem.answer) == ("What is 581 * 311?", "180691")
  assert first[0].problem.id == "synthetic/train/000000"
  assert first[0].problem.meta == {"family": "product", "level": 1}


def test_families_and_levels_are_balanced():
  items = data.synthetic_problems(3, "train", 45)
  counts = collections.Counter((i.problem.meta["family"], i.problem.meta["level"]) for i in items)
  assert counts == {(f, level): 3 for f in data.FAMILIES for level in data.LEVELS}


def test_splits_never_share_a_problem_text():
  evaluation = data.synthetic_problems(0, "eval", 150)
  taken = frozenset(i.problem.problem for i in evaluation)
  train = data.synthetic_problems(0, "train", 600, exclude=taken)
  assert not taken & {i.problem.problem for i in train}
  assert len({i.problem.problem for i in train}) == 600
  # An excluded text is redrawn.
  base = data.synthetic_problems(0, "train", 1)[0].problem.problem
  assert data.synthetic_problems(0, "train", 1, exclude=frozenset([base]))[0].problem.problem != base


def _default_synthetic_config():
  path = pathlib.Path(__file__).parents[1] / "experiments" / "tiny.py"
  return config_lib.load_module(str(path)).get_config().data.synthetic


def test_task_splits_are_pairwise_disjoint_at_the_default_sizes():
  # Seed 0 at 2000 train / 480 SFT drew 2 problems into both before SFT excluded train too.
  synthetic = _default_synthetic_config()
  splits = data.synthetic_splits(synthetic.seed, num_train=synthetic.num_train,
                                 num_eval=synthetic.num_eval, num_sft=synthetic.num_sft)
  texts = {name: [item.problem.problem for item in items] for name, items in splits.items()}
  assert {name: len(t) for name, t in texts.items()} == {
      "train": synthetic.num_train, "eval": synthetic.num_eval, "sft": synthetic.num_sft}
  every = texts["train"] + texts["eval"] + texts["sft"]
  assert len(set(every)) == len(every)  # no text twice, within or across splits


def _run(code):
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
  return result.returncode, result.stdout.strip(), result.stderr


def test_snippets_print_the_answer_raise_or_compute_something_else():
  items = data.synthetic_problems(5, "eval", 15)  # one per family and level
  wrong = 0
  for item in items:
    code, out, err = _run(item.code)
    assert (code, out) == (0, item.problem.answer), (item.problem.problem, err)
    code, _, err = _run(item.broken_code)
    assert code != 0 and err.strip().splitlines()[-1].split(":")[0].endswith("Error"), item.broken_code
    code, out, err = _run(item.buggy_code)
    assert code == 0, err
    wrong += out != item.problem.answer
  assert wrong >= 13  # a buggy snippet can hit the answer by chance (e.g. small moduli)


@pytest.mark.parametrize("kwargs, message", [
    (dict(families=("algebra",)), "unknown family 'algebra'"),
    (dict(levels=(4,)), "unknown level 4"),
    (dict(count=-1), "count must be a non-negative integer"),
])
def test_bad_arguments_are_rejected(kwargs, message):
  kwargs = {"count": 3} | kwargs
  with pytest.raises(ValueError, match=message):
    data.synthetic_problems(0, "train", **kwargs)
