"""Evaluates a saved policy as an agent: `python -m rstar_jax.eval --policy DIR --problems SCHEMA:PATH`.

Defaults are the paper's protocol (PAPER.md §10): 16 samples per problem at temperature 0.6, up
to 30 assistant turns and 30,720 response tokens, tool calls run in a sandbox (in process, as root or
rootless in user namespaces, or `--sandbox-url` of a running `rstar-sandbox serve`). The policy directory is a
Hugging Face checkpoint with its tokenizer.json (a run's policies/<phase> or policy/; its chat
format is read from rstar_chat_format.json when present). Writes to --out (default
DIR/eval_<name of the problems file>): eval.json (avg@k, pass@k, tool and length statistics),
eval_problems.jsonl (per problem), eval_samples.jsonl (every rollout) and eval_samples.md.

  python -m rstar_jax.eval --policy runs/tiny/policy --problems problems:runs/tiny/data/eval.jsonl \\
      --samples 4 --max-response-tokens 384 --max-turns 4
"""
import functools
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import ml_collections

from rstar_jax import data
from rstar_jax import rewards
from rstar_jax import rollout
from rstar_jax.sandbox import isolation
from rstar_jax.train import evaluate, policy

_POLICY = flags.DEFINE_string("policy", None, "Policy directory (Hugging Face checkpoint with tokenizer.json).")
_PROBLEMS = flags.DEFINE_multi_string("problems", None, "Problems as SCHEMA:PATH (repeatable), e.g. "
                                      "aime_2024:data/aime24.parquet or problems:eval.jsonl.")
_OUT = flags.DEFINE_string("out", None, "Output directory (default: POLICY/eval_<problems file name>).")
_SAMPLES = flags.DEFINE_integer("samples", 16, "Rollouts per problem (avg@k and pass@k with k = this).")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.6, "Sampling temperature (0: greedy).")
_TOP_P = flags.DEFINE_float("top-p", 1.0, "Nucleus sampling threshold.")
_MAX_RESPONSE_TOKENS = flags.DEFINE_integer("max-response-tokens", 30720,
                                            "Response budget: model and tool tokens together.")
_MAX_TURNS = flags.DEFINE_integer("max-turns", 30, "Assistant turns per rollout.")
_NUM_PROBLEMS = flags.DEFINE_integer("num-problems", 0, "Evaluate the first N problems (0: all).")
_NUM_SLOTS = flags.DEFINE_integer("num-slots", 32, "Sequences the JAX engine decodes at once.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_SANDBOX_URL = flags.DEFINE_string("sandbox-url", "", "A running `rstar-sandbox serve`; empty: in process.")
_SANDBOX_WORKERS = flags.DEFINE_integer("sandbox-workers", 2, "In-process sandbox workers.")
_SANDBOX_KEY = flags.DEFINE_string("sandbox-api-key-file", "", "File holding the sandbox service's API key.")
_FIXED_TIME = flags.DEFINE_float("fixed-execution-time-s", None,
                                 "Report this execution time in tool texts (as the tiny default's training "
                                 "did); default: the measured time.")
flags.mark_flags_as_required(["policy", "problems"])


def _eval_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      num_problems=_NUM_PROBLEMS.value, num_samples=_SAMPLES.value, temperature=_TEMPERATURE.value,
      top_p=_TOP_P.value, max_response_length=_MAX_RESPONSE_TOKENS.value, max_assistant_turns=_MAX_TURNS.value,
      num_slots=_NUM_SLOTS.value, seed=_SEED.value, fixed_execution_time_s=_FIXED_TIME.value))


def _check_flags() -> None:
  for name, value in (("samples", _SAMPLES.value), ("max-response-tokens", _MAX_RESPONSE_TOKENS.value),
                      ("max-turns", _MAX_TURNS.value), ("num-slots", _NUM_SLOTS.value),
                      ("sandbox-workers", _SANDBOX_WORKERS.value)):
    if value < 1:
      raise app.UsageError(f"--{name}={value} must be a positive integer")
  if _TEMPERATURE.value < 0 or not 0 < _TOP_P.value <= 1:
    raise app.UsageError(f"--temperature={_TEMPERATURE.value} must be >= 0 and --top-p={_TOP_P.value} in (0, 1]")
  reason = None if _SANDBOX_URL.value else isolation.unavailable_reason()
  if reason is not None:
    raise app.UsageError(f"the in-process sandbox cannot start here ({reason}): give --sandbox-url of a "
                         "running `rstar-sandbox serve`")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  _check_flags()
  try:
    problems, _ = data.load_problems(_PROBLEMS.value, "--problems", integer_answers=False)
  except ValueError as error:
    sys.exit(f"--problems: {error}")
  cfg, params, tokenizer, chat_format = policy.load_policy(_POLICY.value)
  name = os.path.splitext(os.path.basename(_PROBLEMS.value[0].partition(":")[2].rstrip("/")))[0]
  out_dir = _OUT.value or os.path.join(_POLICY.value, f"eval_{name}")
  tools = functools.partial(evaluate.tools_for, _SANDBOX_URL.value, _SANDBOX_WORKERS.value, _SANDBOX_KEY.value)
  with rollout.RolloutRuntime(tools) as runtime:
    metrics = evaluate.evaluate_policy(_eval_config(), cfg, params, tokenizer, problems, out_dir, runtime,
                                       chat_format=chat_format, reward_config=rewards.RewardConfig())
  logging.info("wrote %s", out_dir)
  print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
  app.run(main)
