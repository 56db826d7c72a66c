"""Integer answers: the one rule for what integer, if any, an answer string spells.

Training answers are integers only (PAPER.md §8), and `reward.strict_integer=True` compares a
response's candidate with the ground truth as integers (PAPER.md §4 [R], §11 row 13). Both the
data filter that keeps integer-answer problems and the strict reward use `canonical_integer`, so a
label the filter accepts is one the strict reward can match.
"""
import re

_WRAPPERS = (
    re.compile(r"^\$+(.*?)\$+$", re.S),          # $42$, $$42$$
    re.compile(r"^\\\((.*)\\\)$", re.S),          # \(42\)
    re.compile(r"^\\boxed\s*\{(.*)\}$", re.S),    # \boxed{42}
    re.compile(r"^\\text\s*\{(.*)\}$", re.S),     # \text{42}
)
_INTEGER = re.compile(r"[+-]?\d+(?:\.0+)?")
_GROUPED = re.compile(r"[+-]?\d{1,3}([, ])\d{3}(?:\1\d{3})*")  # one separator kind


def canonical_integer(text: str) -> str | None:
  """The canonical decimal form of an integer answer, or None if the text is not one.

  Accepted, after stripping surrounding whitespace:
    * an optional sign, digits, and an optional `.0…` tail ("12.00");
    * thousands separators, only in groups of exactly three digits after the first group
      (`1,000`, `1{,}000`, `1,\\!000`, `1\\,000`, `1\\ 000`, `1 000`, `-1,024`), one kind per
      number (commas or spaces);
    * the wrappers `$…$`, `\\(…\\)`, `\\boxed{…}`, `\\text{…}`, nested in any order.
  Canonical form: `str(int(x))`, e.g. "+007" -> "7", "-1,024" -> "-1024", "$\\boxed{12}$" -> "12".
  Anything else gives None: a list or tuple ("1, 2", "3,4", "12,34"), a fraction, a decimal, an
  exponent ("1e5"), a unit, an expression, an empty string.

  Args:
    text: an answer as written (a dataset label or an extracted candidate).

  Returns:
    The canonical digits with a leading "-" for negatives, or None.
  """
  text = text.strip()
  changed = True
  while changed:
    changed = False
    for wrapper in _WRAPPERS:
      match = wrapper.match(text)
      if match:
        text, changed = match.group(1).strip(), True
  text = text.replace("{,}", ",").replace(",\\!", ",").replace("\\,", " ").replace("\\ ", " ")
  if _GROUPED.fullmatch(text):
    text = text.replace(",", "").replace(" ", "")
  if not _INTEGER.fullmatch(text):
    return None
  return str(int(text.split(".")[0]))
