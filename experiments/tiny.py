"""The embedded tiny default: SFT then GRPO-RoC through three curriculum stages, on a synthetic
tool-use task, on one small CPU machine (PAPER.md §7 at Colab scale).

Generates the synthetic task (integer problems where Python helps, and deliberately imperfect
tool-use traces in the rStar2 grammar, PAPER.md §2) into WORKDIR/data, fine-tunes a small
Qwen3-style policy on the traces, evaluates it as an agent (tool calls run in the sandbox), then
trains it by agentic RL (GRPO-RoC: 2 x keep rollouts per prompt, Resample-on-Correct, the
paper's loss) through three stages with growing budgets, the last on the problems the policy
does not always solve, evaluating after each stage.

  python -m rstar_jax.main --config experiments/tiny.py --workdir runs/tiny
  python -m rstar_jax.main --config experiments/tiny.py:smoke --workdir runs/tiny_smoke
  python -m rstar_jax.main --config experiments/tiny.py --workdir runs/tiny_grpo --config.rl.num_rollouts=4
"""
import ml_collections

from rstar_jax import sandbox
from rstar_jax.models import DEFAULT_RULES
from rstar_jax.train.config_lib import parse_arg

_TRAIN_SPLIT = "problems:{workdir}/data/train.jsonl"  # the synthetic task's RL problems


