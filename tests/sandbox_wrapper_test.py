"""The §3.1 notebook-cell wrapper run in the real sandbox, and the §3.3 texts end to end.

Each case is `wrap_code(code)` sent to a real `rstar-sandbox serve` as rStar2's client sends it
(`/run/long-batch`, type python, input null); the tool text is built from the answer with the
execution time fixed, since that figure depends on the machine (PAPER.md §3.3 caveats). The
paper's format pairs `wrap_code(code, traceback="full")` with `output_format="paper"`; its
tracebacks are checked against what Python prints when the code itself is the program.
  python -m pytest -q tests/sandbox_wrapper_test.py
"""
import dataclasses
import json
import urllib.request

import pytest

from rstar_jax import sandbox
from rstar_jax.sandbox import codejudge
from rstar_jax.sandbox import processes


@pytest.fixture(scope="module")
def url():
  process, url = processes.start_service(["--workers", "1", "--timeout-s", "1"])
  yield url
  process.stop()


def _run_solutions(url: str, solutions: list[tuple[str, str | None]]
                   ) -> list[sandbox.ExecutionResult]:
  body = {"type": "batch", "submissions": [
      {"type": "python", "solution": solution, "input": stdin} for solution, stdin in solutions]}
  request = urllib.request.Request(url + "/run/long-batch", data=json.dumps(body).encode(),
                                   headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(request, timeout=60) as response:
    return [codejudge.result_from_json(r) for r in json.loads(response.read())["results"]]


def _run_cells(url: str, cells: list[tuple[str, str | None]], traceback: str = "short"
               ) -> list[sandbox.ExecutionResult]:
  return _run_solutions(url, [(sandbox.wrap_code(code, traceback), stdin)
                              for code, stdin in cells])


def _text(result: sandbox.ExecutionResult, wall_time_s: float) -> str:
  return sandbox.tool_output_text(dataclasses.replace(result, wall_time_s=wall_time_s))


@pytest.mark.parametrize("code, wall_time_s, text", [
    ("print(6*7)", 0.0, "Tool call success\nstdout: 42\n\nexecution time: 0.00s"),
    ("x=6*7\nx", 0.0, "Tool call success\nstdout: 42\n\nexecution time: 0.00s"),
    ("x=1", 0.0, "Tool call success\nexecution time: 0.00s"),
    ("print('hi')\nprint(1/0)", 0.03, "Tool call failure\nreason: \nstdout: hi\n\nstderr: "
     "ZeroDivisionError: division by zero\n\nexecution time: 0.03s"),
    ("def f(:", 0.03, "Tool call failure\nreason: \nstderr: SyntaxError at line 1: invalid "
     "syntax (<unknown>, line 1)\n  def f(:\n\nexecution time: 0.03s"),
    ("print('start')\nwhile True:\n  pass", 4.01,
     "Tool call failure\nreason: worker_timeout\nstdout: start\n\nexecution time: 4.01s"),
], ids=["print", "last_expression", "no_output", "exception", "syntax_error", "busy_loop"])
def test_paper_table_rows_end_to_end(url, code, wall_time_s, text):
  (result,) = _run_cells(url, [(code, None)])
  assert _text(result, wall_time_s) == text


def test_numpy_allocation_failure_reads_memory_error(url):
  (result,) = _run_cells(url, [("import numpy as np\nnp.ones((1000, 1000, 1000))", None)])
  assert result.status == "memory_limit"
  assert _text(result, 0.17).startswith(
      "Tool call failure\nreason: \nstderr: MemoryError: Unable to allocate 7.45 GiB")


def test_last_expression_is_evaluated_once(url):
  code = ("calls = []\n"
          "def f():\n"
          "  calls.append(1)\n"
          "  print('call', len(calls))\n"
          "  raise ValueError('boom')\n"
          "f()")
  (result,) = _run_cells(url, [(code, None)])
  assert (result.status, result.stdout, result.stderr) == ("runtime_error", "call 1\n",
                                                           "ValueError: boom\n")


def test_errors_in_the_body_name_their_line(url):
  (result,) = _run_cells(url, [("a = 1\nb = [1,\n  2]\nc = b[a + 5]\nprint(c)", None)])
  assert result.stderr == "IndexError at line 4: list index out of range\n  c = b[a + 5]\n"


@pytest.mark.parametrize("code, stdout", [
    ("x = 1; x", ""),                       # released: the line does not compile as an expression
    ("None", ""),
    ("'π'", "'π'\n"),
    ("print(1)\n[i * i for i in range(3)]", "1\n[0, 1, 4]\n"),
    ("s = input()\ns.upper()", "'ABC'\n"),
])
def test_display_of_the_last_expression(url, code, stdout):
  (result,) = _run_cells(url, [(code, "abc")])
  assert (result.status, result.stdout) == ("ok", stdout)


def test_system_exit_is_not_an_error_message(url):
  ok, failing = _run_cells(url, [("print('a')\nexit(0)", None),
                                 ("import sys\nprint('b')\nsys.exit(3)", None)])
  assert (ok.status, ok.stdout, ok.stderr) == ("ok", "a\n", "")
  assert (failing.status, failing.exit_code, failing.stderr) == ("runtime_error", 3, "")


def test_wrap_code_rejects_non_text_and_unknown_tracebacks():
  with pytest.raises(ValueError, match="code must be a str"):
    sandbox.wrap_code(b"print(1)")
  with pytest.raises(ValueError, match="traceback must be one of"):
    sandbox.wrap_code("print(1)", traceback="long")


@pytest.mark.parametrize("code, text", [
    ("print('Total valid colorings:', 24)", "Total valid colorings: 24\n"),
    ("x=6*7\nx", "42\n"),
    ("x=1", ""),
    ("print('hi')\nint('x')",
     "tool call failed\nreason: error message: Traceback (most recent call last):\n"
     '  File "/tmp/source.py", line 2, in <module>\n'
     "    int('x')\n"
     "ValueError: invalid literal for int() with base 10: 'x'\n"),
    ("def f(:",
     'tool call failed\nreason: error message:   File "/tmp/source.py", line 1\n'
     "    def f(:\n          ^\nSyntaxError: invalid syntax\n"),
    ("print('start')\nwhile True:\n  pass", "tool call failed\nreason: timeout"),
], ids=["print", "last_expression", "no_output", "exception", "syntax_error", "busy_loop"])
def test_paper_format_end_to_end(url, code, text):
  (result,) = _run_cells(url, [(code, None)], traceback="full")
  assert sandbox.tool_output_text(result, output_format="paper") == text


_FAILING = [
    "print('hi')\nprint(1/0)",                                  # in the displayed expression
    "a = 1\nb = [1,\n  2]\nc = b[a + 5]\nprint(c)",             # in the body
    "def g(x):\n  return 1/x\n\ng(0)",                          # in a function of the code
    "import json\njson.loads('{')",                              # inside a library
    "try:\n  1/0\nexcept Exception:\n  raise ValueError('v')",   # chained
    "x = 1\nreturn x",                                          # compile error, not parse
    "def f(:\n  pass",                                          # parse error
    "import sympy\nsympy.Symbol(3)",
]


def test_full_traceback_is_what_python_prints_for_the_code_as_the_program(url):
  wrapped = _run_cells(url, [(code, None) for code in _FAILING], traceback="full")
  direct = _run_solutions(url, [(code, None) for code in _FAILING])
  for code, ours, python in zip(_FAILING, wrapped, direct):
    assert (ours.status, ours.exit_code) == (python.status, python.exit_code) == (
        "runtime_error", 1), code
    assert ours.stderr == python.stderr and ours.stderr, code
