"""The agent loop with a real sandbox pool: turns, exact ids and masks, tool statuses, budgets,
turn limits; then with the real JAX engine (exact logprobs across turns) and as the policy-backed
rollout function of the stage-3 hard filter.

Most cases script the model's turns (`ScriptedEngine` returns given texts, cut at the request's
max_new_tokens), so every branch of the loop is reached; the engine itself is tested in
rollout_engine_test.py.
  python -m pytest -q tests/rollout_agent_test.py
"""
import asyncio
import dataclasses
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
  assert list(requests[0].input_ids) == PROMPT_IDS
  assert list(requests[1].input_ids) == traj.token_ids[:len(traj.token_ids) - len(TOKENIZER.encode(ANSWER))].tolist()
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


def _env_length(code, output):
  """Tokens of the environment turn that answers `code` printing `output` (fixed time)."""
  text = sandbox.tool_output_text(sandbox.ExecutionResult("ok", output, "", 0, 0.01))
  return len(TOKENIZER.encode(chat.tool_response_text([chat.truncate_tool_response(text)])))


def test_a_tool_response_that_exactly_fills_the_budget_is_not_appended():
  # released: the loop stops when the tool response is >= the remaining budget (no room for a turn)
  turn = _call("print(1)")
  env = _env_length("print(1)", "1\n")
  config = rollout.AgentConfig(max_response_length=len(TOKENIZER.encode(turn)) + env, fixed_execution_time_s=0.01)
  result, _, runs = _run_scripted([turn, ANSWER], config)
  assert result.finish_reason == "tool_response_overflow" and runs == 1
  assert len(result.trajectory.response_ids) == len(TOKENIZER.encode(turn))
  # one more token of budget: appended, and the next turn gets exactly that token
  config = dataclasses.replace(config, max_response_length=config.max_response_length + 1)
  result, requests, _ = _run_scripted([turn, ANSWER], config)
  assert result.record.tool_statuses == ("ok",) and requests[1].sampling.max_new_tokens == 1
  assert result.finish_reason == "length"


def test_a_call_whose_turn_ends_exactly_at_the_budget_is_not_run():
  turn = _call("print(1)")
  config = rollout.AgentConfig(max_response_length=len(TOKENIZER.encode(turn)))
  result, requests, runs = _run_scripted([turn, ANSWER], config)
  assert result.trajectory.response_ids.size == config.max_response_length
  assert result.finish_reason == "length" and runs == 0 and len(requests) == 1


def test_an_engine_whose_logprobs_do_not_match_its_tokens_is_refused():
  class Misaligned(ScriptedEngine):
    async def generate(self, request):
      result = await super().generate(request)
      result.output_logprobs = result.output_logprobs[:-1]
      return result

  async def main():
    async with sandbox.Pool(POOL) as pool:
      await rollout.run_agent(Misaligned([ANSWER]), pool, TOKENIZER, PROMPT_IDS, rollout.AgentConfig(), "p0/s0")

  with pytest.raises(ValueError, match=r"p0/s0/t0: the engine returned \d+ tokens but \d+ log-probs"):
    asyncio.run(main())


def test_the_tool_name_comes_from_the_chat_format():
  fmt = chat.ChatFormat(variant="paper", tool_name=chat.PAPER_TOOL_NAME)
  config = rollout.AgentConfig(max_response_length=2000, chat_format=fmt)
  result, _, runs = _run_scripted([_call("print(2)", name=chat.PAPER_TOOL_NAME), ANSWER], config)
  assert result.record.tool_statuses == ("ok",) and runs == 1
  result, _, runs = _run_scripted([_call("print(2)"), ANSWER], config)  # the released name is refused
  assert result.record.tool_statuses == ("tool_error",) and runs == 0


def test_bad_agent_configs_name_the_field():
  with pytest.raises(ValueError, match="AgentConfig.max_assistant_turns must be an int >= 1"):
    rollout.AgentConfig(max_assistant_turns=0)
  with pytest.raises(ValueError, match="output_format must be one of"):
    rollout.ToolEnvironment(output_format="html")
  with pytest.raises(ValueError, match="traceback must be one of"):
    rollout.ToolEnvironment(traceback="long")
  with pytest.raises(ValueError, match="side must be one of"):
    rollout.ToolEnvironment(tool_response_truncate_side="top")
  with pytest.raises(ValueError, match="max_parallel_calls must be an int >= 1"):
    rollout.ToolEnvironment(max_parallel_calls=0)
  with pytest.raises(ValueError, match=r"unknown tool environment keys \['colour'\]"):
    rollout.ToolEnvironment.from_dict({"colour": "red"})


def test_the_papers_environment_writes_the_papers_tool_texts():
  """PAPER.md §3.3: stdout alone on success; `tool call failed` and the raw traceback on an error;
  and a second call block of a turn handled when max_parallel_calls allows it."""
  paper = rollout.ToolEnvironment(output_format="paper", traceback="full", max_tool_response_chars=None,
                                  max_parallel_calls=2)
  config = rollout.AgentConfig(max_response_length=2000, environment=paper)
  result, _, _ = _run_scripted([_call("print(6 * 7)"), ANSWER], config)
  assert _segments(result)[1][0].startswith("<|im_start|>user\n<tool_response>\n42\n\n</tool_response>")
  result, _, _ = _run_scripted([_call("1 / 0"), ANSWER], config)
  env = _segments(result)[1][0]
  assert env.startswith("<|im_start|>user\n<tool_response>\ntool call failed\nreason: error message: "
                        "Traceback (most recent call last):\n")
  assert "ZeroDivisionError: division by zero" in env
  two_calls = _call("print(1)")[:-len(EOS)] + "\n" + _call("print(2)")
  result, _, runs = _run_scripted([two_calls, ANSWER], config)
  assert runs == 2 and result.record.tool_statuses == ("ok", "ok")
  result, _, runs = _run_scripted([two_calls, ANSWER])  # the released environment: the first only
  assert runs == 1


