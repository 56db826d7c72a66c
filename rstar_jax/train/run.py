"""The run driver: `run(config, workdir)` validates the config, builds the pieces and runs the job.

Jobs (config.job):
  sft     supervised fine-tuning of the policy on tool-use traces (train/sft.py); with no trace
          files configured, the synthetic task of the tiny default is generated into workdir/data.
  rl      GRPO-RoC from a given policy (config.model.hf_path) through the curriculum stages of
          config.data.stages (train/grpo.py).
  sft_rl  sft, then rl from the SFT policy (the tiny default).
After SFT and after each RL stage the policy is saved (policies/<phase>, a Hugging Face checkpoint
with its tokenizer and chat format) and, unless config.eval.num_problems is 0, evaluated with agent
rollouts whose tool calls a real sandbox runs (train/evaluate.py; evals/<phase>/).

Steps are global over the phases (SFT steps 1..S, then RL steps S+1..): one checkpoint series,
one metrics.jsonl. Killing the job at any point and running the same command again resumes from
the newest checkpoint and ends with the same metrics as an uninterrupted run (bitwise on CPU).

`config.dry_run=True` validates the config and prints the plan (mesh, bytes per device, tokens per
step, rollout servers and sandbox; train/plan.py) without weights, devices or files.

Files a run writes under workdir: config.json (the first run's; a rerun in the same workdir must
keep the keys that fix its data, tokenizer and checkpoints), metrics.jsonl, tensorboard/,
checkpoints/, policies/<phase>/, policy/ (the final policy), evals/<phase>/ (eval.json,
eval_problems.jsonl, eval_samples.jsonl, eval_samples.md), eval_table.md, loss.png, plots/*.png and
summary.json (the eval table per phase, the final metrics).
String values in file specs may hold `{workdir}`, replaced by the run's directory.
"""
import contextlib
import dataclasses
import json
import os

import ml_collections
from absl import logging

from rstar_jax import chat
from rstar_jax import data
from rstar_jax import rewards
from rstar_jax import rollout
from rstar_jax.train import distributed, evaluate, grpo, harness as harness_lib, optim, plan, plots, policy, sft, validate
from rstar_jax.train.metrics import read_metrics

SYNTHETIC_SPLITS = ("train", "eval", "sft")

# Keys that fix what a workdir's data, tokenizer and checkpoints are; a rerun in the same workdir
# must not change them (anything else, e.g. sft.steps or the mesh, may change on resume).
_WORKDIR_KEYS = ("job", "seed", "data", "model", "prompt", "tool", "env", "sft.batch_size", "sft.row_length",
                 "sft.num_eval", "rl.keep", "rl.num_rollouts")
_FREE_MODEL_KEYS = ("model.remat", "model.dtype", "model.attention_chunk", "model.scan_unroll")


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    out.update(_flatten(value, name + ".") if isinstance(value, dict) else {name: value})
  return out


def _with_implied_env(recorded: dict) -> dict:
  """A config.json written before `config.env` existed ran the released tool environment
  (rollout.ToolEnvironment's defaults) with rl.max_parallel_calls and rl.max_tool_response_chars
  where they were set; that environment is filled in, so such a workdir resumes."""
  if "env" in recorded:
    return recorded
  env = dataclasses.asdict(rollout.ToolEnvironment())
  for key in ("max_parallel_calls", "max_tool_response_chars"):
    if key in recorded.get("rl", {}):
      env[key] = recorded["rl"][key]
  return {**recorded, "env": env}


def _check_workdir(config: ml_collections.ConfigDict, workdir: str, origin: str) -> None:
  """Records the config in workdir/config.json; a rerun may only change keys outside _WORKDIR_KEYS.

  Raises:
    ConfigError: naming every fixed key whose value differs from the workdir's config.json.
  """
  path = os.path.join(workdir, "config.json")
  new = json.loads(config.to_json_best_effort())
  if not os.path.exists(path):
    data.write_json_atomic(path, new)
    return
  with open(path, encoding="utf-8") as f:
    old_flat, new_flat = _flatten(_with_implied_env(json.load(f))), _flatten(new)
  changed = sorted(k for k in set(old_flat) | set(new_flat) if old_flat.get(k) != new_flat.get(k))
  fixed = [k for k in changed if k not in _FREE_MODEL_KEYS
           and any(k == p or k.startswith(p + ".") for p in _WORKDIR_KEYS)]
  if fixed:
    raise validate.ConfigError(f"{workdir} holds a run of another config ({path}); changed: " + ", ".join(
        f"config.{k}={new_flat.get(k)!r} (was {old_flat.get(k)!r})" for k in fixed)
        + f" ({origin or 'given config'}). Use a new --workdir, or the original values.")
  if changed:
    logging.warning("resuming %s with changed settings: %s", workdir,
                    ", ".join(f"config.{k}={new_flat.get(k)!r} (was {old_flat.get(k)!r})" for k in changed))


def _with_workdir(specs, workdir: str) -> list[str]:
  return [spec.replace("{workdir}", workdir) for spec in specs]


