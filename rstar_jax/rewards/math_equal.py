"""`math_equal`: the PRIME grader's lenient numeric and symbolic comparison (PAPER.md §4).

Port of rStar@ecbfb94 `fused_compute_score/prime_math/grader.py::math_equal` (from ToRA /
PRIME). Its leniency is kept, as it is the released default (PAPER.md §11 row 13): numbers are
equal within `rel_tol=1e-4`, and the truth ×100 and ÷100 also match (`include_percentage`).
Deviations, none changing a verdict:
  * `\\pi` answers are evaluated by `safe_sympy.eval_arithmetic`, not `eval`;
  * the final `symbolic_equal` step is absent: it enters `with timeout_limit(...)`, but
    `timeout_limit` is a decorator factory, so every step raises TypeError inside its own `try`
    and the step always returns False (checked by running the released grader);
  * the two `pmatrix` branches are absent: they test for "\\begin" written in a non-raw string,
    i.e. a backspace character, and never fire on model text.
"""
import math
import re

from rstar_jax.rewards import safe_sympy

_DOLLAR_NUMBER_RE = re.compile(r"\$\d+(\.\d+)?")
_PERCENT_RES = (re.compile(r"^\d+(\.\d+)?%$"), re.compile(r"^\d+(\.\d+)?\\%$"))
_INTERVAL_RES = ((re.compile(r"^Interval\((.*)\)$"), "[{}]"),
                 (re.compile(r"^Interval\.Ropen\((.*)\)$"), "[{})"),
                 (re.compile(r"^Interval\.Lopen\((.*)\)$"), "({}]"),
                 (re.compile(r"^Interval\.open\((.*)\)$"), "({})"))
_MAX_PREDICTION_CHARS = 1000


def _as_number(value) -> float | None:
  """`is_digit`: the float a value spells once `{,}` (or else `,`) is removed."""
  text = str(value)
  try:
    return float(text.replace("{,}", "") if "{,}" in text else text.replace(",", ""))
  except ValueError:
    return None


def _replace_pi(text: str, pi: float):
  index = text.find("\\pi")
  while index != -1:
    factor = "*" if index > 0 and text[index - 1].isdigit() else "1*"
    text = text[:index] + f"{factor}{pi}" + text[index + 3:]
    index = text.find("\\pi", index + 1)
  try:
    return safe_sympy.eval_arithmetic(text)
  except ValueError:
    return text


def _normalize(answer: str, pi: float):
  """`$5` -> `5`, `5%` -> `5`, `1010_2` -> 1010 (base subscript dropped), `\\pi` evaluated."""
  if _DOLLAR_NUMBER_RE.match(answer):
    return answer[1:]
  if any(pattern.match(answer) for pattern in _PERCENT_RES):
    return answer.replace("\\%", "").replace("%", "")
  if "_" in answer:
    # float() raises for "x_1": the released grader then scores the candidate 0.
    return int(float(answer.split("_")[0]))
  if "\\pi" in answer:
    return _replace_pi(answer, pi)
  return answer


def _format_intervals(prediction: str) -> str:
  for pattern, form in _INTERVAL_RES:
    match = pattern.match(prediction)
    if match:
      return form.format(match.group(1))
  return prediction


def math_equal(prediction, reference, include_percentage: bool = True, tolerance: float = 1e-4,
               pi: float = math.pi) -> bool:
  """Whether two answers are equal, numerically or symbolically.

  In order: equal strings (case- and space-insensitive); numbers with
  |p - t'| <= tolerance * max(|p|, |t'|) for t' in {t/100, t, 100 t} (only t' = t without
  `include_percentage`), where a failed numeric test is final; equal after dropping brackets;
  element-wise for matching brackets and for comma lists; `Point(...)` against a tuple.

  Args:
    prediction, reference: the candidate and the truth (strings, or numbers in recursion).
    include_percentage: also accept truth ×100 and ÷100.
    tolerance: relative tolerance of numeric equality.
    pi: the value substituted for `\\pi`.

  Raises:
    ValueError: from the base-subscript rule (`x_1`), as in the released grader; callers count
    it as wrong.
  """
  if isinstance(prediction, str):
    prediction = _normalize(prediction, pi)
  if isinstance(reference, str):
    reference = _normalize(reference, pi)
  if isinstance(prediction, str) and len(prediction) > _MAX_PREDICTION_CHARS:
    prediction = prediction[:_MAX_PREDICTION_CHARS]
  if isinstance(prediction, str) and isinstance(reference, str):
    if prediction.strip().lower() == reference.strip().lower():
      return True
    if prediction.replace(" ", "") == reference.replace(" ", ""):
      return True
  predicted_number, reference_number = _as_number(prediction), _as_number(reference)
  if predicted_number is not None and reference_number is not None:
    targets = ([reference_number / 100, reference_number, reference_number * 100]
               if include_percentage else [reference_number])
    return any(math.isclose(target, predicted_number, rel_tol=tolerance) for target in targets)
  if not prediction and prediction not in (0, False):
    return False
  reference, prediction = str(reference).strip(), str(prediction).strip()
  prediction = _format_intervals(prediction)
  if _equal_without_brackets(prediction, reference):
    return True
  if (prediction and reference and prediction[0] in "([" and prediction[-1] in ")]" and
      prediction[0] == reference[0] and prediction[-1] == reference[-1]):
    if _all_equal(prediction[1:-1].split(","), reference[1:-1].split(","), include_percentage,
                  tolerance):
      return True
  if "," in prediction and "," in reference:
    predicted_parts = [part.strip() for part in prediction.split(",")]
    reference_parts = [part.strip() for part in reference.split(",")]
    if len(predicted_parts) == len(reference_parts):
      return _all_equal(predicted_parts, reference_parts, include_percentage, tolerance)
  if prediction.startswith("Point") and reference[0] == "(" and reference[-1] == ")":
    inside = prediction[prediction.find("(") + 1:-1]
    if _all_equal(inside.split(","), reference[1:-1].split(","), include_percentage, tolerance):
      return True
  return False


def _equal_without_brackets(prediction: str, reference: str) -> bool:
  predicted, expected = prediction, reference
  if ((prediction.startswith("[") and prediction.endswith("]") and not reference.startswith("("))
      or (prediction.startswith("(") and prediction.endswith(")")
          and not reference.startswith("["))):
    predicted, expected = predicted.strip("[]()"), expected.strip("[]()")
  for bracket in "{}()":
    predicted, expected = predicted.replace(bracket, ""), expected.replace(bracket, "")
  return predicted == expected


def _all_equal(predicted_parts, reference_parts, include_percentage, tolerance) -> bool:
  return len(predicted_parts) == len(reference_parts) and all(
      math_equal(p, r, include_percentage, tolerance)
      for p, r in zip(predicted_parts, reference_parts))
