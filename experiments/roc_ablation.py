"""GRPO vs GRPO-RoC at Colab scale (PAPER.md §10, Fig. 4 and Fig. 9): RL from the tiny default's
SFT policy, with and without Resample-on-Correct, over 3 seeds.

GRPO samples `keep` rollouts per prompt and trains on all of them ("GRPO with Tool", Fig. 9);
GRPO-RoC samples 2 x keep and keeps `keep` (RoC down-sampling, penalties on tool errors and answer
format). Everything else is equal. Watch `rollout/positive_tool_error_ratio` (the tool-error ratio
among correct rollouts, Fig. 4), eval accuracy and response length. Needs a finished tiny default
run (its policies/sft and data/) at `base` (default runs/tiny):

  python -m rstar_jax.main --config experiments/tiny.py --workdir runs/tiny
  python launch/sweep.py --config experiments/roc_ablation.py --workdir runs/roc_ablation
  python -m rstar_jax.main --config experiments/roc_ablation.py:roc=False,seed=1 --workdir runs/grpo_s1
"""
import os

from rstar_jax.train.config_lib import load_module, parse_arg

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg=None):
  arg = parse_arg(arg, roc=True, seed=0, base="runs/tiny", steps=20, smoke=False)
  config = load_module(os.path.join(_HERE, "tiny.py")).get_config("smoke" if arg.smoke else None)
  config.job = "rl"
  config.seed = arg.seed
  config.data.seed = arg.seed
  config.model.hf_path = os.path.join(arg.base, "policies", "sft")
  stage = config.data.stages[0]
  stage.update(name="rl", train_files=[f"problems:{os.path.join(arg.base, 'data', 'train.jsonl')}"],
               steps=arg.steps)
  config.data.stages = [stage]
  config.eval.problems_files = [f"problems:{os.path.join(arg.base, 'data', 'eval.jsonl')}"]
  # GRPO keeps every rollout it samples; GRPO-RoC samples twice as many and keeps `keep`.
  config.rl.num_rollouts = 2 * config.rl.keep if arg.roc else config.rl.keep
  return config


def get_sweep():
  """{GRPO, GRPO-RoC} x seeds 0, 1, 2 (run names come from these overrides)."""
  return [{"config": f"roc={roc},seed={seed}"} for roc in (False, True) for seed in (0, 1, 2)]

