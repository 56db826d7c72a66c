"""The policy: a Qwen2/Qwen3 decoder in flax.linen, sharded by logical axes, with HF interop.

  cfg, params = models.load_hf(path, dtype=jnp.float32)
  logits = models.logits(cfg, params, input_ids)     # int32 [B, T] -> fp32 [B, T, V]
  models.save_hf(cfg, params, path)
"""
from rstar_jax.models.api import (extend, forward, hidden_states, init_params, logits, lower_extend, output_logits,
                                  param_logical_axes, param_shapes, param_shardings, split_layers,
                                  token_logprobs)
from rstar_jax.models.config import (DTYPES, REMAT_POLICIES, ModelConfig, from_hf_dict, qwen, read_hf_config,
                                     to_hf_dict)
from rstar_jax.models.hf_io import (hf_tensor_groups, hf_tensor_shapes, load_hf, params_from_hf_tensors, read_safetensors_bytes,
                                    safetensors_parts, save_hf)
from rstar_jax.models.kv_cache import KVCache, copy_prefixes, init_cache, reset_slots
from rstar_jax.models.sharding import DEFAULT_RULES, LOGICAL_AXES, MESH_AXES, MeshRules, make_mesh, mesh_shape

__all__ = [
    "DEFAULT_RULES", "DTYPES", "KVCache", "LOGICAL_AXES", "MESH_AXES", "MeshRules", "ModelConfig", "copy_prefixes",
    "extend", "forward",
    "from_hf_dict", "hf_tensor_groups", "hf_tensor_shapes", "hidden_states", "init_cache", "init_params", "load_hf", "logits", "lower_extend", "make_mesh", "mesh_shape",
    "output_logits", "param_logical_axes", "params_from_hf_tensors", "param_shapes", "param_shardings", "qwen", "read_hf_config", "read_safetensors_bytes",
    "REMAT_POLICIES",
    "reset_slots", "safetensors_parts", "save_hf", "split_layers", "to_hf_dict", "token_logprobs",
]
