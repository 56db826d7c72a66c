"""Tool-call parsing edge cases, dispatch texts and tool-output truncation (PAPER.md §2.3, §3.4).

Run: python -m pytest -q tests/chat_tool_calls_test.py
"""
import json

import pytest

from rstar_jax import chat

CALL = chat.tool_call_text("print(6*7)")


def test_parse_canonical_call_round_trips():
  items = chat.parse_tool_calls("<reason>compute\n" + CALL)
  assert items == [chat.ToolCall(name="python_code_with_standard_io",
                                 arguments='{"code": "print(6*7)", "input": ""}')]
  assert chat.python_request(items[0]) == chat.PythonRequest(code="print(6*7)", input="")


@pytest.mark.parametrize("text", [
    "no call at all",
    '<tool_call>\n{"name": "python_code_with_standard_io", "arguments": {}}',  # unclosed
    '{"name": "python_code_with_standard_io", "arguments": {}}\n</tool_call>',  # no opening
    "</tool_call> closing before <tool_call>",  # both tags, but no block
])
def test_parse_without_complete_block_gives_no_calls(text):
  assert chat.parse_tool_calls(text) == []


def test_parse_whitespace_inside_tags_is_free():
  text = ('<tool_call>  {"arguments": {"code": "1"}, "name": "python_code_with_standard_io"}'
          "</tool_call>")
  assert chat.parse_tool_calls(text) == [
      chat.ToolCall("python_code_with_standard_io", '{"code": "1"}')]


@pytest.mark.parametrize("body, message", [
    # '\n', then 39 characters and a space on line 2: the comma is missing at 0-based offset 40
    # of line 2, i.e. column 41, char 1 + 40 = 41.
    ('\n{"name": "python_code_with_standard_io" "arguments": {}}\n',
     "Expecting ',' delimiter: line 2 column 41 (char 41)"),
    ('{"name": "python_code_with_standard_io"}', "'arguments'"),
    ('{"arguments": {}}', "'name'"),
    ("[1]", "list indices must be integers or slices, not str"),
    ("", "Expecting value: line 1 column 1 (char 0)"),
    # The released FunctionCall is a pydantic model with `name: str` (texts as pydantic 2 words
    # them, less its version-dependent "For further information" line).
    ('{"name": 1, "arguments": {}}', "1 validation error for FunctionCall\nname\n  Input should "
     "be a valid string [type=string_type, input_value=1, input_type=int]"),
    ('{"name": null, "arguments": {}}', "1 validation error for FunctionCall\nname\n  Input "
     "should be a valid string [type=string_type, input_value=None, input_type=NoneType]"),
    ('{"name": ["ééé"], "arguments": {}}', "1 validation error for FunctionCall\nname\n  Input "
     "should be a valid string [type=string_type, input_value=['ééé'], input_type=list]"),
    # A repr over 50 characters shows its first 25 and last 24.
    (json.dumps({"name": list(range(40)), "arguments": {}}), "1 validation error for "
     "FunctionCall\nname\n  Input should be a valid string [type=string_type, input_value=[0, "
     "1, 2, 3, 4, 5, 6, 7, ... 34, 35, 36, 37, 38, 39], input_type=list]"),
])
def test_parse_failure_becomes_decode_error_text(body, message):
  items = chat.parse_tool_calls("<tool_call>" + body + "</tool_call>")
  assert items == [chat.ToolCallError("Failed to decode tool call: " + message)]


def test_name_that_is_no_string_is_an_error_for_the_released_substring_rule():
  # rStar@ecbfb94 RoC counts a <tool_response> block as an error when it contains "error".
  (item,) = chat.parse_tool_calls('<tool_call>{"name": 7, "arguments": {}}</tool_call>')
  assert "error" in chat.tool_response_text([item.text]).lower()


def test_parse_keeps_only_first_block_before_separating_failures():
  # max_parallel_calls=1 slices the blocks first, so a bad first call hides a good second one.
  text = "<tool_call>{bad}</tool_call> and " + CALL
  items = chat.parse_tool_calls(text)
  assert len(items) == 1 and isinstance(items[0], chat.ToolCallError)
  both = chat.parse_tool_calls(text, max_parallel_calls=None)
  assert [type(item) for item in both] == [chat.ToolCallError, chat.ToolCall]
  assert chat.parse_tool_calls(CALL + CALL + CALL, max_parallel_calls=2) == (
      chat.parse_tool_calls(CALL, max_parallel_calls=None) * 2)


