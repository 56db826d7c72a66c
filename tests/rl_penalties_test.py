"""Tests of rstar_jax.rl.penalties: p_err and p_format, structured and as released.

Run: python -m pytest -q tests/rl_penalties_test.py
"""
import pathlib
import subprocess
import sys

import pytest

from rstar_jax import sandbox
from rstar_jax.rl import penalties

# One environment turn, byte for byte as PAPER.md §2.4 injects it.
ENV = ("<|im_start|>user\n<tool_response>\n{}\n</tool_response><|im_end|>\n"
       "<|im_start|>assistant\n<reason>")
SUCCESS = "Tool call success\nstdout: 42\n\nexecution time: 0.00s"
TIMEOUT = "Tool call failure\nreason: worker_timeout\nstdout: start\n\nexecution time: 4.01s"
EXCEPTION = ("Tool call failure\nreason: \nstdout: hi\n\nstderr: ZeroDivisionError: division by "
             "zero\n\nexecution time: 0.03s")
PARSE_FAILURE = "Failed to decode tool call: Expecting ',' delimiter: line 1 column 50 (char 49)"
CALL = ('<tool_call>\n{"name": "python_code_with_standard_io", "arguments": {"code": "x"}}\n'
        '</tool_call>')


def _response(tool_texts, final):
  """A response: one model turn per tool text (ending in a call), then `final`."""
  text = "".join(f"think {i} {CALL}<|im_end|>" + ENV.format(t) for i, t in enumerate(tool_texts))
  return text + final + "<|im_end|>"


def _record(statuses, tool_texts, final, turns=None):
  return penalties.RolloutRecord(tuple(statuses), turns or len(tool_texts) + 1,
                                 _response(tool_texts, final))


def test_error_penalty_structured_counts_failed_statuses():
  record = _record(["ok", "runtime_error", "timeout", "parse_error", "ok"], [SUCCESS] * 5,
                   "<answer>\\boxed{1}</answer>")
  assert penalties.tool_error_counts(record) == (3, 5)
  assert penalties.error_penalty(record) == pytest.approx(0.6)


def test_error_penalty_structured_ignores_sandbox_faults():
  record = _record(["ok", "sandbox_error"], [SUCCESS, SUCCESS], "<answer>1</answer>")
  assert penalties.tool_error_counts(record) == (0, 2)
  assert penalties.error_penalty(record) == 0.0


@pytest.mark.parametrize("status", sandbox.STATUSES)
def test_every_sandbox_status_is_a_tool_status(status):
  # A failure of the user's code is an error, a fault of the sandbox itself is not.
  record = _record([status], [SUCCESS], "<answer>1</answer>")
  assert penalties.tool_error_counts(record) == (int(status not in ("ok", "sandbox_error")), 1)


def test_tool_statuses_are_the_sandbox_statuses_plus_the_rollout_ones():
  assert set(penalties.TOOL_STATUSES) == set(sandbox.STATUSES) | {"parse_error", "tool_error"}
  assert len(set(penalties.TOOL_STATUSES)) == len(penalties.TOOL_STATUSES)


def test_importing_penalties_loads_no_sandbox_service_modules():
  code = ("import sys; import rstar_jax.rl.penalties; "
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'redis') "
          "or m.startswith(('rstar_jax.sandbox.client', 'rstar_jax.sandbox.server', "
          "'rstar_jax.sandbox.pool', 'rstar_jax.sandbox.redis_queue'))))")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=pathlib.Path(__file__).parents[1], check=True)
  assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("detect", penalties.ERR_DETECTS)
def test_error_penalty_is_half_without_tool_calls(detect):
  record = _record([], [], "<answer>\\boxed{3}</answer>")
  assert penalties.tool_error_counts(record, detect) == (0, 0)
  assert penalties.error_penalty(record, detect) == 0.5


