"""Builds the run's mesh, tokenizer and policy (random init or a Hugging Face checkpoint) from config.

Reads config.mesh.{num_devices, data, fsdp, tensor, rules} and config.model.{hf_path, model_type, hidden_size,
intermediate_size, num_layers, num_heads, num_kv_heads, head_dim, rope_theta, tie_word_embeddings,
vocab_size (0: from the tokenizer), vocab_multiple, dtype, param_dtype, remat, attention_chunk, scan_unroll} and
config.data.tokenizer.
"""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from rstar_jax import chat
from rstar_jax import models
from rstar_jax import rollout


def build_mesh_rules(mesh_config: ml_collections.ConfigDict) -> models.MeshRules:
  """The (data, fsdp, tensor) mesh over the first `num_devices` devices (0: all) and the rules."""
  devices = jax.devices()
  if not 0 <= mesh_config.num_devices <= len(devices):
    raise ValueError(f"config.mesh.num_devices={mesh_config.num_devices} must be in [0, {len(devices)}] "
                     f"(0 means all {len(devices)} devices)")
  if jax.process_count() > 1 and mesh_config.num_devices not in (0, len(devices)):
    raise ValueError(f"config.mesh.num_devices={mesh_config.num_devices} leaves some of the {len(devices)} devices "
                     f"of this {jax.process_count()}-process run out of the mesh: use 0 (all) or {len(devices)}")
  devices = devices[:mesh_config.num_devices or len(devices)]
  mesh = models.make_mesh(data=mesh_config.data, fsdp=mesh_config.fsdp, tensor=mesh_config.tensor,
                          devices=devices)
  return models.MeshRules(mesh, tuple(tuple(rule) for rule in mesh_config.rules))


