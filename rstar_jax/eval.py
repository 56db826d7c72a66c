"""Evaluates a saved policy as an agent: `python -m rstar_jax.eval --policy DIR --problems SCHEMA:PATH`,
or on a suite of benchmarks (`--suite experiments/eval_suites/paper.py:data=DIR`, one output directory each).

Defaults are the paper's protocol (PAPER.md §10): 16 samples per problem at temperature 0.6, up
to 30 assistant turns and 30,720 response tokens, tool calls run in a sandbox (in process, as root or
rootless in user namespaces, or `--sandbox-url` of a running `rstar-sandbox serve`). The policy directory is a
Hugging Face checkpoint with its tokenizer.json (a run's policies/<phase> or policy/; its chat
format and tool environment are read from rstar_chat_format.json and rstar_environment.json when
present, else the released ones). Writes to --out (default
DIR/eval_<name of the problems file>): eval.json (avg@k, pass@k, tool and length statistics),
eval_problems.jsonl (per problem), eval_samples.jsonl (every rollout) and eval_samples.md.

  python -m rstar_jax.eval --policy runs/tiny/policy --problems problems:runs/tiny/data/eval.jsonl \\
      --samples 4 --max-response-tokens 384 --max-turns 4

Rollouts run on a JAX engine in this process, or with `--rollout-urls` (repeatable) on SGLang servers
(`--skip-tokenizer-init`) or `rstar-serve`, through the KV-budget router; the servers first load the
policy directory (`/update_weights_from_disk`, so it must be readable by them at the same path)
unless `--noload-weights`, and the policy's weights never load here.
"""
from rstar_jax import host_malloc

if __name__ == "__main__":  # first, before JAX loads and its threads start (host_malloc's docstring)
  host_malloc.reexec_with_kept_memory()

import contextlib
import functools
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from rstar_jax import data
from rstar_jax import models
from rstar_jax import rewards
from rstar_jax import rollout
from rstar_jax.rollout import server as server_lib
from rstar_jax.rollout import weight_sync
from rstar_jax.sandbox import config as sandbox_config
from rstar_jax.sandbox import isolation, processes
from rstar_jax.train import evaluate, policy

_POLICY = flags.DEFINE_string("policy", None, "Policy directory (Hugging Face checkpoint with tokenizer.json).")
_PROBLEMS = flags.DEFINE_multi_string("problems", None, "Problems as SCHEMA:PATH (repeatable), e.g. "
                                      "aime_2024:data/aime24.parquet or problems:eval.jsonl.")
_SUITE = config_flags.DEFINE_config_file("suite", None, "A suite of benchmarks instead of --problems "
                                         "(experiments/eval_suites/*.py[:arg]); each has its problems, samples, "
                                         "temperature, budget and turns.")
_ROLLOUT_URLS = flags.DEFINE_multi_string("rollout-urls", None, "SGLang-compatible servers to roll out on "
                                          "(repeatable); default: a JAX engine in this process.")
_ROLLOUT_KEY = flags.DEFINE_string("rollout-api-key-file", "", "File holding the rollout servers' API key.")
_LOAD_WEIGHTS = flags.DEFINE_bool("load-weights", True, "With --rollout-urls: load --policy on the servers first.")
_OUT = flags.DEFINE_string("out", None, "Output directory (default: POLICY/eval_<problems file name>); with "
                          "--suite, the directory that receives eval_<benchmark>/ (default: POLICY).")
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
_SANDBOX_TIMEOUT = flags.DEFINE_float("sandbox-timeout-s", sandbox_config.Limits.timeout_s,
                                      "In-process sandbox: wall-clock seconds per run (as config.sandbox.timeout_s).")
_SANDBOX_CPU = flags.DEFINE_integer("sandbox-cpu-s", 0, "In-process sandbox: CPU seconds per process of a run; 0: "
                                    "the wall-clock limit rounded up (as config.sandbox.cpu_s).")
_FIXED_TIME = flags.DEFINE_float("fixed-execution-time-s", None,
                                 "Report this execution time in tool texts (as the tiny default's training "
                                 "did); default: the measured time.")
