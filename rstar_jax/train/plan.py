"""The dry run (`--config.dry_run=True`): what a config puts on each device and what a step
processes, from the config alone: no weights, no accelerators, nothing written.

  plan = make_plan(config)            # a JSON-able dict
  print(format_plan(plan))

The mesh is built abstractly (jax.sharding.AbstractMesh of config.mesh over
config.mesh.num_devices devices, 0 meaning this machine's), so a laptop can plan a 64-accelerator run. The model is the
checkpoint's config.json when config.model.hf_path holds one, else the config's model fields.

Bytes per device of the RL update (train/step.py), with s = a parameter's elements on one device
(its shape divided by the mesh axes its logical axes map to), p = itemsize(param_dtype),
a = itemsize(compute dtype), r = rl.rows_per_microbatch / (data x fsdp) rows per device, T =
rl.row_length, L layers, E width, H/tp query heads and V/tp vocabulary on one device:
  parameters   sum s x p
  optimizer    Adam's two moments, sum 2 x s x p
  gradients    the fp32 accumulator of the microbatch scan, one microbatch's gradients and the
               optimizer's updates: sum s x (4 + 2p)
  activations  remat "full": every layer's block input kept for the backward pass, r x L x T x E
               x 4 (the residual stream is summed in fp32 in the backward pass), plus one layer's
               attention scores, their softmax (fp32) and the probabilities (compute dtype) during
               its recomputation, r x (H/tp) x T (T + Q) / 2 x (8 + a) (Q = model.attention_chunk,
               or T: T^2; XLA holds every causal chunk's scores at once, so chunks halve it at
               most), plus a logits chunk and its gradient,
               r x C x (V/tp) x 8 (C = rl.logits_chunk, or T).
               remat "projections" adds the saved q, k, v, attention output and MLP hidden
               per token and layer: r x L x T x ((2H + 2K) x D / tp + F / tp) x a.
               remat "none"/"dots" keep every intermediate of every layer: not estimated.
  batch        the packed step: microbatches x r x T x 8 arrays x 4 bytes
`tests/compile_check_test.py` compiles the recipe's train step at full shape and holds this
estimate to the compiled memory (XLA's buffer assignment) within 20%.
The rollout engine (train/grpo.py's in-process engine, the stage-3 filter and evaluations) holds
its own copy of the parameters (split by layer, models.split_layers), beside the trainer's, and a
KV cache of rl.num_slots slots x (max prompt + max response) positions,
kv_bytes_per_slot each, split over (data x fsdp) slots and tensor kv heads.
"""
import dataclasses
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn
from jax.sharding import AbstractMesh, NamedSharding

from rstar_jax import chat
from rstar_jax import data
from rstar_jax import models
from rstar_jax.rollout.jax_engine import kv_bytes_per_slot
from rstar_jax.train import evaluate
from rstar_jax.train import policy
from rstar_jax.train.config_lib import ConfigError, where
from rstar_jax.train.packing import PackedBatch, microbatch_bucket

GIB = 2**30
_BATCH_ARRAYS = len(PackedBatch._fields)  # each int32 or fp32


def mesh_sizes(mesh_config: ml_collections.ConfigDict, origin: str = "") -> dict[str, int]:
  """{data, fsdp, tensor} sizes for config.mesh over config.mesh.num_devices devices (0: this
  machine's), -1 filled in."""
  total = mesh_config.num_devices or jax.device_count()
  try:
    shape = models.mesh_shape(mesh_config.data, mesh_config.fsdp, mesh_config.tensor, total)
  except ValueError as e:
    raise ConfigError(f"config.mesh (num_devices={mesh_config.num_devices}): {e}{where(origin)}") from None
  return dict(zip(models.MESH_AXES, shape))


def abstract_mesh(sizes: dict[str, int]) -> AbstractMesh:
  return AbstractMesh(tuple(sizes[a] for a in models.MESH_AXES), models.MESH_AXES)


def _tokenizer(config: ml_collections.ConfigDict) -> chat.Tokenizer | None:
  for directory in (config.model.hf_path, config.data.get("tokenizer", "")):
    if directory and os.path.isfile(os.path.join(directory, "tokenizer.json")):
      return chat.HFTokenizer.from_dir(directory)
  return None


