"""The same forward on 8 CPU devices (2x2x2 mesh) as on one; parameters live in their shardings."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from jax.sharding import PartitionSpec as P

from rstar_jax import models
from rstar_jax.models import hf_io
import tiny_models

# vocab 96 divides over tensor=2; 97 (the HF parity vocab) would not.
CFG = tiny_models.tiny_config("qwen3", vocab_size=96)


@pytest.fixture(scope="module")
def mesh_rules():
  assert jax.device_count() == 8, "tests/conftest.py forces 8 CPU devices"
  return models.MeshRules(models.make_mesh(data=2, fsdp=2, tensor=2))


def _one_device(tree):
  return jax.device_put(tree, jax.devices()[0])


def test_every_parameter_has_a_spec_and_every_name_a_rule():
  ruled = {name for name, _ in models.DEFAULT_RULES}
  assert ruled == set(models.LOGICAL_AXES)
  specs = jax.tree.leaves(models.param_logical_axes(CFG), is_leaf=lambda x: isinstance(x, P))
  shapes = jax.tree.leaves(models.param_shapes(CFG))
  assert len(specs) == len(shapes)
  for spec, shape in zip(specs, shapes):
    assert len(spec) == len(shape.shape)
    assert all(name in ruled for name in spec), spec


def test_params_are_created_in_their_shardings(mesh_rules):
  params = models.init_params(CFG, jax.random.key(0), mesh_rules)
  q = params["layers"]["self_attn"]["q_proj_kernel"]  # [L, E, H, D]: layers, embed->fsdp, heads->tensor
  assert q.sharding.spec == P(None, "fsdp", "tensor", None)
  assert q.addressable_shards[0].data.shape == (2, 16, 2, 12)
  assert params["embed_tokens"].sharding.spec == P("tensor", "fsdp")


def test_sharded_forward_equals_one_device_forward(mesh_rules):
  params = models.init_params(CFG, jax.random.key(1), mesh_rules)
  ids = tiny_models.random_ids((4, 10), seed=3, vocab=96)
  sharded = models.forward(CFG, params, ids, mesh_rules=mesh_rules)
  assert sharded.sharding.spec == P(("data", "fsdp"), None, "tensor")
  single = models.forward(CFG, _one_device(params), ids)
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), atol=1e-5, rtol=1e-5)


def test_load_hf_places_shards_directly(tmp_path, mesh_rules):
  params = models.init_params(CFG, jax.random.key(2))
  models.save_hf(CFG, params, str(tmp_path))
  cfg, sharded = models.load_hf(str(tmp_path), mesh_rules=mesh_rules)
  for a, b, spec in zip(jax.tree.leaves(params), jax.tree.leaves(sharded),
                        jax.tree.leaves(models.param_shardings(cfg, mesh_rules))):
    assert b.sharding == spec
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_save_hf_of_sharded_params_writes_the_whole_leaf_tensors(tmp_path, mesh_rules, dtype):
  """save_hf gathers a stacked leaf one layer at a time (cast on device); its files hold exactly the
  tensors of gathering each leaf whole and converting it on the host, across several shard files."""
  params = models.init_params(CFG, jax.random.key(6), mesh_rules)
  models.save_hf(CFG, params, str(tmp_path), max_shard_bytes=8_000, dtype=dtype)
  written = {}
  for file in tmp_path.glob("model-*.safetensors"):
    written.update(safetensors.numpy.load_file(str(file)))
  assert len(list(tmp_path.glob("model-*.safetensors"))) > 2
  expected = {}
  for spec in hf_io._tensor_map(CFG):  # pylint: disable=protected-access
    whole = np.asarray(hf_io._get(params, spec.path))  # pylint: disable=protected-access
    whole = whole if dtype is None else whole.astype(jnp.dtype(dtype))
    names = hf_io._names(CFG, spec)  # pylint: disable=protected-access
    for name, row in zip(names, whole if spec.per_layer else [whole]):
      expected[name] = spec.to_hf(row)
  assert sorted(written) == sorted(expected)
  for name, array in expected.items():
    assert written[name].dtype == array.dtype, name
    np.testing.assert_array_equal(written[name], array, err_msg=name)


def test_sharded_decode_equals_one_device_decode(mesh_rules):
  params = models.init_params(CFG, jax.random.key(4), mesh_rules)
  ids = tiny_models.random_ids((4, 6), seed=5, vocab=96)
  outs = []
  for rules, p in ((mesh_rules, params), (None, _one_device(params))):
    cache = models.init_cache(CFG, 4, 8, mesh_rules=rules)
    first, cache = models.extend(CFG, p, cache, ids[:, :5], np.full(4, 5), mesh_rules=rules)
    second, cache = models.extend(CFG, p, cache, ids[:, 5:], np.ones(4), mesh_rules=rules)
    outs.append((np.asarray(first), np.asarray(second)))
  np.testing.assert_allclose(outs[0][0], outs[1][0], atol=1e-5)
  np.testing.assert_allclose(outs[0][1], outs[1][1], atol=1e-5)


def test_indivisible_parameter_axis_is_named(mesh_rules):
  with pytest.raises(ValueError, match="parameter \\['embed_tokens'\\].*'vocab' of size 97"):
    models.init_params(tiny_models.tiny_config("qwen3"), jax.random.key(0), mesh_rules)


def test_bf16_compute_is_close_to_fp32():
  params = models.init_params(CFG, jax.random.key(6))
  ids = tiny_models.random_ids((2, 8), vocab=96)
  fp32 = models.logits(CFG, params, ids)
  bf16_cfg = CFG.replace(dtype="bfloat16")
  bf16 = models.logits(bf16_cfg, params, ids)
  assert bf16.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(bf16), np.asarray(fp32), atol=5e-2)
  assert not np.array_equal(np.asarray(bf16), np.asarray(fp32))
