"""The multi-turn agent loop (PAPER.md §2.3-2.6): a prompt becomes a trajectory whose tool calls the
sandbox answers.

  rollout = await run_agent(engine, tools, tokenizer, prompt_ids, AgentConfig(...), rid="p0/s3")

`engine` is anything with `async generate(GenerateRequest) -> GenerateResult` (`AsyncJaxEngine`);
`tools` anything with `async run(source, stdin) -> sandbox.ExecutionResult` (`sandbox.Pool` in
process, `sandbox.SandboxClient` for a service). Many `run_agent` calls run concurrently: while one
waits for its tool calls, the engine keeps decoding the others.

Turn loop (released `rstar2_agent_loop.py`, PAPER.md §2.5):
  1. the turn is generated from the ids so far with max_new_tokens = max_response_length -
     len(response); it ends at the engine's EOS ids (no stop strings);
  2. its ids are appended verbatim (loss mask 1), with the sampler's logprobs;
  3. the loop ends when the turn hit the length budget or the engine's context ("length":
     truncated; the engine's max_length should cover prompt + max_response_length), holds no tool call
     ("stop"), used the budget exactly with a call in it ("length": the call is not run),
     assistant turns reach max_assistant_turns ("max_turns": a call in that turn is not run), or
     the tool response would leave no room for another token (`>=` the remaining budget, as
     released: "tool_response_overflow"; it is not appended, nor counted in the record's tool
     statuses);
  4. else the decoded turn's first `environment.max_parallel_calls` call blocks are parsed
     (`chat.parse_tool_calls`); calls that do not decode or that the tool refuses answer with
     their error text; valid calls run concurrently as `sandbox.wrap_code(code)` with the call's
     input, each result becoming `environment.tool_text` (`ToolEnvironment`: the sandbox's text,
     then the whole-text cut; a sandbox that raises answers `Error when executing tool: ...`); the texts form one
     `chat.tool_response_text` segment, tokenized on its own and appended with loss mask 0.
Token ids are never re-tokenized: the next turn is generated from exactly the ids so far.
Seeds: turn t of a rollout samples with seed crc32("{sampling_seed}/{t}") when `sampling_seed`
is given, so a rollout repeats exactly whatever else the engine runs meanwhile (on one engine
configuration); without it the engine numbers the requests.
"""
import asyncio
import dataclasses
import zlib
from typing import Protocol, Sequence

import numpy as np

from rstar_jax import chat
from rstar_jax import rl
from rstar_jax import sandbox
from rstar_jax.chat import tokenization
from rstar_jax.rollout import jax_engine
from rstar_jax.rollout import sampling as sampling_lib
from rstar_jax.rollout import tool_environment

FINISH_REASONS = ("stop", "length", "max_turns", "tool_response_overflow")


class Engine(Protocol):
  async def generate(self, request: jax_engine.GenerateRequest) -> jax_engine.GenerateResult:
    ...


class Tools(Protocol):
  async def run(self, source: str, stdin: str | bytes | None = "") -> sandbox.ExecutionResult:
    ...


@dataclasses.dataclass(frozen=True)
class AgentConfig:
  """The rollout's budgets and environment options (PAPER.md §2.5, §3.3-3.4; config `rollout.*`).

  Attributes:
    max_response_length: tokens after the prompt, model and environment tokens together.
    max_assistant_turns: paper 10 (stages 1-2), 15 (stage 3), 30 (evaluation); released 5.
    environment: how tool calls are read and their results written (`ToolEnvironment`, config
      `env.*`: call blocks per turn, tool text format, error report, cuts).
    chat_format: the conversation format: the prompt's wording and the tool's function name,
      the one name calls are accepted under (`chat.ChatFormat`).
    fixed_execution_time_s: the `execution time` the tool texts report; None: the measured
      time. Fixed, tool texts (and so the rollouts) do not depend on the machine's speed.
    sampling: temperature, top_p, ... of every turn (max_new_tokens and the seed are set per turn).
  """
  max_response_length: int = 8192
  max_assistant_turns: int = 10
  environment: tool_environment.ToolEnvironment = tool_environment.ToolEnvironment()
  chat_format: chat.ChatFormat = chat.DEFAULT_FORMAT
  fixed_execution_time_s: float | None = None
  sampling: sampling_lib.SamplingParams = sampling_lib.SamplingParams(max_new_tokens=None)

  def __post_init__(self):
    for name in ("max_response_length", "max_assistant_turns"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"AgentConfig.{name} must be an int >= 1, got {value!r}")


@dataclasses.dataclass
class AgentRollout:
  """One finished rollout.

  Attributes:
    trajectory: prompt + response ids with the loss mask (1 exactly on sampled tokens).
    sampler_logprobs: fp32 [T], the engine's logprob of each sampled token, 0 elsewhere.
    record: what RoC reads (tool statuses, assistant turns, response text).
    finish_reason: one of FINISH_REASONS.
    weight_versions: the distinct weight versions its turns were sampled with, in order of use
      (from a server's `meta_info.weight_version`; empty from the in-process engine).
  """
  trajectory: chat.Trajectory
  sampler_logprobs: np.ndarray
  record: rl.RolloutRecord
  finish_reason: str
  weight_versions: tuple[str, ...] = ()

  @property
  def truncated(self) -> bool:
    """Whether the response ran out of budget (its reward is 0 by default, PAPER.md §4)."""
    return self.finish_reason == "length"


