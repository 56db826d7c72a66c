"""The embedded tiny default: SFT of a ~1M-parameter Qwen3-style policy on the synthetic tool-use task.

Generates the synthetic task (integer problems where Python helps, and deliberately imperfect
tool-use traces in the exact rStar2 format, PAPER.md §2) into WORKDIR/data, then trains with the
trainer's loss masking (only the model's tokens count), checkpoints, and writes metrics.jsonl,
TensorBoard, loss.png, summary.json and the final policy as a Hugging Face checkpoint; then
evaluates it with agent rollouts whose Python calls run in the sandbox (eval.json, eval_samples.jsonl).

  python -m rstar_jax.main --config experiments/tiny.py --workdir runs/tiny
  python -m rstar_jax.main --config experiments/tiny.py:smoke --workdir runs/tiny_smoke
  python -m rstar_jax.main --config experiments/tiny.py --workdir runs/tiny --config.sft.steps=300
"""
import ml_collections

from rstar_jax.models import DEFAULT_RULES
from rstar_jax.train.config_lib import parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, smoke=False)
  config = ml_collections.ConfigDict()
  config.job = "sft"
  config.seed = 0

  # Data: the synthetic task (generated on first use); or JSONL trace files in config.data.sft_files.
  config.data = dict(
      # "bpe": a byte-level BPE (Qwen's scheme) learned from the traces; "char"; or a directory
      # holding tokenizer.json. BPE makes sequences ~4x shorter than characters.
      tokenizer="bpe",
      bpe_vocab_size=1024,
      sft_files=[],
      seed=0,  # data order
      synthetic=dict(seed=0, num_train=2000, num_eval=200, num_sft=480),
  )

  # Model: random init from these fields, or config.model.hf_path to load a checkpoint.
  config.model = dict(
      hf_path="",
      model_type="qwen3",
      hidden_size=128,
      intermediate_size=384,
      num_layers=4,
      num_heads=4,
      num_kv_heads=2,
      head_dim=32,
      rope_theta=10000.0,
      tie_word_embeddings=True,
      max_position_embeddings=2048,
      vocab_multiple=64,  # vocab = tokenizer size rounded up (divides over the tensor axis)
      dtype="float32",
      param_dtype="float32",
      remat="none",
  )
  # Mesh: the first num_devices devices (0: all), all on fsdp by default.
  config.mesh = dict(num_devices=0, data=1, fsdp=-1, tensor=1, rules=DEFAULT_RULES)

  # SFT: traces per step, packed into rows of row_length tokens (the longest trace is ~900 BPE tokens).
  config.sft = dict(
      steps=100,
      batch_size=8,
      row_length=1024,
      rows_per_microbatch=4,
      num_microbatches=2,
      logits_chunk=0,
      num_eval=32,  # held-out traces (the last ones of the file)
      eval_every_steps=25,
  )

  # Optimizer: AdamW, linear warm-up then constant; reset_at_steps re-initializes it (and restarts
  # the warm-up) before those updates, as at a curriculum stage boundary.
  config.optim = dict(learning_rate=2e-3, warmup_steps=10, b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.01,
                      max_grad_norm=1.0, reset_at_steps=())

  config.checkpoint = dict(every_steps=25, max_to_keep=2, async_save=True)

  # Evaluation of the trained policy: agent rollouts whose tool calls a real sandbox runs, scored
  # with the default reward (PAPER.md §10 protocol: temperature 0.6, several samples per problem).
  config.eval = dict(
      problems_files=[],  # "SCHEMA:PATH" specs; empty: the synthetic task's eval split
      num_problems=64,  # the first N problems; 0 turns the evaluation off
      num_samples=2,
      temperature=0.6,
      max_response_length=1024,
      max_assistant_turns=5,
      num_slots=32,  # sequences the JAX engine decodes at once
      seed=0,
      sandbox_url="",  # a running `rstar-sandbox serve`; empty: an in-process pool (needs root)
      sandbox_workers=1,
  )

  if arg.smoke:  # a few steps of a smaller model, for tests
    config.data.synthetic = dict(seed=0, num_train=40, num_eval=20, num_sft=24)
    config.model.update(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                        head_dim=16)
    config.sft.update(steps=4, batch_size=4, rows_per_microbatch=2, num_microbatches=2, num_eval=4,
                      eval_every_steps=2)
    config.checkpoint.every_steps = 2
    config.eval.update(num_problems=0, num_samples=1, max_response_length=48, num_slots=8)
  return config
