"""Answer extraction rules, the PRIME grader's pieces, and the graders' refusal to run code.

Run: python -m pytest -q tests/rewards_extract_test.py
Expected values follow the released rules (rStar@ecbfb94 `fused_compute_score/prime_math`),
derived by hand in the comments.
"""
import signal
import threading
import time

import pytest
from sympy.parsing import sympy_parser

from rstar_jax import rewards
from rstar_jax.rewards import math_equal, mathd, prime, safe_sympy, verifier


@pytest.mark.parametrize("text, expected", [
    ("\\boxed{42}", "42"),
    ("\\boxed{\\frac{1}{\\sqrt{2}}} end", "\\frac{1}{\\sqrt{2}}"),  # nested braces matched
    ("\\boxed{1} and \\boxed{ 2 }", "2"),  # last box, stripped
    ("\\fbox{7}", "7"),
    ("\\fbox{7} \\boxed{8}", "8"),  # \boxed anywhere wins over \fbox
    ("\\boxed 5 then {x}", "x"),  # first brace after the last \boxed
    ("\\boxed{unbalanced", None),
    ("no box", None),
])
def test_last_boxed(text, expected):
  assert rewards.last_boxed(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("The answer is \\boxed{42}.", (True, "42")),
    # "answer:" then "answer is": the text after the last of each, in turn.
    ("Answer: 7. Final answer is 9", (True, "9")),
    ("So 12 is the answer.", (True, "So 12")),  # the text before "is the answer", as it is
    ("We get x = 5", (True, "5")),  # after the last "get ", then after the last "="
    ("The total is 30 apples. Done", (True, "30 apples")),  # cut at the last ". ", then "is "
    ("Therefore. The total is 30", (False, "Therefore")),  # the answer after ". " is lost
    ("nothing here", (False, "nothing here")),
    ("The answer is blue", (False, "blue")),  # no digit, no match
])
def test_prime_extract(text, expected):
  assert rewards.prime_extract(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("<answer>a</answer><answer>b</answer>", "b"),
    ("<answer>\nmulti\nline\n</answer>", "\nmulti\nline\n"),
    ("<answer>open", None),
    ("</answer>wrong order<answer>", None),
])
def test_answer_block(text, expected):
  assert rewards.answer_block(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("42", "42"), (" +007 ", "7"), (" -42 ", "-42"), ("-0", "0"), ("12.00", "12"),
    # Thousands separators: groups of exactly three after the first, one kind per number.
    ("1,000", "1000"), ("-1,024", "-1024"), ("1 000 000", "1000000"), ("1{,}000{,}000", "1000000"),
    ("1\\,000", "1000"), ("1\\ 000", "1000"), ("10,\\!000", "10000"), ("1,000 000", None),
    ("1,00", None), ("1,0000", None), ("12,34", None), ("1000,000", None), (",100", None),
    # Lists and tuples are no integers (removing every separator would read 12 and 34).
    ("1, 2", None), ("1,2", None), ("3, 4", None), ("1 2", None), ("(1, 2)", None),
    # Wrappers, nested in any order.
    ("$\\boxed{12}$", "12"), ("\\(5\\)", "5"), ("\\text{3}", "3"), ("$$42$$", "42"),
    ("\\boxed{1, 2}", None),
    # Not integers.
    ("42.5", None), ("4.2e1", None), ("1e5", None), ("1/2", None), ("30^\\circ", None),
    ("x=3", None), ("4 2x", None), ("", None), ("   ", None),
])
def test_canonical_integer(text, expected):
  assert rewards.canonical_integer(text) == expected


@pytest.mark.parametrize("answer, expected", [
    ("\\dfrac12", "\\frac{1}{2}"),
    ("\\text{5}", "5"),
    ("k = 3", "3"),
    ("x=\\sqrt3", "\\sqrt{3}"),
    ("0.5", "\\frac{1}{2}"),
    ("3/4", "\\frac{3}{4}"),
    ("10\\text{ cm}", "10"),
    ("\\left( 1, 2 \\right)", "(1,2)"),
    ("90^\\circ", "90"),
    ("2\\sqrt", "2\\sqrt"),  # a rule fails on a trailing \sqrt: the answer is kept as given
])
def test_mathd_normalize_answer(answer, expected):
  assert mathd.normalize_answer(answer) == expected


@pytest.mark.parametrize("prediction, reference, expected", [
    ("42.004", "42", True),  # |42.004 - 42| <= 1e-4 * 42.004
    ("42.01", "42", False),
    ("0.42", "42", True),  # reference / 100
    ("4200", "42", True),  # reference * 100
    ("$42", "42", True),
    ("42%", "42", True),
    ("1010_2", "1010", True),  # base subscript dropped
    ("(1, 2)", "(1,2)", True),
    ("[1, 2]", "(1,2)", False),
    ("Point(5)", "(5)", True),
    ("Point(1, 2)", "(1,2)", False),  # the comma rule compares "Point(1" with "(1" first
    ("Interval(0, 1)", "[0,1]", True),
    ("2\\pi", "6.283185307179586", True),  # \pi evaluated arithmetically
])
def test_math_equal_leniency(prediction, reference, expected):
  assert math_equal.math_equal(prediction, reference) is expected


