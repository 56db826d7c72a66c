"""The reward API and the guarantees of its time-limited worker pool (rewards/pool.py).

Run: python -m pytest -q tests/rewards_scorer_test.py
Each pool test checks one claim of the pool's docstring on real worker processes; outcomes are
asserted (process gone, verdict, thread count), never durations.
"""
import asyncio
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time

import ml_collections
import pytest

from rstar_jax import chat
from rstar_jax import rewards

# A power tower sympy and math-verify cannot finish: verification runs into any time limit.
PATHOLOGICAL = "<answer>\\boxed{9^{9^{9^{9}}}}</answer>"
CORRECT = "<reason>6*7</reason>\n<answer>The answer is \\boxed{42}</answer><|im_end|>"


def _is_gone(pid: int) -> bool:
  """True if the process no longer exists or is a zombie awaiting its reaper."""
  try:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
  except FileNotFoundError:
    return True
  return "\nState:\tZ" in status


@pytest.fixture(scope="module")
def scorer():
  with rewards.Scorer(timeout_s=1.0) as shared:
    yield shared


def test_score_default_api_correct_wrong_truncated():
  assert rewards.score(CORRECT, "42") == 1.0
  assert rewards.score(CORRECT, "43") == 0.0
  assert rewards.score(CORRECT, "42", truncated=True) == 0.0  # zero_on_truncation by default


def test_rollout_text_with_special_tokens_and_tool_turns_scores_its_final_answer():
  # The text RolloutRecord.response_text holds: decoded with special tokens, environment turns in.
  tool_output = "Tool call success\nstdout: 42\n\nexecution time: 0.01s"
  first_turn = ("I compute 6*7.\n" + chat.tool_call_text("print(6*7)") + chat.IM_END +
                chat.tool_response_text([tool_output]))
  answered = first_turn + "So it is 42.</reason>\n<answer>\\boxed{42}</answer>" + chat.IM_END
  assert rewards.score(answered, "42") == 1.0
  assert rewards.score(answered, "41") == 0.0
  assert rewards.score(first_turn + "Hmm." + chat.IM_END, "42") == 0.0  # tool output is no answer
  assert rewards.score(first_turn + "The answer is \\boxed{4", "42") == 0.0


def test_truncation_rule_can_be_switched_off():
  with rewards.Scorer(zero_on_truncation=False) as lenient:
    result = lenient.result(CORRECT, "42", truncated=True)
  assert result == rewards.RewardResult(1.0, True, True, "42")


def test_result_reports_candidate_and_skips_verifying_truncated(scorer):
  assert scorer.result(CORRECT, "41") == rewards.RewardResult(0.0, False, False, "42")
  assert scorer.result(PATHOLOGICAL, "42", truncated=True) == rewards.RewardResult(
      0.0, False, True)


@pytest.mark.parametrize("timeout_s, expected", [(4.0, 3.5), (1.0, 0.875), (0.2, 0.175)])
def test_worker_deadline_is_below_the_hard_limit(timeout_s, expected):
  assert rewards.worker_timeout_s(timeout_s) == pytest.approx(expected)  # 7/8 of the limit


def test_slow_verification_stops_itself_and_keeps_its_worker():
  # The worker's own deadline (3.5 s) comes first: the call returns a value, no kill, no restart.
  with rewards.VerifierPool(num_workers=1, timeout_s=4.0) as pool:
    pool.start()
    (pid,) = pool.worker_pids()
    outcome = pool.verify(PATHOLOGICAL, "42")
    assert outcome == rewards.Outcome(False, timed_out=True)
    assert pool.worker_pids() == [pid] and not _is_gone(pid)
    assert pool.verify(CORRECT, "42").correct and pool.worker_pids() == [pid]


