"""The stage-3 hard-problem filter with a seeded solver as the policy.

  python -m pytest -q tests/data_hard_filter_test.py
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rstar_jax import data
from rstar_jax import rewards

# The solver's chance of a correct answer by synthetic difficulty level.
SUCCESS = {1: 1.0, 2: 0.9, 3: 0.0}


class SeededSolver:
  """A deterministic stand-in policy: answers correctly with a per-problem probability.

  Sample k of problem p answers right when Draw(seed, p.id, k) < SUCCESS[level], else
  writes 2a+1 for the answer a; the project's reward function scores the response.
  """

  def __init__(self, seed=0):
    self.seed = seed
    self.calls = []

  def response(self, problem, k):
    correct = data.Draw(self.seed, problem.id, k).uniform() < SUCCESS[problem.meta["level"]]
    value = int(problem.answer) if correct else 2 * int(problem.answer) + 1
    return f"I solved it.</reason>\n<answer>\\boxed{{{value}}}</answer><|im_end|>"

  def __call__(self, problems, n):
    self.calls.append([p.id for p in problems])
    return [[rewards.score(self.response(p, k), p.answer) for k in range(n)] for p in problems]


def _problems():
  return [item.problem for item in data.synthetic_problems(0, "train", 30)]


def test_drops_problems_solved_n_of_n_and_writes_kept_set_with_stats(tmp_path):
  problems, solver = _problems(), SeededSolver()
  stats = data.filter_hard_problems(problems, solver, 8, tmp_path / "hard.jsonl", chunk_size=7)
  rewards = np.asarray(SeededSolver()(problems, 8))
  num_correct = rewards.sum(axis=1).astype(int)
  expected = [p.id for p, c in zip(problems, num_correct) if c < 8]
  levels = [p.meta["level"] for p in problems]
  assert all(c == 8 for c, level in zip(num_correct, levels) if level == 1)
  assert all(c == 0 for c, level in zip(num_correct, levels) if level == 3)
  assert 0 < sum(c == 8 for c, level in zip(num_correct, levels) if level == 2) < 10

  kept, _ = data.read_source(f"problems:{tmp_path / 'hard.jsonl'}", "f")
  assert [p.id for p in kept] == expected
  assert kept == [p for p in problems if p.id in expected]  # answers, meta kept verbatim
  rows = [json.loads(line) for line in (tmp_path / "hard.jsonl").read_text().splitlines()]
  assert [r["num_correct"] for r in rows] == [int(c) for c in num_correct if c < 8]

  assert json.loads((tmp_path / "hard.stats.json").read_text()) == stats
  assert stats["num_problems"] == 30 and stats["num_samples"] == 8
  assert stats["num_kept"] == len(expected) == 30 - stats["num_dropped_solved"]
  assert stats["num_correct_histogram"] == {str(c): int((num_correct == c).sum()) for c in range(9)}
  assert stats["mean_reward"] == pytest.approx(rewards.mean())
  assert stats["per_source"] == {"synthetic": {"problems": 30, "kept": len(expected),
                                               "mean_reward": pytest.approx(rewards.mean())}}
  assert [len(c) for c in solver.calls] == [7, 7, 7, 7, 2]
  assert not (tmp_path / "hard.jsonl.progress.jsonl").exists()


def test_an_interrupted_filter_resumes_where_it_stopped(tmp_path):
  problems = _problems()
  data.filter_hard_problems(problems, SeededSolver(), 8, tmp_path / "full/hard.jsonl", chunk_size=8)

  def interrupted(chunk, n):
    if chunk[0].id != problems[0].id:
      raise KeyboardInterrupt
    return SeededSolver()(chunk, n)

  with pytest.raises(KeyboardInterrupt):
    data.filter_hard_problems(problems, interrupted, 8, tmp_path / "run/hard.jsonl", chunk_size=8)
  assert len((tmp_path / "run/hard.jsonl.progress.jsonl").read_text().splitlines()) == 8
  solver = SeededSolver()
  data.filter_hard_problems(problems, solver, 8, tmp_path / "run/hard.jsonl", chunk_size=8)
  assert solver.calls[0][0] == problems[8].id
  for name in ("hard.jsonl", "hard.stats.json"):
    full = (tmp_path / "full" / name).read_text().replace("full", "run")
    assert (tmp_path / "run" / name).read_text() == full


def drawn_rewards(problems, n):
  """A cheap deterministic policy: reward 1 with the SeededSolver's chances, without scoring."""
  return [[float(data.Draw(0, p.id, k).uniform() < SUCCESS[p.meta["level"]]) for k in range(n)]
          for p in problems]


