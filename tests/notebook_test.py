"""notebooks/colab_tiny.ipynb: saved valid and without outputs, its commands name configs, config
arguments and flags that exist (fast), and executed headless it runs the smoke job and both arms of
the GRPO vs GRPO-RoC ablation and shows their metrics, tables and plots (slow).

  python -m pytest -q tests/notebook_test.py
  python -m pytest -q -m slow tests/notebook_test.py
"""
import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile

import nbformat
import pytest

from rstar_jax.train import config_lib, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "colab_tiny.ipynb")
# `--config FILE[:ARG]` in markdown (commands for a shell); code cells build theirs (see _code_configs).
_MARKDOWN_CONFIG = re.compile(r"--config[= ](experiments/[\w-]+\.py(?::[^\s`]*)?)")
_EXPERIMENT_FILE = re.compile(r"experiments/[\w-]+\.py")


def _notebook():
  return nbformat.read(NOTEBOOK, as_version=4)


def _code_cells(nb):
  return [cell for cell in nb.cells if cell.cell_type == "code"]


def _parameters_cell(nb):
  cells = [cell for cell in _code_cells(nb) if "parameters" in cell.metadata.get("tags", [])]
  assert len(cells) == 1, "the notebook needs exactly one code cell tagged 'parameters'"
  return cells[0]


def _parameters(nb):
  namespace = {}
  exec(_parameters_cell(nb).source, namespace)  # pylint: disable=exec-used
  return {k: v for k, v in namespace.items() if not k.startswith("__")}


def _load_experiment(path):
  return config_lib.load_module(path)


def _code_configs(nb):
  """The `experiments/FILE.py[:ARG]` strings the code cells build: the parameters cell, then every
  top-level assignment of the code cells that calls nothing (names such as SMOKE_CONFIG, BASE,
  ABLATION_CONFIGS), evaluated in order; returns the string values and the values of dicts."""
  namespace = {}
  exec(_parameters_cell(nb).source, namespace)  # pylint: disable=exec-used
  for cell in _code_cells(nb):
    for node in ast.parse(cell.source).body:
      if isinstance(node, ast.Assign) and not any(isinstance(n, ast.Call) for n in ast.walk(node.value)):
        try:
          exec(compile(ast.Module([node], []), "<cell>", "exec"), namespace)  # pylint: disable=exec-used
        except NameError:
          pass  # depends on a value computed by a call (e.g. a job's metrics)
  values = []
  for value in namespace.values():
    values += list(value.values()) if isinstance(value, dict) else [value]
  return [v for v in values if isinstance(v, str) and re.fullmatch(r"experiments/[\w-]+\.py(:.*)?", v)]


def _check_config(spec: str) -> None:
  path, _, arg = spec.partition(":")
  assert os.path.isfile(os.path.join(ROOT, path)), f"{spec}: no such config file"
  module = _load_experiment(os.path.join(ROOT, path))
  validate.validate(module.get_config(arg or None), spec)  # an unknown or mistyped argument raises


def test_the_notebook_is_valid_and_saved_without_outputs():
  nb = _notebook()
  nbformat.validate(nb)
  assert nb.metadata.kernelspec.name == "python3"
  for cell in _code_cells(nb):
    assert cell.outputs == [] and cell.execution_count is None, f"cell {cell.get('id')} has outputs"
  params = _parameters(nb)
  assert {"SOURCE", "WORKDIR", "ABLATION_DIR", "ABLATION_BASE", "ABLATION_STEPS", "SEED"} <= set(params)
  assert params["SOURCE"] == ""  # in Colab: the install cell asks for an archive of the project
  text = json.dumps(nb.cells)
  assert ROOT not in text and tempfile.gettempdir() not in text  # no paths of the machine that ran it


