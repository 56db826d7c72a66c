"""The rStar2 ChatML conversation format, rendered byte for byte (PAPER.md §2.1-§2.4, §2.7).

The released chat template (rStar@ecbfb94 `rstar2_agent/config/rstar2_agent_trainer.yaml`,
`custom_chat_template`, with the tool schema of `config/tool_config/python_tool_config.yaml`) is
ported to plain Python string building, so no Jinja renderer is needed and the tool JSON keeps its
insertion order (transformers' `tojson`, not jinja2's key-sorting one; PAPER.md §3.3).

The paper variants of PAPER.md §11 rows 1-2 (Fig. 3 system wording, `# Tools:` header, the tool
name `execute_python_code_with_standard_io` and its extra `return` field) are selected by a
`ChatFormat`; the default is the released, byte-exact §2.2 prompt. The "compact" variant is for
models too small to read a 1,862-character prompt (the tiny default): the same grammar (ChatML
turns, `<reason>`/`<answer>` with `\\boxed{}`, `<tool_call>` JSON calls of the same function,
tool outputs in `<tool_response>` user turns) announced in one short system turn, and the
problem as the bare user turn. The generation prompt is the constant
`<|im_start|>assistant\\n<reason>` in every variant (§11 row 3).
"""
import dataclasses
import json
from typing import Any, Mapping, Sequence

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)

GENERATION_PROMPT = "<|im_start|>assistant\n<reason>"

TOOL_NAME = "python_code_with_standard_io"
PAPER_TOOL_NAME = "execute_python_code_with_standard_io"

VARIANTS = ("released", "paper", "compact")

_SYSTEM_PROMPTS = {
    "released": (
        "A conversation between User and Assistant. The User asks a question, and the Assistant "
        "solves it. The Assistant first thinks about the reasoning process in the mind and then "
        "provides the User with the answer. The reasoning process is enclosed within <reason> "
        "</reason> and answer is enclosed within <answer> </answer> tags, respectively, i.e., "
        "<reason> reasoning process here </reason> <answer> answer here </answer>."),
    # PAPER.md §2.2 "Paper variant" (Fig. 3 as typeset).
    "paper": (
        "A conversation between User and Assistant. The user asks a question, and the Assistant "
        "solves it. The Assistant first thinks about the reasoning process in the mind and then "
        "provides the user with the answer. The reasoning process and answer are enclosed within "
        "<reason> </reason> and <answer> </answer> tags, respectively, i.e., <reason> reasoning "
        "process here </reason><answer> answer here </answer>."),
    "compact": "Solve the problem. Reason in <reason> </reason>, answer in <answer> \\boxed{} </answer>.",
}
_TOOLS_HEADERS = {"released": "# Tools\n\n", "paper": "# Tools: "}
# The compact variant's tools line; {call} is a call of the tool as the model writes it.
_COMPACT_TOOLS = "\nRun Python with:\n{call}"
_TOOLS_INTRO = ("You may call one or more functions to assist with the user query.\n\n"
                "You are provided with function signatures within <tools></tools> XML tags:\n"
                "<tools>")
_TOOLS_OUTRO = ("\n</tools>\n\nFor each function call, return a json object with function name "
                "and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
                "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>")

USER_PREFIX = ("You must put your answer inside <answer> </answer> tags, i.e., <answer> answer "
               "here </answer>. And your final answer will be extracted automatically by the "
               "\\boxed{} tag.\nThis is the problem:\n")

_TOOL_DESCRIPTION = (
    "Execute Python code with standard input and capture standard output. This function takes a "
    "Python code string and an input string, provides the input string through standard input "
    "(stdin) to the code, and captures and returns any output produced through standard output "
    "(stdout). If the executed code raises an exception, the error message will be captured and "
    "returned instead.")
_CODE_DESCRIPTION = ("A string containing Python code to be executed. The code can read from "
                     "standard input using the input() function.")
_INPUT_DESCRIPTION = ("A string that will be provided as standard input to the code when it calls "
                      "input().")
_RETURN_DESCRIPTION = ("str: The output produced by the executed code through standard output. If "
                       "an error occurs during execution, the error message will be returned.")

ROLES = ("system", "user", "assistant", "tool")


