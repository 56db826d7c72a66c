"""The paper's evaluation (PAPER.md §10) for `python -m rstar_jax.eval --suite`: AIME 2024, AIME 2025,
MATH-500 and HMMT Feb 2025, 16 samples per problem at temperature 0.6, up to 30 assistant turns and
30,720 response tokens (the released scripts leave temperature 0 and 5 turns; these are the paper's
settings), tool calls in the sandbox, avg@16 (mean pass@1) reported per benchmark.

  python -m rstar_jax.eval --suite experiments/eval_suites/paper.py:data=data/rstar2 \\
      --policy runs/rstar2/policies/stage3 --rollout-urls http://node1:30000 --rollout-urls http://node2:30000 \\
      --sandbox-url http://cpu1:8080

Arguments (`:k=v,...`): data, the directory of the evaluation sets in their Hugging Face export
layouts (aime_2024/ = HuggingFaceH4/aime_2024, aime_2025/ = opencompass/AIME2025 I+II, math_500/ =
HuggingFaceH4/MATH-500, hmmt_feb_2025/); samples, per problem (16).
"""
import os

import ml_collections

from rstar_jax.train.config_lib import parse_arg

BENCHMARKS = ("aime_2024", "aime_2025", "math_500", "hmmt_feb_2025")


def get_config(arg=None):
  arg = parse_arg(arg, data="data/rstar2", samples=16)
  config = ml_collections.ConfigDict()
  config.benchmarks = [dict(name=name, problems=(f"{name}:{os.path.join(arg.data, name)}",), num_samples=arg.samples,
                            temperature=0.6, max_response_tokens=30720, max_turns=30)
                       for name in BENCHMARKS]
  return config