def _vocab_size(config: ml_collections.ConfigDict) -> int:
  """policy.random_vocab_size of the tokenizer's size: a tokenizer.json's, the BPE size to be
  learned, or the character set's."""
  if config.model.get("vocab_size"):
    return config.model.vocab_size
  tokenizer = _tokenizer(config)
  if tokenizer is not None:
    size = tokenizer.vocab_size
  elif config.data.get("tokenizer") == "bpe":
    size = config.data.bpe_vocab_size
  else:
    size = chat.load_tokenizer(config.data.tokenizer).vocab_size
  return policy.random_vocab_size(config.model, size)


def model_config(config: ml_collections.ConfigDict) -> tuple[models.ModelConfig, str]:
  """(the policy's ModelConfig, where it came from): hf_path/config.json if present, else fields."""
  numerics = dict(dtype=config.model.dtype, param_dtype=config.model.param_dtype,
                  **policy.run_time_fields(config.model))
  path = os.path.join(config.model.hf_path, "config.json") if config.model.hf_path else ""
  if path and os.path.isfile(path):
    return models.read_hf_config(path, **numerics), path
  return policy.model_config_from_fields(config.model, _vocab_size(config), None), "config.model fields"


def _shard_elements(mesh: AbstractMesh, rules, shape, logical_axes, what: str) -> int:
  spec = nn.logical_to_mesh_axes(tuple(logical_axes), rules)
  for size, name, axes in zip(shape, logical_axes, tuple(spec) + (None,) * len(shape)):
    parts = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ()))
    if size % parts:
      raise ConfigError(f"{what}: axis {name!r} of size {size} does not divide over mesh axes {axes} ({parts} "
                        f"devices of config.mesh {dict(mesh.shape)})")
  return math.prod(NamedSharding(mesh, spec).shard_shape(tuple(shape)))