def test_the_notebook_commands_name_existing_configs_arguments_and_flags():
  nb = _notebook()
  code_configs = _code_configs(nb)
  assert "experiments/tiny.py:smoke" in code_configs
  ablation = [c for c in code_configs if c.startswith("experiments/roc_ablation.py:")]
  assert sorted("roc=True" in c for c in ablation) == [False, True], ablation  # both arms
  markdown = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
  markdown_configs = _MARKDOWN_CONFIG.findall(markdown)
  assert "experiments/tiny.py" in markdown_configs  # the full tiny default's command
  for spec in code_configs + markdown_configs:
    _check_config(spec)
  code = "\n".join(cell.source for cell in _code_cells(nb))
  for path in _EXPERIMENT_FILE.findall(code):
    assert os.path.isfile(os.path.join(ROOT, path)), path
  # Every `--flag` of the main job's command line (main_command and the extra arguments of its
  # calls) is one of the job's absl flags.
  importlib.import_module("rstar_jax.main")  # defines the job's absl flags
  from absl import flags  # pylint: disable=import-outside-toplevel
  used = set()
  for cell in _code_cells(nb):
    for node in ast.walk(ast.parse(cell.source)):
      if isinstance(node, ast.FunctionDef) and node.name == "main_command":
        parts = node.body
      elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "main_command":
        parts = node.args[2:]
      else:
        continue
      for part in parts:
        for const in ast.walk(part):
          if isinstance(const, ast.Constant) and isinstance(const.value, str) and const.value.startswith("--"):
            used.add(re.match(r"--([\w-]+)", const.value).group(1))
  assert {"config", "workdir"} <= used
  assert used <= set(flags.FLAGS), used - set(flags.FLAGS)
  assert "python -m rstar_jax.main" in markdown and importlib.util.find_spec("rstar_jax.main")


