"""The run driver: `run(config, workdir)` validates the config, builds the pieces and runs the job.

Jobs (config.job):
  sft  supervised fine-tuning of the policy on tool-use traces (train/sft.py); with no trace files
       configured, the synthetic task of the tiny default is generated into workdir/data first.
       Then, unless config.eval.num_problems is 0, the trained policy is evaluated with agent
       rollouts whose tool calls a real sandbox runs (train/evaluate.py), on the synthetic eval
       split or config.eval.problems_files.
The RL stages join here with the RL step loop.

Files a run writes under workdir: config.json (the first run's; a rerun in the same workdir must
keep the keys that fix its data, tokenizer and checkpoints), metrics.jsonl, tensorboard/, checkpoints/,
policy/ (the final policy as a Hugging Face checkpoint, with its tokenizer.json), loss.png, summary.json,
eval.json and eval_samples.jsonl.
"""
import json
import os

import ml_collections
from absl import logging

from rstar_jax import chat
from rstar_jax import data
from rstar_jax import models
from rstar_jax.train import evaluate, plots, policy, sft
from rstar_jax.train.config_lib import require

JOBS = ("sft",)


def validate(config: ml_collections.ConfigDict, origin: str = "") -> None:
  """Checks the config before anything is built; each error names the key path, value and origin."""
  require(config, "job", lambda v: v in JOBS, f"must be one of {JOBS}", origin)
  for path in ("sft.steps", "sft.batch_size", "sft.row_length", "sft.rows_per_microbatch",
               "checkpoint.every_steps", "checkpoint.max_to_keep", "sft.eval_every_steps"):
    require(config, path, lambda v: isinstance(v, int) and v > 0, "must be a positive integer", origin)
  require(config, "sft.num_microbatches", lambda v: v is None or (isinstance(v, int) and v > 0),
          "must be None (smallest that fits) or a positive integer", origin)
  require(config, "sft.logits_chunk",
          lambda v: v == 0 or (v > 0 and config.sft.row_length % v == 0),
          f"must be 0 or divide config.sft.row_length={config.sft.row_length}", origin)
  require(config, "optim.learning_rate", lambda v: v > 0, "must be positive", origin)
  require(config, "optim.reset_at_steps",
          lambda v: all(isinstance(s, int) and 0 < s < config.sft.steps for s in v),
          f"must list update indices in [1, config.sft.steps={config.sft.steps})", origin)
  require(config, "data.seed", lambda v: isinstance(v, int) and 0 <= v < 2**32, "must be in [0, 2**32)", origin)
  require(config, "sft.num_eval", lambda v: isinstance(v, int) and v >= 0, "must be a non-negative integer", origin)
  require(config, "sft.logits_chunk", lambda v: isinstance(v, int) and v >= 0, "must be a non-negative integer",
          origin)
  for path in ("model.dtype", "model.param_dtype"):
    require(config, path, lambda v: v in models.DTYPES, f"must be one of {models.DTYPES}", origin)
  require(config, "model.remat", lambda v: v in models.REMAT_POLICIES, f"must be one of {models.REMAT_POLICIES}",
          origin)
  if not config.model.hf_path:
    for path in ("model.hidden_size", "model.intermediate_size", "model.num_layers", "model.num_heads",
                 "model.num_kv_heads", "model.head_dim", "model.vocab_multiple"):
      require(config, path, lambda v: isinstance(v, int) and v > 0, "must be a positive integer", origin)
    require(config, "model.num_heads", lambda v: v % config.model.num_kv_heads == 0,
            f"must be a multiple of config.model.num_kv_heads={config.model.num_kv_heads}", origin)
  if not config.data.sft_files:
    require(config, "sft.num_eval", lambda v: v < config.data.synthetic.num_sft,
            f"must be smaller than config.data.synthetic.num_sft={config.data.synthetic.num_sft}", origin)
  _validate_eval(config, origin)


def _validate_eval(config: ml_collections.ConfigDict, origin: str) -> None:
  require(config, "eval.num_problems", lambda v: isinstance(v, int) and v >= 0,
          "must be a non-negative integer (0: no evaluation)", origin)
  if not config.eval.num_problems:
    return
  for path in ("eval.num_samples", "eval.max_response_length", "eval.max_assistant_turns", "eval.num_slots",
               "eval.sandbox_workers"):
    require(config, path, lambda v: isinstance(v, int) and v > 0, "must be a positive integer", origin)
  require(config, "eval.temperature", lambda v: v >= 0, "must be non-negative", origin)
  require(config, "eval.sandbox_url", lambda v: v or os.geteuid() == 0,
          "is empty, so an in-process sandbox would run the tool calls, which needs root: run as root, "
          "give the URL of a running `rstar-sandbox serve`, or set config.eval.num_problems=0", origin)
  require(config, "eval.problems_files", lambda v: v or not config.data.sft_files,
          "is empty but config.data.sft_files is set, so there is no synthetic eval split: give "
          "'SCHEMA:PATH' problem files or set config.eval.num_problems=0", origin)


# Keys that fix what a workdir's data, tokenizer and checkpoints are; a rerun in the same workdir
# must not change them (anything else, e.g. sft.steps or the mesh, may change on resume).
_WORKDIR_KEYS = ("job", "seed", "data", "model", "sft.batch_size", "sft.row_length", "sft.num_eval")
_FREE_MODEL_KEYS = ("model.remat", "model.dtype")


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    out.update(_flatten(value, name + ".") if isinstance(value, dict) else {name: value})
  return out