def parameter_elements(cfg: models.ModelConfig, mesh: AbstractMesh, rules) -> tuple[int, int]:
  """(total parameter elements, the most elements of the parameters one device holds)."""
  shapes = jax.tree_util.tree_leaves_with_path(models.param_shapes(cfg))
  axes = jax.tree.leaves(models.param_logical_axes(cfg), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  total = sum(math.prod(s.shape) for _, s in shapes)
  return total, sum(_shard_elements(mesh, rules, s.shape, a, f"parameter {jax.tree_util.keystr(path)}")
                    for (path, s), a in zip(shapes, axes))


@dataclasses.dataclass(frozen=True)
class TrainMemory:
  """Bytes per device of one RL update (module docstring); activations None when not estimated."""
  parameters: int
  optimizer: int
  gradients: int
  activations: int | None
  batch: int

  @property
  def total(self) -> int | None:
    if self.activations is None:
      return None
    return self.parameters + self.optimizer + self.gradients + self.activations + self.batch


def train_memory(cfg: models.ModelConfig, mesh: AbstractMesh, rules, rows_per_microbatch: int, row_length: int,
                 num_microbatches: int, logits_chunk: int) -> TrainMemory:
  """The per-device estimate of the module docstring for one RL (or SFT) update."""
  _, shard = parameter_elements(cfg, mesh, rules)
  p, a = jnp.dtype(cfg.param_dtype).itemsize, jnp.dtype(cfg.dtype).itemsize
  batch_devices, tp = mesh.shape["data"] * mesh.shape["fsdp"], mesh.shape["tensor"]
  r, t = max(rows_per_microbatch // batch_devices, 1), row_length
  heads = cfg.num_heads // tp if cfg.num_heads % tp == 0 else cfg.num_heads
  vocab = cfg.vocab_size // tp if cfg.vocab_size % tp == 0 else cfg.vocab_size
  chunk = logits_chunk or t
  activations = None
  if cfg.remat in ("full", "projections"):
    per_token_layer = cfg.hidden_size * 4
    if cfg.remat == "projections":
      per_token_layer += ((2 * cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim + cfg.intermediate_size) // tp * a
    q = min(cfg.attention_chunk or t, t)
    scores = heads * t * (t + q) // 2  # the causal chunks' scores, kept together: T^2 unchunked
    activations = r * (cfg.num_layers * t * per_token_layer + scores * (8 + a) + chunk * vocab * 8)
  return TrainMemory(parameters=shard * p, optimizer=2 * shard * p, gradients=shard * (4 + 2 * p),
                     activations=activations, batch=num_microbatches * r * t * _BATCH_ARRAYS * 4)


def engine_memory(cfg: models.ModelConfig, mesh: AbstractMesh, rules, num_slots: int, max_length: int) -> dict:
  """Bytes per device of the in-process rollout engine: parameters and KV cache."""
  _, shard = parameter_elements(cfg, mesh, rules)
  shapes = models.kv_cache.layer_shapes(cfg, num_slots, max_length)
  kv_shard = cfg.num_layers * jnp.dtype(cfg.dtype).itemsize * sum(
      _shard_elements(mesh, rules, shape, axes, "the KV cache")
      for shape, axes in zip(shapes, models.kv_cache.LAYER_AXES))
  return {"parameters": shard * jnp.dtype(cfg.param_dtype).itemsize, "kv_cache": kv_shard,
          "kv_bytes_per_slot": kv_bytes_per_slot(cfg, max_length)}


def microbatches(rows: int, rows_per_microbatch: int, num_microbatches: int | None) -> int:
  """The microbatch count packing gives `rows` rows: the configured one, else its bucket."""
  return num_microbatches or microbatch_bucket(-(-rows // rows_per_microbatch))


def stage_tokens(config: ml_collections.ConfigDict, prompt_overhead: int | None) -> list[dict]:
  """Per stage: rollouts, the generated-token bound and the trained rows of one RL step.

  generated <= P x n x R (R: the stage's response budget, tool tokens included); trained
  trajectories P x keep, each <= max_prompt_tokens + R tokens, one packing row each at most, in
  microbatches of rl.rows_per_microbatch rows (rl.num_microbatches, else packing's bucket).
  """
  rl_config, prompts = config.rl, config.data.prompts_per_step
  out = []
  for stage in data.curriculum_from_config(config.data.stages).stages:
    trained = prompts * rl_config.keep
    per_row = max(rl_config.row_length // (config.data.max_prompt_tokens + stage.max_response_tokens), 1)
    rows = -(-trained // per_row)
    out.append(dict(
        name=stage.name, steps=stage.steps, max_response_tokens=stage.max_response_tokens, max_turns=stage.max_turns,
        rollouts=prompts * rl_config.num_rollouts, trained_trajectories=trained,
        generated_tokens_max=prompts * rl_config.num_rollouts * stage.max_response_tokens,
        trained_tokens_max=trained * (config.data.max_prompt_tokens + stage.max_response_tokens),
        prompt_tokens_min=None if prompt_overhead is None else prompts * rl_config.num_rollouts * prompt_overhead,
        microbatches_max=microbatches(rows, rl_config.rows_per_microbatch, rl_config.num_microbatches),
        hard_filter_samples=stage.hard_filter_samples, reset_optimizer=stage.reset_optimizer))
  return out


def make_plan(config: ml_collections.ConfigDict, origin: str = "") -> dict[str, Any]:
  """The dry-run plan of a validated config (see the module docstring); raises ConfigError."""
  sizes = mesh_sizes(config.mesh, origin)
  mesh = abstract_mesh(sizes)
  rules = models.sharding.normalize_rules(tuple(tuple(rule) for rule in config.mesh.rules))
  cfg, source = model_config(config)
  total, _ = parameter_elements(cfg, mesh, rules)
  tokenizer = _tokenizer(config)
  overhead = None
  if tokenizer is not None:
    overhead = len(tokenizer.encode(chat.prompt_text("", chat.ChatFormat.from_config(config))))
  plan: dict[str, Any] = {
      "devices": math.prod(sizes.values()), "mesh": sizes, "distributed": dict(config.get("distributed", {})),
      "model": dict(source=source, parameters=total, **{k: getattr(cfg, k) for k in (
          "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
          "num_kv_heads", "head_dim", "dtype", "param_dtype", "remat")}),
      "first_turn_prompt_tokens": overhead,
  }
  if config.job in ("rl", "sft_rl"):
    stages = stage_tokens(config, overhead)
    longest = max(s["max_response_tokens"] for s in stages)
    memory = train_memory(cfg, mesh, rules, config.rl.rows_per_microbatch, config.rl.row_length,
                          max(s["microbatches_max"] for s in stages), config.rl.logits_chunk)
    plan.update(stages=stages, rl_update_bytes=dataclasses.asdict(memory) | {"total": memory.total},
                engine_bytes=engine_memory(cfg, mesh, rules, config.rl.num_slots,
                                           config.data.max_prompt_tokens + longest))
  if config.job in ("sft", "sft_rl"):
    memory = train_memory(cfg, mesh, rules, config.sft.rows_per_microbatch, config.sft.row_length,
                          microbatches(config.sft.batch_size, config.sft.rows_per_microbatch,
                                       config.sft.num_microbatches), config.sft.logits_chunk)
    plan["sft_update_bytes"] = dataclasses.asdict(memory) | {"total": memory.total}
  rollout_config = config.rollout
  plan["rollout"] = dict(backend=rollout_config.backend, urls=list(rollout_config.urls),
                         local_servers=rollout_config.local_servers, weight_sync=rollout_config.weight_sync,
                         weight_sync_dir=rollout_config.weight_sync_dir)
  plan["evaluates_in_process"] = bool(config.eval.num_problems)
  limits = None if config.sandbox.url else evaluate.sandbox_limits(config.sandbox.timeout_s, config.sandbox.cpu_s)
  plan["sandbox"] = dict(url=config.sandbox.url or None,
                         in_process_workers=None if limits is None else config.sandbox.workers,
                         timeout_s=None if limits is None else limits.timeout_s,
                         cpu_s=None if limits is None else limits.cpu_seconds)
  return plan


def _gib(n: int | None) -> str:
  return "not estimated" if n is None else f"{n / GIB:8.2f} GiB"


def _count(n: int | None) -> str:
  return "?" if n is None else f"{n:,}"


def format_plan(plan: dict[str, Any]) -> str:
  """The plan as the lines the dry run prints."""
  m, model = plan["mesh"], plan["model"]
  dist = plan["distributed"]
  processes = ("one process" if dist.get("mode", "none") == "none" else
               f"distributed {dist['mode']}" + (f", {dist['num_processes']} processes, coordinator "
                                                f"{dist['coordinator_address']}" if dist["mode"] == "explicit" else ""))
  count = model["parameters"]
  lines = [f"devices: {plan['devices']} as mesh data={m['data']} x fsdp={m['fsdp']} x tensor={m['tensor']}; "
           + processes,
           f"model ({model['source']}): {model['model_type']} "
           + (f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.2f}M") + " parameters, "
           f"E{model['hidden_size']} F{model['intermediate_size']} L{model['num_layers']} H{model['num_heads']} "
           f"K{model['num_kv_heads']} D{model['head_dim']} V{model['vocab_size']}, compute {model['dtype']}, "
           f"parameters {model['param_dtype']}, remat {model['remat']}",
           "first-turn prompt: " + ("? tokens (no tokenizer.json at config.model.hf_path or config.data.tokenizer)"
                                    if plan["first_turn_prompt_tokens"] is None else
                                    f"{plan['first_turn_prompt_tokens']} tokens before the question")]
  for key, title in (("sft_update_bytes", "SFT update"), ("rl_update_bytes", "RL update")):
    if key in plan:
      b = plan[key]
      lines.append(f"{title}, per device: " + ", ".join(f"{name} {_gib(b[name]).strip()}" for name in (
          "parameters", "optimizer", "gradients", "activations", "batch", "total")))
  if "engine_bytes" in plan and (plan["rollout"]["backend"] == "jax" or plan["evaluates_in_process"]):
    e = plan["engine_bytes"]
    lines.append(f"rollout engine, per device: parameters {_gib(e['parameters']).strip()}, KV cache "
                 f"{_gib(e['kv_cache']).strip()} ({e['kv_bytes_per_slot'] / 2**20:.0f} MiB per slot)")
  for s in plan.get("stages", []):
    lines.append(
        f"stage {s['name']}: {s['steps']} steps, {s['rollouts']:,} rollouts/step (<= {s['max_turns']} turns, "
        f"<= {s['max_response_tokens']:,} response tokens), generated <= {s['generated_tokens_max']:,} tokens/step, "
        f"prompts >= {_count(s['prompt_tokens_min'])} tokens/step, trained {s['trained_trajectories']:,} "
        f"trajectories <= {s['trained_tokens_max']:,} tokens in <= {s['microbatches_max']} microbatches"
        + (f", hard filter {s['hard_filter_samples']} samples/problem" if s["hard_filter_samples"] else "")
        + (", optimizer reset" if s["reset_optimizer"] else ""))
  r = plan["rollout"]
  lines.append("rollouts: " + ("in process (JAX engine on the trainer's devices)" if r["backend"] == "jax" else
                               f"{r['local_servers']} local rstar-serve processes" if r["local_servers"] else
                               f"{len(r['urls'])} SGLang-compatible servers: {', '.join(r['urls'])}")
               + ("" if r["backend"] == "jax" else ", weights pushed over HTTP" if r["weight_sync"] == "push" else
                  f", weights through {r['weight_sync_dir'] or 'WORKDIR/weight_sync'}"))
  s = plan["sandbox"]
  lines.append("sandbox: " + (s["url"] or f"in process, {s['in_process_workers']} workers, runs limited to "
                                         f"{s['timeout_s']:g} s wall-clock and {s['cpu_s']} CPU s per process"))
  return "\n".join(lines)
