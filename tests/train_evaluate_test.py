"""Evaluation statistics against hand counts: pass@k, tool-error ratios of all and of correct
rollouts, finish reasons; the in-process sandbox with config.sandbox's limits."""
import asyncio
import signal

import numpy as np
import pytest

from rstar_jax import chat
from rstar_jax import rl
from rstar_jax import rollout
from rstar_jax.train import evaluate


def test_pass_at_k_is_the_unbiased_estimator():
  # n = 4 samples: c = 1 correct gives pass@1 = 1/4, pass@2 = 1 - C(3,2)/C(4,2) = 1/2, pass@4 = 1
  assert evaluate.pass_at_k(np.array([1]), 4, 1) == pytest.approx(0.25)
  assert evaluate.pass_at_k(np.array([1]), 4, 2) == pytest.approx(0.5)
  assert evaluate.pass_at_k(np.array([1, 0]), 4, 4) == pytest.approx(0.5)  # mean over problems
  with pytest.raises(ValueError, match="k must be in"):
    evaluate.pass_at_k(np.array([1]), 4, 5)


def _rollout(statuses, finish="stop", response_len=10):
  ids = np.arange(4 + response_len, dtype=np.int32)
  mask = np.r_[np.zeros(4), np.ones(response_len)].astype(np.int32)
  record = rl.RolloutRecord(tuple(statuses), len(statuses) + 1, "<answer>\\boxed{1}</answer>")
  return rollout.AgentRollout(chat.Trajectory(ids, mask, 4), np.zeros(len(ids), np.float32), record, finish)


def test_rollout_stats_count_errors_overall_and_among_correct_rollouts():
  groups = [[_rollout(["ok"]), _rollout(["runtime_error", "ok"])],
            [_rollout([], "length", 20), _rollout(["timeout", "timeout"])]]
  scores = np.array([[1.0, 1.0], [0.0, 0.0]])
  stats = evaluate.rollout_stats(groups, scores, "x/")
  assert stats["x/tool_calls_mean"] == (1 + 2 + 0 + 2) / 4
  assert stats["x/tool_error_ratio"] == 3 / 5  # runtime_error + 2 timeouts of 5 calls
  assert stats["x/positive_tool_error_ratio"] == 1 / 3  # correct rollouts: 1 error in 3 calls
  assert stats["x/no_tool_fraction"] == 0.25 and stats["x/truncated_fraction"] == 0.25
  assert stats["x/finish/stop"] == 0.75 and stats["x/response_tokens_max"] == 20


def test_a_cpu_limit_under_a_loose_wall_clock_ends_busy_runs_not_sleeping_ones():
  """The RL job's in-process pool with config.sandbox cpu_s=1, timeout_s=30 (`evaluate.tools_for`,
  `evaluate.sandbox_limits`):
  a busy loop ends on its CPU limit (SIGXCPU, which a pid 1 ignores, then SIGKILL at the hard
  limit: an exit code, where the parent's wall-clock kill leaves none), and a run that sleeps past
  1 s of wall time, using no CPU, finishes."""
  async def go():
    async with evaluate.tools_for("", 1, limits=evaluate.sandbox_limits(timeout_s=30.0, cpu_s=1)) as tools:
      return await asyncio.gather(tools.run("print('start', flush=True)\nwhile True:\n  pass\n"),
                                  tools.run("import time\ntime.sleep(1.5)\nprint('slept')"))
  busy, sleepy = asyncio.run(go())
  assert (busy.status, busy.exit_code, busy.stdout) == ("timeout", -signal.SIGKILL, "start\n")
  assert (sleepy.status, sleepy.stdout) == ("ok", "slept\n")
