"""The paper's recipe on one host with a small real model: a local Qwen3-0.6B or Qwen2.5-0.5B(-Instruct)
checkpoint, rollouts in process (JAX engine) or on SGLang-compatible servers, three stages with
budgets scaled to a single accelerator (2K, 3K, 3K response tokens).

  python -m rstar_jax.main --config experiments/qwen_small.py:policy=models/Qwen3-0.6B,data=data/rstar2 \\
      --workdir runs/qwen_small
  # rollouts on 2 rstar-serve processes started here, or on running SGLang servers:
  python -m rstar_jax.main --config experiments/qwen_small.py:policy=models/Qwen3-0.6B,local_servers=2 \\
      --workdir runs/qwen_small_servers
  python -m rstar_jax.main --config experiments/qwen_small.py:policy=models/Qwen3-0.6B --workdir runs/q \\
      --config.rollout.backend=sglang --config.rollout.urls='("http://127.0.0.1:30000",)'
  # the plan without the weights
  python -m rstar_jax.main --config experiments/qwen_small.py --workdir runs/q --config.dry_run=True

Arguments (`:k=v,...`):
  policy        a Hugging Face checkpoint directory with tokenizer.json (no SFT step here: the base
                model starts RL, as the paper's Qwen2.5-32B-Instruct run did).
  model         qwen3_0_6b or qwen2_5_0_5b: the shape a dry run uses when policy has no config.json.
  data          the problem sources of experiments/rstar2_qwen3_14b.py (PAPER.md §8 layout).
  local_servers N > 0: rollouts on N `rstar-serve` processes of this host (rollout.backend sglang).
  dtype         the compute dtype: bfloat16 on accelerators, float32 on CPU.
"""
import os

from rstar_jax.train.config_lib import load_module, parse_arg

SHAPES = {
    "qwen3_0_6b": dict(model_type="qwen3", vocab_size=151936, hidden_size=1024, intermediate_size=3072,
                       num_layers=28, num_heads=16, num_kv_heads=8, head_dim=128, rope_theta=1_000_000.0,
                       tie_word_embeddings=True, max_position_embeddings=40960),
    "qwen2_5_0_5b": dict(model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                         num_layers=24, num_heads=14, num_kv_heads=2, head_dim=64, rope_theta=1_000_000.0,
                         tie_word_embeddings=True, max_position_embeddings=32768),
}


def get_config(arg=None):
  arg = parse_arg(arg, policy="models/Qwen3-0.6B", model="qwen3_0_6b", data="data/rstar2", local_servers=0,
                  dtype="bfloat16")
  if arg.model not in SHAPES:
    raise ValueError(f"config argument model={arg.model!r} must be one of {sorted(SHAPES)}")
  recipe = load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "rstar2_qwen3_14b.py"))
  config = recipe.get_config(f"policy={arg.policy},data={arg.data}")
  config.model.update(dtype=arg.dtype, remat="full", **SHAPES[arg.model])
  config.data.prompts_per_step = 32
  sources = config.data.stages[0]["train_files"]
  config.data.stages = [
      dict(name="stage1", train_files=sources, max_response_tokens=2048, max_turns=5, steps=100),
      dict(name="stage2", train_files=sources, max_response_tokens=3072, max_turns=5, steps=40),
      dict(name="stage3", train_files=sources, max_response_tokens=3072, max_turns=8, steps=40,
           reset_optimizer=True, hard_filter_samples=4),
  ]
  config.mesh.update(num_devices=0, data=1, fsdp=-1, tensor=1)  # every device of this host
  config.distributed.mode = "none"
  config.rl.update(keep=4, num_rollouts=8, row_length=5120, rows_per_microbatch=8, logits_chunk=1024,
                   num_slots=64, hard_filter_chunk=512)
  config.rollout.update(backend="sglang" if arg.local_servers else "jax", urls=(), local_servers=arg.local_servers)
  config.sandbox.update(url="", workers=os.cpu_count() or 2)  # in process
  config.eval.update(problems_files=(f"math_500:{os.path.join(arg.data, 'math_500')}",), num_problems=100,
                     num_samples=4, max_response_length=4096, max_assistant_turns=10)
  return config
