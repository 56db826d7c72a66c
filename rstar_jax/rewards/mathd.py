"""Hendrycks-MATH answer normalisation (`normalize_answer`), the first check of the PRIME grader.

Port of rStar@ecbfb94 `fused_compute_score/prime_math/math_normalize.py` (itself from
openai/prm800k and the MATH release), kept rule for rule because the released reward accepts an
answer when both sides normalise to the same string (PAPER.md §4).
"""
import re

_TEXT_RE = re.compile(r"^\\text\{(?P<text>.+?)\}$")


class _Unnormalizable(Exception):
  """A rule met a string it cannot rewrite; the answer is then compared as given."""


def normalize_answer(answer: str | None) -> str | None:
  """Normalises a MATH-style answer string.

  Strips it, removes an enclosing `\\text{}`, then applies `_strip_string`: drops line breaks,
  `\\!`, `\\left`/`\\right`, degree marks, `\\$`, a right `\\text{ unit}`, `\\%` and spaces;
  writes `dfrac`/`tfrac` as `frac`, `.5` as `0.5`, `sqrt3` as `sqrt{3}`, `\\frac12` as
  `\\frac{1}{2}`, `a/b` (integers) as `\\frac{a}{b}`, `0.5` as `\\frac{1}{2}`, and drops a short
  `k = ` prefix. If a rule fails (e.g. a trailing `\\sqrt`), the stripped answer is returned.
  """
  if answer is None:
    return None
  answer = answer.strip()
  try:
    match = _TEXT_RE.search(answer)
    if match is not None:
      answer = match.group("text").strip()
    return _strip_string(answer)
  except (_Unnormalizable, IndexError):
    return answer


def _fix_fracs(string: str) -> str:
  pieces = string.split("\\frac")
  result = pieces[0]
  for piece in pieces[1:]:
    result += "\\frac"
    if piece[0] == "{":
      result += piece
      continue
    if len(piece) < 2:
      return string
    numerator, denominator, rest = piece[0], piece[1], piece[2:]
    if denominator != "{":
      result += "{" + numerator + "}{" + denominator + "}" + rest
    else:
      result += "{" + numerator + "}" + denominator + rest
  return result


def _fix_a_slash_b(string: str) -> str:
  parts = string.split("/")
  if len(parts) != 2:
    return string
  try:
    numerator, denominator = int(parts[0]), int(parts[1])
  except ValueError:
    return string
  if string != f"{numerator}/{denominator}":
    return string
  return "\\frac{" + str(numerator) + "}{" + str(denominator) + "}"


def _remove_right_units(string: str) -> str:
  # "\text{ " only occurs when describing units (in the MATH validation set).
  if "\\text{ " not in string:
    return string
  parts = string.split("\\text{ ")
  if len(parts) != 2:
    raise _Unnormalizable(string)
  return parts[0]


def _fix_sqrt(string: str) -> str:
  if "\\sqrt" not in string:
    return string
  pieces = string.split("\\sqrt")
  result = pieces[0]
  for piece in pieces[1:]:
    if piece[0] != "{":
      result += "\\sqrt{" + piece[0] + "}" + piece[1:]
    else:
      result += "\\sqrt" + piece
  return result


def _strip_string(string: str) -> str:
  string = string.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
  string = string.replace("tfrac", "frac").replace("dfrac", "frac")
  string = string.replace("\\left", "").replace("\\right", "")
  string = string.replace("^{\\circ}", "").replace("^\\circ", "")
  string = string.replace("\\$", "")
  string = _remove_right_units(string)
  string = string.replace("\\%", "")
  # " 0." is the same as " ." and "{0." as "{."; a leading "." gets a 0.
  string = string.replace(" .", " 0.").replace("{.", "{0.")
  if not string:
    return string
  if string[0] == ".":
    string = "0" + string
  # Drop a short left-hand side such as "k = ".
  sides = string.split("=")
  if len(sides) == 2 and len(sides[0]) <= 2:
    string = sides[1]
  string = _fix_sqrt(string)
  string = string.replace(" ", "")
  string = _fix_fracs(string)
  if string == "0.5":
    string = "\\frac{1}{2}"
  return _fix_a_slash_b(string)