def test_worker_that_does_not_answer_is_killed_at_the_hard_limit():
  # A stopped worker stands for one stuck in a C call that no signal interrupts.
  with rewards.VerifierPool(num_workers=1, timeout_s=1.0) as pool:
    pool.start()
    (stuck,) = pool.worker_pids()
    os.kill(stuck, signal.SIGSTOP)
    assert pool.verify(CORRECT, "42") == rewards.Outcome(False, timed_out=True)
    assert pool.worker_pids() == [] and _is_gone(stuck)
    assert pool.verify(CORRECT, "42").correct  # a fresh worker serves the next call
    assert pool.worker_pids() not in ([], [stuck])


def test_stuck_verification_does_not_block_the_other_worker(scorer):
  results = {}

  def run(name, response):
    results[name] = scorer.result(response, "42")

  slow = threading.Thread(target=run, args=("slow", PATHOLOGICAL))
  slow.start()
  run("fast", CORRECT)  # the second worker answers while the first is stuck
  slow.join()
  assert results["fast"].score == 1.0 and results["slow"].timed_out


def test_calls_from_threads_leave_no_threads_behind(scorer):
  baseline = threading.active_count()
  outcomes = []
  threads = [threading.Thread(target=lambda r=r: outcomes.append(scorer.score(r, "42")))
             for r in (CORRECT, PATHOLOGICAL, CORRECT)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert sorted(outcomes) == [0.0, 1.0, 1.0]
  assert threading.active_count() == baseline


def test_ascore_from_asyncio_keeps_the_loop_running(scorer):
  baseline = threading.active_count()
  ticks = []

  async def ticker():
    for _ in range(3):
      ticks.append(None)
      await asyncio.sleep(0)

  async def main():
    return await asyncio.gather(scorer.ascore(CORRECT, "42"), scorer.ascore(PATHOLOGICAL, "42"),
                                ticker())

  correct, pathological, _ = asyncio.run(main())
  assert (correct, pathological, len(ticks)) == (1.0, 0.0, 3)
  assert threading.active_count() == baseline


def test_results_keep_input_order(scorer):
  responses = [f"<answer>\\boxed{{{n}}}</answer>" for n in range(6)]
  got = scorer.results(responses, ["3"] * 6, [False, False, False, False, False, True])
  assert [r.score for r in got] == [0, 0, 0, 1, 0, 0]
  assert [r.truncated for r in got] == [False] * 5 + [True]


def test_results_length_mismatch_raises(scorer):
  with pytest.raises(ValueError, match="one length"):
    scorer.results(["a"], ["1", "2"])


def test_worker_has_the_memory_limit():
  with rewards.VerifierPool(num_workers=1, memory_limit_mb=1536) as pool:
    pool.start()
    (pid,) = pool.worker_pids()
    limits = pathlib.Path(f"/proc/{pid}/limits").read_text()
  line = next(l for l in limits.splitlines() if l.startswith("Max address space"))
  assert line.split()[3:5] == [str(1536 * 2**20)] * 2


def test_memory_limit_fails_the_verification_not_the_caller():
  # A limit far below the worker's own size: the next large allocation fails.
  with rewards.VerifierPool(num_workers=1, memory_limit_mb=1) as pool:
    outcome = pool.verify(CORRECT + " pad" * 250_000, "42")
    assert not outcome.correct and not outcome.timed_out and outcome.error
    assert pool.verify(CORRECT, "42").correct  # the caller goes on; a dead worker is replaced


def test_close_stops_workers_and_refuses_calls():
  pool = rewards.VerifierPool(num_workers=2)
  pool.start()
  pids = pool.worker_pids()
  pool.close()
  assert len(pids) == 2 and all(_is_gone(pid) for pid in pids)
  with pytest.raises(RuntimeError, match="closed"):
    pool.verify(CORRECT, "42")
  pool.close()  # idempotent


def test_workers_exit_when_the_parent_dies(tmp_path):
  parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
      import sys, time
      from rstar_jax import rewards
      pool = rewards.VerifierPool(num_workers=2)
      pool.start()
      print(*pool.worker_pids(), flush=True)
      time.sleep(600)
      """)], stdout=subprocess.PIPE, text=True, cwd=pathlib.Path(__file__).parents[1])
  pids = [int(p) for p in parent.stdout.readline().split()]
  os.kill(parent.pid, signal.SIGKILL)
  parent.wait()
  deadline = time.monotonic() + 30  # the watchdog polls every second
  while not all(_is_gone(pid) for pid in pids) and time.monotonic() < deadline:
    time.sleep(0.2)
  assert len(pids) == 2 and all(_is_gone(pid) for pid in pids)


def test_reward_config_from_config_and_keyword_options():
  config = ml_collections.ConfigDict({"reward": {"scope": "answer_tag", "strict_integer": True,
                                                 "zero_on_truncation": False}})
  assert rewards.RewardConfig.from_config(config) == rewards.RewardConfig(
      scope="answer_tag", strict_integer=True, zero_on_truncation=False)
  assert rewards.RewardConfig.from_config({}) == rewards.RewardConfig()
  with rewards.Scorer.from_config(config) as scorer:
    assert scorer.config.scope == "answer_tag"
    assert scorer._pool.worker_pids() == []  # pylint: disable=protected-access  # lazy start


@pytest.mark.parametrize("options, field", [
    ({"scope": "answer"}, "reward.scope"),
    ({"strict_integer": "yes"}, "reward.strict_integer"),
    ({"zero_on_truncation": None}, "reward.zero_on_truncation"),
    ({"timeout_s": 0}, "reward.timeout_s"),
    ({"num_workers": 0}, "reward.num_workers"),
    ({"memory_limit_mb": -1}, "reward.memory_limit_mb"),
])
def test_bad_reward_option_names_the_field(options, field):
  with pytest.raises(ValueError, match=field):
    rewards.RewardConfig(**options)


def test_unknown_reward_key_raises():
  with pytest.raises(ValueError, match="unknown reward config keys \\['timeout'\\]"):
    rewards.RewardConfig.from_config({"reward": {"timeout": 3}})


@pytest.mark.parametrize("args, message", [
    ((b"bytes", "42"), "response must be a str"),
    (("x", ""), "answer must be a non-empty str"),
    (("x", 42), "answer must be a non-empty str"),
    (("x", "42", 1), "truncated must be a bool"),
])
def test_bad_score_arguments_raise(scorer, args, message):
  with pytest.raises(ValueError, match=message):
    scorer.score(*args)


def test_strict_integer_requires_integer_answer():
  with rewards.Scorer(strict_integer=True) as strict:
    with pytest.raises(ValueError, match="not an integer"):
      strict.score(CORRECT, "\\frac{1}{2}")


def test_verdicts_do_not_depend_on_the_special_tokens_being_kept(scorer):
  """We score the response decoded with special tokens kept; decoding without them (the released
  fallback, `skip_special_tokens=True`) gives the same verdict on every kind of agent response."""
  env = ("<|im_start|>user\n<tool_response>\nTool call success\nstdout: {out}\n\nexecution time: 0.01s\n"
         "</tool_response><|im_end|>\n<|im_start|>assistant\n<reason>")
  call = ("Compute it.</reason>\n<tool_call>\n{\"name\": \"python_code_with_standard_io\", \"arguments\": "
          "{\"code\": \"print(6 * 7)\", \"input\": \"\"}}\n</tool_call><|im_end|>")
  responses = [
      call + env.format(out="42") + "The code printed 42.</reason>\n<answer>\\boxed{42}</answer><|im_end|>",
      call + env.format(out="42") + "The code printed 41.</reason>\n<answer>\\boxed{41}</answer><|im_end|>",
      call + env.format(out="42"),  # no answer after the tool output
      "I will estimate.</reason>\n<answer>\\boxed{42}</answer><|im_end|>",
      "No tags, the answer is 42<|im_end|>",
      call + env.format(out="7") + "Done.</reason>\n<answer>\\boxed{7}</answer><|im_end|><|endoftext|>",
  ]
  for response in responses:
    stripped = response
    for token in chat.SPECIAL_TOKENS:
      stripped = stripped.replace(token, "")
    for answer in ("42", "41", "7"):
      assert scorer.score(response, answer) == scorer.score(stripped, answer), (response, answer)