def test_math_equal_subscript_that_is_not_a_base_raises():
  # The released grader's base rule calls float("x"); the caller counts it as wrong.
  with pytest.raises(ValueError):
    math_equal.math_equal("x_1", "1")
  assert prime.prime_correct("x_1", "1") is False


@pytest.mark.parametrize("given, truth, expected", [
    ("(x+1)^2", "x^2+2x+1", True),  # sympy: difference simplifies to 0
    ("\\frac{2}{4}", "\\frac{1}{2}", False),  # unreduced fractions must match exactly
    ("(1,2)", "(1,2,3)", False),
    ("2.5", "2", False),  # integer vs non-integer is never equal here
    ("12,000", "12000", True),
])
def test_grade_answer(given, truth, expected):
  assert prime.grade_answer(given, truth) is expected


def test_sympy_parse_expr_runs_model_code(tmp_path):
  # The hazard safe_sympy removes: plain parse_expr keeps builtins such as open() callable.
  target = tmp_path / "written"
  with pytest.raises(TypeError):
    sympy_parser.parse_expr(f"open('{target}', 'w') * 2")
  assert target.exists()


@pytest.mark.parametrize("text", [
    "__import__('os').getpid()", "(1).__class__", "(lambda: 1)()", "sqrt.__globals__",
    "Integer(1)[0]"])
def test_safe_parse_refuses_code(text):
  with pytest.raises(ValueError, match="refusing"):
    safe_sympy.parse(text)


def test_safe_parse_of_open_writes_no_file(tmp_path):
  # Without builtins "open" is split into the symbols o*p*e*n, and multiplying a tuple fails.
  target = tmp_path / "written"
  with pytest.raises(TypeError):
    safe_sympy.parse(f"open('{target}', 'w')")
  assert not target.exists()


def test_safe_parse_keeps_maths():
  assert safe_sympy.parse("2x + sqrt(4)") == safe_sympy.parse("2*x + 2")
  assert safe_sympy.parse("sin(pi/2) + Abs(-3)") == 4


def test_pi_answer_is_not_evaluated_as_python(tmp_path):
  # The released grader eval()s \pi answers; "open(...)" there would write the file.
  target = tmp_path / "pwned"
  response = f"<answer>\\boxed{{open('{target}', 'w') and 2\\pi}}</answer>"
  assert verifier.verify(response, "2\\pi").correct is False
  assert not target.exists()


@pytest.mark.parametrize("text, expected", [("2*3.14", 6.28), ("-(1+2)**2/3", -3.0)])
def test_eval_arithmetic(text, expected):
  assert safe_sympy.eval_arithmetic(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["9**99999", "x+1", "abs(1)", "(-8)**0.5", "1/0", "1,2"])
def test_eval_arithmetic_refuses(text):
  with pytest.raises(ValueError):
    safe_sympy.eval_arithmetic(text)


def test_verify_in_a_thread_still_uses_math_verify():
  # PRIME refuses "84/2" for an integer truth; only math-verify accepts it, and its SIGALRM
  # timeouts cannot be set outside the main thread.
  response = "<answer>\\boxed{\\dfrac{84}{2}}</answer>"
  verdicts = []
  thread = threading.Thread(target=lambda: verdicts.append(verifier.verify(response, "42")))
  thread.start()
  thread.join()
  assert verdicts == [verifier.Verdict(True, "\\dfrac{84}{2}")]


def test_verify_deadline_is_a_value_and_restores_the_alarm(monkeypatch):
  def sentinel(signum, frame):
    raise AssertionError("the caller's SIGALRM handler ran")

  def slow_verify(*args):  # Python code the timer can interrupt (a huge C-level power could not be)
    del args
    while True:
      time.sleep(0.01)

  previous = signal.signal(signal.SIGALRM, sentinel)
  try:
    with monkeypatch.context() as patch:
      patch.setattr(verifier, "_verify", slow_verify)
      verdict = verifier.verify("<answer>\\boxed{42}</answer>", "42", timeout_s=0.2)
    assert verdict == verifier.Verdict(False, None, timed_out=True)
    assert signal.getsignal(signal.SIGALRM) is sentinel
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert verifier.verify("\\boxed{42}", "42", timeout_s=0.2) == verifier.Verdict(True, "42")
  finally:
    signal.signal(signal.SIGALRM, previous)


def test_verify_bad_options_raise():
  with pytest.raises(ValueError, match="reward.scope"):
    verifier.verify("x", "1", scope="tags")
  with pytest.raises(ValueError, match="reward.strict_integer"):
    verifier.verify("x", "1", strict_integer=1)
  with pytest.raises(ValueError, match="timeout_s must be a positive number"):
    verifier.verify("x", "1", timeout_s=0)
  errors = []

  def in_thread():
    try:
      verifier.verify("x", "1", timeout_s=1.0)
    except ValueError as e:
      errors.append(str(e))

  thread = threading.Thread(target=in_thread)
  thread.start()
  thread.join()
  assert len(errors) == 1 and "main thread" in errors[0]