def test_a_saved_environment_loads_back_and_a_missing_one_is_the_released(tmp_path):
  paper = rollout.ToolEnvironment(output_format="paper", traceback="full", max_stream_chars=500)
  paper.save(str(tmp_path))
  assert rollout.ToolEnvironment.load(str(tmp_path)) == paper
  assert rollout.ToolEnvironment.load(str(tmp_path / "elsewhere")) == rollout.ToolEnvironment()
  (tmp_path / "rstar_environment.json").write_text('{"output_format": "html"}')
  with pytest.raises(ValueError, match="rstar_environment.json: output_format must be one of"):
    rollout.ToolEnvironment.load(str(tmp_path))


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
      return (await rollout.rollout_problems(rollout.AsyncJaxEngine(engine), pool, TOKENIZER, problems,
                                             2, config, seed=3)).groups

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
  with rewards.Scorer(num_workers=1) as scorer, rollout.RolloutRuntime(lambda: sandbox.Pool(POOL)) as runtime:
    rollout_fn = rollout.policy_rollout_fn(engine, TOKENIZER, rollout.AgentConfig(max_response_length=32),
                                           scorer, runtime, seed=1)
    rewards_ = rollout_fn(problems, 2)
    assert rewards_.shape == (3, 2) and set(np.unique(rewards_)) <= {0.0, 1.0}
    stats = hard_filter.filter_hard_problems(problems, rollout_fn, 2, tmp_path / "hard.jsonl")
  # the same seeds give the same rollouts inside the filter
  expected_kept = [p.id for p, r in zip(problems, rewards_) if r.sum() < 2]
  assert (stats["num_problems"], stats["num_kept"]) == (3, len(expected_kept))
  kept = [json.loads(line)["id"] for line in (tmp_path / "hard.jsonl").read_text().splitlines()]
  assert kept == expected_kept


class FirstTurnScripted:
  """Turn 0 returns a scripted tool call; later turns are written by the real engine."""

  def __init__(self, inner, first_turn):
    self.inner, self.first = inner, TOKENIZER.encode(first_turn)

  def caller(self):
    return self.inner.caller()

  async def generate(self, request):
    if request.rid.endswith("/t0"):
      return rollout.GenerateResult(request.rid, np.array(self.first, np.int32),
                                    np.zeros(len(self.first), np.float32),
                                    {"type": "stop", "matched": self.first[-1]}, len(request.input_ids))
    return await self.inner.generate(request)


class DelayedTools:
  """The real pool, each run delayed by a random 0-40 ms (tool latency that varies between runs)."""

  def __init__(self, pool, seed):
    self.pool, self.rng = pool, np.random.default_rng(seed)

  async def run(self, source, stdin=""):
    await asyncio.sleep(float(self.rng.uniform(0, 0.04)))
    return await self.pool.run(source, stdin)


def test_multi_turn_rollouts_have_exact_logprobs_and_repeat_whatever_the_tool_latency():
  problems = [records.Problem(f"q{i}", f"What is {i} * 3?", str(3 * i), "test") for i in range(3)]
  config = rollout.AgentConfig(max_response_length=280, max_assistant_turns=3, fixed_execution_time_s=0.01)
  params = models.init_params(CFG, jax.random.key(1))
  first_turn = _call("print(2 * 3)")

  def run(delay_seed):
    engine = rollout.JaxEngine(CFG, params, num_slots=4, max_length=len(PROMPT_IDS) + 300,
                               eos_token_ids=(TOKENIZER.eos_id,), vocab_limit=TOKENIZER.vocab_size)

    async def main():
      async with sandbox.Pool(POOL) as pool:
        scripted = FirstTurnScripted(rollout.AsyncJaxEngine(engine, lockstep=True), first_turn)
        return (await rollout.rollout_problems(scripted, DelayedTools(pool, delay_seed), TOKENIZER, problems,
                                               3, config, seed=5)).groups
    return asyncio.run(main())

  first, second = run(0), run(1)
  for group, group_again in zip(first, second):
    for result, again in zip(group, group_again):
      np.testing.assert_array_equal(result.trajectory.token_ids, again.trajectory.token_ids)
      np.testing.assert_array_equal(result.sampler_logprobs, again.sampler_logprobs)  # bitwise
      assert result.record.tool_statuses == ("ok",)  # the scripted call ran, then the engine wrote
      traj = result.trajectory
      mask = traj.loss_mask.astype(bool)
      second_turn = np.zeros_like(mask)
      env_end = traj.prompt_len + len(TOKENIZER.encode(first_turn)) + np.argmax(
          mask[traj.prompt_len + len(TOKENIZER.encode(first_turn)):])
      second_turn[env_end:] = mask[env_end:]
      assert second_turn.sum() > 0
      logits = np.asarray(models.logits(CFG, params, traj.token_ids[None, :-1]))[0]
      expected = np.asarray(jax.nn.log_softmax(logits))[np.arange(len(traj.token_ids) - 1), traj.token_ids[1:]]
      np.testing.assert_allclose(result.sampler_logprobs[second_turn], expected[second_turn[1:]], atol=1e-4)