def test_parse_closing_tag_inside_code_cuts_the_block():
  # The non-greedy regex of the released parser ends the block at the first </tool_call>.
  text = chat.tool_call_text('print("</tool_call>")')
  (item,) = chat.parse_tool_calls(text)
  assert isinstance(item, chat.ToolCallError)
  assert item.text.startswith("Failed to decode tool call: Unterminated string")


def test_parse_keeps_non_ascii_arguments():
  (item,) = chat.parse_tool_calls(chat.tool_call_text("print('π ≤ 4')"))
  assert "π ≤ 4" in item.arguments
  assert json.loads(item.arguments)["code"] == "print('π ≤ 4')"


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_parse_bad_max_parallel_calls_raises(value):
  with pytest.raises(ValueError, match="max_parallel_calls"):
    chat.parse_tool_calls(CALL, max_parallel_calls=value)


def test_python_request_unknown_tool_is_key_error_text():
  call = chat.ToolCall("WolframAlpha", "{}")
  assert chat.python_request(call) == chat.ToolCallError(
      "Error when executing tool: 'WolframAlpha'")


def test_python_request_uses_configured_tool_name():
  call = chat.ToolCall(chat.PAPER_TOOL_NAME, '{"code": "1"}')
  assert chat.python_request(call, chat.PAPER_TOOL_NAME) == chat.PythonRequest("1", "")
  assert isinstance(chat.python_request(call), chat.ToolCallError)


@pytest.mark.parametrize("arguments, expected", [
    ("{}", chat.PythonRequest("", "")),
    ('{"code": "x", "input": null}', chat.PythonRequest("x", "")),
    ('{"code": "x", "input": "7\\n", "extra": 1}', chat.PythonRequest("x", "7\n")),
    ('"print(1)"', chat.ToolCallError(
        "Error when executing tool: 'str' object has no attribute 'get'")),
    ('{"code": 5}', chat.ToolCallError(
        "Error when executing tool: 'int' object has no attribute 'encode'")),
    ('{"code": "x", "input": [1]}', chat.ToolCallError(
        "Error when executing tool: 'list' object has no attribute 'encode'")),
])
def test_python_request_arguments(arguments, expected):
  assert chat.python_request(chat.ToolCall(chat.TOOL_NAME, arguments)) == expected


def test_execution_error_text():
  assert chat.execution_error_text(TimeoutError("queue_timeout")) == (
      "Error when executing tool: queue_timeout")


TEXT = "".join(chr(ord("a") + i % 26) for i in range(300))


def test_truncate_middle_keeps_both_ends():
  # n = 256, h = 128: text[:128] + marker + text[-128:] (PAPER.md §3.4 layer 2).
  out = chat.truncate_tool_response(TEXT)
  assert out == TEXT[:128] + "...(truncated)..." + TEXT[172:]
  assert len(out) == 256 + len("...(truncated)...")


def test_truncate_left_and_right_sides():
  assert chat.truncate_tool_response("abcdefgh", 3, "left") == "abc...(truncated)"
  assert chat.truncate_tool_response("abcdefgh", 3, "right") == "(truncated)...fgh"
  assert chat.truncate_tool_response("abcdefgh", 3, "middle") == "a...(truncated)...h"
  assert chat.truncate_tool_response("abcdefgh", 1, "middle") == "...(truncated)..."


def test_truncate_short_text_unchanged_at_the_limit():
  assert chat.truncate_tool_response(TEXT[:256]) == TEXT[:256]
  assert chat.truncate_tool_response(TEXT[:257]) != TEXT[:257]
  assert chat.truncate_tool_response(TEXT, max_chars=None) == TEXT


@pytest.mark.parametrize("kwargs, name", [
    ({"side": "both"}, "side"), ({"max_chars": 0}, "max_chars"), ({"max_chars": 2.5}, "max_chars")])
def test_truncate_bad_arguments_raise(kwargs, name):
  with pytest.raises(ValueError, match=name):
    chat.truncate_tool_response(TEXT, **kwargs)
