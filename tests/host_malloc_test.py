"""rstar_jax.host_malloc: the environment it re-executes with, and a real re-execution."""
import ast
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from rstar_jax import host_malloc

OURS = ":".join(host_malloc.TUNABLES)


def test_adds_the_tunables_to_an_empty_environment():
  environ = host_malloc.tuned_environment({"PATH": "/bin"})
  assert environ == {"PATH": "/bin", "GLIBC_TUNABLES": OURS}
  assert "glibc.malloc.trim_threshold=68719476736" in OURS


def test_keeps_the_users_tunables_first_and_adds_only_missing_ones():
  user = "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1"
  environ = host_malloc.tuned_environment({"GLIBC_TUNABLES": user})
  assert environ["GLIBC_TUNABLES"] == (
      f"glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
      f"glibc.malloc.trim_threshold={64 << 30}")


def test_nothing_to_change_once_tuned_or_opted_out():
  assert host_malloc.tuned_environment({"GLIBC_TUNABLES": OURS}) is None
  assert host_malloc.tuned_environment({"RSTAR_JAX_HOST_MALLOC": "system"}) is None
  assert host_malloc.tuned_environment({"RSTAR_JAX_HOST_MALLOC": "kept"})["GLIBC_TUNABLES"] == OURS


def test_a_bad_choice_names_the_variable():
  with pytest.raises(ValueError, match="RSTAR_JAX_HOST_MALLOC must be 'kept' or 'system', got 'jemalloc'"):
    host_malloc.tuned_environment({"RSTAR_JAX_HOST_MALLOC": "jemalloc"})


def test_untuned_environment_takes_out_only_ours():
  user = "glibc.malloc.tcache_count=0"
  tuned = host_malloc.tuned_environment({"PATH": "/bin", "GLIBC_TUNABLES": user})
  assert host_malloc.untuned_environment(tuned) == {"PATH": "/bin", "GLIBC_TUNABLES": user}
  assert host_malloc.untuned_environment(host_malloc.tuned_environment({"PATH": "/bin"})) == {"PATH": "/bin"}
  assert host_malloc.untuned_environment({"PATH": "/bin"}) == {"PATH": "/bin"}


ROOT = pathlib.Path(__file__).resolve().parents[1]
ENTRY_POINTS = ["rstar_jax/main.py", "rstar_jax/eval.py", "rstar_jax/serve.py"] + [
    f"benchmarks/{name}.py" for name in ("agent_bench", "engine_bench", "model_bench", "serve_bench",
                                         "staleness_bench", "train_bench")]


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_entry_points_reexecute_before_their_other_imports(path):
  """Docstring, `from rstar_jax import host_malloc`, then the `__main__` guard calling it: JAX and
  the rest are imported once, by the re-executed process."""
  body = ast.parse((ROOT / path).read_text()).body
  assert isinstance(body[0], ast.Expr), f"{path}: module docstring first"
  assert ast.unparse(body[1]) == "from rstar_jax import host_malloc", path
  assert ast.unparse(body[2]) == "if __name__ == '__main__':\n    host_malloc.reexec_with_kept_memory()", path


_SCRIPT = textwrap.dedent("""
    import os, sys
    print("start", os.getpid(), os.environ.get("GLIBC_TUNABLES", ""), sys.argv[1:], flush=True)
    from rstar_jax import host_malloc
    host_malloc.reexec_with_kept_memory()
    print("after", os.getpid(), flush=True)
""")


@pytest.mark.skipif(sys.platform != "linux", reason="glibc tunables are Linux-only")
@pytest.mark.parametrize("opt_out", [False, True])
def test_reexecutes_once_with_the_same_pid_and_arguments(tmp_path, opt_out):
  script = tmp_path / "entry.py"
  script.write_text(_SCRIPT)
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "RSTAR_JAX_HOST_MALLOC")}
  if opt_out:
    env["RSTAR_JAX_HOST_MALLOC"] = "system"
  out = subprocess.run([sys.executable, str(script), "--flag", "x y"], env=env, capture_output=True, text=True,
                       check=True, timeout=120).stdout.splitlines()
  first_pid = out[0].split()[1]
  if opt_out:
    assert out == [f"start {first_pid}  ['--flag', 'x y']", f"after {first_pid}"]
  else:
    assert out == [f"start {first_pid}  ['--flag', 'x y']", f"start {first_pid} {OURS} ['--flag', 'x y']",
                   f"after {first_pid}"]


def test_the_serve_console_script_reexecutes_before_importing_serve():
  run = next(node for node in ast.parse((ROOT / "rstar_jax/serve_cli.py").read_text()).body
             if isinstance(node, ast.FunctionDef) and node.name == "run")
  assert [ast.unparse(statement) for statement in run.body] == [
      "host_malloc.reexec_with_kept_memory()", "from rstar_jax import serve", "serve.run()"]
  script = pathlib.Path(sys.executable).parent / "rstar-serve"
  if script.exists():  # installed with pip install -e .
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    done = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Flag --checkpoint must have a value" in done.stderr, done
