"""Agent rollouts, the tiny default's evaluation phase: our engine, agent loop and sandbox against
transformers generating the same rollouts one at a time with a plain subprocess as the tool.

  python benchmarks/agent_bench.py --run runs/tiny                 # after the main job (its policies)
  taskset -c 0 python benchmarks/agent_bench.py --run runs/tiny    # both on one core

Both sides roll out the same saved policy (RUN/policies/PHASE) on the first `--num_problems` eval
problems, `--samples` rollouts each at `--temperature`, with the run's budgets (`--max_response_tokens`,
`--max_turns`):
  ours    `train.evaluate.evaluate_policy` as the main job runs it: all rollouts at once on the JAX
          engine (`--slots` slots, shared prefixes) with tool calls in an in-process sandbox pool;
          timed twice, the first call including compilation;
  theirs  `benchmarks/hf_agent_eval.rollout` for each rollout in turn: transformers `generate` per
          turn, each call run as `python -c CODE` (what a plain loop over a Hugging Face model does).
It prints rollouts/s, the ratio, and both sides' accuracy (they sample differently: similar, not
equal). Tool calls run for real on both sides.
"""
from rstar_jax import host_malloc

if __name__ == "__main__":  # first, before JAX loads and its threads start (host_malloc's docstring)
  host_malloc.reexec_with_kept_memory()

import argparse
import json
import os
import sys
import tempfile
import time

import ml_collections
import torch
import transformers
from tokenizers import Tokenizer

import bench_util
import hf_agent_eval
from rstar_jax import chat
from rstar_jax import data
from rstar_jax import rewards
from rstar_jax import rollout
from rstar_jax.train import evaluate
from rstar_jax.train import policy


def ours(policy_dir: str, problems_path: str, args) -> list[tuple[float, float]]:
  """(seconds, avg accuracy) of two evaluations (the first compiles)."""
  cfg, params, tokenizer, chat_format = policy.load_policy(policy_dir)
  problems, _ = data.load_problems([f"problems:{problems_path}"], "--problems", integer_answers=False)
  eval_config = ml_collections.ConfigDict(dict(
      num_problems=args.num_problems, num_samples=args.samples, temperature=args.temperature, top_p=1.0,
      max_response_length=args.max_response_tokens, max_assistant_turns=args.max_turns, num_slots=args.slots,
      seed=args.seed, fixed_execution_time_s=0.01))
  timings = []
  with rollout.RolloutRuntime(lambda: evaluate.tools_for("", args.sandbox_workers)) as runtime:
    for _ in range(2):
      with tempfile.TemporaryDirectory() as out_dir:
        start = time.perf_counter()
        metrics = evaluate.evaluate_policy(eval_config, cfg, params, tokenizer, problems, out_dir, runtime,
                                           chat_format=chat_format, reward_config=rewards.RewardConfig())
        timings.append((time.perf_counter() - start, metrics["eval/accuracy"]))
  return timings


def theirs(policy_dir: str, problems_path: str, args) -> tuple[float, float]:
  """(seconds, accuracy) of the rollouts one at a time under transformers."""
  torch.manual_seed(args.seed)
  model = transformers.AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32).eval()
  tokenizer = Tokenizer.from_file(os.path.join(policy_dir, "tokenizer.json"))
  with open(os.path.join(policy_dir, "rstar_chat_format.json"), encoding="utf-8") as f:
    fmt = chat.ChatFormat(**json.load(f))
  with open(problems_path, encoding="utf-8") as f:
    problems = [json.loads(line) for line in f][:args.num_problems]
  hits, start = 0, time.perf_counter()
  with torch.no_grad():
    for problem in problems:
      for _ in range(args.samples):
        response = hf_agent_eval.rollout(model, tokenizer, chat.prompt_text(problem["problem"], fmt),
                                         args.max_response_tokens, args.max_turns, args.temperature)
        hits += hf_agent_eval.correct(response, problem["answer"])
  return time.perf_counter() - start, hits / (len(problems) * args.samples)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--run", required=True, help="a run's workdir (policies/<phase>, data/eval.jsonl)")
  parser.add_argument("--phase", default="stage3")
  parser.add_argument("--num_problems", type=int, default=25)
  parser.add_argument("--samples", type=int, default=4)
  parser.add_argument("--temperature", type=float, default=0.6)
  parser.add_argument("--max_response_tokens", type=int, default=384)
  parser.add_argument("--max_turns", type=int, default=4)
  parser.add_argument("--slots", type=int, default=64, help="our engine's slots")
  parser.add_argument("--sandbox_workers", type=int, default=1)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  torch.set_num_threads(bench_util.cpu_threads())
  policy_dir = os.path.join(args.run, "policies", args.phase)
  problems_path = os.path.join(args.run, "data", "eval.jsonl")
  rollouts = args.num_problems * args.samples
  print(f"agent rollouts: {args.phase} policy of {args.run}, {args.num_problems} problems x {args.samples} samples, "
        f"temperature {args.temperature}, {args.max_response_tokens} tokens, {args.max_turns} turns; threads: torch "
        f"{torch.get_num_threads()}")
  (first_s, _), (ours_s, ours_acc) = ours(policy_dir, problems_path, args)
  theirs_s, theirs_acc = theirs(policy_dir, problems_path, args)
  print(f"accuracy: ours {ours_acc:.3f}, transformers {theirs_acc:.3f}; ours' first call (compiling) {first_s:.1f} s")
  bench_util.print_table([(f"agent rollouts ({rollouts}) /s", rollouts / ours_s, rollouts / theirs_s, True),
                          (f"agent rollouts ({rollouts}) /s, first call", rollouts / first_s, rollouts / theirs_s, True)],
                         "transformers")
  return 0


if __name__ == "__main__":
  sys.exit(main())
