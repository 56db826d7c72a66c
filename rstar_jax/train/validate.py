"""One validation layer for a run's config: every check before anything is built.

  validate(config, origin)      # raises config_lib.ConfigError: "config.<key>=<value> <why> (<origin>)"

Each range is written once here. Typed objects built from the config (curriculum stages, RoC and
reward options, chat format) raise their own ValueError; it is re-raised as a ConfigError that
keeps the key path and adds the origin. Cross-field checks name every field involved (a stage's
budget against the packing row and the model's context, keep against num_rollouts, the RoC
count rule against keep).
"""
import os
from typing import Any, Callable

import ml_collections

from rstar_jax import chat
from rstar_jax import data
from rstar_jax import models
from rstar_jax import rewards
from rstar_jax import rl
from rstar_jax import rollout
from rstar_jax import sandbox
from rstar_jax.rollout import weight_sync
from rstar_jax.sandbox import isolation
from rstar_jax.train import distributed
from rstar_jax.train import rollout_backend
from rstar_jax.train.config_lib import ConfigError, require, where

JOBS = ("sft", "rl", "sft_rl")
_POSITIVE_INT = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "must be a positive integer")
_NON_NEGATIVE_INT = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                     "must be a non-negative integer")
_POSITIVE = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "must be positive")
_FRACTION = (lambda v: isinstance(v, (int, float)) and 0 <= v <= 1, "must be in [0, 1]")


def _all(config, origin: str, rule: tuple[Callable[[Any], bool], str], *paths: str) -> None:
  for path in paths:
    require(config, path, rule[0], rule[1], origin)


def _typed(build: Callable[[], Any], field: str, origin: str) -> Any:
  """build(), with its ValueError re-raised as a ConfigError about `field`."""
  try:
    return build()
  except ValueError as e:
    message = str(e)
    prefix = "" if message.startswith("config.") else f"config.{field}: "
    raise ConfigError(f"{prefix}{message}{where(origin)}") from None


def validate(config: ml_collections.ConfigDict, origin: str = "") -> None:
  """Checks the config (module docstring); raises ConfigError on the first problem."""
  require(config, "job", lambda v: v in JOBS, f"must be one of {JOBS}", origin)
  require(config, "seed", lambda v: isinstance(v, int) and 0 <= v < 2**31, "must be in [0, 2**31)", origin)
  require(config, "data.seed", lambda v: isinstance(v, int) and 0 <= v < 2**31, "must be in [0, 2**31)", origin)
  _typed(lambda: chat.ChatFormat.from_config(config), "prompt", origin)
  _typed(lambda: rollout.ToolEnvironment.from_dict(config.env), "env", origin)
  _validate_model(config, origin)
  _all(config, origin, _POSITIVE_INT, "checkpoint.every_steps", "checkpoint.max_to_keep")
  if config.job in ("sft", "sft_rl"):
    _validate_sft(config, origin)
  if config.job in ("rl", "sft_rl"):
    _validate_rl(config, origin)
    _validate_rollout(config, origin)
  _validate_eval(config, origin)
  _validate_distributed(config, origin)
  if config.job == "rl":
    require(config, "model.hf_path", bool, "is empty, but config.job='rl' trains a given policy: set it to a "
            "Hugging Face checkpoint directory (for example an earlier run's policies/sft)", origin)
  _all(config, origin, _POSITIVE, "sandbox.timeout_s")
  _all(config, origin, _NON_NEGATIVE_INT, "sandbox.cpu_s")
  needs_sandbox = config.job != "sft" or config.eval.num_problems
  if needs_sandbox:
    if not config.sandbox.url:
      reason = isolation.unavailable_reason()
      require(config, "sandbox.url", lambda v: reason is None,
              f"is empty, so an in-process sandbox would run the tool calls, and it cannot start here ({reason}): "
              "give the URL of a running `rstar-sandbox serve`", origin)
    _all(config, origin, _POSITIVE_INT, "sandbox.workers")
    default_limits = (sandbox.Limits.timeout_s, 0)
    require(config, "sandbox.url", lambda url: not url or (config.sandbox.timeout_s, config.sandbox.cpu_s)
            == default_limits, "runs the tool calls with its own limits (rstar-sandbox serve --timeout-s, --cpu-s): "
            f"config.sandbox.timeout_s={config.sandbox.timeout_s!r} and config.sandbox.cpu_s={config.sandbox.cpu_s!r} "
            f"limit the in-process pool only; leave them at {default_limits[0]!r} and {default_limits[1]!r}", origin)
    require(config, "sandbox.api_key_file", lambda v: not v or os.path.isfile(v),
            "is not a file (the sandbox service's API key, sent as 'Authorization: Bearer KEY')", origin)
  _typed(lambda: rewards.RewardConfig.from_config(config), "reward", origin)