def _check_workdir(config: ml_collections.ConfigDict, workdir: str, origin: str) -> None:
  """Records the config in workdir/config.json; a rerun may only change keys outside _WORKDIR_KEYS.

  Raises:
    ValueError: naming every fixed key whose value differs from the workdir's config.json.
  """
  path = os.path.join(workdir, "config.json")
  new = json.loads(config.to_json_best_effort())
  if not os.path.exists(path):
    data.write_json_atomic(path, new)
    return
  with open(path, encoding="utf-8") as f:
    old_flat, new_flat = _flatten(json.load(f)), _flatten(new)
  changed = sorted(k for k in set(old_flat) | set(new_flat) if old_flat.get(k) != new_flat.get(k))
  fixed = [k for k in changed if k not in _FREE_MODEL_KEYS
           and any(k == p or k.startswith(p + ".") for p in _WORKDIR_KEYS)]
  if fixed:
    raise ValueError(f"{workdir} holds a run of another config ({path}); changed: " + ", ".join(
        f"config.{k}={new_flat.get(k)!r} (was {old_flat.get(k)!r})" for k in fixed)
        + f" ({origin or 'given config'}). Use a new --workdir, or the original values.")
  if changed:
    logging.warning("resuming %s with changed settings: %s", workdir,
                    ", ".join(f"config.{k}={new_flat.get(k)!r} (was {old_flat.get(k)!r})" for k in changed))


def _check_batch_divides(config: ml_collections.ConfigDict, mesh_rules: models.MeshRules, origin: str) -> None:
  batch_devices = mesh_rules.mesh.shape["data"] * mesh_rules.mesh.shape["fsdp"]
  for path in ("sft.rows_per_microbatch",) + (("eval.num_slots",) if config.eval.num_problems else ()):
    require(config, path, lambda v: v % batch_devices == 0,
            f"must be a multiple of the mesh's data x fsdp devices ({batch_devices}; set config.mesh.* "
            "or config.mesh.num_devices)", origin)


def _sft_traces(config: ml_collections.ConfigDict, workdir: str) -> list[data.SftTrace]:
  files = list(config.data.sft_files)
  if not files:
    synthetic = config.data.synthetic
    out_dir = os.path.join(workdir, "data")
    if not os.path.exists(os.path.join(out_dir, "sft.jsonl")):
      data.write_synthetic_task(out_dir, synthetic.seed, num_train=synthetic.num_train,
                                num_eval=synthetic.num_eval, num_sft=synthetic.num_sft)
    files = [os.path.join(out_dir, "sft.jsonl")]
  traces = []
  for path in files:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"config.data.sft_files: no file at {path!r}")
    traces.extend(data.read_sft_traces(path)[0])
  return traces


def _eval_problems(config: ml_collections.ConfigDict, workdir: str) -> list[data.Problem]:
  specs = list(config.eval.problems_files) or ["problems:" + os.path.join(workdir, "data", "eval.jsonl")]
  problems, _ = data.load_problems(specs, "config.eval.problems_files", integer_answers=False)
  return problems


def _tokenizer(config: ml_collections.ConfigDict, workdir: str, traces: list[data.SftTrace]) -> chat.Tokenizer:
  """"char", a checkpoint directory, or "bpe": a byte-level BPE trained on the traces (once, into
  workdir/data/tokenizer, so a resumed run reuses it)."""
  if config.data.tokenizer != "bpe":
    return chat.load_tokenizer(config.data.tokenizer)
  directory = os.path.join(workdir, "data", "tokenizer")
  if os.path.exists(os.path.join(directory, "tokenizer.json")):
    return chat.HFTokenizer.from_dir(directory)
  texts = ["".join(text for text, _ in trace.segments) for trace in traces]
  return chat.train_bpe_tokenizer(texts, config.data.bpe_vocab_size, directory)


def run(config: ml_collections.ConfigDict, workdir: str, origin: str = "") -> dict:
  """Runs config.job in workdir (resuming if it holds checkpoints); returns the summary."""
  validate(config, origin)
  os.makedirs(workdir, exist_ok=True)
  _check_workdir(config, workdir, origin)
  logging.info("config (%s):\n%s", origin or "given", config)
  mesh_rules = policy.build_mesh_rules(config.mesh)
  _check_batch_divides(config, mesh_rules, origin)
  stats = data.DataStats()
  traces = _sft_traces(config, workdir)
  tokenizer = _tokenizer(config, workdir, traces)
  stats.rows_read = stats.kept = len(traces)
  examples = sft.encode_traces(traces, tokenizer, config.sft.row_length + 1, stats)
  stats.log("SFT trajectories")
  cfg, params = policy.build_policy(config.model, tokenizer, mesh_rules, config.seed)
  summary, state = sft.train_sft(config, workdir, cfg, params, examples, mesh_rules)
  policy_dir = os.path.join(workdir, "policy")
  models.save_hf(cfg, state.params, policy_dir)
  if isinstance(tokenizer, chat.HFTokenizer):
    tokenizer.save(policy_dir)
  plots.plot_losses(workdir)
  summary["skipped_rows"] = dict(stats.skipped)
  if config.eval.num_problems:
    summary["eval"] = evaluate.evaluate_policy(config.eval, cfg, state.params, tokenizer,
                                               _eval_problems(config, workdir), workdir, mesh_rules)
  data.write_json_atomic(os.path.join(workdir, "summary.json"), summary)
  logging.info("done: %s", summary)
  return summary
