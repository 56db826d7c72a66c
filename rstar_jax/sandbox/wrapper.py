"""The notebook-cell wrapper of PAPER.md §3.1: a program that runs a code string like a cell.

`wrap_code(code)` returns a self-contained Python program (the `solution` rStar2's client
sends to Code Judge) that runs `code` the way the released wrapper does
(rStar@ecbfb94 `rstar2_agent/tools/code_judge_utils.py`):

* The code is parsed with `ast`. When the last top-level statement is an expression, the
  source lines before that statement run first, then the expression's lines are evaluated and
  the `repr` of a value that is not None is printed (IPython-style display). When those lines
  hold more than the expression (`x = 1; x` on one line) and do not compile as an expression,
  they run as statements and nothing is displayed.
* Any exception prints one message to stderr and exits with status 1:
  `{ErrorType} at line {N}: {message}\\n  {source line N}` when N can be mapped into the piece
  that failed, else `{ErrorType}: {message}`. N is the exception's `lineno` attribute when it
  has one (SyntaxError, JSONDecodeError), else the line of the innermost traceback frame, plus
  the number of lines before the piece for the displayed expression (so an error raised while
  evaluating the last expression usually has no line, PAPER.md §3.3's third example).
* `SystemExit` and `KeyboardInterrupt` are not caught (the interpreter handles them).

Two deliberate differences from the released wrapper (PAPER.md §3.3 caveats, [R]):
* the last expression is evaluated once: when its evaluation raises, the error is reported
  (the released wrapper re-runs those lines as statements, doubling their side effects);
* stdout and stderr are flushed before the error exit, so output printed before a failure is
  kept even when the interpreter runs buffered (the released `os._exit(1)` drops it).
A `lineno` of None (possible on a SyntaxError raised by user code) counts as unmappable
instead of crashing the error report.
"""
import base64

# The program around the user's code. It uses only the standard library, defines nothing in
# the namespace the code runs in, and reads the code from base64, so no quoting can break it.
_PROGRAM = r'''import ast as _ast
import base64 as _base64
import os as _os
import sys as _sys


def _error_text(exc, code, line_offset):
  if hasattr(exc, "lineno"):
    lineno = exc.lineno if isinstance(exc.lineno, int) else -1
  else:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
      tb = tb.tb_next
    lineno = tb.tb_lineno if tb is not None and tb.tb_lineno is not None else -1
  if lineno != -1:
    lineno += line_offset
    lines = code.splitlines()
    if 0 <= lineno - 1 < len(lines):
      return f"{type(exc).__name__} at line {lineno}: {exc}\n  {lines[lineno - 1]}"
  return f"{type(exc).__name__}: {exc}"


def _fail(text):
  print(text, file=_sys.stderr)
  for stream in (_sys.stdout, _sys.stderr):
    try:
      stream.flush()
    except Exception:
      pass
  _os._exit(1)


def _run_cell(code):
  namespace = {"__name__": "__main__", "__file__": "<string>", "__builtins__": __builtins__}
  try:
    tree = _ast.parse(code)
  except SyntaxError as e:
    _fail(_error_text(e, code, 0))
  body, last = code, None
  if tree.body and isinstance(tree.body[-1], _ast.Expr):
    node = tree.body[-1]
    lines = code.splitlines()
    body = "\n".join(lines[:node.lineno - 1])
    last = "\n".join(lines[node.lineno - 1:node.end_lineno])
  if body:
    try:
      exec(compile(body, "<string>", "exec"), namespace)
    except Exception as e:
      _fail(_error_text(e, body, 0))
  if last:
    line_offset = len(body.splitlines()) if body else 0
    try:
      expression = compile(last, "<string>", "eval")
    except SyntaxError:
      expression = None
    try:
      if expression is None:
        exec(compile(last, "<string>", "exec"), namespace)
      else:
        value = eval(expression, namespace)
        if value is not None:
          print(repr(value))
    except Exception as e:
      _fail(_error_text(e, last, line_offset))


_run_cell(_base64.b64decode("{code_b64}").decode())
'''


def wrap_code(code: str) -> str:
  """The program that runs `code` as a notebook cell (module docstring), PAPER.md §3.1.

  Args:
    code: the `code` argument of the model's tool call.

  Returns:
    Python source to run as a script, e.g. the `solution` of a Code Judge submission.
  """
  if not isinstance(code, str):
    raise ValueError(f"code must be a str, got {type(code).__name__}")
  encoded = base64.b64encode(code.encode("utf-8")).decode("ascii")
  return _PROGRAM.replace("{code_b64}", encoded)