def test_without_the_package_or_a_source_the_install_cell_says_what_to_set(tmp_path):
  """Where rstar_jax is not importable (`python -S`: no site-packages), outside Colab, with SOURCE
  empty, the install cell raises an error naming SOURCE and clones nothing."""
  nb = _notebook()
  install = next(cell for cell in _code_cells(nb) if "find_spec(\"rstar_jax\")" in cell.source)
  script = _parameters_cell(nb).source + "\n" + install.source
  proc = subprocess.run([sys.executable, "-S", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode != 0
  assert "RuntimeError: rstar_jax is not installed" in proc.stderr and "set SOURCE" in proc.stderr
  assert not os.listdir(tmp_path)


def test_the_install_cell_unpacks_an_archive_of_the_project(tmp_path):
  """`checkout_from` (the install cell's) turns a `git archive` of this checkout into a directory
  pip can install, and refuses an archive that holds no project."""
  nb = _notebook()
  install = next(cell for cell in _code_cells(nb) if "find_spec(\"rstar_jax\")" in cell.source)
  tree = ast.parse(install.source)
  tree.body = [node for node in tree.body if isinstance(node, (ast.Import, ast.FunctionDef))]
  namespace = {}
  exec(compile(tree, "install cell", "exec"), namespace)  # pylint: disable=exec-used
  archive = tmp_path / "rstar_jax.zip"
  subprocess.run(["git", "archive", "-o", str(archive), "HEAD"], cwd=ROOT, check=True)
  checkout = namespace["checkout_from"](str(archive), str(tmp_path / "unpacked"))
  assert checkout == str(tmp_path / "unpacked")
  assert os.path.isfile(os.path.join(checkout, "setup.py")) and os.path.isfile(
      os.path.join(checkout, "experiments", "tiny.py"))
  assert namespace["checkout_from"](str(tmp_path / "unpacked"), "unused") == str(tmp_path / "unpacked")
  other = tmp_path / "other.zip"
  with zipfile.ZipFile(other, "w") as z:
    z.writestr("README.txt", "not the project")
  with pytest.raises(RuntimeError, match="did not give a checkout of the project"):
    namespace["checkout_from"](str(other), str(tmp_path / "other"))


def _outputs(cell, output_type=None):
  return [o for o in cell.outputs if output_type is None or o.output_type == output_type]


def _cell(nb, cell_id):
  return next(cell for cell in nb.cells if cell.get("id") == cell_id)


@pytest.mark.slow
def test_the_notebook_runs_headless(tmp_path):
  """Executes every cell (the smoke job of the tiny default, both ablation arms) with the run
  directories under tmp_path, injected after the parameters cell as papermill does."""
  from nbclient import NotebookClient  # pylint: disable=import-outside-toplevel
  nb = _notebook()
  workdir, ablation_dir = tmp_path / "colab_smoke", tmp_path / "colab_ablation"
  injected = nbformat.v4.new_code_cell(f"WORKDIR = {str(workdir)!r}\nABLATION_DIR = {str(ablation_dir)!r}\n",
                                       id="injected-parameters")
  injected.metadata["tags"] = ["injected-parameters"]
  nb.cells.insert(nb.cells.index(_parameters_cell(nb)) + 1, injected)
  # The jobs see the machine's devices, as in Colab: not the 8 forced CPU devices of the test suite.
  env = dict(os.environ)
  env["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", "")).strip()
  start = time.time()
  NotebookClient(nb, timeout=1200, kernel_name="python3",
                 resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute(env=env)
  print(f"notebook executed in {time.time() - start:.0f}s")
  for cell in _code_cells(nb):
    assert not _outputs(cell, "error"), cell.get("id")
  assert "skipping the install" in "".join(o.get("text", "") for o in _outputs(_cell(nb, "install"), "stream"))
  assert not os.path.exists(os.path.join(os.path.dirname(NOTEBOOK), "rstar_jax"))  # nothing cloned

  # The smoke run: its files, and the notebook showed its metrics, eval table and plots.
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [row["step"] for row in rows] == list(range(1, 9)) and sum("rl/step" in row for row in rows) == 4
  table = (workdir / "eval_table.md").read_text()
  assert table.startswith("| phase | avg@2 |")
  shown = [o["data"].get("text/markdown", "") for o in _outputs(_cell(nb, "smoke-eval"), "display_data")]
  assert shown == [table]
  metrics_tables = [o["data"]["text/markdown"] for o in _outputs(_cell(nb, "smoke-metrics"), "display_data")]
  assert len(metrics_tables) == 1 and len(metrics_tables[0].splitlines()) == 2 + len(rows)
  images = [o for o in _outputs(_cell(nb, "smoke-plots"), "display_data") if "image/png" in o["data"]]
  assert len(images) == 1 + len(list((workdir / "plots").glob("*.png"))) >= 6  # loss.png, plots/*.png

  # The ablation: both arms ran their RL steps (GRPO-RoC sampling twice as many rollouts), and the
  # comparison table and plot cover both.
  for arm, rollouts in (("grpo", 4), ("grpo_roc", 8)):
    arm_rows = [json.loads(line) for line in (ablation_dir / arm / "metrics.jsonl").read_text().splitlines()]
    assert [row["rl/step"] for row in arm_rows] == [1, 2]
    assert all(row["down_sampling/before_sampling_trace_num"] == 4 * rollouts for row in arm_rows)
    assert (ablation_dir / arm / "evals" / "rl" / "eval.json").exists()
  comparison = (ablation_dir / "comparison.md").read_text()
  assert comparison.splitlines()[0] == "| metric | SFT policy (start) | GRPO | GRPO-RoC |"
  assert "| train: rollouts sampled per step (mean of 2 steps) | - | 16.000 | 32.000 |" in comparison
  shown = [o["data"].get("text/markdown") for o in _outputs(_cell(nb, "comparison-table"), "display_data")]
  assert shown == [comparison]
  plot = [o for o in _outputs(_cell(nb, "comparison-plot"), "display_data") if "image/png" in o["data"]]
  assert len(plot) == 1 and (ablation_dir / "comparison.png").stat().st_size > 10_000
