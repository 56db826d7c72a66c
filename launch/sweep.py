"""Runs an experiment's sweep (`get_sweep()` of its config file), aggregates over seeds, checks that
a repeated run reproduces its metrics exactly.

  python launch/sweep.py --config experiments/roc_ablation.py --workdir runs/roc_ablation
  python launch/sweep.py --config experiments/roc_ablation.py --workdir runs/roc_ablation --parallel 2
  python launch/sweep.py --config experiments/roc_ablation.py --workdir runs/roc_ablation --print
  python launch/sweep.py --config experiments/roc_ablation.py --workdir runs/roc_ablation --aggregate_only

A sweep entry is a dict: "config" is the config file's argument (e.g. "roc=False,seed=1"), any
other key a `--config.KEY=VALUE` override. Run directories are named after the entry. Runs that
differ only in `seed` / `data.seed` form a group; for each group the aggregate reports mean, std,
min and max over seeds of the last training metrics and of the final evaluation, written to
WORKDIR/sweep.md and WORKDIR/sweep.csv, with plots WORKDIR/sweep_<metric>.png (mean and min-max band
by step). `--repeat` (default 1) reruns the first entry that many times into "<name>.repeat<i>"
and reports whether its metrics.jsonl rows (all but time/ and throughput/ values) and its
evaluations are bitwise equal to the first run's. Modes: sequential (default), `--parallel N`
local processes, or `--print` the commands (for a cluster scheduler), running nothing.
"""
import argparse
import concurrent.futures
import csv
import json
import os
import re
import shlex
import subprocess
import sys
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from rstar_jax.train import config_lib  # pylint: disable=wrong-import-position
from rstar_jax.train.metrics import read_metrics  # pylint: disable=wrong-import-position

SEED_KEYS = ("seed", "data.seed")
STEP_METRICS = ("reward/mean", "rollout/positive_tool_error_ratio", "rollout/tool_error_ratio",
                "rollout/response_tokens_mean", "rollout/tool_calls_mean")
EVAL_METRICS = ("eval/avg@", "eval/pass@", "eval/positive_tool_error_ratio", "eval/tool_error_ratio",
                "eval/response_tokens_mean", "eval/tool_calls_mean")
_VOLATILE = ("time/", "throughput/")


def load_sweep(config_path: str) -> list[dict[str, Any]]:
  module = config_lib.load_module(config_path)
  if not hasattr(module, "get_sweep"):
    raise SystemExit(f"{config_path} has no get_sweep()")
  entries = module.get_sweep()
  if not entries or not all(isinstance(e, dict) for e in entries):
    raise SystemExit(f"{config_path}: get_sweep() must return a non-empty list of dicts")
  return entries


def settings(entry: dict[str, Any]) -> dict[str, str]:
  """The entry as flat `name -> value` pairs: the config argument's k=v items, then the overrides."""
  out = {}
  for item in filter(None, str(entry.get("config", "")).split(",")):
    key, _, value = item.partition("=")
    out[key.strip()] = value.strip() if value else "True"
  out.update({k: str(v) for k, v in entry.items() if k != "config"})
  return out


def run_name(entry: dict[str, Any]) -> str:
  name = ",".join(f"{k}={v}" for k, v in settings(entry).items()) or "default"
  return re.sub(r"[^A-Za-z0-9=,._-]", "_", name)


def group_name(entry: dict[str, Any]) -> str:
  return ",".join(f"{k}={v}" for k, v in settings(entry).items() if k not in SEED_KEYS) or "default"


def command(config_path: str, entry: dict[str, Any], workdir: str, extra_arg: str = "") -> list[str]:
  """The run's command line; `extra_arg` ("k=v,...") is appended to the config argument."""
  arg = ",".join(filter(None, [str(entry.get("config", "")), extra_arg]))
  config = config_path + (f":{arg}" if arg else "")
  overrides = [f"--config.{k}={v}" for k, v in entry.items() if k != "config"]
  return [sys.executable, "-m", "rstar_jax.main", "--config", config, "--workdir", workdir, *overrides]


def _run(cmd: list[str], log_path: str) -> int:
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "w", encoding="utf-8") as log:
    print(f"running: {shlex.join(cmd)}  (log: {log_path})", flush=True)
    return subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False).returncode


def _comparable_rows(workdir: str) -> list[dict[str, Any]]:
  return [{k: v for k, v in row.items() if not k.startswith(_VOLATILE)} for row in read_metrics(workdir)]


def _evaluations(workdir: str) -> dict[str, dict[str, float]]:
  evals_dir = os.path.join(workdir, "evals")
  out = {}
  for phase in sorted(os.listdir(evals_dir)) if os.path.isdir(evals_dir) else []:
    with open(os.path.join(evals_dir, phase, "eval.json"), encoding="utf-8") as f:
      out[phase] = {k: v for k, v in json.load(f).items() if k not in ("eval/time_s", "eval/rollouts_per_s")}
  return out


def reproduced(first: str, repeat: str) -> tuple[bool, str]:
  """Whether `repeat` has exactly `first`'s metrics rows (volatile columns aside) and evaluations."""
  a, b = _comparable_rows(first), _comparable_rows(repeat)
  if len(a) != len(b):
    return False, f"{len(a)} vs {len(b)} metrics rows"
  for row_a, row_b in zip(a, b):
    if row_a != row_b:
      differing = sorted(k for k in set(row_a) | set(row_b) if row_a.get(k) != row_b.get(k))
      return False, f"step {row_a.get('step')} differs in {differing[:5]}"
  if _evaluations(first) != _evaluations(repeat):
    return False, "evaluations differ"
  return True, f"{len(a)} metrics rows and {len(_evaluations(first))} evaluations bitwise equal"