def _synthetic_task(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Generates the synthetic task into workdir/data once; returns that directory."""
  synthetic = config.data.synthetic
  out_dir = os.path.join(workdir, "data")
  if not os.path.exists(os.path.join(out_dir, "task_stats.json")):
    environment = grpo.tool_environment(config)
    data.write_synthetic_task(out_dir, synthetic.seed, num_train=synthetic.num_train,
                              num_eval=synthetic.num_eval, num_sft=synthetic.num_sft,
                              mix=data.TraceMix(**synthetic.mix), levels=tuple(synthetic.levels),
                              prompt_format=chat.ChatFormat.from_config(config),
                              tool_text=environment.tool_text, traceback=environment.traceback)
  return out_dir


def _sft_traces(config: ml_collections.ConfigDict, workdir: str) -> list[data.SftTrace]:
  files = _with_workdir(config.data.sft_files, workdir) or [os.path.join(_synthetic_task(config, workdir),
                                                                          "sft.jsonl")]
  traces = []
  for path in files:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"config.data.sft_files: no file at {path!r}")
    traces.extend(data.read_sft_traces(path)[0])
  return traces


def _eval_problems(config: ml_collections.ConfigDict, workdir: str) -> list[data.Problem]:
  specs = _with_workdir(config.eval.problems_files, workdir)
  if not specs:
    specs = ["problems:" + os.path.join(_synthetic_task(config, workdir), "eval.jsonl")]
  problems, _ = data.load_problems(specs, "config.eval.problems_files", integer_answers=False)
  return problems


def _tokenizer(config: ml_collections.ConfigDict, workdir: str, traces: list[data.SftTrace]) -> chat.Tokenizer:
  """"char", a checkpoint directory, or "bpe": a byte-level BPE trained on the traces (once, into
  workdir/data/tokenizer, so a resumed run reuses it); an rl job of a given policy uses its own."""
  if config.job == "rl":
    return chat.HFTokenizer.from_dir(config.model.hf_path)
  if config.data.tokenizer != "bpe":
    return chat.load_tokenizer(config.data.tokenizer)
  directory = os.path.join(workdir, "data", "tokenizer")
  if os.path.exists(os.path.join(directory, "tokenizer.json")):
    return chat.HFTokenizer.from_dir(directory)
  texts = ["".join(text for text, _ in trace.segments) for trace in traces]
  return chat.train_bpe_tokenizer(texts, config.data.bpe_vocab_size, directory)


def _eval_table(evals: dict[str, dict]) -> str:
  """A markdown table of the phases' evaluations."""
  if not evals:
    return ""
  any_metrics = next(iter(evals.values()))
  avg = next(k for k in any_metrics if k.startswith("eval/avg@"))
  pass_k = next(k for k in any_metrics if k.startswith("eval/pass@"))
  columns = [(avg[5:], avg), (pass_k[5:], pass_k), ("tool calls", "eval/tool_calls_mean"),
             ("tool errors", "eval/tool_error_ratio"), ("tool errors (correct)", "eval/positive_tool_error_ratio"),
             ("no tool", "eval/no_tool_fraction"), ("response tokens", "eval/response_tokens_mean"),
             ("truncated", "eval/truncated_fraction")]
  lines = ["| phase | " + " | ".join(name for name, _ in columns) + " |",
           "|---|" + "---|" * len(columns)]
  for phase, metrics in evals.items():
    lines.append(f"| {phase} | " + " | ".join(f"{metrics[key]:.3f}" if key != "eval/response_tokens_mean"
                                              else f"{metrics[key]:.0f}" for _, key in columns) + " |")
  return "\n".join(lines) + "\n"


class _Phases:
  """Saves and evaluates the policy at the end of each phase (idempotent: a resumed run skips
  what is done)."""

  def __init__(self, config, workdir, cfg, tokenizer, chat_format, mesh_rules, runtime, harness):
    self.config, self.workdir, self.cfg = config, workdir, cfg
    self.tokenizer, self.chat_format, self.mesh_rules = tokenizer, chat_format, mesh_rules
    self.runtime, self.harness = runtime, harness
    self.environment = grpo.tool_environment(config)

  def end(self, phase: str, params, global_step: int) -> None:
    policy.save_policy(os.path.join(self.workdir, "policies", phase), self.cfg, params, self.tokenizer,
                       self.chat_format, self.environment)
    if not self.config.eval.num_problems:
      return
    out_dir = os.path.join(self.workdir, "evals", phase)
    metrics = evaluate.read_evaluation(out_dir)
    if metrics is None:
      metrics = evaluate.evaluate_policy(
          self.config.eval, self.cfg, params, self.tokenizer, _eval_problems(self.config, self.workdir), out_dir,
          self.runtime, self.mesh_rules, self.chat_format, rewards.RewardConfig.from_config(self.config),
          label=f"eval after {phase}", environment=self.environment)
    self.harness.writer.scalars(global_step, metrics)


def _phase_names(config: ml_collections.ConfigDict) -> list[str]:
  names = ["sft"] if config.job in ("sft", "sft_rl") else []
  if config.job in ("rl", "sft_rl"):
    names += [stage.name for stage in data.curriculum_from_config(config.data.stages).stages]
  return names


def _summaries(rows: list[dict], config: ml_collections.ConfigDict) -> dict:
  """The last metrics row of each phase kind (SFT, RL) and the evaluations found on disk."""
  out = {}
  sft_rows = [row for row in rows if row.get("stage") == "sft"]
  rl_rows = [row for row in rows if "rl/step" in row]
  if sft_rows:
    out["sft"] = {"steps": sft_rows[-1]["step"], "final_metrics": sft_rows[-1]}
  if rl_rows:
    out["rl"] = {"steps": int(rl_rows[-1]["rl/step"]), "final_metrics": rl_rows[-1]}
  return out


def run(config: ml_collections.ConfigDict, workdir: str, origin: str = "") -> dict:
  """Runs config.job in workdir (resuming if it holds checkpoints); returns the summary. With
  config.dry_run, prints the plan (train/plan.py) and returns it, touching nothing."""
  validate.validate(config, origin)
  if config.get("dry_run"):
    dry_plan = plan.make_plan(config, origin)
    print(plan.format_plan(dry_plan), flush=True)
    return {"job": config.job, "dry_run": dry_plan}
  os.makedirs(workdir, exist_ok=True)
  distributed.process_zero_first("config", lambda: _check_workdir(config, workdir, origin))
  logging.info("config (%s):\n%s", origin or "given", config)
  mesh_rules = policy.build_mesh_rules(config.mesh)
  validate.check_batch_divides(config, mesh_rules, origin)
  has_sft, has_rl = config.job in ("sft", "sft_rl"), config.job in ("rl", "sft_rl")
  chat_format = chat.ChatFormat.from_config(config)
  stats = data.DataStats()
  traces = distributed.process_zero_first("traces", lambda: _sft_traces(config, workdir) if has_sft else [])
  tokenizer = distributed.process_zero_first("tokenizer", lambda: _tokenizer(config, workdir, traces))
  examples = []
  if has_sft:
    stats.rows_read = stats.kept = len(traces)
    examples = sft.encode_traces(traces, tokenizer, config.sft.row_length + 1, stats)
    stats.log("SFT trajectories")
  cfg, params = policy.build_policy(config.model, tokenizer, mesh_rules, config.seed)
  harness = harness_lib.StepHarness(workdir, config.checkpoint)
  first_optim = config.sft.optim if has_sft else config.rl.optim
  state = optim.init_train_state(params, optim.make_optimizer(first_optim), config.seed, mesh_rules)
  state, meta = harness.restore(state)
  phase = meta["phase"] if meta else None
  summary = {"job": config.job}
  # tool calls and scoring happen where rollouts do: process 0 (train/distributed.py)
  needs_tools = (has_rl or config.eval.num_problems) and distributed.is_writer()
  tools = ((lambda: evaluate.tools_for(config.sandbox.url, config.sandbox.workers, config.sandbox.api_key_file,
                                       evaluate.sandbox_limits(config.sandbox.timeout_s, config.sandbox.cpu_s)))
           if needs_tools else contextlib.nullcontext)
  scoring = rewards.Scorer.from_config(config) if distributed.is_writer() else contextlib.nullcontext()
  with rollout.RolloutRuntime(tools) as runtime, scoring as scorer:
    phases = _Phases(config, workdir, cfg, tokenizer, chat_format, mesh_rules, runtime, harness)
    if has_sft and phase in (None, "sft"):  # an RL checkpoint means SFT and its end are done
      _, state = sft.train_sft(config, cfg, state, meta, examples, mesh_rules, harness)
      phases.end("sft", state.params, config.sft.steps)
    if has_rl:
      offset = config.sft.steps if has_sft else 0
      trainer = grpo.GrpoTrainer(
          config, workdir, cfg, tokenizer, chat_format, mesh_rules, harness, runtime, scorer, offset,
          on_stage_end=lambda stage, st: phases.end(stage.name, st.params, offset + stage.end_step))
      if phase != "rl":
        state, meta = trainer.initial_state(state.params), None
      state = trainer.run(state, meta)
  harness.close()
  policy.save_policy(os.path.join(workdir, "policy"), cfg, state.params, tokenizer, chat_format,
                     grpo.tool_environment(config))
  summary.update(_summaries(read_metrics(workdir), config))
  summary["skipped_rows"] = dict(stats.skipped)
  evals = {name: evaluate.read_evaluation(os.path.join(workdir, "evals", name)) for name in _phase_names(config)}
  summary["evals"] = evals = {name: metrics for name, metrics in evals.items() if metrics is not None}
  table = _eval_table(evals)
  if table:
    logging.info("evaluation by phase:\n%s", table)
  if distributed.is_writer():
    if table:
      with open(os.path.join(workdir, "eval_table.md"), "w", encoding="utf-8") as f:
        f.write(table)
    plots.plot_run(workdir, evals)
    data.write_json_atomic(os.path.join(workdir, "summary.json"), summary)
  logging.info("done: %s", json.dumps({k: v for k, v in summary.items() if k != "evals"}))
  return summary
