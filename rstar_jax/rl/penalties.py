"""The per-rollout RoC penalties p_err and p_format (PAPER.md §5.2, §5.3, §11 rows 9-10).

RoC ranks correct rollouts by p_total = p_err + p_format. Both penalties are computed here
from a `RolloutRecord`, in one of two ways each:

* p_err, `detect`:
  - "structured" (our default, §11 row 9): the statuses the environment recorded for each
    tool call; p_err = #erroneous calls / #calls, or 0.5 without any call [P Eq. 5].
  - "substring" (rStar@ecbfb94 `down_sample/roc.py::calc_error_ratio_penalty_weights`,
    exactly): a `<tool_response>...</tool_response>` block of the decoded response is an error
    when `'error' in block.lower()`; p_err = #error blocks / #blocks, or 0.5 without blocks.
* p_format, `turns` and `tags`:
  - turns "all" (default, §11 row 10): the record's number of assistant turns; "response"
    (released): the matches of `<|im_start|>assistant.*?<|im_end|>` in the response text, which
    miss the first turn (its header is in the prompt), so a rollout without a tool call gets 1.
  - tags "balanced" (released, kept by default): 1 if `<answer>` or `</answer>` is absent or
    either tag's count differs from the number of `<answer>.*?</answer>` matches; otherwise
    the matches are the answers. "open" (paper, Eq. 6): the answers are the `<answer>` tags,
    1 if there is none.
  - p_format = 1 if turns = 0, else min(1, (answers - 1) / turns).

The text variants scan the decoded response exactly as released: everything after the prompt
(model turns and injected environment turns), special tokens kept.
"""
import dataclasses
import re

from rstar_jax.rewards import extract
from rstar_jax.sandbox import result as sandbox_result

# Every status the environment records for one tool call: the sandbox's own statuses
# (`sandbox.ExecutionResult.status`) plus the two the rollout adds: a call block that failed
# to parse (PAPER.md §2.3 "Failed to decode tool call") and an unknown tool or a tool that
# raised ("Error when executing tool").
TOOL_STATUSES = sandbox_result.STATUSES + ("parse_error", "tool_error")
# The failures p_err counts [P §2.1]: parse failure, execution error (any way the user code
# failed: exception, memory, runaway output) and timeout, i.e. every status but "ok" and
# "sandbox_error", an infrastructure fault that is not the policy's: it counts as a call but
# not as an error [R].
ERROR_STATUSES = frozenset(TOOL_STATUSES) - {"ok", "sandbox_error"}

ERR_DETECTS = ("structured", "substring")
FORMAT_TURNS = ("all", "response")
FORMAT_TAGS = ("balanced", "open")

# p_err of a rollout without any tool call [P Eq. 5; C].
NO_CALL_ERROR_PENALTY = 0.5

_RESPONSE_BLOCK = re.compile(r"<tool_response>.*?</tool_response>", re.DOTALL)
_ASSISTANT_TURN = re.compile(r"<\|im_start\|>assistant.*?<\|im_end\|>", re.DOTALL)
_OPEN_TAG, _CLOSE_TAG = "<answer>", "</answer>"


@dataclasses.dataclass(frozen=True)
class RolloutRecord:
  """What RoC reads about one rollout.

  Attributes:
    tool_statuses: one entry of TOOL_STATUSES per tool response the environment returned,
      in order (a turn cut by the turn limit whose call was never run adds none).
    num_assistant_turns: assistant turns the policy wrote, the final one included (>= 1).
    response_text: the decoded response, `tokenizer.decode(response_ids)` with special
      tokens kept: model turns and injected environment turns, the prompt excluded.
  """
  tool_statuses: tuple[str, ...]
  num_assistant_turns: int
  response_text: str

  def __post_init__(self):
    object.__setattr__(self, "tool_statuses", tuple(self.tool_statuses))
    for i, status in enumerate(self.tool_statuses):
      if status not in TOOL_STATUSES:
        raise ValueError(f"tool_statuses[{i}] must be one of {TOOL_STATUSES}, got {status!r}")
    if isinstance(self.num_assistant_turns, bool) or not isinstance(
        self.num_assistant_turns, int) or self.num_assistant_turns < 1:
      raise ValueError(
          f"num_assistant_turns must be an int >= 1, got {self.num_assistant_turns!r}")
    if not isinstance(self.response_text, str):
      raise ValueError(
          f"response_text must be a str, got {type(self.response_text).__name__}")


