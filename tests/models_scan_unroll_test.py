"""ModelConfig.scan_unroll: the layer scan unrolled (partly or wholly) computes the looped one's
values up to float rounding (logits, gradients with remat); the engine's cached passes loop."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rstar_jax import models
from rstar_jax import rollout
import tiny_models

CFG = tiny_models.tiny_config("qwen3", num_layers=3)


def _loss(cfg, params, ids):
  logp = jax.nn.log_softmax(models.logits(cfg, params, ids[:, :-1]))
  return -jnp.sum(jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1))


@pytest.mark.parametrize("unroll", [2, 3, 8])  # 2: one unrolled pair and a remainder layer; 8 > num_layers
@pytest.mark.parametrize("remat", ["none", "full"])
def test_unrolled_layers_give_the_looped_values_and_gradients(unroll, remat):
  params = models.init_params(CFG, jax.random.key(0))
  ids = tiny_models.random_ids((2, 12), seed=1)
  looped = jax.value_and_grad(_loss, argnums=1)(CFG.replace(remat=remat), params, ids)
  unrolled = jax.value_and_grad(_loss, argnums=1)(CFG.replace(remat=remat, scan_unroll=unroll), params, ids)
  np.testing.assert_allclose(unrolled[0], looped[0], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6), unrolled[1], looped[1])


def test_the_engine_of_an_unrolled_config_decodes_as_the_looped_one():
  """Cached passes loop whatever scan_unroll says (ModelConfig.scan_unroll): the same program."""
  params = models.init_params(CFG, jax.random.key(2))
  requests = [rollout.GenerateRequest(f"r{i}", tiny_models.random_ids((n,), seed=10 + i).tolist(),
                                      rollout.SamplingParams(max_new_tokens=9, temperature=0.0))
              for i, n in enumerate((5, 17, 3))]

  def generate(cfg):
    engine = rollout.JaxEngine(cfg, params, num_slots=2, max_length=48, eos_token_ids=(), prefill_chunk=8)
    return engine.generate(requests)

  for looped, unrolled in zip(generate(CFG), generate(CFG.replace(scan_unroll=3))):
    assert unrolled.output_ids.tolist() == looped.output_ids.tolist()
    np.testing.assert_array_equal(unrolled.output_logprobs, looped.output_logprobs)


def test_scan_unroll_is_validated_and_not_written_to_config_json(tmp_path):
  for bad in (0, True, 1.5):
    with pytest.raises(ValueError, match="scan_unroll must be an integer >= 1"):
      CFG.replace(scan_unroll=bad)
  models.save_hf(CFG.replace(scan_unroll=3), models.init_params(CFG, jax.random.key(3)), str(tmp_path))
  assert "scan_unroll" not in json.loads((tmp_path / "config.json").read_text())
  assert models.read_hf_config(str(tmp_path / "config.json")).scan_unroll == 1
  assert models.load_hf(str(tmp_path), scan_unroll=3)[0].scan_unroll == 3
