"""The agent loop with a real sandbox pool: turns, exact ids and masks, tool statuses, budgets,
turn limits; then with the real JAX engine (exact logprobs across turns) and as the policy-backed
rollout function of the stage-3 hard filter.

Most cases script the model's turns (`ScriptedEngine` returns given texts, cut at the request's
max_new_tokens), so every branch of the loop is reached; the engine itself is tested in
rollout_engine_test.py.
  python -m pytest -q tests/rollout_agent_test.py
"""
import asyncio
import json

import jax
import numpy as np
import pytest

from rstar_jax import chat
from rstar_jax import models
from rstar_jax import rewards
from rstar_jax import rl
from rstar_jax import rollout
from rstar_jax import sandbox
from rstar_jax.data import hard_filter
from rstar_jax.data import records

TOKENIZER = chat.CharTokenizer()
EOS = chat.IM_END
POOL = sandbox.PoolConfig(workers=1, jobs_per_worker=4, preload=(), warmup=False,
                          limits=sandbox.Limits(timeout_s=2.0))
PROMPT_IDS = TOKENIZER.encode(chat.prompt_text("What is 6 * 7?"))


class ScriptedEngine:
  """Turn t of every rollout returns turns[t] (cut at max_new_tokens); records the requests."""

  def __init__(self, turns):
    self.turns = [TOKENIZER.encode(t) for t in turns]
    self.requests = []

  async def generate(self, request):
    self.requests.append(request)
    turn = int(request.rid.rsplit("/t", 1)[1])
    ids = self.turns[turn][:request.sampling.max_new_tokens]
    stopped = ids[-1:] == [TOKENIZER.eos_id]
    finish = {"type": "stop", "matched": ids[-1]} if stopped else {
        "type": "length", "length": request.sampling.max_new_tokens}
    return rollout.GenerateResult(request.rid, np.array(ids, np.int32),
                                  np.full(len(ids), -0.5, np.float32), finish, len(request.input_ids))


class CountingTools:
  """The real pool, counting runs; `fail` makes every run raise as a dead sandbox service would."""

  def __init__(self, pool, fail=False):
    self.pool, self.fail, self.runs = pool, fail, 0

  async def run(self, source, stdin=""):
    self.runs += 1
    if self.fail:
      raise sandbox.SandboxUnavailableError("the sandbox service is unreachable")
    return await self.pool.run(source, stdin)


def _call(code, name=chat.TOOL_NAME):
  return ("<reason>compute</reason>\n<tool_call>\n" + json.dumps({"name": name, "arguments": {"code": code}})
          + "\n</tool_call>" + EOS)


ANSWER = "<reason>done</reason>\n<answer>\\boxed{42}</answer>" + EOS


def _run_scripted(turns, config=rollout.AgentConfig(max_response_length=2000), fail=False):
  engine = ScriptedEngine(turns)

  async def main():
    async with sandbox.Pool(POOL) as pool:
      tools = CountingTools(pool, fail)
      result = await rollout.run_agent(engine, tools, TOKENIZER, PROMPT_IDS, config, "p0/s0")
      return result, tools.runs

  result, runs = asyncio.run(main())
  return result, engine.requests, runs


def _segments(result):
  """The response split into its runs of equal mask: [(text, mask), ...]."""
  traj = result.trajectory
  ids, mask = traj.response_ids, traj.loss_mask[traj.prompt_len:]
  cuts = [0] + [i for i in range(1, len(ids)) if mask[i] != mask[i - 1]] + [len(ids)]
  return [(TOKENIZER.decode(ids[a:b]), int(mask[a])) for a, b in zip(cuts, cuts[1:])]


def test_a_tool_call_is_run_and_its_output_returned_as_an_environment_turn():
  result, requests, runs = _run_scripted([_call("print(6 * 7)"), ANSWER])
  (turn1, m1), (env, m0), (turn2, m2) = _segments(result)
  assert (turn1, turn2, m1, m0, m2) == (_call("print(6 * 7)"), ANSWER, 1, 0, 1)
  assert env.startswith("<|im_start|>user\n<tool_response>\nTool call success\nstdout: 42\n\nexecution time: ")
  assert env.endswith("s\n</tool_response><|im_end|>\n<|im_start|>assistant\n<reason>")
  assert result.finish_reason == "stop" and not result.truncated and runs == 1
  assert result.record == rl_record(("ok",), 2, result)
  # each turn is generated from exactly the ids so far, with the rest of the budget
  traj = result.trajectory
  assert requests[0].input_ids == PROMPT_IDS
  assert requests[1].input_ids == traj.token_ids[:len(traj.token_ids) - len(TOKENIZER.encode(ANSWER))].tolist()
  assert requests[1].sampling.max_new_tokens == 2000 - (len(requests[1].input_ids) - len(PROMPT_IDS))
  np.testing.assert_array_equal(result.sampler_logprobs, np.where(traj.loss_mask == 1, -0.5, 0.0))


def rl_record(statuses, turns, result):
  return rl.RolloutRecord(statuses, turns, TOKENIZER.decode(result.trajectory.response_ids))


@pytest.mark.parametrize("turn, status, text_start", [
    ("<reason>x</reason>\n<tool_call>\n{\"name\": oops}\n</tool_call>" + EOS, "parse_error",
     "Failed to decode tool call: Expecting value"),
    (_call("print(1)", name="WolframAlpha"), "tool_error", "Error when executing tool: 'WolframAlpha'"),
    (_call("1 / 0"), "runtime_error", "Tool call failure\nreason: "),
])
def test_failed_calls_answer_with_their_error_and_status(turn, status, text_start):
  result, _, runs = _run_scripted([turn, ANSWER])
  env = _segments(result)[1][0]
  assert env.startswith("<|im_start|>user\n<tool_response>\n" + text_start), env
  assert result.record.tool_statuses == (status,)
  assert runs == (1 if status == "runtime_error" else 0)