def _is_response_estimate(value) -> bool:
  try:
    rollout_backend.expected_response_tokens(value)
  except ValueError:
    return False
  return True


def _validate_rollout(config: ml_collections.ConfigDict, origin: str) -> None:
  """config.rollout: the backend and, for servers, where they are."""
  require(config, "rollout.backend", lambda v: v in rollout_backend.BACKENDS,
          f"must be one of {rollout_backend.BACKENDS}", origin)
  require(config, "rollout.local_servers", lambda v: isinstance(v, int) and v >= 0, "must be an int >= 0", origin)
  require(config, "rollout.urls", lambda v: all(isinstance(u, str) and u.startswith(("http://", "https://"))
                                                for u in v), "must be a list of http(s):// URLs", origin)
  if config.rollout.backend == "sglang":
    require(config, "rollout.urls", lambda v: bool(v) != bool(config.rollout.local_servers),
            f"and config.rollout.local_servers={config.rollout.local_servers}: the sglang backend needs exactly one "
            "of them (servers to use, or a number to start here)", origin)
  require(config, "rollout.api_key_file", lambda v: not v or os.path.isfile(v),
          "is not a file (the rollout servers' API key)", origin)
  require(config, "rollout.weight_sync", lambda v: v in weight_sync.MODES,
          f"must be one of {weight_sync.MODES} ('push' needs rstar-serve servers)", origin)
  require(config, "rollout.sync_dtype", lambda v: v in rollout_backend.SYNC_DTYPES,
          f"must be one of {rollout_backend.SYNC_DTYPES} (the dtype weight versions are written in; '': the "
          "parameter dtype)", origin)
  require(config, "rollout.expected_response_tokens", _is_response_estimate,
          "must be 'mean', 'budget' or a positive number of tokens (the response a new rollout is "
          "expected to generate: the router places it where its prompt plus this fits the free KV)", origin)
  require(config, "rl.max_staleness", lambda v: isinstance(v, int) and v >= 0, "must be an int >= 0", origin)
  if config.rl.max_staleness:
    require(config, "rl.max_staleness", lambda v: config.rollout.backend == "sglang",
            "> 0 generates the next steps' rollouts during the update, which needs rollout servers: set "
            "config.rollout.backend='sglang' (the in-process engine shares the trainer's devices)", origin)
    require(config, "rl.use_sampler_logprobs", bool, "must be True with config.rl.max_staleness > 0: the old "
            "policy of a stale rollout is the one that sampled it (PAPER.md §11)", origin)


def _validate_distributed(config: ml_collections.ConfigDict, origin: str) -> None:
  """config.distributed: what a multi-process run supports (train/distributed.py)."""
  if "distributed" not in config:
    return
  require(config, "distributed.mode", lambda v: v in distributed.MODES, f"must be one of {distributed.MODES}", origin)
  if config.distributed.mode == "none":
    return
  if config.distributed.mode == "explicit":
    require(config, "distributed.coordinator_address", lambda v: bool(v), "must be the coordinator's host:port "
            "(process 0's) with config.distributed.mode='explicit'", origin)
    require(config, "distributed.num_processes", lambda v: isinstance(v, int) and v >= 1, "must be >= 1", origin)
    require(config, "distributed.process_id", lambda v: isinstance(v, int) and 0 <= v < config.distributed.num_processes,
            f"must be in [0, config.distributed.num_processes={config.distributed.num_processes})", origin)
  require(config, "eval.num_problems", lambda v: v == 0, "must be 0 in a multi-process run (config.distributed."
          f"mode={config.distributed.mode!r}): the in-process evaluation engine does not span processes; "
          "evaluate the saved policies/<phase> with `python -m rstar_jax.eval` (--rollout-urls for servers)", origin)
  if config.job in ("rl", "sft_rl"):
    require(config, "rollout.backend", lambda v: v == "sglang", "must be 'sglang' in a multi-process run: process 0 "
            "drives the rollout servers and broadcasts each step's rollouts (the in-process engine does not span "
            "processes)", origin)
    require(config, "rollout.local_servers", lambda v: v == 0, "must be 0 in a multi-process run: give the servers' "
            "config.rollout.urls", origin)
    require(config, "rl.max_staleness", lambda v: v == 0, "must be 0 in a multi-process run", origin)


