"""Tool calls: parsing them from generated text, and the texts the environment answers with.

Follows the released parser (rStar@ecbfb94 `rstar2_agent/tools/tool_parser.py`, format
`rstar2_agent_hermes`) and tool dispatch (`rstar2_agent/rollout/rstar2_agent_loop.py::_call_tool`,
`tools/code_judge_tool.py::PythonTool.execute`), PAPER.md §2.3 and §3.4 layer 2. Failures are
values: a malformed call becomes a `ToolCallError` whose text is sent back to the model as the
tool response, never an exception.

A turn is handled as:
  items = parse_tool_calls(turn_text)                # at most max_parallel_calls items
  for each ToolCall: request = python_request(call)  # PythonRequest or ToolCallError
  run each PythonRequest in the sandbox; an exception becomes execution_error_text(e); the
  sandbox's text goes through truncate_tool_response; then tool_response_text(all texts).
"""
import dataclasses
import json
import re

from rstar_jax.chat import template

TRUNCATE_SIDES = ("middle", "left", "right")
DEFAULT_MAX_TOOL_RESPONSE_CHARS = 256
DEFAULT_MAX_PARALLEL_CALLS = 1

_CALL_START = "<tool_call>"
_CALL_END = "</tool_call>"
_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
# pydantic shows a refused value's repr whole up to 50 characters, else its first 25 and last 24.
_SHOWN_HEAD_CHARS, _SHOWN_TAIL_CHARS = 25, 24


@dataclasses.dataclass(frozen=True)
class ToolCall:
  """A call that decoded: the tool name and its arguments re-serialised as JSON text.

  Attributes:
    name: the function name the model wrote (not yet checked against the tool's name).
    arguments: `json.dumps(arguments, ensure_ascii=False)` of the decoded `arguments` value, as
      the released parser stores it.
  """
  name: str
  arguments: str


@dataclasses.dataclass(frozen=True)
class ToolCallError:
  """A call that failed; `text` is the tool response the model receives instead of an output."""
  text: str


@dataclasses.dataclass(frozen=True)
class PythonRequest:
  """What the sandbox runs for a valid call: the code and its standard input."""
  code: str
  input: str


def parse_tool_calls(text: str, max_parallel_calls: int | None = DEFAULT_MAX_PARALLEL_CALLS
                     ) -> list[ToolCall | ToolCallError]:
  """Extracts the tool calls of one assistant turn (PAPER.md §2.3).

  1. If `<tool_call>` or `</tool_call>` is missing, there are no calls.
  2. Each non-overlapping `<tool_call>(.*?)</tool_call>` match (DOTALL), in order, is
     `json.loads`-ed and must hold `name` (a string) and `arguments`.
  3. A failure is kept in place as `ToolCallError("Failed to decode tool call: {e}")`, with the
     released messages: json's and Python's, and for a name that is no string the validation
     error of the released `FunctionCall` model ("1 validation error for FunctionCall\\nname\\n
     Input should be a valid string [...]"). That one contains "error", so RoC's released
     p_err rule (`err_detect="substring"`) counts it, as it counts no "Expecting ..." JSON error.
  Only the first `max_parallel_calls` blocks are kept, counted before failures are separated
  (verl `multi_turn.max_parallel_calls: 1`, PAPER.md §11 row 16).

  Args:
    text: the decoded text of the turn.
    max_parallel_calls: how many call blocks to keep (config `rollout.max_parallel_calls`);
      None keeps all.

  Returns:
    `ToolCall` / `ToolCallError` items in the order written; empty when the turn has no call.
  """
  if max_parallel_calls is not None and (
      isinstance(max_parallel_calls, bool) or not isinstance(max_parallel_calls, int) or
      max_parallel_calls < 1):
    raise ValueError(f"max_parallel_calls must be a positive int or None, got "
                     f"{max_parallel_calls!r}")
  if _CALL_START not in text or _CALL_END not in text:
    return []
  blocks = _CALL_RE.findall(text)[:max_parallel_calls]
  items = []
  for block in blocks:
    try:
      call = json.loads(block)
      name, arguments = call["name"], call["arguments"]
      if not isinstance(name, str):
        raise ValueError(_name_type_error(name))
      items.append(ToolCall(name=name, arguments=json.dumps(arguments, ensure_ascii=False)))
    except Exception as e:  # pylint: disable=broad-except  # any failure goes back to the model
      items.append(ToolCallError(text=f"Failed to decode tool call: {e}"))
  return items