def test_a_sandbox_that_raises_answers_with_the_error_text():
  result, _, _ = _run_scripted([_call("print(1)"), ANSWER], fail=True)
  assert _segments(result)[1][0].startswith(
      "<|im_start|>user\n<tool_response>\nError when executing tool: the sandbox service is unreachable")
  assert result.record.tool_statuses == ("sandbox_error",)


def test_the_turn_limit_stops_before_running_the_last_call():
  config = rollout.AgentConfig(max_response_length=2000, max_assistant_turns=2)
  result, requests, runs = _run_scripted([_call("print(1)"), _call("print(2)"), ANSWER], config)
  assert result.finish_reason == "max_turns" and len(requests) == 2 and runs == 1
  assert result.record.tool_statuses == ("ok",) and result.record.num_assistant_turns == 2
  assert [m for _, m in _segments(result)] == [1, 0, 1]


def test_the_length_budget_truncates():
  config = rollout.AgentConfig(max_response_length=30)
  result, _, runs = _run_scripted([_call("print(1)")], config)
  assert result.finish_reason == "length" and result.truncated and runs == 0
  assert len(result.trajectory.response_ids) == 30 and result.trajectory.num_model_tokens == 30


def test_a_tool_response_that_does_not_fit_is_not_appended():
  turn = _call("print('x' * 100)")
  config = rollout.AgentConfig(max_response_length=len(TOKENIZER.encode(turn)) + 50)
  result, _, runs = _run_scripted([turn, ANSWER], config)
  assert result.finish_reason == "tool_response_overflow" and not result.truncated and runs == 1
  assert _segments(result) == [(turn, 1)] and result.record.tool_statuses == ()


def test_bad_agent_configs_name_the_field():
  with pytest.raises(ValueError, match="AgentConfig.max_assistant_turns must be an int >= 1"):
    rollout.AgentConfig(max_assistant_turns=0)
  with pytest.raises(ValueError, match="AgentConfig.output_format must be one of"):
    rollout.AgentConfig(output_format="html")
  with pytest.raises(ValueError, match="side must be one of"):
    rollout.AgentConfig(tool_response_truncate_side="top")


# ---------------------------------------------------------------- with the real JAX engine
CFG = models.qwen("qwen3", vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                  num_kv_heads=2, head_dim=8, max_position_embeddings=1024)


@pytest.fixture(scope="module")
def engine():
  params = models.init_params(CFG, jax.random.key(0))
  return rollout.JaxEngine(CFG, params, num_slots=4, max_length=len(PROMPT_IDS) + 64,
                           eos_token_ids=(TOKENIZER.eos_id,), prefill_chunk=256,
                           vocab_limit=TOKENIZER.vocab_size)


def test_real_engine_rollouts_are_exact_and_reproducible(engine):
  problems = [records.Problem(f"q{i}", f"What is {i} + {i}?", str(2 * i), "test") for i in range(3)]
  config = rollout.AgentConfig(max_response_length=64)

  async def main():
    async with sandbox.Pool(POOL) as pool:
      return await rollout.rollout_problems(rollout.AsyncJaxEngine(engine), pool, TOKENIZER, problems,
                                            2, config, seed=3)

  groups, again = asyncio.run(main()), asyncio.run(main())
  for problem, group, group_again in zip(problems, groups, again):
    prompt = TOKENIZER.encode(chat.prompt_text(problem.problem))
    for result, result_again in zip(group, group_again):
      traj = result.trajectory
      assert traj.token_ids[:len(prompt)].tolist() == prompt
      assert traj.token_ids.tolist() == result_again.trajectory.token_ids.tolist()
      assert traj.token_ids.max() < TOKENIZER.vocab_size
      # the sampler's logprobs are log softmax of the full forward over the final ids
      logits = np.asarray(models.logits(CFG, engine.params, traj.token_ids[None, :-1]))[0]
      expected = np.asarray(jax.nn.log_softmax(logits))[np.arange(len(traj.token_ids) - 1), traj.token_ids[1:]]
      sampled = traj.loss_mask[1:] == 1
      np.testing.assert_allclose(result.sampler_logprobs[1:][sampled], expected[sampled], atol=1e-4)
  assert groups[0][0].trajectory.token_ids.tolist() != groups[0][1].trajectory.token_ids.tolist()


def test_the_hard_filter_rolls_the_policy(engine, tmp_path):
  problems = [records.Problem(f"q{i}", f"What is {i} + 1?", str(i + 1), "test") for i in range(3)]
  with rewards.Scorer(num_workers=1) as scorer:
    rollout_fn = rollout.policy_rollout_fn(engine, TOKENIZER, rollout.AgentConfig(max_response_length=32),
                                           scorer, lambda: sandbox.Pool(POOL), seed=1)
    rewards_ = rollout_fn(problems, 2)
    assert rewards_.shape == (3, 2) and set(np.unique(rewards_)) <= {0.0, 1.0}
    stats = hard_filter.filter_hard_problems(problems, rollout_fn, 2, tmp_path / "hard.jsonl")
  # the same seeds give the same rollouts inside the filter
  expected_kept = [p.id for p, r in zip(problems, rewards_) if r.sum() < 2]
  assert (stats["num_problems"], stats["num_kept"]) == (3, len(expected_kept))
  kept = [json.loads(line)["id"] for line in (tmp_path / "hard.jsonl").read_text().splitlines()]
  assert kept == expected_kept