async def _tool_text(tools: Tools, request: chat.PythonRequest, config: AgentConfig) -> tuple[str, str]:
  """(tool text, status) of one valid call run in the sandbox."""
  try:
    result = await tools.run(sandbox.wrap_code(request.code, config.environment.traceback), request.input)
  except Exception as error:  # a sandbox that gave up: the model reads the error, as released
    return chat.execution_error_text(error), "sandbox_error"
  if config.fixed_execution_time_s is not None:
    result = dataclasses.replace(result, wall_time_s=config.fixed_execution_time_s)
  return config.environment.tool_text(result), result.status


async def _answer_calls(tools: Tools, calls: Sequence[chat.ToolCall | chat.ToolCallError],
                        config: AgentConfig) -> list[tuple[str, str]]:
  """(text, status) per parsed call block, in order; valid calls run concurrently."""
  async def answer(call):
    if isinstance(call, chat.ToolCallError):
      return call.text, "parse_error"
    request = chat.python_request(call, config.chat_format.tool_name)
    if isinstance(request, chat.ToolCallError):
      return request.text, "tool_error"
    return await _tool_text(tools, request, config)

  return list(await asyncio.gather(*(answer(call) for call in calls)))


def turn_seed(sampling_seed: int, turn: int) -> int:
  """The sampling seed of turn `turn` (from 0) of a rollout seeded `sampling_seed`."""
  return zlib.crc32(f"{sampling_seed}/{turn}".encode())


async def run_agent(engine: Engine, tools: Tools, tokenizer: tokenization.Tokenizer,
                    prompt_ids: Sequence[int], config: AgentConfig, rid: str,
                    sampling_seed: int | None = None) -> AgentRollout:
  """Runs the turn loop (module docstring) from `prompt_ids` to the end of the response.

  Token ids and log-probs are kept as one numpy array per turn (no per-token Python objects).

  Raises:
    ValueError: the engine returned a number of log-probs other than its number of tokens.
  """
  prompt = np.asarray(prompt_ids, np.int32)
  id_parts, mask_parts, logprob_parts = [prompt], [np.zeros(prompt.size, np.int32)], [
      np.zeros(prompt.size, np.float32)]
  response_length = 0
  statuses: list[str] = []
  turns = 0
  versions: dict[str, None] = {}  # ordered set
  finish = "length"  # the budget can be used up by a tool response, before any further turn
  while (budget := config.max_response_length - response_length) > 0:
    seed = None if sampling_seed is None else turn_seed(sampling_seed, turns)
    result = await engine.generate(jax_engine.GenerateRequest(
        f"{rid}/t{turns}", np.concatenate(id_parts),
        dataclasses.replace(config.sampling, max_new_tokens=budget, sampling_seed=seed)))
    turns += 1
    versions.update(dict.fromkeys(result.weight_versions))
    output_ids = np.asarray(result.output_ids, np.int32)
    output_logprobs = np.asarray(result.output_logprobs, np.float32)
    if output_logprobs.shape != output_ids.shape:
      raise ValueError(f"request {rid}/t{turns - 1}: the engine returned {output_ids.size} tokens "
                       f"but {output_logprobs.size} log-probs")
    id_parts.append(output_ids)
    mask_parts.append(np.ones(output_ids.size, np.int32))
    logprob_parts.append(output_logprobs)
    response_length += output_ids.size
    if result.finish_reason["type"] == "length":
      finish = "length"
      break
    calls = chat.parse_tool_calls(tokenizer.decode(output_ids), config.environment.max_parallel_calls)
    if not calls:
      finish = "stop"
      break
    remaining = config.max_response_length - response_length
    if remaining <= 0:  # the turn ended exactly at the budget: no room for the call's output
      finish = "length"
      break
    if turns >= config.max_assistant_turns:
      finish = "max_turns"
      break
    answers = await _answer_calls(tools, calls, config)
    env_ids = np.asarray(tokenizer.encode(chat.tool_response_text([text for text, _ in answers])),
                         np.int32)
    if env_ids.size >= remaining:  # released: stop unless the next turn has room (>=)
      finish = "tool_response_overflow"
      break
    statuses += [status for _, status in answers]
    id_parts.append(env_ids)
    mask_parts.append(np.zeros(env_ids.size, np.int32))
    logprob_parts.append(np.zeros(env_ids.size, np.float32))
    response_length += env_ids.size
  trajectory = chat.Trajectory(np.concatenate(id_parts), np.concatenate(mask_parts), prompt.size)
  record = rl.RolloutRecord(tuple(statuses), turns, tokenizer.decode(trajectory.response_ids))
  return AgentRollout(trajectory, np.concatenate(logprob_parts), record, finish, tuple(versions))