def _final_eval(workdir: str) -> dict[str, float]:
  evals = _evaluations(workdir)
  if not evals:
    return {}
  with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
    order = list(json.load(f).get("evals", {}))
  return evals[order[-1]] if order else {}


def aggregate(workdir: str, entries: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
  """Per group, per metric: mean/std/min/max over seeds; writes sweep.md, sweep.csv and plots."""
  groups: dict[str, list[str]] = {}
  for entry in entries:
    run_dir = os.path.join(workdir, run_name(entry))
    if os.path.exists(os.path.join(run_dir, "summary.json")):
      groups.setdefault(group_name(entry), []).append(run_dir)
  table: dict[str, dict[str, dict[str, float]]] = {}
  for group, runs in groups.items():
    values: dict[str, list[float]] = {}
    for run_dir in runs:
      rl_rows = [row for row in read_metrics(run_dir) if "rl/step" in row]
      last = rl_rows[-1] if rl_rows else {}
      for metric in STEP_METRICS:
        if metric in last:
          values.setdefault(f"last step {metric}", []).append(last[metric])
      final = _final_eval(run_dir)
      for prefix in EVAL_METRICS:
        for key in (k for k in final if k.startswith(prefix)):
          values.setdefault(f"final {key}", []).append(final[key])
    table[group] = {name: {"mean": float(np.mean(v)), "std": float(np.std(v)), "min": float(np.min(v)),
                           "max": float(np.max(v)), "n": len(v)} for name, v in values.items()}
  _write_tables(workdir, table)
  _plot(workdir, groups)
  return table


def _write_tables(workdir: str, table) -> None:
  names = sorted({name for metrics in table.values() for name in metrics})
  with open(os.path.join(workdir, "sweep.csv"), "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["group", "metric", "mean", "std", "min", "max", "n"])
    for group, metrics in table.items():
      for name in names:
        if name in metrics:
          m = metrics[name]
          writer.writerow([group, name, m["mean"], m["std"], m["min"], m["max"], m["n"]])
  lines = ["| metric | " + " | ".join(table) + " |", "|---|" + "---|" * len(table)]
  for name in names:
    cells = [f"{m[name]['mean']:.3f} ± {m[name]['std']:.3f} (n={m[name]['n']})" if name in m else "-"
             for m in table.values()]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  with open(os.path.join(workdir, "sweep.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


def _plot(workdir: str, groups: dict[str, list[str]]) -> None:
  for metric in STEP_METRICS:
    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for group, runs in groups.items():
      series = [{row["rl/step"]: row[metric] for row in read_metrics(run) if metric in row and "rl/step" in row}
                for run in runs]
      steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
      if not steps:
        continue
      values = np.array([[s[step] for step in steps] for s in series])
      ax.plot(steps, values.mean(0), label=f"{group} (mean of {len(runs)})")
      ax.fill_between(steps, values.min(0), values.max(0), alpha=0.2)
    ax.set_title(metric)
    ax.set_xlabel("RL step")
    ax.grid(alpha=0.3)
    if ax.get_lines():
      ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, f"sweep_{metric.replace('/', '_')}.png"), dpi=120)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", required=True, help="experiments/NAME.py with get_sweep()")
  parser.add_argument("--workdir", required=True, help="directory for the runs and the aggregate")
  parser.add_argument("--parallel", type=int, default=1, help="runs at once (local processes)")
  parser.add_argument("--repeat", type=int, default=1, help="reruns of the first entry (reproducibility)")
  parser.add_argument("--print", action="store_true", help="print the commands and run nothing")
  parser.add_argument("--aggregate_only", action="store_true", help="aggregate the existing runs")
  parser.add_argument("--config_arg", default="", help="'k=v,...' added to every run's config argument "
                      "(not part of run names), e.g. base=runs/tiny_other")
  args = parser.parse_args(argv)
  if args.parallel < 1 or args.repeat < 0:
    parser.error("--parallel must be >= 1 and --repeat >= 0")
  entries = load_sweep(args.config)
  jobs = [(os.path.join(args.workdir, run_name(e)),
           command(args.config, e, os.path.join(args.workdir, run_name(e)), args.config_arg)) for e in entries]
  repeats = [(f"{jobs[0][0]}.repeat{i}", command(args.config, entries[0], f"{jobs[0][0]}.repeat{i}", args.config_arg))
             for i in range(1, args.repeat + 1)]
  if args.print:
    for _, cmd in jobs + repeats:
      print(shlex.join(cmd))
    return 0
  failed = []
  if not args.aggregate_only:
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
      codes = list(pool.map(lambda job: _run(job[1], job[0] + ".log"), jobs + repeats))
    failed = [job[0] for job, code in zip(jobs + repeats, codes) if code != 0]
    for run_dir in failed:
      print(f"FAILED: {run_dir} (see {run_dir}.log)", flush=True)
  table = aggregate(args.workdir, entries)
  report = {"groups": table}
  for repeat_dir, _ in repeats:
    if os.path.exists(os.path.join(repeat_dir, "summary.json")):
      ok, detail = reproduced(jobs[0][0], repeat_dir)
      report[f"reproduced {os.path.basename(repeat_dir)}"] = {"exact": ok, "detail": detail}
      print(f"repeat {repeat_dir}: {'reproduced exactly' if ok else 'DIFFERS'} ({detail})", flush=True)
  with open(os.path.join(args.workdir, "sweep.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  print(open(os.path.join(args.workdir, "sweep.md"), encoding="utf-8").read())
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