def _name_type_error(name) -> str:
  """The error the released parser meets for a non-string `name`, as pydantic words it.

  The release stores a call as verl's `FunctionCall(name=..., arguments=...)`, a pydantic model
  with `name: str` (J-shang/verl@d0dc976 `verl/experimental/agent_loop/tool_parser.py`), so a
  number, null, list or object name fails in the parser with pydantic's ValidationError. Its
  last line, "For further information visit https://errors.pydantic.dev/<version>/v/
  string_type", depends on the installed pydantic and is left out.
  """
  shown = repr(name)
  if len(shown) > _SHOWN_HEAD_CHARS + _SHOWN_TAIL_CHARS + 1:
    shown = shown[:_SHOWN_HEAD_CHARS] + "..." + shown[-_SHOWN_TAIL_CHARS:]
  return ("1 validation error for FunctionCall\nname\n  Input should be a valid string "
          f"[type=string_type, input_value={shown}, input_type={type(name).__name__}]")


def execution_error_text(error: BaseException | str) -> str:
  """The response for a call that could not be executed (PAPER.md §2.3)."""
  return f"Error when executing tool: {error}"


def python_request(call: ToolCall, tool_name: str = template.TOOL_NAME
                   ) -> PythonRequest | ToolCallError:
  """Checks a parsed call against the Python tool and returns what the sandbox should run.

  Mirrors the released dispatch: an unknown name is a KeyError (`Error when executing tool:
  'WolframAlpha'`, microsoft/rStar#62); `code` and `input` default to "" when absent
  (`PythonTool.execute`); an `input` of null counts as "". Arguments that are not an object, or a
  code/input that is not a string, fail with the attribute error the released code meets.

  Args:
    call: a decoded call.
    tool_name: the tool's name (config `tool.name`).

  Returns:
    A `PythonRequest`, or a `ToolCallError` with the `Error when executing tool: ...` text.
  """
  if call.name != tool_name:
    return ToolCallError(execution_error_text(KeyError(call.name)))
  arguments = json.loads(call.arguments)
  if not isinstance(arguments, dict):
    return ToolCallError(execution_error_text(
        f"'{type(arguments).__name__}' object has no attribute 'get'"))
  code = arguments.get("code", "")
  stdin = arguments.get("input", "")
  stdin = "" if stdin is None else stdin
  for value in (code, stdin):
    if not isinstance(value, str):
      return ToolCallError(execution_error_text(
          f"'{type(value).__name__}' object has no attribute 'encode'"))
  return PythonRequest(code=code, input=stdin)


def truncate_tool_response(text: str,
                           max_chars: int | None = DEFAULT_MAX_TOOL_RESPONSE_CHARS,
                           side: str = "middle") -> str:
  """Shortens a tool output longer than `max_chars` (PAPER.md §3.4 layer 2, verl defaults).

  With n = max_chars and h = n // 2:
    middle: text[:h] + "...(truncated)..." + text[-h:]
    left:   text[:n] + "...(truncated)"
    right:  "(truncated)..." + text[-n:]
  Texts of at most n characters are returned unchanged. The released loop applies this to the
  sandbox's output only, not to the `Failed to decode` / `Error when executing` texts.

  Args:
    text: the tool output text (e.g. `sandbox.tool_output_text(result)`).
    max_chars: n, config `rollout.max_tool_response_chars`; None disables truncation.
    side: which part to keep, config `rollout.tool_response_truncate_side`.
  """
  if side not in TRUNCATE_SIDES:
    raise ValueError(f"side must be one of {TRUNCATE_SIDES}, got {side!r}")
  if max_chars is None:
    return text
  if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
    raise ValueError(f"max_chars must be a positive int or None, got {max_chars!r}")
  if len(text) <= max_chars:
    return text
  if side == "left":
    return text[:max_chars] + "...(truncated)"
  if side == "right":
    return "(truncated)..." + text[-max_chars:]
  half = max_chars // 2
  return text[:half] + "...(truncated)..." + text[len(text) - half:]
