"""The PRIME grader, the first of the released reward's two verifiers (PAPER.md §4).

Port of rStar@ecbfb94 `fused_compute_score/prime_math/__init__.py` (`grade_answer`,
`compute_score`), which combines the openai/prm800k checker with `math_equal`. One deviation, for
safety: sympy parsing goes through `safe_sympy.parse`, which refuses non-maths code. The released
10 s limit of the sympy check (a forked child per call) is dropped: the whole verification runs
under one hard limit (`pool.VerifierPool`, 4 s by default, as the released sandbox's).
"""
import contextlib
import math
import re

import sympy
from pylatexenc import latex2text

from rstar_jax.rewards import math_equal, mathd, safe_sympy

# sympy might hang on these; the grader refuses to evaluate them.
_BAD_SUBSTRINGS = ("^{", "^(")
_BAD_REGEXES = (re.compile(r"\^[0-9]+\^"), re.compile(r"\^[0-9][0-9]+"))
_TUPLE_CHARS = "()[]"
_UNITS = ("degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day",
          "week", "month", "year", "foot", "feet", "inch", "yard", "liter")
_UNIT_RES = tuple(re.compile(unit + r"(es)?(s)? *(\^[0-9]+)?") for unit in _UNITS)
_TEXT_RE = re.compile(r"^\\text\{(?P<text>.+?)\}$")
_COMMAS_RE = re.compile(r"(\d)(,)(\d\d\d)($|\D)")
_MIXED_NUMBER_RE = re.compile("([0-9]) +([0-9])")
_FRACTION_RE = re.compile(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$")


def _is_float(text: str) -> bool:
  try:
    float(text)
    return True
  except ValueError:
    return False


def _is_near_integer(value: float) -> bool:
  """prm800k's `_is_int`: within 1e-7 of an integer (so 2.00000001 counts)."""
  try:
    return abs(value - int(round(value))) <= 1e-7
  except (OverflowError, ValueError):
    return False


def _strip_properly_formatted_commas(expr: str) -> str:
  # Thousands separators only: tuple commas stay.
  while True:
    stripped = _COMMAS_RE.sub("\\1\\3\\4", expr)
    if stripped == expr:
      return stripped
    expr = stripped


def _str_is_near_integer(text: str) -> bool:
  """prm800k's `_str_is_int`: a number within 1e-7 of an integer once thousands commas go."""
  try:
    return _is_near_integer(float(_strip_properly_formatted_commas(text)))
  except ValueError:
    return False


def _parse_latex(expr: str) -> str:
  expr = expr.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac")
  expr = expr.replace("\\frac", " \\frac")  # keeps mixed numbers apart
  expr = latex2text.LatexNodes2Text().latex_to_text(expr)
  for symbol, name in (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"),
                       ("×", "*")):
    expr = expr.replace(symbol, name)
  return expr.strip()


def normalize(expr: str | None) -> str | None:
  """prm800k's `_normalize`: drops `\\text{}`, `$`, `%`, units; words to powers of ten; LaTeX to
  text (pylatexenc); integer-valued numbers to plain integers; lower case."""
  if expr is None:
    return None
  match = _TEXT_RE.search(expr)
  if match is not None:
    expr = match.group("text")
  expr = expr.replace("\\%", "%").replace("\\$", "$").replace("$", "").replace("%", "")
  expr = expr.replace(" or ", " , ").replace(" and ", " , ")
  expr = expr.replace("million", "*10^6").replace("billion", "*10^9")
  expr = expr.replace("trillion", "*10^12")
  for unit_re in _UNIT_RES:
    expr = unit_re.sub("", expr)
  expr = re.sub(r"\^ *\\circ", "", expr)
  if expr and expr[0] == "{" and expr[-1] == "}":
    expr = expr[1:-1]
  expr = re.sub(r",\\! *", "", expr)
  if _is_float(expr) and _is_near_integer(float(expr)):
    expr = str(int(round(float(expr))))
  if "\\" in expr:
    with contextlib.suppress(Exception):  # pylatexenc may reject any malformed LaTeX
      expr = _parse_latex(expr)
  expr = re.sub("- *", "-", expr)
  expr = _MIXED_NUMBER_RE.sub("\\1+\\2", expr)  # "7 3/4" -> "7+3/4"
  expr = expr.lower()
  if _str_is_near_integer(expr):
    # float(): large integers lose precision here, as in the released grader.
    expr = str(int(float(expr.replace(",", ""))))
  return expr


def _should_allow_eval(expr: str) -> bool:
  letters = {c for c in expr.replace("sqrt", "").replace("frac", "") if c.isalpha()}
  return (len(letters) <= 2 and not any(s in expr for s in _BAD_SUBSTRINGS) and
          not any(r.search(expr) for r in _BAD_REGEXES))


def _equal_under_sympy(truth: str, given: str) -> bool:
  expr = f"({truth})-({given})"
  if not _should_allow_eval(expr):
    return False
  try:
    difference = safe_sympy.parse(expr.replace("^", "**"))
    return sympy.simplify(difference) == 0
  except Exception:  # pylint: disable=broad-except  # sympy raises anything on odd input
    return False


def _split_tuple(expr: str) -> list[str]:
  expr = _strip_properly_formatted_commas(expr)
  if not expr:
    return []
  if (len(expr) > 2 and expr[0] in _TUPLE_CHARS and expr[-1] in _TUPLE_CHARS and
      all(c not in expr[1:-1] for c in _TUPLE_CHARS)):
    return [element.strip() for element in expr[1:-1].split(",")]
  return [expr]


def grade_answer(given: str | None, truth: str) -> bool:
  """prm800k's checker: equal after MATH normalisation, after `normalize`, or under sympy.

  Element by element for tuples/intervals (same brackets required); unreduced fractions must
  match exactly; an integer never equals a non-integer here.
  """
  if given is None:
    return False
  if mathd.normalize_answer(truth) == mathd.normalize_answer(given):
    return True
  truth_n, given_n = normalize(truth), normalize(given)
  if truth_n == given_n:
    return True
  if not given_n:
    return False
  truth_elements, given_elements = _split_tuple(truth_n), _split_tuple(given_n)
  if len(truth_elements) != len(given_elements) or (
      len(truth_elements) > 1 and (truth_n[0] != given_n[0] or truth_n[-1] != given_n[-1])):
    return False
  for truth_element, given_element in zip(truth_elements, given_elements):
    if _FRACTION_RE.search(truth_element) and _FRACTION_RE.search(given_element):
      correct = truth_element == given_element
    elif _str_is_near_integer(truth_element) != _str_is_near_integer(given_element):
      correct = False
    else:
      correct = _equal_under_sympy(truth_element, given_element)
    if not correct:
      return False
  return True


def prime_correct(candidate: str, truth: str) -> bool:
  """The PRIME grader's verdict on an extracted answer (`compute_score(...)[0]`).

  `grade_answer` first, then `math_equal` (tried with pi = math.pi and 3.14 when either side
  holds `\\pi`); an exception counts as wrong, as in the released scorer.

  Args:
    candidate: the extracted answer (e.g. from `extract.prime_extract`).
    truth: the ground-truth answer.
  """
  try:
    if grade_answer(candidate, truth):
      return True
  except Exception:  # pylint: disable=broad-except  # the released scorer counts it as 0
    return False
  try:
    if "\\pi" in candidate or "\\pi" in truth:
      return any(math_equal.math_equal(candidate, truth, pi=pi) for pi in (math.pi, 3.14))
    return math_equal.math_equal(candidate, truth)
  except Exception:  # pylint: disable=broad-except
    return False