flags.mark_flags_as_required(["policy"])


_SUITE_KEYS = ("name", "problems", "num_samples", "temperature", "max_response_tokens", "max_turns")
_SUITE_FLAGS = ("samples", "temperature", "max-response-tokens", "max-turns")


def _eval_config(benchmark: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
  """The flags' evaluation settings; a suite's benchmark overrides samples, temperature, budget, turns."""
  config = ml_collections.ConfigDict(dict(
      num_problems=_NUM_PROBLEMS.value, num_samples=_SAMPLES.value, temperature=_TEMPERATURE.value,
      top_p=_TOP_P.value, max_response_length=_MAX_RESPONSE_TOKENS.value, max_assistant_turns=_MAX_TURNS.value,
      num_slots=_NUM_SLOTS.value, seed=_SEED.value, fixed_execution_time_s=_FIXED_TIME.value))
  if benchmark is not None:
    config.update(num_samples=benchmark.num_samples, temperature=benchmark.temperature,
                  max_response_length=benchmark.max_response_tokens, max_assistant_turns=benchmark.max_turns)
  return config


def _benchmarks() -> list[tuple[str, list[str], ml_collections.ConfigDict]]:
  """(name, problem specs, eval config) per benchmark: the suite's, or one of --problems."""
  if _SUITE.value is not None:
    if _PROBLEMS.value:
      raise app.UsageError("give --problems or --suite, not both")
    overridden = [f"--{name}" for name in _SUITE_FLAGS if flags.FLAGS[name].present]
    if overridden:
      raise app.UsageError(f"{', '.join(overridden)}: each benchmark of --suite sets its own; edit the suite")
    benchmarks = [ml_collections.ConfigDict(b) for b in _SUITE.value.benchmarks]
    for i, benchmark in enumerate(benchmarks):
      missing = sorted(set(_SUITE_KEYS) - set(benchmark))
      if missing:
        raise app.UsageError(f"--suite: benchmark #{i} has no {', '.join(missing)} (each needs {', '.join(_SUITE_KEYS)})")
      for key in ("num_samples", "max_response_tokens", "max_turns"):
        if benchmark[key] < 1:
          raise app.UsageError(f"--suite: benchmark {benchmark.name!r} has {key}={benchmark[key]}, not positive")
    names = [b.name for b in benchmarks]
    if len(set(names)) != len(names):
      raise app.UsageError(f"--suite: benchmark names repeat ({', '.join(names)}); each writes eval_<name>/")
    return [(b.name, list(b.problems), _eval_config(b)) for b in benchmarks]
  if not _PROBLEMS.value:
    raise app.UsageError("give --problems SCHEMA:PATH (repeatable) or --suite FILE")
  name = os.path.splitext(os.path.basename(_PROBLEMS.value[0].partition(":")[2].rstrip("/")))[0]
  return [(name, _PROBLEMS.value, _eval_config())]


def _check_flags() -> None:
  for name, value in (("samples", _SAMPLES.value), ("max-response-tokens", _MAX_RESPONSE_TOKENS.value),
                      ("max-turns", _MAX_TURNS.value), ("num-slots", _NUM_SLOTS.value),
                      ("sandbox-workers", _SANDBOX_WORKERS.value)):
    if value < 1:
      raise app.UsageError(f"--{name}={value} must be a positive integer")
  if _SANDBOX_TIMEOUT.value <= 0 or _SANDBOX_CPU.value < 0:
    raise app.UsageError(f"--sandbox-timeout-s={_SANDBOX_TIMEOUT.value} must be > 0 and "
                         f"--sandbox-cpu-s={_SANDBOX_CPU.value} >= 0")
  if _SANDBOX_URL.value and (_SANDBOX_TIMEOUT.present or _SANDBOX_CPU.present):
    raise app.UsageError("--sandbox-timeout-s and --sandbox-cpu-s limit the in-process sandbox only: the service at "
                         "--sandbox-url runs with its own (rstar-sandbox serve --timeout-s, --cpu-s)")
  if _TEMPERATURE.value < 0 or not 0 < _TOP_P.value <= 1:
    raise app.UsageError(f"--temperature={_TEMPERATURE.value} must be >= 0 and --top-p={_TOP_P.value} in (0, 1]")
  reason = None if _SANDBOX_URL.value else isolation.unavailable_reason()
  if reason is not None:
    raise app.UsageError(f"the in-process sandbox cannot start here ({reason}): give --sandbox-url of a "
                         "running `rstar-sandbox serve`")


def _served_eos_ids(tokenizer) -> tuple[int, ...]:
  """The ids the policy's servers end a turn at, as rstar-serve chooses them
  (`server.served_eos_ids`); a config.json this package cannot read counts as one without EOS."""
  try:
    eos = models.read_hf_config(os.path.join(_POLICY.value, "config.json")).eos_token_ids
  except (OSError, ValueError):
    eos = ()
  return server_lib.served_eos_ids(eos, tokenizer)


@contextlib.contextmanager
def _engine(runtime: rollout.RolloutRuntime):
  """`evaluate(eval_config, problems, out_dir, label) -> metrics` on a router over --rollout-urls
  (the policy loaded on its servers), or on a JAX engine of the policy in this process."""
  environment = rollout.ToolEnvironment.load(_POLICY.value)  # as it was trained
  if not _ROLLOUT_URLS.value:
    cfg, params, tokenizer, chat_format = policy.load_policy(_POLICY.value)
    yield (lambda eval_config, problems, out_dir, label: evaluate.evaluate_policy(
        eval_config, cfg, params, tokenizer, problems, out_dir, runtime, chat_format=chat_format,
        reward_config=rewards.RewardConfig(), label=label, environment=environment))
    return
  tokenizer, chat_format = policy.load_prompting(_POLICY.value)
  api_key = processes.read_api_key(_ROLLOUT_KEY.value)
  router = rollout.Router.from_urls(_ROLLOUT_URLS.value, api_key=api_key, eos_token_ids=_served_eos_ids(tokenizer))
  runtime.run(router.__aenter__())
  try:
    if _LOAD_WEIGHTS.value:
      runtime.run(weight_sync.sync_servers(router.engines, os.path.abspath(_POLICY.value), "eval"))
    yield (lambda eval_config, problems, out_dir, label: evaluate.evaluate_rollouts(
        eval_config, router, tokenizer, problems, out_dir, runtime, chat_format, rewards.RewardConfig(),
        label, environment=environment))
  finally:
    runtime.run(router.close())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  _check_flags()
  benchmarks = _benchmarks()
  loaded = []
  for name, specs, eval_config in benchmarks:
    try:
      loaded.append((name, data.load_problems(specs, f"{name} problems", integer_answers=False)[0], eval_config))
    except ValueError as error:
      sys.exit(f"{name}: {error}")
  out_root = _OUT.value or _POLICY.value
  single = _SUITE.value is None
  tools = functools.partial(evaluate.tools_for, _SANDBOX_URL.value, _SANDBOX_WORKERS.value, _SANDBOX_KEY.value,
                            evaluate.sandbox_limits(_SANDBOX_TIMEOUT.value, _SANDBOX_CPU.value))
  results = {}
  with rollout.RolloutRuntime(tools) as runtime, _engine(runtime) as evaluate_on:
    for name, problems, eval_config in loaded:
      out_dir = (_OUT.value or os.path.join(_POLICY.value, f"eval_{name}")) if single else os.path.join(
          out_root, f"eval_{name}")
      results[name] = evaluate_on(eval_config, problems, out_dir, f"eval {name}")
      logging.info("wrote %s", out_dir)
  print(json.dumps(results[loaded[0][0]] if single else {
      name: {k: v for k, v in metrics.items() if k.startswith(("eval/avg@", "eval/pass@", "eval/response_tokens_mean"))}
      for name, metrics in results.items()}, indent=1))


if __name__ == "__main__":
  app.run(main)
