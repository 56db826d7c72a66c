"""The notebook-cell wrapper of PAPER.md §3.1: a program that runs a code string like a cell.

`wrap_code(code)` returns a self-contained Python program (the `solution` rStar2's client
sends to Code Judge) that runs `code` the way the released wrapper does
(rStar@ecbfb94 `rstar2_agent/tools/code_judge_utils.py`):

* The code is parsed with `ast`. When the last top-level statement is an expression, the
  source lines before that statement run first, then the expression's lines are evaluated and
  the `repr` of a value that is not None is printed (IPython-style display). When those lines
  hold more than the expression (`x = 1; x` on one line) and do not compile as an expression,
  they run as statements and nothing is displayed.
* Any exception prints an error report to stderr and exits with status 1. The report is
  chosen by `traceback`:
  - "short" (the released wrapper, the default): one message,
    `{ErrorType} at line {N}: {message}\\n  {source line N}` when N can be mapped into the
    piece that failed, else `{ErrorType}: {message}`. N is the exception's `lineno` attribute
    when it has one (SyntaxError, JSONDecodeError), else the line of the innermost traceback
    frame, plus the number of lines before the piece for the displayed expression (so an
    error raised while evaluating the last expression usually has no line, PAPER.md §3.3's
    third example).
  - "full" (for the paper's format, PAPER.md §3.3 "Paper-internal format", §11 row 14): the
    traceback Python itself prints when the code is the script, byte for byte. The code is
    compiled under the wrapper's own file name (`__file__`, "/tmp/source.py" in this sandbox,
    "<tempdir>/source.py" in Code Judge; "<string>" under `python -c`, where Python would
    show no source lines but these do) with its own line numbers and source lines, and only
    frames of the code and what it called are shown, so `print(1)\\nprint(1/0)` reports
    `Traceback (most recent call last):\\n  File "/tmp/source.py", line 2, in <module>\\n
    print(1/0)\\n          ~^~\\nZeroDivisionError: division by zero\\n` (the caret line as
    the interpreter draws it), and a syntax error, as in Python, has no traceback header:
    `  File "/tmp/source.py", line 1`, the line, a caret line, `SyntaxError: ...`.
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

TRACEBACKS = ("short", "full")

# The program around the user's code. It uses only the standard library, defines nothing in
# the namespace the code runs in, and reads the code from base64, so no quoting can break it.
_PROGRAM = r'''import ast as _ast
import base64 as _base64
import os as _os
import sys as _sys

_FULL = {full}
# Full tracebacks name the code after this script, as Python would if the code were the script.
_FILENAME = (globals().get("__file__") or "<string>") if _FULL else "<string>"
_NAMESPACE = {"__name__": "__main__", "__file__": "<string>", "__builtins__": __builtins__}


def _full_report(exc, code):
  import io
  import linecache
  import traceback
  # The lines as linecache reads a file: universal newlines, each ending with "\n".
  lines = io.StringIO(code, newline=None).readlines()
  if lines and not lines[-1].endswith("\n"):
    lines[-1] += "\n"
  linecache.cache[_FILENAME] = (len(code), None, lines, _FILENAME)
  if (isinstance(exc, SyntaxError) and exc.filename == _FILENAME
      and isinstance(exc.lineno, int) and 0 < exc.lineno <= len(lines)):
    exc.text = lines[exc.lineno - 1]  # the compiler read it from this file: the wrapper's line
  tb = exc.__traceback__
  while tb is not None and tb.tb_frame.f_globals is not _NAMESPACE:  # wrapper, ast, compile
    tb = tb.tb_next
  return "".join(traceback.format_exception(type(exc), exc, tb))


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


def _fail(exc, code, piece, line_offset):
  if _FULL:
    _sys.stderr.write(_full_report(exc, code))
  else:
    print(_error_text(exc, piece, line_offset), file=_sys.stderr)
  for stream in (_sys.stdout, _sys.stderr):
    try:
      stream.flush()
    except Exception:
      pass
  _os._exit(1)


def _run_cell(code):
  namespace = _NAMESPACE
  try:
    tree = _ast.parse(code, _FILENAME) if _FULL else _ast.parse(code)
  except SyntaxError as e:
    _fail(e, code, code, 0)
  body, last, last_line = code, None, 1
  if tree.body and isinstance(tree.body[-1], _ast.Expr):
    node = tree.body[-1]
    lines = code.splitlines()
    body = "\n".join(lines[:node.lineno - 1])
    last = "\n".join(lines[node.lineno - 1:node.end_lineno])
    last_line = node.lineno
  if body:
    try:
      exec(compile(body, _FILENAME, "exec"), namespace)
    except Exception as e:
      _fail(e, code, body, 0)
  if last:
    line_offset = len(body.splitlines()) if body else 0
    # Full reports keep the code's own line numbers: the piece starts on its own line.
    source = "\n" * (last_line - 1) + last if _FULL else last
    try:
      expression = compile(source, _FILENAME, "eval")
    except SyntaxError:
      expression = None
    try:
      if expression is None:
        exec(compile(source, _FILENAME, "exec"), namespace)
      else:
        value = eval(expression, namespace)
        if value is not None:
          print(repr(value))
    except Exception as e:
      _fail(e, code, last, line_offset)


_run_cell(_base64.b64decode("{code_b64}").decode())
'''


def wrap_code(code: str, traceback: str = "short") -> str:
  """The program that runs `code` as a notebook cell (module docstring), PAPER.md §3.1.

  Args:
    code: the `code` argument of the model's tool call.
    traceback: the error report, "short" (released wrapper) or "full" (the raw traceback of
      the paper's format); one of TRACEBACKS.

  Returns:
    Python source to run as a script, e.g. the `solution` of a Code Judge submission.
  """
  if not isinstance(code, str):
    raise ValueError(f"code must be a str, got {type(code).__name__}")
  if traceback not in TRACEBACKS:
    raise ValueError(f"traceback must be one of {TRACEBACKS}, got {traceback!r}")
  encoded = base64.b64encode(code.encode("utf-8")).decode("ascii")
  return _PROGRAM.replace("{full}", str(traceback == "full")).replace("{code_b64}", encoded)