def _outputs(directory):
  return {name: (directory / name).read_text().replace(str(directory), "DIR")
          for name in ("hard.jsonl", "hard.stats.json")}


def test_a_filter_killed_with_sigkill_resumes_from_its_finished_chunks(tmp_path):
  problems = _problems()
  data.filter_hard_problems(problems, drawn_rewards, 8, tmp_path / "full/hard.jsonl", chunk_size=8)
  # A child process runs the filter; its policy blocks in the third chunk, and the child is killed.
  child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
      import sys, time
      sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
      import data_hard_filter_test as t
      def policy(chunk, n):
        if chunk[0].id == t._problems()[16].id:
          print("blocked", flush=True)
          time.sleep(600)
        return t.drawn_rewards(chunk, n)
      t.data.filter_hard_problems(t._problems(), policy, 8, {str(tmp_path / "run/hard.jsonl")!r},
                                  chunk_size=8)
      """)], stdout=subprocess.PIPE, text=True, cwd=pathlib.Path(__file__).parents[1])
  try:
    assert child.stdout.readline() == "blocked\n"
  finally:
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
  progress = tmp_path / "run/hard.jsonl.progress.jsonl"
  assert len(progress.read_text().splitlines()) == 16  # two chunks, flushed and synced
  calls = []
  data.filter_hard_problems(problems, lambda c, n: calls.append(c[0].id) or drawn_rewards(c, n),
                            8, tmp_path / "run/hard.jsonl", chunk_size=8)
  assert calls == [problems[16].id, problems[24].id]
  assert _outputs(tmp_path / "run") == _outputs(tmp_path / "full")
  assert not progress.exists()


def test_a_partial_last_line_is_dropped_and_its_problems_run_again(tmp_path):
  problems = _problems()
  data.filter_hard_problems(problems, drawn_rewards, 8, tmp_path / "full/hard.jsonl", chunk_size=8)
  progress = tmp_path / "run/hard.jsonl.progress.jsonl"

  def interrupted(chunk, n):
    if chunk[0].id == problems[16].id:
      raise KeyboardInterrupt
    return drawn_rewards(chunk, n)

  with pytest.raises(KeyboardInterrupt):
    data.filter_hard_problems(problems, interrupted, 8, tmp_path / "run/hard.jsonl", chunk_size=8)
  # What a kill in the middle of the second chunk's write leaves: 13 rows and half of the 14th.
  lines = progress.read_bytes().splitlines(keepends=True)
  progress.write_bytes(b"".join(lines[:13]) + lines[13][:len(lines[13]) // 2])
  calls = []
  data.filter_hard_problems(problems, lambda c, n: calls.append(c[0].id) or drawn_rewards(c, n),
                            8, tmp_path / "run/hard.jsonl", chunk_size=8)
  assert calls == [problems[13].id, problems[21].id, problems[29].id]  # from the cut row on
  assert _outputs(tmp_path / "run") == _outputs(tmp_path / "full")


def test_a_bad_progress_line_is_an_error_naming_file_and_line(tmp_path):
  progress = tmp_path / "hard.jsonl.progress.jsonl"
  row = {"id": _problems()[0].id, "num_samples": 8, "num_correct": 1, "mean_reward": 0.125}
  progress.write_text(json.dumps(row) + "\n{not json\n" + json.dumps(row) + "\n")
  message = r"hard\.jsonl\.progress\.jsonl' line 2 is not a progress row"
  with pytest.raises(ValueError, match=message):
    data.filter_hard_problems(_problems(), drawn_rewards, 8, tmp_path / "hard.jsonl")


def test_progress_of_another_run_is_rejected(tmp_path):
  problems = _problems()
  progress = tmp_path / "hard.jsonl.progress.jsonl"
  progress.write_text(json.dumps({"id": "other", "num_samples": 8, "num_correct": 1,
                                  "mean_reward": 0.1}) + "\n")
  with pytest.raises(ValueError, match="another filter run"):
    data.filter_hard_problems(problems, SeededSolver(), 8, tmp_path / "hard.jsonl")


def test_rewards_of_the_wrong_shape_are_an_error(tmp_path):
  with pytest.raises(ValueError, match=r"shape \(3, 4\), expected \(3, 8\)"):
    data.filter_hard_problems(_problems()[:3], lambda p, n: np.zeros((3, 4)), 8,
                              tmp_path / "hard.jsonl")
  with pytest.raises(ValueError, match="num_samples must be a positive integer, got 0"):
    data.filter_hard_problems(_problems(), SeededSolver(), 0, tmp_path / "hard.jsonl")