def get_config(arg=None):
  arg = parse_arg(arg, smoke=False)
  config = ml_collections.ConfigDict()
  config.job = "sft_rl"
  config.seed = 0

  # Data: the synthetic task (generated on first use); or JSONL trace files in config.data.sft_files.
  config.data = dict(
      # "bpe": a byte-level BPE with Qwen's pre-tokenizer (digits are single tokens) learned from
      # the traces; "char"; or a directory holding tokenizer.json.
      tokenizer="bpe",
      bpe_vocab_size=1024,
      sft_files=(),
      seed=0,  # data order
      synthetic=dict(seed=0, num_train=400, num_eval=200, num_sft=3000, levels=(1, 2),
                     mix=dict(clean=0.45, fix=0.3, guess=0.15, wrong=0.1, guess_accuracy=0.25)),
      # RL prompts: per step, budget, curriculum (PAPER.md §7: 512 prompts, 8K -> 12K -> 12K tokens,
      # 10/10/15 turns, stage 3 on the problems an 8-sample filter finds unsolved, optimizer reset).
      prompts_per_step=16,
      max_prompt_tokens=128,
      stages=[
          dict(name="stage1", train_files=[_TRAIN_SPLIT], max_response_tokens=256, max_turns=3, steps=12),
          dict(name="stage2", train_files=[_TRAIN_SPLIT], max_response_tokens=320, max_turns=4, steps=8),
          dict(name="stage3", train_files=[_TRAIN_SPLIT], max_response_tokens=320, max_turns=4, steps=8,
               reset_optimizer=True, hard_filter_samples=2),
      ],
  )
  # The conversation format: "compact" is the rStar2 grammar with a short system turn (a model
  # this small cannot read the 1,862-character released prompt); "released" is PAPER.md §2.2.
  config.prompt = dict(variant="compact")
  config.tool = dict(name="python_code_with_standard_io", schema_return_field=False)

  # Model: random init from these fields, or config.model.hf_path to load a checkpoint.
  config.model = dict(
      hf_path="",
      model_type="qwen3",
      hidden_size=256,
      intermediate_size=768,
      num_layers=4,
      num_heads=8,
      num_kv_heads=4,
      head_dim=32,
      rope_theta=10000.0,
      tie_word_embeddings=True,
      max_position_embeddings=1024,
      vocab_multiple=64,  # vocab = tokenizer size rounded up (divides over the tensor axis)
      dtype="float32",
      param_dtype="float32",
      remat="none",
      attention_chunk=0,  # rows of <= 1024 tokens: one block (models.ModelConfig.attention_chunk)
      # training unrolls all 4 layers, so XLA:CPU reads each layer's weights in place (RL updates
      # ~13% faster on CPU; the engine's cached passes loop either way: models.ModelConfig.scan_unroll)
      scan_unroll=4,
  )
  # Mesh: the first num_devices devices (0: all), all on fsdp by default.
  config.mesh = dict(num_devices=0, data=1, fsdp=-1, tensor=1, rules=DEFAULT_RULES)

  # SFT: traces per step, packed into rows of row_length tokens (traces are 110-430 BPE tokens).
  config.sft = dict(
      steps=170,
      batch_size=32,
      row_length=1024,
      rows_per_microbatch=2,
      num_microbatches=None,  # the smallest power of two that fits the step's traces
      logits_chunk=0,
      num_eval=64,  # held-out traces (the last ones of the file)
      eval_every_steps=50,
      # AdamW, linear warm-up then constant; reset_at_steps re-initializes it before those updates.
      optim=dict(learning_rate=1e-3, warmup_steps=10, b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.01,
                 max_grad_norm=1.0, reset_at_steps=()),
  )

  # RL: GRPO-RoC (PAPER.md §5-§7). keep of num_rollouts per prompt (the paper: 16 of 32; GRPO
  # without RoC: num_rollouts = keep); RoC options and presets of PAPER.md §11 rows 6-10.
  config.rl = dict(
      keep=4,
      num_rollouts=8,
      roc_mode=None,  # None (our defaults), "paper" or "code"
      roc={},  # RoCConfig field overrides
      reject_equal=True,
      adv_std="unbiased",
      adv_epsilon=1e-6,
      eps_low=0.2,
      eps_high=0.28,
      dual_clip=3.0,
      loss_agg="token_mean",
      use_sampler_logprobs=False,
      # 0: synchronous (bitwise repeatable); k >= 1: rollouts up to k steps ahead, generated during
      # the update on rollout servers (needs rollout.backend="sglang" and use_sampler_logprobs).
      max_staleness=0,
      temperature=1.0,
      top_p=1.0,
      updates_per_step=1,
      row_length=512,
      rows_per_microbatch=8,
      num_microbatches=None,
      logits_chunk=0,
      num_slots=64,  # sequences the JAX engine decodes at once
      fixed_execution_time_s=0.01,  # tool texts report this time, so rollouts repeat exactly
      max_sandbox_error_fraction=0.5,  # stop when more of a step's calls fail in the sandbox
      hard_filter_chunk=128,
      # Adam at a small model's scale (the paper: constant 1e-6 after 20 warm-up steps for 14B).
      optim=dict(learning_rate=3e-5, warmup_steps=2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01,
                 max_grad_norm=1.0),
  )

  # Where RL rollouts run (train/rollout_backend.py): "jax" in process (lockstep, bitwise repeatable),
  # or "sglang": SGLang-compatible servers at urls, or local_servers N `rstar-serve` processes started
  # here; the weights go to them after every update by weight_sync: "disk" through weight_sync_dir
  # ("": WORKDIR/weight_sync; any server) or "push" over HTTP (rstar-serve only: no shared filesystem),
  # in sync_dtype ("": the parameter dtype, so servers sample from exactly the trained policy).
  # The router places a new rollout where its prompt + expected_response_tokens fits the free KV:
  # "mean" (the mean response finished so far), "budget" (the whole budget) or a number of tokens.
  config.rollout = dict(backend="jax", urls=(), local_servers=0, api_key_file="", weight_sync="disk",
                        weight_sync_dir="", sync_dtype="", expected_response_tokens="mean")

  # The tool environment of the SFT traces, the rollouts and the evaluations (rollout.ToolEnvironment,
  # PAPER.md §11 rows 14-16), saved with each policy: the released code's by default; the paper's
  # texts are output_format="paper", traceback="full".
  config.env = dict(output_format="code", traceback="short", max_stream_chars=1000, max_tool_response_chars=256,
                    tool_response_truncate_side="middle", max_parallel_calls=1)

  # Sandbox for every tool call: an in-process pool (needs root) or a running `rstar-sandbox serve`
  # at url (api_key_file: a file holding its API key, if it has one). The in-process pool's limits
  # per run (a service sets its own: --timeout-s, --cpu-s): timeout_s wall-clock seconds (the
  # paper's 4) and cpu_s CPU seconds per process (0: timeout_s rounded up). A snippet near a
  # wall-clock limit can end differently on a busier host; for runs that must repeat bitwise beside
  # other jobs, limit the CPU under a loose wall clock (cpu_s=4, timeout_s=30).
  config.sandbox = dict(url="", workers=2, api_key_file="", timeout_s=sandbox.Limits.timeout_s, cpu_s=0)
  # Reward (PAPER.md §4, §11 rows 11-13): the released rule by default.
  config.reward = dict(num_workers=1)

  # Evaluation after SFT and after each stage (PAPER.md §10 protocol, scaled: avg@4 at T = 0.6).
  config.eval = dict(
      problems_files=(),  # "SCHEMA:PATH" specs; empty: the synthetic task's eval split
      num_problems=100,  # the first N problems (0: no evaluation)
      num_samples=4,
      temperature=0.6,
      top_p=1.0,
      max_response_length=384,
      max_assistant_turns=4,
      num_slots=64,
      seed=0,
      fixed_execution_time_s=0.01,
  )

  config.checkpoint = dict(every_steps=50, rl_every_steps=2, max_to_keep=2, async_save=True)
  # Several processes (hosts) on one mesh (train/distributed.py): mode "none", "auto" (SLURM, TPU VMs)
  # or "explicit" with the coordinator's host:port, the process count and this process's index.
  config.distributed = dict(mode="none", coordinator_address="", num_processes=1, process_id=0)
  # True: validate, print the plan (mesh, bytes per device, tokens per step, endpoints) and stop.
  config.dry_run = False

  if arg.smoke:  # a few steps of a smaller model, for tests
    # 6 RL problems, 4 per step: batches straddle epochs and can hold a problem twice
    config.data.synthetic.update(num_train=6, num_eval=8, num_sft=24)
    config.data.prompts_per_step = 4
    config.data.stages = [
        dict(name="stage1", train_files=[_TRAIN_SPLIT], max_response_tokens=64, max_turns=2, steps=2),
        dict(name="stage2", train_files=[_TRAIN_SPLIT], max_response_tokens=96, max_turns=2, steps=1),
        dict(name="stage3", train_files=[_TRAIN_SPLIT], max_response_tokens=96, max_turns=2, steps=1,
             reset_optimizer=True, hard_filter_samples=2),
    ]
    config.model.update(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                        head_dim=16)
    config.sft.update(steps=4, batch_size=4, row_length=512, rows_per_microbatch=2, num_microbatches=2,
                      num_eval=4, eval_every_steps=2)
    config.rl.update(row_length=256, rows_per_microbatch=2, num_slots=8,
                     hard_filter_chunk=2)
    config.checkpoint.update(every_steps=2, rl_every_steps=1)
    config.eval.update(num_problems=4, num_samples=2, max_response_length=64, num_slots=8)
  return config