def test_error_penalty_substring_matches_released_rule():
  # "error" anywhere in a block counts, case-insensitively; a timeout, a bare failure and a
  # parse failure do not; printed stdout mentioning "relative error" does.
  texts = [EXCEPTION, TIMEOUT, PARSE_FAILURE, "Tool call success\nstdout: relative error 0.1\n",
           "Error when executing tool: 'WolframAlpha'", SUCCESS]
  record = _record(["runtime_error", "timeout", "parse_error", "ok", "tool_error", "ok"],
                   texts, "<answer>1</answer>")
  assert penalties.tool_error_counts(record, "substring") == (3, 6)
  assert penalties.tool_error_counts(record, "structured") == (4, 6)
  assert penalties.error_penalty(record, "substring") == pytest.approx(0.5)


@pytest.mark.parametrize("final, turns, tags, expected", [
    ("no tags, \\boxed{5}", "all", "balanced", 1.0),
    ("<answer>5</answer>", "all", "balanced", 0.0),
    ("<answer>4</answer> wait <answer>5</answer>", "all", "balanced", 1 / 3),
    ("<answer>4</answer> wait <answer>5</answer>", "response", "balanced", 1 / 2),
    ("<answer>4</answer> wait <answer>5</answer>", "all", "open", 1 / 3),
    # Unbalanced tags: the released rule gives 1, the paper counts opening tags.
    ("<answer>4 <answer>5</answer>", "all", "balanced", 1.0),
    ("<answer>4 <answer>5</answer>", "all", "open", 1 / 3),
    ("<answer>5", "all", "balanced", 1.0),
    ("<answer>5", "all", "open", 0.0),
    # (answers - 1) / turns is capped at 1.
    ("<answer>1</answer>" * 6, "all", "balanced", 1.0),
])
def test_format_penalty_matches_hand_computed(final, turns, tags, expected):
  record = _record(["ok", "ok"], [SUCCESS, SUCCESS], final)  # 3 assistant turns
  assert penalties.format_penalty(record, turns, tags) == pytest.approx(expected)


def test_format_penalty_response_turns_give_one_without_tool_call():
  # The first assistant header is in the prompt, so the released count finds no turn.
  record = _record([], [], "<answer>\\boxed{5}</answer>")
  assert penalties.format_penalty(record, "response", "balanced") == 1.0
  assert penalties.format_penalty(record, "all", "balanced") == 0.0


def test_format_penalty_response_turns_skip_unterminated_last_turn():
  record = penalties.RolloutRecord(
      ("ok",), 2, f"a {CALL}<|im_end|>" + ENV.format(SUCCESS) +
      "<answer>1</answer> <answer>2</answer> truncated")
  # Tags balanced (2 answers); the last turn has no <|im_end|>: 0 response turns.
  assert penalties.format_penalty(record, "response") == 1.0
  assert penalties.format_penalty(record, "all") == pytest.approx(1 / 2)


@pytest.mark.parametrize("text, tags, expected", [
    ("none", "balanced", 0),
    ("<answer>a</answer>", "balanced", 1),
    ("<answer>a</answer><answer>b</answer><answer>c", "balanced", 2),
    ("<answer>a", "balanced", 0),
    ("<answer>a</answer><answer>b</answer><answer>c", "open", 3),
    ("<answer>a\nmultiline</answer>", "balanced", 1),
])
def test_answer_count_matches_hand_counts(text, tags, expected):
  assert penalties.answer_count(text, tags) == expected


@pytest.mark.parametrize("kwargs, message", [
    (dict(tool_statuses=("ok", "crashed"), num_assistant_turns=2, response_text=""),
     r"tool_statuses\[1\]"),
    (dict(tool_statuses=(), num_assistant_turns=0, response_text=""), "num_assistant_turns"),
    (dict(tool_statuses=(), num_assistant_turns=True, response_text=""), "num_assistant_turns"),
    (dict(tool_statuses=(), num_assistant_turns=1, response_text=b"x"), "response_text"),
])
def test_rollout_record_rejects_bad_fields(kwargs, message):
  with pytest.raises(ValueError, match=message):
    penalties.RolloutRecord(**kwargs)


def test_penalties_reject_unknown_variants():
  record = _record([], [], "x")
  with pytest.raises(ValueError, match="detect"):
    penalties.error_penalty(record, "regex")
  with pytest.raises(ValueError, match="turns"):
    penalties.format_penalty(record, turns="some")
  with pytest.raises(ValueError, match="tags"):
    penalties.format_penalty(record, tags="closed")
