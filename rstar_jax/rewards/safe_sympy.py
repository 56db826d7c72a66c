"""Parsing model-written maths with sympy without executing model-written Python.

`sympy.parse_expr` turns text into Python code and `eval`s it with the builtins in scope, so
`open(...)` or `exec(...)` in a response would run. The released grader calls it on model text
inside its sandbox; we run the same parser but check the generated code first: only arithmetic,
literals, and calls of sympy maths classes (numbers, symbols, functions such as `sin`, `sqrt`)
pass; attribute access, subscripts, keywords, lambdas and every other name are refused.

Also here: an arithmetic-only evaluator that replaces the released grader's `eval` of `\\pi`
expressions.
"""
import ast
import functools
import operator

import sympy
from sympy.parsing import sympy_parser

# The prm800k checker's transformations: standard ones plus implicit multiplication ("2x").
_TRANSFORMATIONS = sympy_parser.standard_transformations + (
    sympy_parser.implicit_multiplication_application,)

# sympy maths callables that are plain functions rather than sympy.Basic classes.
_EXTRA_CALLABLES = frozenset({"sqrt", "cbrt", "root", "real_root"})
_ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Load,
                  ast.Call, ast.Tuple, ast.List, ast.operator, ast.unaryop)
_MAX_EXPONENT = 10_000
_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
               ast.Div: operator.truediv, ast.Pow: operator.pow, ast.USub: operator.neg,
               ast.UAdd: operator.pos}


@functools.cache
def _sympy_namespace() -> dict:
  namespace = {}
  exec("from sympy import *", namespace)  # pylint: disable=exec-used  # sympy's own namespace
  return namespace


def _is_maths_object(value) -> bool:
  return (isinstance(value, sympy.Basic) or
          (isinstance(value, type) and issubclass(value, sympy.Basic)))


def parse(text: str) -> sympy.Basic:
  """`sympy.parse_expr` with implicit multiplication, restricted to maths.

  Raises:
    ValueError: the generated code uses anything but arithmetic and sympy maths objects.
    Any error sympy raises while tokenizing or evaluating.
  """
  namespace = dict(_sympy_namespace())
  local = {}
  code = sympy_parser.stringify_expr(text, local, namespace, _TRANSFORMATIONS)
  for node in ast.walk(ast.parse(code, mode="eval")):
    if not isinstance(node, _ALLOWED_NODES):
      raise ValueError(f"refusing {type(node).__name__} in {text!r:.80}")
    if isinstance(node, ast.Call) and node.keywords:
      raise ValueError(f"refusing keyword arguments in {text!r:.80}")
    if isinstance(node, ast.Name) and not (
        node.id in _EXTRA_CALLABLES or _is_maths_object(namespace.get(node.id))):
      raise ValueError(f"refusing name {node.id!r} in {text!r:.80}")
  return sympy_parser.eval_expr(code, local, namespace)


def eval_arithmetic(text: str) -> float:
  """Evaluates +, -, *, /, ** and parentheses over numbers, as a float.

  Replaces the released grader's `eval()` of `\\pi`-substituted answers (e.g. "2*3.14"). Exponents
  above 10^4 in magnitude are refused so a short string cannot demand a huge power.

  Raises:
    ValueError: anything else (names, calls, huge exponents), or a syntax error.
  """
  try:
    tree = ast.parse(text.strip(), mode="eval")
  except SyntaxError as e:
    raise ValueError(f"not arithmetic: {text!r:.80}") from e
  value = _arithmetic(tree.body, text)
  if isinstance(value, complex):
    raise ValueError(f"complex value of {text!r:.80}")
  return float(value)


def _arithmetic(node, text):
  if isinstance(node, ast.Constant) and type(node.value) in (int, float):
    return node.value
  if isinstance(node, ast.UnaryOp) and type(node.op) in _ARITHMETIC:
    return _ARITHMETIC[type(node.op)](_arithmetic(node.operand, text))
  if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
    left, right = _arithmetic(node.left, text), _arithmetic(node.right, text)
    if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
      raise ValueError(f"exponent {right} too large in {text!r:.80}")
    try:
      return _ARITHMETIC[type(node.op)](left, right)
    except (ZeroDivisionError, OverflowError) as e:
      raise ValueError(f"cannot evaluate {text!r:.80}: {e}") from e
  raise ValueError(f"not arithmetic: {text!r:.80}")
