"""Parity with Hugging Face transformers (torch, CPU, fp32) and checkpoint round trips."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors
import safetensors.numpy
import torch
import transformers

from rstar_jax import models
import tiny_models

VARIANTS = [("qwen2", False, False), ("qwen2", True, False), ("qwen3", False, False), ("qwen3", True, False),
            ("qwen3", False, True)]


@pytest.mark.parametrize("model_type,tie,bias", VARIANTS,
                         ids=[f"{m}-{'tied' if t else 'untied'}{'-bias' if b else ''}" for m, t, b in VARIANTS])
def test_logits_match_transformers(tmp_path, model_type, tie, bias):
  hf_model = tiny_models.save_random_hf(tmp_path, model_type, tie, seed=1, attention_bias=bias)
  cfg, params = models.load_hf(str(tmp_path), dtype=jnp.float32)
  assert (cfg.model_type, cfg.tie_word_embeddings, cfg.num_kv_heads) == (model_type, tie, 2)
  ids = tiny_models.random_ids((2, 11), seed=2)
  ours = np.asarray(models.logits(cfg, params, ids))
  np.testing.assert_allclose(ours, tiny_models.hf_logits(hf_model, ids), atol=1e-4, rtol=0)


def test_qwen3_head_dim_differs_from_hidden_over_heads(tmp_path):
  tiny_models.save_random_hf(tmp_path, "qwen3", tie=False)
  cfg, params = models.load_hf(str(tmp_path))
  assert cfg.head_dim == 12 and cfg.hidden_size // cfg.num_heads == 8
  assert params["layers"]["self_attn"]["q_proj_kernel"].shape == (2, 32, 4, 12)


def test_load_hf_reads_sharded_checkpoint_with_index(tmp_path):
  hf_model = tiny_models.save_random_hf(tmp_path, "qwen2", tie=False, max_shard_size="20KB")
  assert os.path.exists(tmp_path / "model.safetensors.index.json")
  assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
  cfg, params = models.load_hf(str(tmp_path))
  ids = tiny_models.random_ids((1, 7))
  np.testing.assert_allclose(models.logits(cfg, params, ids), tiny_models.hf_logits(hf_model, ids), atol=1e-4)


@pytest.mark.parametrize("model_type,tie", [("qwen2", True), ("qwen3", False)])
def test_save_hf_loads_in_transformers_with_same_logits(tmp_path, model_type, tie):
  cfg = tiny_models.tiny_config(model_type, tie_word_embeddings=tie)
  params = models.init_params(cfg, jax.random.key(3))
  models.save_hf(cfg, params, str(tmp_path))
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  ids = tiny_models.random_ids((2, 9), seed=4)
  np.testing.assert_allclose(tiny_models.hf_logits(hf_model, ids), models.logits(cfg, params, ids), atol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_load_hf_of_save_hf_is_exact(tmp_path, dtype):
  cfg = tiny_models.tiny_config("qwen3", param_dtype=dtype, dtype=dtype)
  params = models.init_params(cfg, jax.random.key(5))
  models.save_hf(cfg, params, str(tmp_path))
  assert _file_dtypes(tmp_path) == {dtype}  # the default writes the parameter dtype
  cfg2, params2 = models.load_hf(str(tmp_path), dtype=jnp.dtype(dtype))
  assert cfg2 == cfg
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(params2)):
    assert a.dtype == b.dtype, path
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))


def test_save_hf_in_bf16_loads_back_as_the_params_cast_to_bf16(tmp_path):
  cfg = tiny_models.tiny_config("qwen3", tie_word_embeddings=False)
  params = models.init_params(cfg, jax.random.key(7))  # fp32
  models.save_hf(cfg, params, str(tmp_path), dtype="bfloat16")
  assert _file_dtypes(tmp_path) == {"bfloat16"}
  assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
  cast = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  for dtype in (jnp.bfloat16, jnp.float32):
    cfg2, params2 = models.load_hf(str(tmp_path), dtype=dtype)
    assert cfg2.param_dtype == jnp.dtype(dtype).name
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(cast), jax.tree.leaves(params2)):
      assert b.dtype == dtype, path
      np.testing.assert_array_equal(np.asarray(a).astype(dtype), np.asarray(b), err_msg=str(path))
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
  ids = tiny_models.random_ids((2, 9), seed=8)
  np.testing.assert_allclose(tiny_models.hf_logits(hf_model, ids), models.logits(cfg2, params2, ids), atol=1e-4)


def _file_dtypes(path) -> set[str]:
  """The dtypes of every tensor in the safetensors files under `path`."""
  dtypes = set()
  for file in path.glob("*.safetensors"):
    with safetensors.safe_open(str(file), framework="numpy") as f:
      dtypes.update(f.get_tensor(name).dtype.name for name in f.keys())
  return dtypes


def test_save_hf_sharded_writes_index_loadable_by_both(tmp_path):
  cfg = tiny_models.tiny_config("qwen3")
  params = models.init_params(cfg, jax.random.key(6))
  models.save_hf(cfg, params, str(tmp_path), max_shard_bytes=16_000)
  index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
  assert len(set(index["weight_map"].values())) > 1 and not (tmp_path / "model.safetensors").exists()
  ids = tiny_models.random_ids((1, 5))
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  cfg2, params2 = models.load_hf(str(tmp_path))
  np.testing.assert_allclose(tiny_models.hf_logits(hf_model, ids), models.logits(cfg2, params2, ids), atol=1e-4)


def test_tensor_groups_carry_what_save_hf_writes_and_build_the_same_params(tmp_path):
  cfg = tiny_models.tiny_config("qwen3", tie_word_embeddings=False)
  params = models.init_params(cfg, jax.random.key(9))
  models.save_hf(cfg, params, str(tmp_path), dtype="bfloat16")
  groups = list(models.hf_tensor_groups(cfg, params, max_bytes=4_000, dtype="bfloat16"))
  with safetensors.safe_open(str(tmp_path / "model.safetensors"), framework="numpy") as f:
    written = {name: f.get_tensor(name) for name in f.keys()}
  merged = {name: t for group in groups for name, t in group.items()}
  assert len(groups) > 1 and sum(map(len, groups)) == len(merged) == len(written)
  for name, tensor in written.items():
    np.testing.assert_array_equal(merged[name], tensor, err_msg=name)
  # every group but one holding a single larger tensor fits the bound
  assert all(len(g) == 1 or sum(t.nbytes for t in g.values()) <= 4_000 for g in groups)
  # our blob pieces joined are a file safetensors reads, bf16 included
  blobs = [b"".join(models.safetensors_parts(group)) for group in groups]
  (tmp_path / "pushed.safetensors").write_bytes(blobs[0])
  with safetensors.safe_open(str(tmp_path / "pushed.safetensors"), framework="numpy") as f:
    assert sorted(f.keys()) == sorted(groups[0])
    for name in f.keys():
      assert f.get_tensor(name).dtype == groups[0][name].dtype == jnp.bfloat16
      np.testing.assert_array_equal(f.get_tensor(name), groups[0][name], err_msg=name)
  # and back into params: those load_hf builds from the files
  received = {name: t for blob in blobs for name, t in models.read_safetensors_bytes(blob).items()}
  cfg_disk, from_disk = models.load_hf(str(tmp_path))
  from_bytes = models.params_from_hf_tensors(cfg_disk, received)
  assert not received  # consumed as the parameters were built
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(from_disk), jax.tree.leaves(from_bytes)):
    assert a.dtype == b.dtype == jnp.float32, path
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))


def test_params_from_tensors_name_what_is_missing_extra_or_misshapen():
  cfg = tiny_models.tiny_config("qwen3")
  tensors = {name: t for group in models.hf_tensor_groups(cfg, models.init_params(cfg, jax.random.key(0)), 1 << 30)
             for name, t in group.items()}
  missing = {k: v for k, v in tensors.items() if k != "model.norm.weight"}
  with pytest.raises(ValueError, match=r"upload: checkpoint is missing tensor\(s\) model.norm.weight"):
    models.params_from_hf_tensors(cfg, missing, label="upload")
  with pytest.raises(ValueError, match="unexpected tensor.*model.extra"):
    models.params_from_hf_tensors(cfg, {**tensors, "model.extra": np.zeros(2, np.float32)})
  with pytest.raises(ValueError, match=r"model.norm.weight has shape \[3\]"):
    models.params_from_hf_tensors(cfg, {**tensors, "model.norm.weight": np.zeros(3, np.float32)})


def test_safetensors_parts_name_an_unsupported_dtype_and_read_back_what_safetensors_writes():
  with pytest.raises(ValueError, match="tensor 'c': dtype complex64 has no safetensors name"):
    models.safetensors_parts({"c": np.zeros(2, np.complex64)})
  tensors = {"i": np.arange(6, dtype=np.int64).reshape(2, 3), "b": np.array([True, False]),
             "f": np.arange(6, dtype=np.float16).reshape(2, 3), "empty": np.zeros((0, 4), np.uint8)}
  ours = b"".join(models.safetensors_parts(tensors))
  for blob in (safetensors.numpy.save(tensors), ours):
    back = models.read_safetensors_bytes(blob)
    assert sorted(back) == sorted(tensors)
    for name, t in tensors.items():
      assert back[name].dtype == t.dtype and back[name].shape == t.shape
      np.testing.assert_array_equal(back[name], t, err_msg=name)
  assert {k: v.tolist() for k, v in safetensors.numpy.load(ours).items()} == {k: v.tolist() for k, v in tensors.items()}
  # a Fortran-ordered array goes in C order (safetensors.numpy.save writes its memory order instead)
  fortran = np.asfortranarray(tensors["f"])
  assert models.read_safetensors_bytes(b"".join(models.safetensors_parts({"f": fortran})))["f"].tolist() == fortran.tolist()


def _blob(header: bytes, data: bytes = b"") -> bytes:
  return len(header).to_bytes(8, "little") + header + data


@pytest.mark.parametrize("blob, message", [
    (b"\x01", "shorter than the 8-byte header size"),
    ((100).to_bytes(8, "little") + b"{}", "runs past"),
    (_blob(b"[]"), "must be a JSON object"),
    (_blob(b"{x}"), "not JSON"),
    (_blob(b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', bytes(8)),
     r"data_offsets \[0, 4\] do not hold F32\[2\]"),
    (_blob(b'{"a":{"dtype":"Q99","shape":[1],"data_offsets":[0,4]}}', bytes(4)), "malformed entry"),
])
def test_read_safetensors_bytes_refuses_malformed_blobs(blob, message):
  with pytest.raises(ValueError, match=message):
    models.read_safetensors_bytes(blob)


def test_both_config_layouts_parse_alike(tmp_path):
  tiny_models.save_random_hf(tmp_path, "qwen3", tie=False)
  v5 = json.loads((tmp_path / "config.json").read_text())
  assert "rope_parameters" in v5 and "rope_theta" not in v5  # the transformers 5 layout
  hub = {k: v for k, v in v5.items() if k != "rope_parameters"}
  hub.update(rope_theta=v5["rope_parameters"]["rope_theta"], rope_scaling=None)
  assert models.from_hf_dict(v5) == models.from_hf_dict(hub)
  assert models.from_hf_dict(hub).rope_theta == 10000.0
  assert models.from_hf_dict(models.to_hf_dict(models.from_hf_dict(hub))) == models.from_hf_dict(hub)