@dataclasses.dataclass(frozen=True)
class ChatFormat:
  """Which prompt wording and tool schema to render (PAPER.md §11 rows 1-2).

  Attributes:
    variant: "released" (§2.2 wording, `# Tools\\n\\n`), "paper" (Fig. 3 wording, `# Tools: `) or
      "compact" (one short system turn, no user prefix; module docstring). Config key
      `prompt.variant`.
    tool_name: the function name in the schema and in the calls the parser accepts. Config key
      `tool.name`.
    schema_return_field: add the paper's `return` entry to the function schema. Config key
      `tool.schema_return_field`.
  """
  variant: str = "released"
  tool_name: str = TOOL_NAME
  schema_return_field: bool = False

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(f"prompt.variant must be one of {VARIANTS}, got {self.variant!r}")
    if not isinstance(self.tool_name, str) or not self.tool_name or '"' in self.tool_name:
      raise ValueError(f"tool.name must be a non-empty string without '\"', got {self.tool_name!r}")
    if not isinstance(self.schema_return_field, bool):
      raise ValueError("tool.schema_return_field must be a bool, got "
                       f"{self.schema_return_field!r}")

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> "ChatFormat":
    """Reads `prompt.variant`, `tool.name`, `tool.schema_return_field`; absent keys: defaults."""
    prompt = config.get("prompt") or {}
    tool = config.get("tool") or {}
    return cls(variant=prompt.get("variant", "released"),
               tool_name=tool.get("name", TOOL_NAME),
               schema_return_field=tool.get("schema_return_field", False))


DEFAULT_FORMAT = ChatFormat()


def tool_schema(fmt: ChatFormat = DEFAULT_FORMAT) -> dict:
  """The OpenAI-style function schema of the Python tool, keys in the released order."""
  function = {
      "name": fmt.tool_name,
      "description": _TOOL_DESCRIPTION,
      "parameters": {
          "type": "object",
          "properties": {
              "code": {"type": "string", "description": _CODE_DESCRIPTION},
              "input": {"type": "string", "description": _INPUT_DESCRIPTION},
          },
          "required": ["code", "input"],
      },
  }
  if fmt.schema_return_field:
    function["return"] = {"type": "string", "description": _RETURN_DESCRIPTION}
  return {"type": "function", "function": function}


def _tojson(value: Any) -> str:
  # transformers' `tojson` filter: json.dumps defaults, insertion order, non-ASCII kept.
  return json.dumps(value, ensure_ascii=False)


def system_text(fmt: ChatFormat = DEFAULT_FORMAT, system: str | None = None,
                tools: Sequence[Mapping[str, Any]] | None = None) -> str:
  """The system turn with the tools block, `<|im_start|>system\\n...<|im_end|>\\n`.

  Args:
    fmt: wording and schema variant.
    system: the content of a leading system message, which replaces the default wording.
    tools: the tool schemas to list; None lists the one Python tool of `fmt`; an empty sequence
      renders the template's no-tools branch.
  """
  if tools is None:
    tools = [tool_schema(fmt)]
  body = _SYSTEM_PROMPTS[fmt.variant] if system is None else system
  if not tools:
    return IM_START + "system\n" + body + IM_END + "\n"
  if fmt.variant == "compact":
    call = _tool_call_block(fmt.tool_name, {"code": "...", "input": ""})
    return IM_START + "system\n" + body + _COMPACT_TOOLS.format(call=call) + IM_END + "\n"
  listed = "".join("\n" + _tojson(tool) for tool in tools)
  return (IM_START + "system\n" + body + "\n\n" + _TOOLS_HEADERS[fmt.variant] + _TOOLS_INTRO +
          listed + _TOOLS_OUTRO + IM_END + "\n")


def prompt_text(problem: str, fmt: ChatFormat = DEFAULT_FORMAT) -> str:
  """The first-turn prompt for a problem, ending with the generation prompt (PAPER.md §2.2).

  The rendering of the one-message conversation `[{"role": "user", "content": problem}]`; with
  the default format it is the §2.2 text byte for byte.
  """
  if not isinstance(problem, str):
    raise ValueError(f"problem must be a str, got {type(problem).__name__}")
  return render_messages([{"role": "user", "content": problem}], fmt, add_generation_prompt=True)


def _tool_call_block(name: str, arguments: Any) -> str:
  return ("<tool_call>\n{\"name\": \"" + name + "\", \"arguments\": " + _tojson(arguments) +
          "}\n</tool_call>")


def _tool_response_block(text: str) -> str:
  return "\n<tool_response>\n" + text + "\n</tool_response>"


def tool_call_text(code: str, input: str = "", fmt: ChatFormat = DEFAULT_FORMAT) -> str:
  """The canonical call the model writes (PAPER.md §2.3), as the template renders it.

  `<tool_call>\\n{"name": "python_code_with_standard_io", "arguments": {"code": CODE,
  "input": INPUT}}\\n</tool_call>`, JSON with `ensure_ascii=False`.
  """
  if not isinstance(code, str) or not isinstance(input, str):
    raise ValueError("code and input must be str, got "
                     f"{type(code).__name__} and {type(input).__name__}")
  return _tool_call_block(fmt.tool_name, {"code": code, "input": input})


