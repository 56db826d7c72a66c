"""The dry run (train/plan.py): mesh, bytes per device and tokens per step, hand-computed; the
real Qwen3 tokenizer's first-turn prompt; nothing written."""
import os

import pytest

from rstar_jax import chat
from rstar_jax.train import plan, run
from rstar_jax.train.config_lib import ConfigError, load_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QWEN3_14B_PARAMETERS = 14_768_307_200  # Qwen3-14B's 14.8B: 2 x V x E + L x (attention + MLP + norms) + E


def _config(name, arg=None):
  return load_module(os.path.join(ROOT, "experiments", f"{name}.py")).get_config(arg)


def test_qwen3_14b_parameter_count_by_hand():
  e, f, l, h, k, d, v = 5120, 17408, 40, 40, 8, 128, 151936
  per_layer = e * h * d * 2 + e * k * d * 2 + 3 * e * f + 2 * e + 2 * d  # q,o; k,v; MLP; 2 norms; q/k norms
  assert 2 * v * e + l * per_layer + e == QWEN3_14B_PARAMETERS


def test_recipe_plan_by_hand(tmp_path):
  config = _config("rstar2_qwen3_14b")
  with config.unlocked():
    config.dry_run = True
  summary = run.run(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # a dry run writes nothing
  p = summary["dry_run"]
  assert p["devices"] == 64 and p["mesh"] == {"data": 1, "fsdp": 8, "tensor": 8}
  assert p["model"]["parameters"] == QWEN3_14B_PARAMETERS
  # Matrices split 64 ways; RMSNorm weights [L, E] only over fsdp (8), q/k norms [L, D] not at all.
  norms = 40 * 2 * 5120 + 5120 + 40 * 2 * 128
  shard = (QWEN3_14B_PARAMETERS - norms) // 64 + (40 * 2 * 5120 + 5120) // 8 + 40 * 2 * 128
  b = p["rl_update_bytes"]
  assert b["parameters"] == shard * 4 and b["optimizer"] == 2 * shard * 4 and b["gradients"] == shard * 12
  r, t, e, layers, heads, chunk, vocab = 1, 14336, 5120, 40, 40 // 8, 1024, 151936 // 8
  queries = 2048  # model.attention_chunk: the causal chunks' scores, T (T + Q) / 2 per head
  activations = r * (layers * t * e * 4 + heads * t * (t + queries) // 2 * (8 + 2) + chunk * vocab * 8)
  assert b["activations"] == activations
  stage1, stage2, stage3 = p["stages"]
  assert stage1["rollouts"] == 512 * 32 and stage1["generated_tokens_max"] == 512 * 32 * 8192
  assert stage2["trained_tokens_max"] == 512 * 16 * (2048 + 12288)
  assert stage3["microbatches_max"] == 1024  # 8,192 rows of one trajectory, 8 rows per microbatch
  assert stage3["hard_filter_samples"] == 8 and stage3["reset_optimizer"] and stage3["max_turns"] == 15
  # KV cache: 64 slots x 14,336 positions x 40 layers x 8 heads x 128 x bf16 x (k, v), over 64 devices
  assert p["engine_bytes"]["kv_cache"] == 64 * 14336 * 40 * 8 * 128 * 2 * 2 // 64
  assert p["rollout"]["backend"] == "sglang" and p["sandbox"]["url"]


def test_release_variant_plan():
  p = plan.make_plan(_config("rstar2_qwen3_14b", "release"))
  assert p["devices"] == 8 and p["mesh"] == {"data": 1, "fsdp": 2, "tensor": 4}
  (stage,) = p["stages"]
  assert (stage["steps"], stage["max_turns"], stage["rollouts"]) == (200, 5, 128 * 32)


def test_plan_counts_the_first_turn_prompt_with_the_real_tokenizer(qwen3_tokenizer_dir, qwen3_reference):
  config = _config("rstar2_qwen3_14b")
  config.model.hf_path = str(qwen3_tokenizer_dir)  # tokenizer.json, no config.json: shape from the fields
  p = plan.make_plan(config)
  template = chat.prompt_text("", chat.ChatFormat.from_config(config))
  assert p["first_turn_prompt_tokens"] == len(qwen3_reference.encode(template)) == 406
  assert p["stages"][0]["prompt_tokens_min"] == 512 * 32 * 406
  assert "406 tokens before the question" in plan.format_plan(p)


def test_tiny_default_plan_on_this_machine():
  config = _config("tiny")
  p = plan.make_plan(config)
  assert p["model"]["vocab_size"] == 1024  # the BPE size the run will learn, rounded to 64
  assert p["rl_update_bytes"]["activations"] is None  # remat "none" keeps every intermediate
  text = plan.format_plan(p)
  assert "activations not estimated" in text and "rollouts: in process" in text
  config.rollout.update(backend="sglang", local_servers=2)
  assert "rollouts: 2 local rstar-serve processes, weights through WORKDIR/weight_sync" in plan.format_plan(
      plan.make_plan(config))
  config.rollout.weight_sync = "push"
  assert "rollouts: 2 local rstar-serve processes, weights pushed over HTTP" in plan.format_plan(plan.make_plan(config))


@pytest.mark.parametrize("mesh, message", [
    (dict(num_devices=64, data=1, fsdp=-1, tensor=48), "64 devices cannot be split as data=1 fsdp=-1 tensor=48"),
    (dict(num_devices=64, data=1, fsdp=4, tensor=8),
     r"config.mesh \(num_devices=64\): mesh data=1 x fsdp=4 x tensor=8 does not match 64 devices"),
    (dict(num_devices=64, data=0, fsdp=-1, tensor=8), "mesh sizes must be positive"),
    (dict(num_devices=-64, data=1, fsdp=-1, tensor=8), "a mesh needs at least one device, got -64"),
])
def test_bad_mesh_is_named(mesh, message):
  config = _config("rstar2_qwen3_14b")
  config.mesh.update(mesh)
  with pytest.raises(ConfigError, match=message):
    plan.make_plan(config)


def test_a_parameter_that_does_not_divide_is_named():
  config = _config("rstar2_qwen3_14b")
  config.mesh.update(num_devices=48, fsdp=3, tensor=16)  # 40 heads over 16
  with pytest.raises(ConfigError, match="does not divide"):
    plan.make_plan(config)


def test_plan_reads_the_checkpoint_config_when_there_is_one(tmp_path):
  import jax  # pylint: disable=import-outside-toplevel
  from rstar_jax import models  # pylint: disable=import-outside-toplevel
  cfg = models.qwen("qwen2", vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                    num_kv_heads=2)
  models.save_hf(cfg, models.init_params(cfg, jax.random.key(0)), str(tmp_path))
  config = _config("rstar2_qwen3_14b")
  config.model.hf_path = str(tmp_path)
  config.mesh.update(num_devices=2, fsdp=2, tensor=1)
  config.rl.rows_per_microbatch = 2
  p = plan.make_plan(config)
  assert p["model"]["source"] == str(tmp_path / "config.json")
  assert p["model"]["model_type"] == "qwen2" and p["model"]["parameters"] == sum(
      x.size for x in jax.tree.leaves(models.param_shapes(cfg)))


def test_paper_eval_suite_has_the_protocol():
  suite = load_module(os.path.join(ROOT, "experiments", "eval_suites", "paper.py")).get_config("data=d")
  assert [b["name"] for b in suite.benchmarks] == ["aime_2024", "aime_2025", "math_500", "hmmt_feb_2025"]
  for b in suite.benchmarks:  # PAPER.md §10: avg@16, temperature 0.6, 30 turns, 30,720 tokens
    assert (b["num_samples"], b["temperature"], b["max_turns"], b["max_response_tokens"]) == (16, 0.6, 30, 30720)
    assert b["problems"] == (f"{b['name']}:d/{b['name']}",)