def random_vocab_size(model_config: ml_collections.ConfigDict, tokenizer_vocab_size: int) -> int:
  """A random policy's vocabulary: config.model.vocab_size when set, else the tokenizer's size rounded
  up to config.model.vocab_multiple (so that it divides over the tensor axis)."""
  multiple = model_config.vocab_multiple
  return model_config.get("vocab_size", 0) or -(-tokenizer_vocab_size // multiple) * multiple


def _eos_ids(tokenizer: chat.Tokenizer) -> int | tuple[int, ...]:
  """`<|im_end|>` (the end of every turn), then `<|endoftext|>` if the tokenizer has it."""
  try:
    endoftext = tokenizer.token_to_id(chat.ENDOFTEXT)
  except ValueError:
    return tokenizer.eos_id
  return (tokenizer.eos_id, endoftext) if endoftext != tokenizer.eos_id else tokenizer.eos_id


def run_time_fields(model_config: ml_collections.ConfigDict) -> dict:
  """config.model's run-time ModelConfig fields (not in config.json): remat, attention_chunk, scan_unroll."""
  return dict(remat=model_config.remat, attention_chunk=model_config.attention_chunk,
              scan_unroll=model_config.scan_unroll)


def model_config_from_fields(model_config: ml_collections.ConfigDict, vocab_size: int,
                             eos_token_id: int | tuple[int, ...] | None) -> models.ModelConfig:
  """The ModelConfig of a random policy from config.model's shape and numerics fields."""
  return models.qwen(
      model_config.model_type, vocab_size=vocab_size, hidden_size=model_config.hidden_size,
      intermediate_size=model_config.intermediate_size, num_layers=model_config.num_layers,
      num_heads=model_config.num_heads, num_kv_heads=model_config.num_kv_heads, head_dim=model_config.head_dim,
      rope_theta=model_config.rope_theta, tie_word_embeddings=model_config.tie_word_embeddings,
      max_position_embeddings=model_config.max_position_embeddings, eos_token_id=eos_token_id,
      dtype=model_config.dtype, param_dtype=model_config.param_dtype, **run_time_fields(model_config))


def build_policy(model_config: ml_collections.ConfigDict, tokenizer: chat.Tokenizer,
                 mesh_rules: models.MeshRules, seed: int) -> tuple[models.ModelConfig, dict]:
  """(ModelConfig, params in their shardings): loaded from model_config.hf_path, else random.

  A random policy's vocabulary is `vocab_size` when given, else the tokenizer's rounded up to
  `vocab_multiple` (so it divides over the tensor axis); a loaded one must cover every tokenizer id. Either way the end-of-sequence
  ids become `<|im_end|>` then `<|endoftext|>` (PAPER.md §2.5 [R]: a turn ends at `<|im_end|>`).
  """
  eos = _eos_ids(tokenizer)
  if model_config.hf_path:
    cfg, params = models.load_hf(model_config.hf_path, dtype=jnp.dtype(model_config.param_dtype),
                                 compute_dtype=jnp.dtype(model_config.dtype), mesh_rules=mesh_rules,
                                 **run_time_fields(model_config))
    if cfg.vocab_size < tokenizer.vocab_size:
      raise ValueError(f"config.model.hf_path={model_config.hf_path!r} has vocab_size {cfg.vocab_size}, "
                       f"smaller than the tokenizer's {tokenizer.vocab_size}")
    if cfg.eos_token_id != eos:
      logging.info("policy: eos_token_id %s -> %s (turns end at <|im_end|>, PAPER.md §2.5)", cfg.eos_token_id, eos)
      cfg = cfg.replace(eos_token_id=eos)
    logging.info("policy: loaded %s (%s)", model_config.hf_path, cfg)
    return cfg, params
  vocab = random_vocab_size(model_config, tokenizer.vocab_size)
  if vocab < tokenizer.vocab_size:
    raise ValueError(f"config.model.vocab_size={vocab} is smaller than the tokenizer's {tokenizer.vocab_size}")
  cfg = model_config_from_fields(model_config, vocab, eos)
  params = models.init_params(cfg, jax.random.key(seed), mesh_rules)
  num_params = sum(x.size for x in jax.tree.leaves(params))
  logging.info("policy: random %s with %.2fM parameters", cfg, num_params / 1e6)
  return cfg, params


CHAT_FORMAT_FILE = "rstar_chat_format.json"


def save_policy(directory: str, cfg: models.ModelConfig, params, tokenizer: chat.Tokenizer,
                chat_format: chat.ChatFormat, environment: rollout.ToolEnvironment) -> None:
  """Writes a Hugging Face checkpoint (config.json, safetensors), the tokenizer when it is an
  `HFTokenizer`, and the chat format and tool environment the policy was trained with
  (`CHAT_FORMAT_FILE`, `rollout.tool_environment.FILE`), so that `load_policy` (and
  `python -m rstar_jax.eval`) prompt it and answer its tool calls as it was trained."""
  models.save_hf(cfg, params, directory)  # every process takes part; process 0 writes
  if jax.process_index() != 0:
    return
  if isinstance(tokenizer, chat.HFTokenizer):
    tokenizer.save(directory)
  path = os.path.join(directory, CHAT_FORMAT_FILE)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(dataclasses.asdict(chat_format), f)
  os.replace(path + ".tmp", path)
  environment.save(directory)


def load_policy(directory: str, mesh_rules: models.MeshRules | None = None, dtype: str = "float32"
                ) -> tuple[models.ModelConfig, dict, chat.Tokenizer, chat.ChatFormat]:
  """(cfg, params, tokenizer, chat format) of a `save_policy` directory, or of any Hugging Face
  Qwen checkpoint with a tokenizer.json (then the released chat format). The end-of-turn ids are
  the tokenizer's `<|im_end|>` then `<|endoftext|>` (a base checkpoint's config lists only the
  latter, PAPER.md §2.5)."""
  tokenizer, chat_format = load_prompting(directory)
  cfg, params = models.load_hf(directory, dtype=jnp.dtype(dtype), mesh_rules=mesh_rules)
  return cfg.replace(eos_token_id=_eos_ids(tokenizer)), params, tokenizer, chat_format


def load_prompting(directory: str) -> tuple[chat.Tokenizer, chat.ChatFormat]:
  """(tokenizer, chat format) of a policy directory, without its weights (for rollout servers)."""
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no policy directory at {directory!r}")
  tokenizer = chat.HFTokenizer.from_dir(directory)
  path = os.path.join(directory, CHAT_FORMAT_FILE)
  chat_format = chat.DEFAULT_FORMAT
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      chat_format = chat.ChatFormat(**json.load(f))
  return tokenizer, chat_format
