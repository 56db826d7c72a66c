"""Answer extraction: which part of a response is the final answer (PAPER.md §4, §11 row 11).

Two scopes:
  * full_response (released code): the PRIME grader's extraction over the whole response, i.e.
    the text after the last answer phrase, then the last `\\boxed{}`/`\\fbox{}` content, then
    what follows the last "is "/"="/": "-style marker (`prime_extract`).
  * answer_tag (paper): the `\\boxed{}` content inside the last complete `<answer>...</answer>`
    block (`answer_tag_extract`); no block or no box in it means no answer.
Source of the PRIME rules: rStar@ecbfb94 `fused_compute_score/prime_math/__init__.py`
(`match_answer`, `_last_boxed_only_string`).
"""
import re

_ANSWER_PHRASES = ("answer:", "answer is", "answers are")
_ANSWER_SUFFIX_PHRASES = ("is answer", "is the answer", "are answers", "are the answers")
_TRAILING_MARKERS = ("be ", "is ", "are ", "=", ": ", "get ", "be\n", "is\n", "are\n", ":\n",
                     "get\n")
# One complete answer block (DOTALL, non-greedy); its group is the block's content. Also the
# block RoC's p_format counts (`rl.penalties.answer_count`, rStar@ecbfb94 `answer_tag_repetition`).
ANSWER_BLOCK_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def last_boxed(text: str) -> str | None:
  """Content of the last `\\boxed{...}` (or, if there is none, the last `\\fbox{...}`).

  Braces are matched, so `\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`; the content is stripped.
  As in the PRIME grader, the search starts at the last `\\boxed` and takes the first `{` after
  it, so `\\boxed 5` followed later by `{x}` yields `x`. Returns None without a balanced group.
  """
  start = text.rfind("\\boxed")
  if start < 0:
    start = text.rfind("\\fbox")
    if start < 0:
      return None
  depth, left = 0, None
  for i in range(start, len(text)):
    if text[i] == "{":
      depth += 1
      if left is None:
        left = i
    elif text[i] == "}":
      depth -= 1
      if depth == 0:
        return text[left + 1:i].strip()
  return None


def prime_extract(response: str) -> tuple[bool, str]:
  """The PRIME grader's answer extraction (`match_answer`), rule for rule.

  1. For each phrase "answer:", "answer is", "answers are" in turn: keep the text after its last
     occurrence (case-insensitive), stripped.
  2. For each of "is answer", "is the answer", "are answers", "are the answers": keep the text
     before its last occurrence.
  3. If a `\\boxed{}`/`\\fbox{}` remains, keep its content.
  4. Cut at the last ". ", then, for each marker "be ", "is ", "are ", "=", ": ", "get " (and
     the newline forms), keep the text after its last occurrence.
  Matching requires a digit in the result.

  Returns:
    (matched, candidate): whether any rule fired and the result has a digit; the candidate is
    returned either way, as the released grader grades it regardless of `matched`.
  """
  matched = False
  for phrase in _ANSWER_PHRASES:
    index = response.lower().rfind(phrase)
    if index != -1:
      matched = True
      response = response[index + len(phrase):].strip()
  for phrase in _ANSWER_SUFFIX_PHRASES:
    index = response.lower().rfind(phrase)
    if index != -1:
      matched = True
      response = response[:index].strip()
  boxed = last_boxed(response)
  if boxed:
    matched = True
    response = boxed
  index = response.rfind(". ")
  if index != -1:
    response = response[:index].strip()
  for marker in _TRAILING_MARKERS:
    index = response.lower().rfind(marker)
    if index != -1:
      matched = True
      response = response[index + len(marker):].strip()
  return matched and any(c.isdigit() for c in response), response


def answer_block(response: str) -> str | None:
  """Content of the last complete `<answer>...</answer>` block; None if there is none.

  An `<answer>` never closed (e.g. by truncation) is no block. With several blocks the last one
  is the final answer.
  """
  blocks = ANSWER_BLOCK_RE.findall(response)
  return blocks[-1] if blocks else None


def answer_tag_extract(response: str) -> str | None:
  """The paper's scope [P §2.2.1]: the last `\\boxed{}` content in the last `<answer>` block."""
  block = answer_block(response)
  return None if block is None else last_boxed(block)

