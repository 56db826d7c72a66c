"""Tiny random Qwen2/Qwen3 models for tests: our configs and matching transformers checkpoints."""
import numpy as np
import torch
import transformers

from rstar_jax import models

# Small but exercising every feature: GQA (4 query heads, 2 kv heads), head_dim != hidden/heads.
DIMS = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2)


def hf_config(model_type: str, tie: bool, attention_bias: bool = False, head_dim: int = 12):
  common = dict(vocab_size=DIMS["vocab_size"], hidden_size=DIMS["hidden_size"],
                intermediate_size=DIMS["intermediate_size"], num_hidden_layers=DIMS["num_layers"],
                num_attention_heads=DIMS["num_heads"], num_key_value_heads=DIMS["num_kv_heads"],
                rope_theta=10000.0, tie_word_embeddings=tie, max_position_embeddings=256, rms_norm_eps=1e-6)
  if model_type == "qwen2":
    return transformers.Qwen2Config(**common)
  return transformers.Qwen3Config(head_dim=head_dim, attention_bias=attention_bias, **common)


def save_random_hf(path, model_type: str, tie: bool, seed: int = 0, attention_bias: bool = False,
                   max_shard_size: str | None = None):
  """A transformers model with every parameter random (norms and biases too), saved to `path`."""
  torch.manual_seed(seed)
  config = hf_config(model_type, tie, attention_bias)
  cls = transformers.Qwen2ForCausalLM if model_type == "qwen2" else transformers.Qwen3ForCausalLM
  model = cls(config).eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if name.endswith("norm.weight"):
        param.copy_(1.0 + 0.1 * torch.randn_like(param))
      elif name.endswith("bias"):
        param.copy_(0.1 * torch.randn_like(param))
  kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
  model.save_pretrained(path, **kwargs)
  return model


def hf_logits(model, input_ids: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.as_tensor(np.asarray(input_ids), dtype=torch.long)).logits.float().numpy()


def tiny_config(model_type: str = "qwen3", **overrides) -> models.ModelConfig:
  fields = dict(DIMS, rope_theta=10000.0, max_position_embeddings=256)
  if model_type == "qwen3":
    fields["head_dim"] = 12
  return models.qwen(model_type, **{**fields, **overrides})


def random_ids(shape, seed=0, vocab=DIMS["vocab_size"]) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, vocab, size=shape, dtype=np.int32)
