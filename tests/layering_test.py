"""The import layers of DESIGN.md: imports only point down; level 0 never loads JAX.

Levels (a package may import its own modules and packages of a strictly lower level):
  5 serve_cli   4 main, eval, serve   3 train   2 rollout, data   1 models, rl   0 chat, rewards, sandbox
  -1 host_malloc (the standard library only; the sandbox and the entry points use it)
"""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "rstar_jax"
LEVELS = {
    "main": 4,
    "eval": 4,
    "serve": 4,
    "serve_cli": 5,
    "train": 3,
    "rollout": 2,
    "data": 2,
    "models": 1,
    "rl": 1,
    "chat": 0,
    "rewards": 0,
    "sandbox": 0,
    "host_malloc": -1,
}
JAX_FAMILY = {"jax", "jaxlib", "flax", "optax", "orbax", "chex", "grain"}


def _package_of(path):
  rel = path.relative_to(ROOT)
  return rel.parts[0].removesuffix(".py")


def _imports(path):
  """Yields (module name, line) of every absolute import in a file."""
  tree = ast.parse(path.read_text(), filename=str(path))
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name, node.lineno
    elif isinstance(node, ast.ImportFrom):
      if node.level:  # relative: resolve against the file's package
        base = path.relative_to(ROOT.parent).with_suffix("").parts[:-node.level]
        name = ".".join(base + ((node.module,) if node.module else ()))
        yield name, node.lineno
        if not node.module:
          for alias in node.names:
            yield name + "." + alias.name, node.lineno
      else:
        yield node.module, node.lineno
        if node.module == "rstar_jax":
          for alias in node.names:
            yield "rstar_jax." + alias.name, node.lineno


def _sources():
  return sorted(p for p in ROOT.rglob("*.py") if p.parent != ROOT or p.name != "__init__.py")


def test_every_package_has_a_level():
  for path in _sources():
    assert _package_of(path) in LEVELS, f"{path} is in no layer of DESIGN.md"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
  own = _package_of(path)
  for name, line in _imports(path):
    parts = name.split(".")
    if parts[0] == "rstar_jax" and len(parts) > 1:
      target = parts[1]
      assert target == own or LEVELS[target] < LEVELS[own], (
          f"{path.name}:{line} imports rstar_jax.{target} (level {LEVELS[target]}) "
          f"from {own} (level {LEVELS[own]})")
    if LEVELS[own] <= 0:
      assert parts[0] not in JAX_FAMILY, f"{path.name}:{line}: level-0 {own} imports {name}"


def test_root_package_imports_nothing():
  tree = ast.parse((ROOT / "__init__.py").read_text())
  assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_level_zero_loads_no_jax_at_run_time():
  level0 = [name for name, level in LEVELS.items() if level <= 0 and ((ROOT / name).exists() or (ROOT / f"{name}.py").exists())]
  code = ("import sys\n" + "".join(f"import rstar_jax.{n}\n" for n in level0) +
          "bad = sorted(m for m in sys.modules if m.split('.')[0] in %r)\n"
          "assert not bad, bad\n" % (JAX_FAMILY,))
  subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT.parent)