def _check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f"`{name}` must be one of {choices}, got {value!r}")


def tool_error_counts(record: RolloutRecord, detect: str = "structured") -> tuple[int, int]:
  """(#erroneous tool calls, #tool calls) of one rollout.

  Args:
    record: the rollout.
    detect: "structured" counts statuses in ERROR_STATUSES among `record.tool_statuses`;
      "substring" counts `<tool_response>...</tool_response>` blocks (DOTALL, non-greedy) of
      `record.response_text` and those whose lower-cased text contains "error"
      (rStar@ecbfb94, so a timeout or a bare "Tool call failure" is not an error, and printed
      stdout such as "relative error" is).

  Returns:
    (num_errors, num_calls), two ints with 0 <= num_errors <= num_calls.
  """
  _check_choice("detect", detect, ERR_DETECTS)
  if detect == "structured":
    statuses = record.tool_statuses
    return sum(s in ERROR_STATUSES for s in statuses), len(statuses)
  blocks = _RESPONSE_BLOCK.findall(record.response_text)
  return sum("error" in b.lower() for b in blocks), len(blocks)


def error_penalty(record: RolloutRecord, detect: str = "structured") -> float:
  """p_err = num_errors / num_calls, or 0.5 when num_calls = 0 (PAPER.md §5.2, §5.3).

  Args:
    record: the rollout.
    detect: "structured" or "substring"; see `tool_error_counts`.

  Returns:
    p_err in [0, 1].
  """
  num_errors, num_calls = tool_error_counts(record, detect)
  return num_errors / num_calls if num_calls else NO_CALL_ERROR_PENALTY


def answer_count(text: str, tags: str = "balanced") -> int:
  """The number of answers in a response, as p_format and the format metrics count them.

  Args:
    text: the decoded response.
    tags: "balanced": 0 if `<answer>` or `</answer>` is absent, else the number of
      `<answer>.*?</answer>` matches (DOTALL; rStar@ecbfb94 `answer_tag_repetition`);
      "open": the number of `<answer>` tags (the paper's count).

  Returns:
    A non-negative int.
  """
  _check_choice("tags", tags, FORMAT_TAGS)
  if tags == "open":
    return text.count(_OPEN_TAG)
  if _OPEN_TAG not in text or _CLOSE_TAG not in text:
    return 0
  return len(extract.ANSWER_BLOCK_RE.findall(text))


def format_penalty(record: RolloutRecord, turns: str = "all", tags: str = "balanced") -> float:
  """p_format = min(1, (answers - 1) / turns), or 1 for a missing or malformed answer.

  With a = answer_count(text, tags) and n the number of turns:
    p_format = 1                       if a = 0 (no answer tag), or n = 0, or, for
                                       tags="balanced", #`<answer>` != a or #`</answer>` != a;
    p_format = min(1, (a - 1) / n)     otherwise.

  Sources: [P Eq. 6] ("open" tags, all turns); rStar@ecbfb94 `calc_format_penalty_weights`
  ("balanced" tags, "response" turns); default per PAPER.md §11 row 10 ("balanced", "all").

  Args:
    record: the rollout.
    turns: "all" takes `record.num_assistant_turns`; "response" counts the
      `<|im_start|>assistant.*?<|im_end|>` matches (DOTALL) of the response text.
    tags: "balanced" or "open"; see `answer_count`.

  Returns:
    p_format in [0, 1].
  """
  _check_choice("turns", turns, FORMAT_TURNS)
  text = record.response_text
  num_answers = answer_count(text, tags)
  if num_answers == 0:
    return 1.0
  if tags == "balanced" and (text.count(_OPEN_TAG) != num_answers or
                             text.count(_CLOSE_TAG) != num_answers):
    return 1.0
  if turns == "all":
    num_turns = record.num_assistant_turns
  else:
    num_turns = len(_ASSISTANT_TURN.findall(text))
  if num_turns == 0:
    return 1.0
  return min((num_answers - 1) / num_turns, 1.0)