def tool_response_text(tool_texts: Sequence[str]) -> str:
  """The environment segment that returns tool outputs to the model (PAPER.md §2.4).

  `<|im_start|>user` + one `\\n<tool_response>\\nTEXT\\n</tool_response>` block per text +
  `<|im_end|>\\n<|im_start|>assistant\\n<reason>`; several texts share one user turn.
  """
  if isinstance(tool_texts, str) or not tool_texts:
    raise ValueError("tool_texts must be a non-empty sequence of str (not a bare str)")
  for i, text in enumerate(tool_texts):
    if not isinstance(text, str):
      raise ValueError(f"tool_texts[{i}] must be a str, got {type(text).__name__}")
  blocks = "".join(_tool_response_block(text) for text in tool_texts)
  return IM_START + "user" + blocks + IM_END + "\n" + GENERATION_PROMPT


def _user_prefix(fmt: ChatFormat) -> str:
  """The text the template writes before a user message (none in the compact variant)."""
  return "" if fmt.variant == "compact" else USER_PREFIX


def _check_message(i: int, message: Mapping[str, Any]) -> None:
  if not isinstance(message, Mapping):
    raise ValueError(f"messages[{i}] must be a mapping, got {type(message).__name__}")
  if message.get("role") not in ROLES:
    raise ValueError(f"messages[{i}].role must be one of {ROLES}, got {message.get('role')!r}")
  content = message.get("content")
  if content is not None and not isinstance(content, str):
    raise ValueError(f"messages[{i}].content must be a str or None, got {type(content).__name__}")
  for j, call in enumerate(message.get("tool_calls") or ()):
    call = call.get("function", call) if isinstance(call, Mapping) else call
    if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
      raise ValueError(f"messages[{i}].tool_calls[{j}] needs a str 'name' (optionally under "
                       "'function')")


def render_messages(messages: Sequence[Mapping[str, Any]], fmt: ChatFormat = DEFAULT_FORMAT,
                    add_generation_prompt: bool = False, keep_template_quirks: bool = True,
                    tools: Sequence[Mapping[str, Any]] | None = None) -> str:
  """Renders a conversation as the released chat template does (PAPER.md §2.2, §2.4, §2.7).

  Messages are `{"role", "content", "tool_calls"?}` with roles system, user, assistant, tool; a
  tool call is `{"name", "arguments"}` or `{"function": {"name", "arguments"}}`, arguments a JSON
  value (normally a dict) rendered with `tojson`. A leading system message replaces the default
  system wording; consecutive tool messages share one user turn.

  Args:
    messages: the conversation.
    fmt: wording and schema variant.
    add_generation_prompt: append `<|im_start|>assistant\\n<reason>`.
    keep_template_quirks: True reproduces the released template's bug of §2.7: the "You must put
      your answer..." prefix is also written into assistant messages without tool calls and into
      non-first system messages. False writes it into user messages only (for SFT data).
    tools: tool schemas to list, as in `system_text`.

  Returns:
    The rendered text.
  """
  for i, message in enumerate(messages):
    _check_message(i, message)
  has_system = bool(messages) and messages[0]["role"] == "system"
  system = (messages[0].get("content") or "") if has_system else None
  parts = [system_text(fmt, system, tools)]
  for i, message in enumerate(messages):
    role, content = message["role"], message.get("content") or ""
    calls = message.get("tool_calls")
    plain_turn = (role == "user" or (role == "system" and i > 0) or
                  (role == "assistant" and not calls))
    if plain_turn:
      prefix = _user_prefix(fmt) if keep_template_quirks or role == "user" else ""
      parts.append(IM_START + role + "\n" + prefix + content + IM_END + "\n")
    elif role == "assistant":
      parts.append(IM_START + role + ("\n" + content if content else ""))
      for call in calls:
        call = call.get("function", call)
        parts.append("\n" + _tool_call_block(call["name"], call.get("arguments")))
      parts.append(IM_END + "\n")
    elif role == "tool":
      if i == 0 or messages[i - 1]["role"] != "tool":
        parts.append(IM_START + "user")
      parts.append(_tool_response_block(content))
      if i == len(messages) - 1 or messages[i + 1]["role"] != "tool":
        parts.append(IM_END + "\n")
  if add_generation_prompt:
    parts.append(GENERATION_PROMPT)
  return "".join(parts)
