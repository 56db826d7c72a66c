"""ModelConfig.attention_chunk: cache-free passes attend causal query chunks; same values as one block."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rstar_jax import models
import tiny_models


@pytest.mark.parametrize("model_type", ["qwen2", "qwen3"])
def test_chunked_logits_match_transformers(tmp_path, model_type):
  hf_model = tiny_models.save_random_hf(tmp_path, model_type, tie=False, seed=1)
  cfg, params = models.load_hf(str(tmp_path), dtype=jnp.float32, attention_chunk=4)
  assert cfg.attention_chunk == 4
  ids = tiny_models.random_ids((2, 11), seed=2)  # chunks of 4, 4 and 3 queries
  np.testing.assert_allclose(models.logits(cfg, params, ids), tiny_models.hf_logits(hf_model, ids), atol=1e-4, rtol=0)


def _packed_loss(cfg, params, ids, positions, segments):
  logits = models.forward(cfg, params, ids[:, :-1], positions[:, :-1], segments[:, :-1])
  logp = jax.nn.log_softmax(logits)
  return -jnp.sum(jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1))


def test_chunked_packed_rows_equal_one_block_in_value_and_gradient():
  cfg = tiny_models.tiny_config("qwen3")
  params = models.init_params(cfg, jax.random.key(0))
  # two rows of 3 packed segments (positions restart per segment), 13 positions: chunks 5, 5, 3
  ids = tiny_models.random_ids((2, 14), seed=3)
  segments = jnp.asarray([[0] * 4 + [1] * 6 + [2] * 4, [0] * 9 + [1] * 2 + [2] * 3], jnp.int32)
  positions = jnp.asarray([list(range(4)) + list(range(6)) + list(range(4)),
                           list(range(9)) + list(range(2)) + list(range(3))], jnp.int32)
  one_block = jax.value_and_grad(_packed_loss, argnums=1)(cfg, params, ids, positions, segments)
  chunked = jax.value_and_grad(_packed_loss, argnums=1)(cfg.replace(attention_chunk=5), params, ids, positions,
                                                        segments)
  np.testing.assert_allclose(chunked[0], one_block[0], rtol=1e-6)
  # fp32 sums in another order: a gradient of ~1e-2 differed by 3.6e-7 on an AVX-512 CPU (a wrong
  # mask or chunk boundary moves them by orders of magnitude more)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), chunked[1], one_block[1])


def test_a_chunk_at_least_the_length_is_one_block_exactly():
  cfg = tiny_models.tiny_config("qwen3")
  params = models.init_params(cfg, jax.random.key(1))
  ids = tiny_models.random_ids((1, 8), seed=4)
  np.testing.assert_array_equal(models.logits(cfg.replace(attention_chunk=8), params, ids),
                                models.logits(cfg, params, ids))


def test_attention_chunk_is_validated_and_not_written_to_config_json(tmp_path):
  cfg = tiny_models.tiny_config("qwen3")
  with pytest.raises(ValueError, match="attention_chunk must be an integer >= 0"):
    cfg.replace(attention_chunk=-1)
  models.save_hf(cfg.replace(attention_chunk=16), models.init_params(cfg, jax.random.key(2)), str(tmp_path))
  assert "attention_chunk" not in json.loads((tmp_path / "config.json").read_text())
  assert models.read_hf_config(str(tmp_path / "config.json")).attention_chunk == 0
