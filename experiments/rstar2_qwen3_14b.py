"""The paper's recipe (PAPER.md §7-§8): GRPO-RoC on Qwen3-14B after non-reasoning SFT, three stages
(8K, 12K, 12K response tokens; 10, 10, 15 turns; 300, 85, 125 steps), 512 prompts x 32 rollouts
kept to 16 per step, AdamW at a constant 1e-6 after 20 warm-up steps, the optimizer reset at stage
3 (which trains on the problems an 8-rollout filter finds unsolved), clip 0.2 / 0.28, no KL or
entropy term. Rollouts run on SGLang servers, tool calls on a sandbox cluster, training on 64
accelerators (mesh data 1 x fsdp 8 x tensor 8).

  # plan it anywhere (no weights, no accelerators): mesh, bytes per device, tokens per step
  python -m rstar_jax.main --config experiments/rstar2_qwen3_14b.py --workdir runs/rstar2 --config.dry_run=True
  # on the cluster (launch/README.md): servers from launch/sglang_mi300x.sh, sandbox from
  # launch/sandbox_cluster.sh, one trainer process per host from launch/slurm_train.sh
  python -m rstar_jax.main --config experiments/rstar2_qwen3_14b.py:policy=ckpt/qwen3_14b_sft,data=data/rstar2 \\
      --workdir runs/rstar2 --config.distributed.mode=auto \\
      --config.rollout.urls='("http://node1:30000","http://node2:30000")' --config.sandbox.url=http://cpu1:8080

Arguments (`:k=v,...`):
  policy   the SFT'd Qwen3-14B checkpoint (Hugging Face directory with tokenizer.json); the paper's
           SFT data and checkpoint were not released (PAPER.md §7).
  data     a directory holding the problem sources of §8 in their Hugging Face export layouts:
           dapo_math/ (DAPO-Math-17k), openmathreasoning/, project_euler/, and the evaluation sets
           aime_2024/, aime_2025/, math_500/, hmmt_feb_2025/ used for 8-gram decontamination and
           evaluation. The paper's cleaned 42K set was not released; these are its sources.
  release  the released example instead (`examples/run_qwen3-14b_rstar2_agent_weave.sh`): 8 GPUs,
           one stage of 200 steps on DAPO-Math-17k, 128 prompts, 8K responses, 5 turns.
"""
import os

from rstar_jax.models import DEFAULT_RULES
from rstar_jax.train.config_lib import load_module, parse_arg

# Qwen3-14B(-Base) config.json: the shape a dry run uses when the policy directory is not at hand.
QWEN3_14B = dict(model_type="qwen3", vocab_size=151936, hidden_size=5120, intermediate_size=17408, num_layers=40,
                 num_heads=40, num_kv_heads=8, head_dim=128, rope_theta=1_000_000.0, tie_word_embeddings=False,
                 max_position_embeddings=40960)


def eval_files(data_dir: str) -> list[str]:
  """The paper's evaluation sets (PAPER.md §10) as SCHEMA:PATH specs under data_dir."""
  return [f"{name}:{os.path.join(data_dir, name)}" for name in ("aime_2024", "aime_2025", "math_500", "hmmt_feb_2025")]


def get_config(arg=None):
  arg = parse_arg(arg, policy="checkpoints/qwen3_14b_sft", data="data/rstar2", release=False)
  config = load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny.py")).get_config()
  config.job = "rl"
  config.prompt = dict(variant="released")  # the released first-turn template, PAPER.md §2.2
  # attention_chunk: rows of up to 14K tokens attend 2,048 queries at a time, so one layer's
  # recomputed scores are [H, 2048, T] instead of [H, T, T] (10 of 28 GB per device at 14K unchunked).
  # scan_unroll=1: the 40 layers in a loop (unrolled, the step would compile far longer; unrolling
  # was only measured on CPU).
  config.model.update(hf_path=arg.policy, dtype="bfloat16", param_dtype="float32", remat="full",
                      attention_chunk=2048, scan_unroll=1, **QWEN3_14B)
  config.data.update(
      tokenizer="", max_prompt_tokens=2048, prompts_per_step=512,
      # §8: integer answers only, deduplicated, 8-gram decontamination against the evaluation sets.
      decontam_files=eval_files(arg.data), decontam_ngram=8, integer_answers=True, max_answer_digits=40,
      deduplicate=True)
  sources = [f"dapo_math:{os.path.join(arg.data, 'dapo_math')}",
             f"openmathreasoning:{os.path.join(arg.data, 'openmathreasoning')}",
             f"project_euler:{os.path.join(arg.data, 'project_euler')}"]
  config.data.stages = [
      dict(name="stage1", train_files=sources, max_response_tokens=8192, max_turns=10, steps=300),
      dict(name="stage2", train_files=sources, max_response_tokens=12288, max_turns=10, steps=85),
      dict(name="stage3", train_files=sources, max_response_tokens=12288, max_turns=15, steps=125,
           reset_optimizer=True, hard_filter_samples=8),
  ]
  # 64 accelerators: tensor parallel inside a node of 8, FSDP across the 8 nodes.
  config.mesh = dict(num_devices=64, data=1, fsdp=8, tensor=8, rules=DEFAULT_RULES)
  config.rl.update(
      keep=16, num_rollouts=32, roc_mode=None, eps_low=0.2, eps_high=0.28, temperature=1.0, top_p=1.0,
      # one packing row holds the longest trajectory (2048 + 12288 tokens); 8 rows = 1 per fsdp group
      row_length=14336, rows_per_microbatch=8, logits_chunk=1024, num_slots=64,
      fixed_execution_time_s=None, hard_filter_chunk=4096,
      optim=dict(learning_rate=1e-6, warmup_steps=20, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01,
                 max_grad_norm=1.0))
  # The SGLang servers compute in bf16, so each weight version is written in bf16: half the bytes of
  # the fp32 parameters (~30 GB instead of ~59 GB per sync), cast on device layer by layer.
  config.rollout.update(backend="sglang", urls=("http://127.0.0.1:30000",), sync_dtype="bfloat16")
  config.sandbox.update(url="http://127.0.0.1:8080", workers=64)
  # No in-process evaluation (it does not span the trainer's processes): each stage's policy
  # (WORKDIR/policies/<stage>) is evaluated on SGLang servers by `python -m rstar_jax.eval --suite
  # experiments/eval_suites/paper.py:data=DIR --rollout-urls ...` (README, launch/README.md).
  config.eval.num_problems = 0
  config.distributed.mode = "auto"  # one trainer process per host (launch/slurm_train.sh, tpu_vm.sh)
  config.checkpoint.update(rl_every_steps=10, max_to_keep=3)
  if arg.release:
    config.data.update(prompts_per_step=128)
    config.data.stages = [dict(name="release", train_files=[sources[0]], max_response_tokens=8192, max_turns=5,
                               steps=200)]
    # 8 GPUs of one node: tensor 4 (a Qwen3-14B kv head pair per device) x fsdp 2.
    config.mesh.update(num_devices=8, fsdp=2, tensor=4)
    config.distributed.mode = "none"
    config.rl.update(row_length=10240, rows_per_microbatch=2, logits_chunk=1024)
  return config