def _validate_model(config, origin: str) -> None:
  for path in ("model.dtype", "model.param_dtype"):
    require(config, path, lambda v: v in models.DTYPES, f"must be one of {models.DTYPES}", origin)
  require(config, "model.remat", lambda v: v in models.REMAT_POLICIES,
          f"must be one of {models.REMAT_POLICIES}", origin)
  require(config, "model.attention_chunk", lambda v: isinstance(v, int) and v >= 0,
          "must be an integer >= 0 (0: no chunks)", origin)
  require(config, "model.scan_unroll", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
          "must be an integer >= 1 (layers per scan iteration)", origin)
  if not config.model.hf_path:
    _all(config, origin, _POSITIVE_INT, "model.hidden_size", "model.intermediate_size", "model.num_layers",
         "model.num_heads", "model.num_kv_heads", "model.head_dim", "model.vocab_multiple",
         "model.max_position_embeddings")
    require(config, "model.num_heads", lambda v: v % config.model.num_kv_heads == 0,
            f"must be a multiple of config.model.num_kv_heads={config.model.num_kv_heads}", origin)


def _validate_optim(config, path: str, origin: str) -> None:
  _all(config, origin, _POSITIVE, f"{path}.learning_rate")
  _all(config, origin, _NON_NEGATIVE_INT, f"{path}.warmup_steps")
  for name in ("b1", "b2"):
    require(config, f"{path}.{name}", lambda v: 0 <= v < 1, "must be in [0, 1)", origin)
  require(config, f"{path}.weight_decay", lambda v: v >= 0, "must be non-negative", origin)
  require(config, f"{path}.max_grad_norm", lambda v: v >= 0, "must be non-negative (0: no clipping)", origin)


def _validate_sft(config, origin: str) -> None:
  sft = config.sft
  _all(config, origin, _POSITIVE_INT, "sft.steps", "sft.batch_size", "sft.row_length", "sft.rows_per_microbatch",
       "sft.eval_every_steps")
  _all(config, origin, _NON_NEGATIVE_INT, "sft.num_eval", "sft.logits_chunk")
  require(config, "sft.num_microbatches", lambda v: v is None or (isinstance(v, int) and v > 0),
          "must be None (smallest that fits) or a positive integer", origin)
  require(config, "sft.logits_chunk", lambda v: v == 0 or sft.row_length % v == 0,
          f"must be 0 or divide config.sft.row_length={sft.row_length}", origin)
  _validate_optim(config, "sft.optim", origin)
  require(config, "sft.optim.reset_at_steps", lambda v: all(isinstance(s, int) and 0 < s < sft.steps for s in v),
          f"must list update indices in [1, config.sft.steps={sft.steps})", origin)
  if not config.data.sft_files:
    _all(config, origin, _POSITIVE_INT, "data.synthetic.num_sft", "data.synthetic.num_train",
         "data.synthetic.num_eval")
    require(config, "sft.num_eval", lambda v: v < config.data.synthetic.num_sft,
            f"must be smaller than config.data.synthetic.num_sft={config.data.synthetic.num_sft}", origin)
    _typed(lambda: data.TraceMix(**config.data.synthetic.mix), "data.synthetic.mix", origin)
    require(config, "data.synthetic.levels", lambda v: len(v) > 0 and set(v) <= set(data.LEVELS),
            f"must be a non-empty subset of {data.LEVELS}", origin)


