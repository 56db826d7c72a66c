"""Reward verification throughput: our time-limited scorer vs plain in-process math-verify.

  python benchmarks/rewards_bench.py [--num_prompts 25] [--group 16] [--workers 1,2]

Rows (per verification, over num_prompts x group distinct responses, `group` sharing an answer
as GRPO rollouts do):
  math_verify        the released math-verify call alone, in-process (`math_metric` per item)
  verify_in_process  our full default rule (PRIME grader, then math-verify), in-process
  scorer[wN]         the same through `rewards.Scorer` with N worker processes (IPC + limit)
Then the cost of one timeout: the wait up to the limit plus killing the worker, and the first
call after it, which pays the replacement worker's start-up.
"""
import argparse
import random
import time

from math_verify import metric, parser

from rstar_jax import rewards
from rstar_jax.rewards import verifier

_TEMPLATES = (
    "<reason>Compute it.</reason>\n<answer>The answer is \\boxed{{{value}}}</answer>",
    "<reason>We get {value} after simplifying.</reason>\n<answer>\\boxed{{{value}}}</answer>",
    "Let me check with code.\n<tool_response>\nTool call success\nstdout: {value}\n\n"
    "execution time: 0.01s\n</tool_response>\n<answer>\\boxed{{\\dfrac{{{double}}}{{2}}}}</answer>",
    "<answer>So the total is {value} apples.</answer>",
)


def _dataset(num_prompts: int, group: int, reasoning_words: int, seed: int = 0):
  rng = random.Random(seed)
  responses, answers = [], []
  for prompt in range(num_prompts):
    answer = rng.randint(1, 10**6)
    for rollout in range(group):
      # Wrong values far from the answer, beyond the released rel_tol 1e-4 and x100 leniency.
      value = answer if rng.random() < 0.5 else 3 * answer + 7
      template = _TEMPLATES[(prompt + rollout) % len(_TEMPLATES)]
      # Distinct reasoning text (no cache hits), with some inline maths as real traces have.
      padding = " ".join(f"$x_{{{i}}} = {rng.random():.4f}$" if i % 10 == 0 else
                         rng.choice(("so", "then", "we", "check", "the", "sum", "is"))
                         for i in range(reasoning_words))
      responses.append(f"<reason>{padding}</reason>\n" +
                       template.format(value=value, double=2 * value))
      answers.append(str(answer))
  return responses, answers


def _released_math_verify(response: str, answer: str) -> float:
  # rStar@ecbfb94 fused_compute_score/math_verify.py, in-process.
  verify_func = metric.math_metric(
      gold_extraction_target=(parser.LatexExtractionConfig(),),
      pred_extraction_target=(parser.ExprExtractionConfig(), parser.LatexExtractionConfig()))
  try:
    score, _ = verify_func(["\\boxed{" + answer + "}"], [response])
  except Exception:  # pylint: disable=broad-except  # as released: errors score 0
    score = 0.0
  return score


def _per_call_ms(fn, responses, answers) -> tuple[float, list]:
  start = time.perf_counter()
  outputs = fn(responses, answers)
  return 1e3 * (time.perf_counter() - start) / len(responses), outputs


def main():
  flags = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  flags.add_argument("--num_prompts", type=int, default=25)
  flags.add_argument("--group", type=int, default=16)
  flags.add_argument("--workers", default="1,2", help="comma-separated worker counts")
  flags.add_argument("--reasoning_words", type=int, default=200,
                     help="words of reasoning before the answer (about 1.3 tokens each)")
  args = flags.parse_args()
  responses, answers = _dataset(args.num_prompts, args.group, args.reasoning_words)
  verifier.quiet_math_verify_logs()
  print(f"{len(responses)} verifications ({args.num_prompts} answers x {args.group}), "
        f"{sum(map(len, responses)) // len(responses)} characters per response")
  rows = []
  baseline_ms, baseline = _per_call_ms(
      lambda rs, ans: [_released_math_verify(r, a) for r, a in zip(rs, ans)], responses, answers)
  rows.append(("math_verify", baseline_ms, sum(baseline)))
  ours_ms, ours = _per_call_ms(
      lambda rs, ans: [float(verifier.verify(r, a).correct) for r, a in zip(rs, ans)],
      responses, answers)
  rows.append(("verify_in_process", ours_ms, sum(ours)))
  for num_workers in (int(n) for n in args.workers.split(",")):
    with rewards.Scorer(num_workers=num_workers) as scorer:
      scorer.start()  # start-up is measured separately below
      pool_ms, results = _per_call_ms(scorer.results, responses, answers)
    rows.append((f"scorer[w{num_workers}]", pool_ms, sum(r.score for r in results)))
  print(f"{'row':20} {'ms/verification':>16} {'vs math_verify':>15} {'accepted':>9}")
  for name, ms, accepted in rows:
    print(f"{name:20} {ms:16.2f} {ms / baseline_ms:14.2f}x {int(accepted):9d}")

  with rewards.Scorer(num_workers=1, timeout_s=1.0) as scorer:
    scorer.start()
    start = time.perf_counter()
    result = scorer.result("<answer>\\boxed{9^{9^{9^{9}}}}</answer>", "42")
    timeout_s = time.perf_counter() - start
    start = time.perf_counter()
    scorer.score(responses[0], answers[0])
    respawn_s = time.perf_counter() - start
  print(f"timeout (limit 1.0 s): call returned after {timeout_s:.2f} s, timed_out="
        f"{result.timed_out}; next call incl. worker restart: {respawn_s:.2f} s")


if __name__ == "__main__":
  main()
