"""The rStar2 chat format against the paper's reference text and the released Jinja template.

Run: python -m pytest -q tests/chat_template_test.py
"""
import json

import ml_collections
import pytest
from transformers.utils import chat_template_utils

from rstar_jax import chat

# PAPER.md §2.2, copied verbatim; {QUESTION} is the raw problem text.
PAPER_PROMPT = """<|im_start|>system
A conversation between User and Assistant. The User asks a question, and the Assistant solves it. The Assistant first thinks about the reasoning process in the mind and then provides the User with the answer. The reasoning process is enclosed within <reason> </reason> and answer is enclosed within <answer> </answer> tags, respectively, i.e., <reason> reasoning process here </reason> <answer> answer here </answer>.

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{"type": "function", "function": {"name": "python_code_with_standard_io", "description": "Execute Python code with standard input and capture standard output. This function takes a Python code string and an input string, provides the input string through standard input (stdin) to the code, and captures and returns any output produced through standard output (stdout). If the executed code raises an exception, the error message will be captured and returned instead.", "parameters": {"type": "object", "properties": {"code": {"type": "string", "description": "A string containing Python code to be executed. The code can read from standard input using the input() function."}, "input": {"type": "string", "description": "A string that will be provided as standard input to the code when it calls input()."}}, "required": ["code", "input"]}}}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
<|im_start|>user
You must put your answer inside <answer> </answer> tags, i.e., <answer> answer here </answer>. And your final answer will be extracted automatically by the \\boxed{} tag.
This is the problem:
{QUESTION}<|im_end|>
<|im_start|>assistant
<reason>"""

# rStar@ecbfb94 rstar2_agent/config/rstar2_agent_trainer.yaml, custom_chat_template, verbatim.
RELEASED_TEMPLATE = r"""
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'A conversation between User and Assistant. The User asks a question, and the Assistant solves it. The Assistant first thinks about the reasoning process in the mind and then provides the User with the answer. The reasoning process is enclosed within <reason> </reason> and answer is enclosed within <answer> </answer> tags, respectively, i.e., <reason> reasoning process here </reason> <answer> answer here </answer>.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nA conversation between User and Assistant. The User asks a question, and the Assistant solves it. The Assistant first thinks about the reasoning process in the mind and then provides the User with the answer. The reasoning process is enclosed within <reason> </reason> and answer is enclosed within <answer> </answer> tags, respectively, i.e., <reason> reasoning process here </reason> <answer> answer here </answer>.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + 'You must put your answer inside <answer> </answer> tags, i.e., <answer> answer here </answer>. And your final answer will be extracted automatically by the \\boxed{} tag.\nThis is the problem:\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n<reason>' }}
{%- endif %}
"""

PROBLEMS = [
    "What is 1+1?",
    "Let $f(x) = \\frac{x^2}{2}$. Find $f(3)$, i.e. \\boxed{?}",
    "Ünïcödé — π ≤ 4; quotes \" ' and braces {} and a newline\nsecond line",
    "",
]


def _released(messages, tools=None, add_generation_prompt=False):
  """Renders with transformers' Jinja renderer, as the released stack does."""
  if tools is None:
    tools = [chat.tool_schema()]
  rendered, _ = chat_template_utils.render_jinja_template(
      [messages], tools=tools or None, chat_template=RELEASED_TEMPLATE,
      add_generation_prompt=add_generation_prompt)
  return rendered[0]


@pytest.mark.parametrize("problem", PROBLEMS)
def test_prompt_text_matches_paper_reference_byte_for_byte(problem):
  assert chat.prompt_text(problem) == PAPER_PROMPT.replace("{QUESTION}", problem)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_prompt_text_matches_released_template(problem):
  messages = [{"role": "user", "content": problem}]
  assert chat.prompt_text(problem) == _released(messages, add_generation_prompt=True)


