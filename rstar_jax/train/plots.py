"""PNG plots of a run's metrics.jsonl and evaluations, for a person to open.

  plot_losses(workdir)           loss.png: every loss/* and eval/loss* series by step
  plot_run(workdir, evals)       loss.png and, for RL runs, plots/*.png: reward and accuracy, tool
                                 errors among correct rollouts, tool calls, response length (by
                                 step, stage boundaries marked), and the evaluation after each phase
"""
import os
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rstar_jax.train.metrics import read_metrics

# plots/<name>.png: (title, y label, [(metric, legend)])
RL_PLOTS = {
    "reward": ("Rollout reward (accuracy of the step's rollouts)", "reward", [
        ("reward/mean", "mean reward"), ("reward/solve_all", "groups all correct"),
        ("reward/solve_none", "groups all wrong")]),
    "tool_errors": ("Tool errors per call", "ratio", [
        ("rollout/positive_tool_error_ratio", "among correct rollouts"),
        ("rollout/tool_error_ratio", "all rollouts"),
        ("roc_error_ratio/kept_positive_err_ratio", "correct rollouts RoC kept")]),
    "tool_calls": ("Tool use", "per rollout", [
        ("rollout/tool_calls_mean", "tool calls"), ("rollout/no_tool_fraction", "no tool call (fraction)")]),
    "response_length": ("Response length", "tokens", [
        ("rollout/response_tokens_mean", "mean (model + environment)"),
        ("rollout/response_tokens_max", "max"), ("rollout/model_tokens_mean", "model tokens, mean")]),
}
_EVAL_SERIES = [("eval/avg@", "avg@k (mean accuracy)"), ("eval/pass@", "pass@k"),
                ("eval/positive_tool_error_ratio", "tool errors among correct"),
                ("eval/no_tool_fraction", "no tool call")]


def _figure(title: str, xlabel: str, ylabel: str):
  fig = Figure(figsize=(7, 4))
  FigureCanvasAgg(fig)
  ax = fig.subplots()
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  return fig, ax


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path + ".tmp.png", dpi=120)
  os.replace(path + ".tmp.png", path)
  return path


def _series(rows: Sequence[Mapping[str, Any]], name: str) -> list[tuple[int, float]]:
  return [(row["step"], row[name]) for row in rows
          if isinstance(row.get(name), (int, float)) and not isinstance(row.get(name), bool)]


def plot_losses(workdir: str, out_name: str = "loss.png") -> str:
  """Plots every `loss/*` and `eval/loss*` series against the step; returns the PNG path."""
  rows = read_metrics(workdir)
  names = sorted({k for row in rows for k in row if k.startswith(("loss/", "eval/loss"))})
  fig, ax = _figure(os.path.basename(os.path.abspath(workdir)), "step", "loss")
  for name in names:
    points = _series(rows, name)
    ax.plot(*zip(*points), marker="." if len(points) < 50 else None, label=name)
  if names:
    ax.legend()
  return _save(fig, os.path.join(workdir, out_name))


def _stage_starts(rows: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]]:
  """(first step, stage name) of each stage in the rows, in order."""
  starts, last = [], None
  for row in rows:
    if row.get("stage") != last:
      last = row.get("stage")
      starts.append((row["step"], str(last)))
  return starts


def plot_rl(workdir: str) -> list[str]:
  """plots/{reward,tool_errors,tool_calls,response_length}.png of the RL rows; returns the paths."""
  rows = [row for row in read_metrics(workdir) if "rl/step" in row]
  if not rows:
    return []
  paths = []
  for name, (title, ylabel, series) in RL_PLOTS.items():
    fig, ax = _figure(title, "step", ylabel)
    for metric, label in series:
      points = _series(rows, metric)
      if points:
        ax.plot(*zip(*points), marker="." if len(points) < 60 else None, label=label)
    for step, stage in _stage_starts(rows):
      ax.axvline(step - 0.5, color="gray", linestyle="--", alpha=0.6)
      ax.annotate(stage, (step - 0.5, 1.0), xycoords=("data", "axes fraction"), va="top", fontsize=8)
    ax.legend(fontsize=8)
    paths.append(_save(fig, os.path.join(workdir, "plots", f"{name}.png")))
  return paths


def plot_evals(workdir: str, evals: Mapping[str, Mapping[str, float]]) -> str | None:
  """plots/eval.png: the evaluation metrics after each phase (SFT, then each stage)."""
  if not evals:
    return None
  phases = list(evals)
  fig, ax = _figure("Evaluation after each phase", "phase", "value")
  for prefix, label in _EVAL_SERIES:
    keys = [next((k for k in evals[p] if k.startswith(prefix)), None) for p in phases]
    if all(keys):
      ax.plot(range(len(phases)), [evals[p][k] for p, k in zip(phases, keys)], marker="o",
              label=f"{label} ({keys[0][5:]})" if prefix.endswith("@") else label)
  ax.set_xticks(range(len(phases)), phases)
  ax.legend(fontsize=8)
  return _save(fig, os.path.join(workdir, "plots", "eval.png"))


def plot_run(workdir: str, evals: Mapping[str, Mapping[str, float]]) -> list[str]:
  """All plots of a run; returns the paths written."""
  paths = [plot_losses(workdir)] + plot_rl(workdir)
  eval_path = plot_evals(workdir, evals)
  return paths + ([eval_path] if eval_path else [])
