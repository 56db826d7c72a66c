"""Bad configs and checkpoints get one clear error naming what is wrong."""
import json

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rstar_jax import models
import tiny_models


@pytest.fixture
def checkpoint(tmp_path):
  cfg = tiny_models.tiny_config("qwen3")
  models.save_hf(cfg, models.init_params(cfg, jax.random.key(0)), str(tmp_path))
  return tmp_path


def _edit_tensors(path, edit):
  tensors = load_file(str(path / "model.safetensors"))
  edit(tensors)
  save_file(tensors, str(path / "model.safetensors"))


def _edit_config(path, **changes):
  config = json.loads((path / "config.json").read_text())
  config.update(changes)
  (path / "config.json").write_text(json.dumps(config))


def test_inconsistent_head_counts_in_config_are_named(checkpoint):
  _edit_config(checkpoint, num_attention_heads=4, num_key_value_heads=3)
  with pytest.raises(ValueError, match=r"num_attention_heads \(4\) must be a multiple of num_key_value_heads \(3\)"):
    models.load_hf(str(checkpoint))


def test_inconsistent_head_counts_in_model_config_are_named():
  with pytest.raises(ValueError, match="num_key_value_heads"):
    tiny_models.tiny_config("qwen2", num_heads=4, num_kv_heads=3)


def test_hidden_size_not_divisible_without_head_dim_is_named(checkpoint):
  config = json.loads((checkpoint / "config.json").read_text())
  del config["head_dim"]
  config["num_attention_heads"] = 6
  config["num_key_value_heads"] = 3
  with pytest.raises(ValueError, match="hidden_size \\(32\\) is not a multiple of num_attention_heads \\(6\\)"):
    models.from_hf_dict(config)


def test_missing_tensor_is_named(checkpoint):
  _edit_tensors(checkpoint, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
  with pytest.raises(ValueError, match="missing tensor.*model.layers.1.mlp.up_proj.weight"):
    models.load_hf(str(checkpoint))


def test_unexpected_tensor_is_named(checkpoint):
  _edit_tensors(checkpoint, lambda t: t.update({"model.layers.0.self_attn.q_proj.bias": np.zeros(48, np.float32)}))
  with pytest.raises(ValueError, match="unexpected tensor.*model.layers.0.self_attn.q_proj.bias"):
    models.load_hf(str(checkpoint))


def test_wrongly_shaped_tensor_is_named(checkpoint):
  _edit_tensors(checkpoint, lambda t: t.update({"model.norm.weight": np.ones(31, np.float32)}))
  with pytest.raises(ValueError, match=r"tensor model.norm.weight has shape \[31\], expected \[32\]"):
    models.load_hf(str(checkpoint))


def test_unsupported_model_type_is_named(checkpoint):
  _edit_config(checkpoint, model_type="llama")
  with pytest.raises(ValueError, match="unsupported model_type 'llama'.*supported: qwen2, qwen3"):
    models.load_hf(str(checkpoint))


def test_unsupported_rope_scaling_is_named(checkpoint):
  _edit_config(checkpoint, rope_scaling={"type": "yarn", "factor": 4.0})
  with pytest.raises(ValueError, match="unsupported rope type 'yarn'"):
    models.load_hf(str(checkpoint))


def test_missing_checkpoint_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json"):
    models.load_hf(str(tmp_path))
  cfg = tiny_models.tiny_config("qwen2")
  (tmp_path / "config.json").write_text(json.dumps(models.to_hf_dict(cfg)))
  with pytest.raises(FileNotFoundError, match="neither model.safetensors nor model.safetensors.index.json"):
    models.load_hf(str(tmp_path))


def test_out_of_vocabulary_ids_are_rejected():
  cfg = tiny_models.tiny_config("qwen2")
  params = models.init_params(cfg, jax.random.key(0))
  with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 97\)"):
    models.logits(cfg, params, np.array([[1, 97]], np.int32))
  with pytest.raises(ValueError, match=r"must be an int array \[B, T\]"):
    models.logits(cfg, params, np.array([1, 2], np.int32))


def test_bad_mesh_and_rules_are_named():
  with pytest.raises(ValueError, match="does not match 8 devices"):
    models.make_mesh(data=3, fsdp=1, tensor=1)
  with pytest.raises(ValueError, match="unknown logical axis 'hidden'"):
    models.MeshRules(models.make_mesh(), (("hidden", "fsdp"),))
  with pytest.raises(ValueError, match="no rule for logical axes"):
    models.MeshRules(models.make_mesh(), (("batch", "data"),))