def test_prompt_text_ends_with_generation_prompt():
  assert chat.GENERATION_PROMPT == "<|im_start|>assistant\n<reason>"
  assert chat.prompt_text("x").endswith("x<|im_end|>\n" + chat.GENERATION_PROMPT)


CONVERSATION = [
    {"role": "user", "content": "Compute 6*7."},
    {"role": "assistant", "content": "<reason>Let me compute.",
     "tool_calls": [{"function": {"name": "python_code_with_standard_io",
                                  "arguments": {"code": "print(6*7)", "input": ""}}}]},
    {"role": "tool", "content": "Tool call success\nstdout: 42\n\nexecution time: 0.00s"},
    {"role": "assistant", "content": "",
     "tool_calls": [{"name": "python_code_with_standard_io",
                     "arguments": {"code": "print('π')", "input": "3\n"}},
                    {"name": "other", "arguments": {"x": [1, 2]}}]},
    {"role": "tool", "content": "first"},
    {"role": "tool", "content": "second"},
    {"role": "assistant", "content": "</reason>\n<answer>\\boxed{42}</answer>"},
]


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("messages", [
    CONVERSATION,
    [{"role": "system", "content": "Be brief."}] + CONVERSATION,
    CONVERSATION[:1] + [{"role": "system", "content": "late system"}] + CONVERSATION[1:3],
], ids=["no_system", "own_system", "late_system"])
def test_render_messages_matches_released_template_multi_turn(messages, add_generation_prompt):
  assert chat.render_messages(messages, add_generation_prompt=add_generation_prompt) == (
      _released(messages, add_generation_prompt=add_generation_prompt))


@pytest.mark.parametrize("messages", [
    CONVERSATION[:3], [{"role": "system", "content": "Be brief."}] + CONVERSATION[:3]])
def test_render_messages_matches_released_template_without_tools(messages):
  assert chat.render_messages(messages, tools=[], add_generation_prompt=True) == (
      _released(messages, tools=[], add_generation_prompt=True))


def test_render_messages_keeps_prefix_quirk_on_plain_assistant_turn():
  # PAPER.md §2.7: the user-prefix branch also fires for an assistant message without calls.
  text = chat.render_messages([{"role": "user", "content": "Q"},
                               {"role": "assistant", "content": "A"}])
  assert text.endswith("<|im_start|>assistant\n" + chat.USER_PREFIX + "A<|im_end|>\n")


def test_render_messages_without_quirks_prefixes_only_user_turns():
  text = chat.render_messages([{"role": "user", "content": "Q"},
                               {"role": "system", "content": "S"},
                               {"role": "assistant", "content": "A"}],
                              keep_template_quirks=False)
  assert text.endswith("<|im_start|>user\n" + chat.USER_PREFIX + "Q<|im_end|>\n"
                       "<|im_start|>system\nS<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n")


def test_render_messages_tool_call_turn_has_paper_form():
  # PAPER.md §2.7: <|im_start|>assistant\n{content}\n<tool_call>\n{...}\n</tool_call><|im_end|>\n
  text = chat.render_messages(CONVERSATION[:2])
  assert text.endswith(
      '<|im_start|>assistant\n<reason>Let me compute.\n<tool_call>\n{"name": '
      '"python_code_with_standard_io", "arguments": {"code": "print(6*7)", "input": ""}}\n'
      "</tool_call><|im_end|>\n")


def test_tool_call_text_is_canonical_json():
  assert chat.tool_call_text("print(6*7)") == (
      '<tool_call>\n{"name": "python_code_with_standard_io", "arguments": '
      '{"code": "print(6*7)", "input": ""}}\n</tool_call>')
  text = chat.tool_call_text('s = "π"\nprint(s)', "1 2\n")
  body = json.loads(text.removeprefix("<tool_call>\n").removesuffix("\n</tool_call>"))
  assert body == {"name": "python_code_with_standard_io",
                  "arguments": {"code": 's = "π"\nprint(s)', "input": "1 2\n"}}
  assert "π" in text  # ensure_ascii=False, as the template's tojson