def _validate_rl(config, origin: str) -> None:
  rl_config = config.rl
  _all(config, origin, _POSITIVE_INT, "rl.keep", "rl.num_rollouts", "rl.updates_per_step", "rl.row_length",
       "rl.rows_per_microbatch", "rl.num_slots", "rl.hard_filter_chunk",
       "checkpoint.rl_every_steps", "data.prompts_per_step", "data.max_prompt_tokens")
  _all(config, origin, _NON_NEGATIVE_INT, "rl.logits_chunk")
  require(config, "rl.num_microbatches", lambda v: v is None or (isinstance(v, int) and v > 0),
          "must be None (smallest that fits) or a positive integer", origin)
  require(config, "rl.logits_chunk", lambda v: v == 0 or rl_config.row_length % v == 0,
          f"must be 0 or divide config.rl.row_length={rl_config.row_length}", origin)
  require(config, "rl.keep", lambda v: v <= rl_config.num_rollouts,
          f"exceeds config.rl.num_rollouts={rl_config.num_rollouts} (RoC keeps `keep` of the rollouts of "
          "each prompt; the paper samples 2 x keep)", origin)
  require(config, "rl.temperature", lambda v: v > 0, "must be positive (RL samples)", origin)
  require(config, "rl.top_p", lambda v: 0 < v <= 1, "must be in (0, 1]", origin)
  _all(config, origin, _FRACTION, "rl.max_sandbox_error_fraction")
  require(config, "rl.loss_agg", lambda v: v in ("token_mean", "group_token_mean"),
          "must be 'token_mean' or 'group_token_mean'", origin)
  roc_config = _typed(lambda: rl.RoCConfig.preset(rl_config.roc_mode, **dict(rl_config.roc)), "rl.roc_mode",
                      origin)
  for num_pos in range(rl_config.num_rollouts + 1):  # every group the count rule can meet
    _typed(lambda: rl.class_counts(rl_config.num_rollouts - num_pos, num_pos, rl_config.keep, roc_config),
           f"rl.keep={rl_config.keep} with config.rl.num_rollouts={rl_config.num_rollouts} and the "
           f"'{roc_config.count_rule}' count rule (choose an even keep and num_rollouts = 2 x keep)", origin)
  _validate_optim(config, "rl.optim", origin)
  curriculum = _typed(lambda: data.curriculum_from_config(config.data.stages), "data.stages", origin)
  context = config.model.max_position_embeddings if not config.model.hf_path else None
  for stage in curriculum.stages:
    length = config.data.max_prompt_tokens + stage.max_response_tokens
    if length > rl_config.row_length + 1:
      raise ConfigError(
          f"{stage.field}.max_response_tokens={stage.max_response_tokens} plus config.data.max_prompt_tokens="
          f"{config.data.max_prompt_tokens} is {length} tokens, more than a packing row holds "
          f"(config.rl.row_length={rl_config.row_length} + 1){where(origin)}")
    if context is not None and length > context:
      raise ConfigError(
          f"{stage.field}.max_response_tokens={stage.max_response_tokens} plus config.data.max_prompt_tokens="
          f"{config.data.max_prompt_tokens} is {length} tokens, beyond config.model.max_position_embeddings="
          f"{context}{where(origin)}")


def _validate_eval(config, origin: str) -> None:
  _all(config, origin, _NON_NEGATIVE_INT, "eval.num_problems")
  if not config.eval.num_problems:
    return
  _all(config, origin, _POSITIVE_INT, "eval.num_samples", "eval.max_response_length",
       "eval.max_assistant_turns", "eval.num_slots")
  require(config, "eval.temperature", lambda v: v >= 0, "must be non-negative", origin)
  require(config, "eval.problems_files", lambda v: v or not config.data.sft_files,
          "is empty but config.data.sft_files is set, so there is no synthetic eval split: give "
          "'SCHEMA:PATH' problem files or set config.eval.num_problems=0", origin)
  context = config.model.max_position_embeddings if not config.model.hf_path else None
  length = config.data.max_prompt_tokens + config.eval.max_response_length
  if context is not None and length > context:
    raise ConfigError(f"config.eval.max_response_length={config.eval.max_response_length} plus "
                      f"config.data.max_prompt_tokens={config.data.max_prompt_tokens} is {length} tokens, "
                      f"beyond config.model.max_position_embeddings={context}{where(origin)}")


def check_batch_divides(config: ml_collections.ConfigDict, mesh_rules: models.MeshRules, origin: str) -> None:
  """Row counts divide over the mesh's data x fsdp devices (known once the mesh is built)."""
  batch_devices = mesh_rules.mesh.shape["data"] * mesh_rules.mesh.shape["fsdp"]
  paths = []
  if config.job in ("sft", "sft_rl"):
    paths.append("sft.rows_per_microbatch")
  if config.job in ("rl", "sft_rl"):
    paths += ["rl.rows_per_microbatch", "rl.num_slots"]
  if config.eval.num_problems:
    paths.append("eval.num_slots")
  for path in paths:
    require(config, path, lambda v: v % batch_devices == 0,
            f"must be a multiple of the mesh's data x fsdp devices ({batch_devices}; set config.mesh.* "
            "or config.mesh.num_devices)", origin)

