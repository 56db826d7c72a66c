"""RL steps per hour, synchronous (`rl.max_staleness=0`) against one step of staleness (1), on the
tiny default with 2 local `rstar-serve` processes:

  python -m rstar_jax.main --config experiments/tiny.py --workdir runs/sft --config.job=sft
  python benchmarks/staleness_bench.py --policy runs/sft/policy --steps 6

Both runs: `job=rl` from the given SFT policy, the tiny default's stage 1 cut to `--steps` steps,
the SFT run's synthetic RL problems (`--train_file`), `rollout.backend=sglang` with `local_servers=2`, sampler log-probs as old log-probs (so the runs
differ only in the pipelining), no evaluation. Steps per hour = 3600 x (steps - 1) / the summed
`time/step_s` of all steps but the first (which compiles); with staleness, a step's time is what
the trainer waited for its rollouts plus the update and the weight sync, the generation that
overlapped the previous update not counted again. Printed with reward and staleness means.
"""
from rstar_jax import host_malloc

if __name__ == "__main__":  # first, before JAX loads and its threads start (host_malloc's docstring)
  host_malloc.reexec_with_kept_memory()

import argparse
import os
import sys
import tempfile

from absl import logging
import numpy as np

from rstar_jax.train import metrics as metrics_lib
from rstar_jax.train import run as run_lib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experiments"))
import tiny  # pylint: disable=wrong-import-position


def run(policy: str, train_file: str, steps: int, staleness: int, workdir: str) -> list[dict]:
  config = tiny.get_config()
  config.job = "rl"
  config.model.hf_path = policy
  stage = dict(config.data.stages[0])
  stage.update(steps=steps, train_files=[f"problems:{train_file}"])
  config.data.stages = [stage]
  config.rollout.update(backend="sglang", local_servers=2)
  config.rl.update(max_staleness=staleness, use_sampler_logprobs=True)
  config.eval.num_problems = 0
  run_lib.run(config, workdir, origin=f"staleness_bench (max_staleness={staleness})")
  return [row for row in metrics_lib.read_metrics(workdir) if "rl/step" in row]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--policy", required=True, help="an SFT policy directory of the tiny default")
  parser.add_argument("--train_file", default=None, help="RL problems (default: the SFT run's "
                      "data/train.jsonl beside the policy directory)")
  parser.add_argument("--steps", type=int, default=6)
  args = parser.parse_args()
  if args.steps < 2:
    parser.error("--steps must be at least 2 (the first step compiles and is not counted)")
  train_file = args.train_file or os.path.join(os.path.dirname(os.path.abspath(args.policy)), "data", "train.jsonl")
  logging.set_verbosity(logging.WARNING)
  results = {}
  for staleness in (0, 1):
    with tempfile.TemporaryDirectory() as workdir:
      rows = run(args.policy, train_file, args.steps, staleness, workdir)
    seconds = sum(row["time/step_s"] for row in rows[1:])
    results[staleness] = {
        "steps_per_hour": 3600 * (len(rows) - 1) / seconds,
        "reward": float(np.mean([row["reward/mean"] for row in rows])),
        "staleness": float(np.mean([row.get("rollout/staleness_mean", 0.0) for row in rows])),
        "wait_s": float(np.mean([row["time/rollout_wait_s"] for row in rows[1:]])),
        "update_s": float(np.mean([row["time/update_s"] for row in rows[1:]])),
        "sync_s": float(np.mean([row["time/weight_sync_s"] for row in rows[1:]]))}
  print(f"tiny default, stage 1, {args.steps} RL steps, 2 local rstar-serve processes")
  print(f"{'max_staleness':<15}{'steps/h':>9}{'wait s':>9}{'update s':>10}{'sync s':>8}{'reward':>8}{'staleness':>11}")
  for staleness, m in results.items():
    print(f"{staleness:<15}{m['steps_per_hour']:>9.0f}{m['wait_s']:>9.1f}{m['update_s']:>10.1f}{m['sync_s']:>8.2f}"
          f"{m['reward']:>8.3f}{m['staleness']:>11.2f}")
  ours, theirs = results[1]["steps_per_hour"], results[0]["steps_per_hour"]
  print(f"\nsteps/h staleness 1 vs 0   {ours:.4g}   {theirs:.4g}   {ours / theirs:.2f}x")


if __name__ == "__main__":
  main()