def test_tool_call_text_equals_template_rendering_of_the_call():
  call = {"name": chat.TOOL_NAME, "arguments": {"code": "x=1\nx", "input": "5"}}
  rendered = chat.render_messages([{"role": "assistant", "content": "", "tool_calls": [call]}])
  assert rendered.endswith("<|im_start|>assistant\n" + chat.tool_call_text("x=1\nx", "5") +
                           "<|im_end|>\n")


def test_tool_response_text_single_and_several():
  assert chat.tool_response_text(["out"]) == (
      "<|im_start|>user\n<tool_response>\nout\n</tool_response><|im_end|>\n"
      "<|im_start|>assistant\n<reason>")
  assert chat.tool_response_text(["a", "b"]) == (
      "<|im_start|>user\n<tool_response>\na\n</tool_response>\n<tool_response>\nb\n"
      "</tool_response><|im_end|>\n<|im_start|>assistant\n<reason>")


def test_tool_response_text_is_template_rendering_minus_system_prefix():
  # rstar2_agent_loop.py renders the tool messages with the generation prompt and strips the
  # default system prompt's tokens (PAPER.md §2.4).
  texts = ["Tool call success\nexecution time: 0.00s", "second"]
  messages = [{"role": "tool", "content": t} for t in texts]
  rendered = _released(messages, add_generation_prompt=True)
  assert rendered == chat.system_text() + chat.tool_response_text(texts)


@pytest.mark.parametrize("bad", [[], "text", [1]])
def test_tool_response_text_bad_input_raises(bad):
  with pytest.raises(ValueError, match="tool_texts"):
    chat.tool_response_text(bad)


def test_paper_variant_uses_fig3_wording_name_and_return_field():
  fmt = chat.ChatFormat(variant="paper", tool_name=chat.PAPER_TOOL_NAME,
                        schema_return_field=True)
  text = chat.prompt_text("Q", fmt)
  assert "The reasoning process and answer are enclosed within <reason> </reason> and " in text
  assert "provides the user with the answer." in text
  assert "\n\n# Tools: You may call one or more functions" in text
  schema = chat.tool_schema(fmt)["function"]
  assert schema["name"] == "execute_python_code_with_standard_io"
  assert list(schema) == ["name", "description", "parameters", "return"]
  assert schema["return"]["description"].startswith("str: The output produced")
  assert json.dumps(chat.tool_schema(fmt), ensure_ascii=False) in text
  assert text.endswith("Q<|im_end|>\n<|im_start|>assistant\n<reason>")
  assert chat.tool_call_text("1", fmt=fmt).startswith(
      '<tool_call>\n{"name": "execute_python_code_with_standard_io"')


def test_chat_format_from_config_reads_keys_and_defaults():
  config = ml_collections.ConfigDict({
      "prompt": {"variant": "paper"},
      "tool": {"name": "execute_python_code", "schema_return_field": True}})
  assert chat.ChatFormat.from_config(config) == chat.ChatFormat(
      "paper", "execute_python_code", True)
  assert chat.ChatFormat.from_config({}) == chat.DEFAULT_FORMAT


@pytest.mark.parametrize("kwargs, field", [
    ({"variant": "fig3"}, "prompt.variant"),
    ({"tool_name": ""}, "tool.name"),
    ({"schema_return_field": 1}, "tool.schema_return_field"),
])
def test_chat_format_bad_value_names_the_field(kwargs, field):
  with pytest.raises(ValueError, match=field):
    chat.ChatFormat(**kwargs)


@pytest.mark.parametrize("messages, where", [
    ([{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}], r"messages\[1\].role"),
    ([{"role": "user", "content": 3}], r"messages\[0\].content"),
    ([{"role": "assistant", "tool_calls": [{"arguments": {}}]}], r"messages\[0\].tool_calls\[0\]"),
])
def test_render_messages_bad_message_names_it(messages, where):
  with pytest.raises(ValueError, match=where):
    chat.render_messages(messages)
