"""Train-step speed: tokens/s of our jitted update against the same PyTorch + transformers step on
the same CPU in the same run; bf16 train-step MFU on a GPU.

  python benchmarks/train_bench.py                 # CPU, ours vs PyTorch (2-3 minutes on 2 cores)
  python benchmarks/train_bench.py --quick         # a tiny model, for a smoke run
  python benchmarks/train_bench.py --scaling       # also step time at row lengths 512 .. 8192 (~10 minutes)
  python benchmarks/train_bench.py --device gpu [--batch 8 --length 2048 --remat dots --logits_chunk 512]

Rows: the SFT step below, and the RL update (`rl=True`): ours the trainer's old log-prob pass
(train.make_logprob_fn, jitted) then the GRPO-RoC update (train.grpo_objective, advantages +1 and
-0.5 by row); torch a no-grad forward for the old log-probs, then the same token-mean PPO-clip
loss (clip 0.8 .. 1.28, dual clip 3), backward and AdamW.

One step, both sides, on the same B x T batch (B trajectories of T + 1 tokens, the first
`--prompt_len` of each outside the loss, as prompts are in RL):
  ours   train.make_train_step(cfg, train.sft_objective(), train.make_optimizer(optim)) jitted by
         train.jit_train_step (state donated) on a train.pack_trajectories batch;
  torch  the same weights in transformers (models.save_hf -> from_pretrained, train mode): forward,
         log_softmax and gather of the targets, loss = -sum(mask * log p) / sum(mask), backward,
         clip_grad_norm_(1.0), torch.optim.AdamW step, zero_grad.
Both use AdamW(lr 1e-5 constant, betas 0.9/0.999, eps 1e-8, weight decay 0.01 on every parameter)
after global-norm clipping to 1.0, in fp32. The first (untimed) step's loss and pre-clip gradient
norm must agree within 1e-3 relative, a check that both do the same work. Tokens/s counts all
B x T trained positions (each is run forward and backward; the mask only weights the loss).
Times are medians of `--repeats` steps after `--warmup` untimed ones (compilation excluded); torch
runs with as many intra-op threads as XLA's CPU pool has (both follow the CPU affinity, so
`taskset -c 0` compares on one core). By default each side runs in a process of its own, as a
user runs either, `--rounds` times in alternating order (ours, torch, torch, ours, ...), every
process with the same host malloc tunables; the median is over all of a side's timed steps.
`--processes same` runs both in this process, their steps interleaved: there each side's freed
heap is reused by the other's allocations, and on one core ours then took 6.6 s per step instead
of 3.6 s alone, torch's 6.7 instead of 7.0 (WORKSPACE_NOTES.md).

With `--scaling`, a table of how the step's cost grows with the row length: one row of T = 512 ..
8192 tokens per step, each side with its layers recomputed in the backward pass (ours remat
"full", transformers' activation checkpointing), as long rows are trained (the paper's
responses reach 12K tokens); a fresh model and optimizer per length, the first step checked as
above. Ours attends `--attention_chunk` queries at a time (default 512, ModelConfig.
attention_chunk; 0: one [T, T] block); transformers uses its sdpa kernel.

GPU mode (no torch): compute in bf16, parameters and AdamW moments in `--param_dtype` (default
float32: mixed precision with fp32 master weights), the ~1.1B `bench_util.gpu_config`, `--remat`
and `--logits_chunk` as in the trainer. MFU = achieved FLOP/s / `--peak_tflops` with
6 * N_mm + 12 * L * T * H * D FLOPs per token (bench_util; remat recomputation not counted).
"""
from rstar_jax import host_malloc

if __name__ == "__main__":  # first, before JAX loads and its threads start (host_malloc's docstring)
  host_malloc.reexec_with_kept_memory()

import argparse
import json
import os
import statistics
import subprocess
import sys

import jax
import ml_collections
import numpy as np

from rstar_jax import models
from rstar_jax import train
from rstar_jax.models.config import DTYPES, REMAT_POLICIES
import bench_util

AGREE_RTOL = 1e-3
GRPO = dict(eps_low=0.2, eps_high=0.28, dual_clip=3.0)  # PAPER.md §6, the trainer's defaults
OPTIM = dict(learning_rate=1e-5, warmup_steps=0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01, max_grad_norm=1.0)


def make_batch(cfg: models.ModelConfig, batch: int, length: int, prompt_len: int, num_microbatches: int,
               seed: int, rl: bool = False) -> train.PackedBatch:
  """B trajectories of T + 1 random tokens (loss mask 0 on the first prompt_len), one per row;
  `rl`: with advantages alternating +1, -0.5 (SFT: none, all 1)."""
  if not 0 <= prompt_len < length:
    raise ValueError(f"prompt_len must be in [0, {length}), got {prompt_len}")
  if batch % num_microbatches:
    raise ValueError(f"batch ({batch}) must be a multiple of num_microbatches ({num_microbatches})")
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, cfg.vocab_size, size=(batch, length + 1), dtype=np.int32)
  masks = np.ones((batch, length + 1), np.int32)
  masks[:, :prompt_len] = 0
  advantages = [1.0 if i % 2 == 0 else -0.5 for i in range(batch)] if rl else None
  return train.pack_trajectories(list(ids), list(masks), advantages, row_length=length,
                                 rows_per_microbatch=batch // num_microbatches,
                                 num_microbatches=num_microbatches)


class OurStep:
  """Runs one jitted update of `batch` per call, keeping the state; `metrics` holds the (device)
  metrics of every call so far. `params` are donated to the state. `rl`: the trainer's RL update
  instead of SFT: the old log-prob pass (train.make_logprob_fn), then the GRPO-RoC loss on them."""

  def __init__(self, cfg: models.ModelConfig, params, batch: train.PackedBatch, remat: str, logits_chunk: int,
               seed: int, rl: bool = False):
    cfg = cfg.replace(remat=remat)
    optimizer = train.make_optimizer(ml_collections.ConfigDict(OPTIM))
    self.state = train.init_train_state(params, optimizer, seed)
    objective = train.grpo_objective(**GRPO) if rl else train.sft_objective()
    self.update = train.jit_train_step(train.make_train_step(cfg, objective, optimizer, logits_chunk=logits_chunk),
                                       self.state, None)
    self.old_logprobs = (train.jit_logprobs(train.make_logprob_fn(cfg, logits_chunk=logits_chunk), self.state, None)
                         if rl else None)
    self.batch = batch if rl else jax.device_put(batch)
    self.metrics = []

  def __call__(self, _=None):
    batch = self.batch
    if self.old_logprobs is not None:
      batch = batch._replace(old_logp=self.old_logprobs(self.state.params, batch))
    self.state, metrics = self.update(self.state, batch)
    self.metrics.append(metrics)
    jax.block_until_ready(self.state)


class TorchStep:
  """The same update in PyTorch + transformers, one per call; `history` holds (loss, pre-clip
  grad norm) of every call so far."""

  def __init__(self, hf_model, torch, batch: train.PackedBatch):
    def rows(x, dtype):
      return torch.as_tensor(np.asarray(x).reshape(-1, x.shape[-1]), dtype=dtype)

    self.model, self.torch = hf_model, torch
    self.input_ids, self.targets = rows(batch.input_ids, torch.long), rows(batch.targets, torch.long)
    self.mask = rows(batch.loss_mask, torch.float32)
    self.optimizer = torch.optim.AdamW(hf_model.parameters(), lr=OPTIM["learning_rate"],
                                       betas=(OPTIM["b1"], OPTIM["b2"]), eps=OPTIM["eps"],
                                       weight_decay=OPTIM["weight_decay"])
    self.history = []

  def logprobs(self):
    logits = self.model(self.input_ids).logits.float()
    return self.torch.log_softmax(logits, dim=-1).gather(-1, self.targets[..., None])[..., 0]

  def loss(self):
    return -(self.logprobs() * self.mask).sum() / self.mask.sum().clamp(min=1.0)

  def __call__(self, _=None):
    loss = self.loss()
    loss.backward()
    norm = self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), OPTIM["max_grad_norm"])
    self.optimizer.step()
    self.optimizer.zero_grad(set_to_none=True)
    self.history.append((loss.item(), norm.item()))


class TorchRLStep(TorchStep):
  """The RL update in PyTorch: the old log-probs by a no-grad forward, then the token-mean PPO-clip
  loss of `GRPO` (clip 1 - eps_low .. 1 + eps_high, dual clip for negative advantages) on them."""

  def __init__(self, hf_model, torch, batch: train.PackedBatch):
    super().__init__(hf_model, torch, batch)
    self.advantages = torch.as_tensor(np.asarray(batch.advantages).reshape(self.mask.shape), dtype=torch.float32)

  def loss(self):
    torch = self.torch
    with torch.no_grad():
      old = self.logprobs()
    ratio = torch.exp(self.logprobs() - old)
    a = self.advantages
    surrogate = torch.minimum(ratio * a, torch.clamp(ratio, 1 - GRPO["eps_low"], 1 + GRPO["eps_high"]) * a)
    surrogate = torch.where(a < 0, torch.maximum(surrogate, GRPO["dual_clip"] * a), surrogate)
    return -(surrogate * self.mask).sum() / self.mask.sum().clamp(min=1.0)


def check_first_step_agrees(ours_metrics: dict, torch_history: list, loss_key: str = "loss/sft") -> tuple[float, float]:
  """Relative differences of the first step's loss and grad norm; raises if above AGREE_RTOL."""
  torch_loss, torch_norm = torch_history[0]
  ours_loss = float(ours_metrics[loss_key])
  loss_diff = abs(ours_loss - torch_loss) / max(abs(torch_loss), 1e-6)
  norm_diff = abs(float(ours_metrics["grad/norm"]) - torch_norm) / abs(torch_norm)
  if not (loss_diff <= AGREE_RTOL and norm_diff <= AGREE_RTOL):
    raise AssertionError(f"first step differs from PyTorch: loss {ours_loss:.6f} vs "
                         f"{torch_loss:.6f}, grad norm {float(ours_metrics['grad/norm']):.6f} vs {torch_norm:.6f} "
                         f"(relative tolerance {AGREE_RTOL})")
  return loss_diff, norm_diff


def _build(args, cfg: models.ModelConfig, batch_size: int, length: int, remat: str, rl: bool, torch=None):
  """(params, transformers model or None, batch) of one comparison: the same for both sides."""
  params = models.init_params(cfg, jax.random.key(args.seed))
  hf_model = None
  if torch is not None:
    hf_model = bench_util.to_transformers(cfg, params, torch).train()
    if remat != "none":  # transformers 5.x renamed it; 4.x has only the old name
      getattr(hf_model, "activation_checkpointing_enable", hf_model.gradient_checkpointing_enable)()
  return params, hf_model, make_batch(cfg, batch_size, length, args.prompt_len, args.microbatches, args.seed + 1, rl=rl)


def _side_step(args, cfg: models.ModelConfig, side: str, batch_size: int, length: int, remat: str, rl: bool, torch):
  """The step of one side ('ours' or 'torch') on its fresh model and batch."""
  params, hf_model, batch = _build(args, cfg, batch_size, length, remat, rl, torch if side == "torch" else None)
  if side == "ours":
    return OurStep(cfg, params, batch, remat, args.logits_chunk, args.seed, rl=rl)  # donates params
  return (TorchRLStep if rl else TorchStep)(hf_model, torch, batch)


def _history(step, rl: bool) -> list[tuple[float, float]]:
  """(loss, pre-clip grad norm) of every step so far."""
  if isinstance(step, OurStep):
    key = "loss/policy" if rl else "loss/sft"
    return [(float(m[key]), float(m["grad/norm"])) for m in step.metrics]
  return step.history


def _side_in_own_process(args, side: str, batch_size: int, length: int, remat: str, rl: bool) -> dict:
  """Runs this script with --side: one side's timed steps and history, from a process of its own."""
  command = [sys.executable, os.path.abspath(__file__), "--side", side, "--batch", str(batch_size), "--length",
             str(length), "--remat", remat, "--logits_chunk", str(args.logits_chunk), "--prompt_len",
             str(args.prompt_len), "--microbatches", str(args.microbatches), "--attention_chunk",
             str(args.attention_chunk), "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--seed",
             str(args.seed), "--scan_unroll", str(args.scan_unroll)] + ["--rl"] * rl + ["--quick"] * args.quick
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  if done.returncode:
    raise RuntimeError(f"the {side} side failed:\n{done.stdout}\n{done.stderr}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def run_one_side(args, cfg: models.ModelConfig) -> None:
  """--side: prints one JSON line, {"seconds": [each timed step], "history": [[loss, norm], ...]}."""
  torch = bench_util.load_torch(bench_util.cpu_threads()) if args.side == "torch" else None
  step = _side_step(args, cfg, args.side, args.batch, args.length, args.remat, args.rl, torch)
  [seconds] = bench_util.timed_seconds([bench_util.Timed(step)], args.repeats, args.warmup)
  print(json.dumps({"seconds": seconds, "history": _history(step, args.rl)}))


def compare_step(args, cfg: models.ModelConfig, torch, batch_size: int, length: int, remat: str,
                 verbose: bool, rl: bool = False, header: bool = False) -> tuple[float, float]:
  """Median seconds per step of ours and of PyTorch + transformers on one fresh model and batch,
  each in processes of its own (`args.processes` "separate") or both here; checks the first step
  agrees (`check_first_step_agrees`). `verbose` prints the losses, `header` the run's versions,
  threads and model first. `rl`: the RL update with its old log-prob pass on both sides (OurStep,
  TorchRLStep)."""
  if header:
    params, hf_model, _ = _build(args, cfg, batch_size, length, remat, rl, torch)
    bench_util.print_header("train step: ours (JAX) vs PyTorch + transformers, fp32 CPU", cfg, params, torch,
                            hf_model)
    print(f"ours: remat {remat}, logits_chunk {args.logits_chunk}, attention_chunk {cfg.attention_chunk}, "
          f"{args.microbatches} microbatch(es); "
          + (f"each side in processes of its own, {args.rounds} round(s)" if args.processes == "separate"
             else "both sides in this process, steps interleaved"))
  if args.processes == "separate":
    runs = {"ours": [], "torch": []}
    for r in range(args.rounds):
      for side in (("ours", "torch") if r % 2 == 0 else ("torch", "ours")):
        runs[side].append(_side_in_own_process(args, side, batch_size, length, remat, rl))
    ours_s, theirs_s = (statistics.median(t for run in runs[side] for t in run["seconds"]) for side in ("ours", "torch"))
    ours_history, theirs_history = runs["ours"][0]["history"], runs["torch"][0]["history"]
  else:
    ours = _side_step(args, cfg, "ours", batch_size, length, remat, rl, torch)
    theirs = _side_step(args, cfg, "torch", batch_size, length, remat, rl, torch)
    ours_s, theirs_s = bench_util.median_seconds([bench_util.Timed(ours), bench_util.Timed(theirs)],
                                                 repeats=args.repeats, warmup=args.warmup)
    ours_history, theirs_history = _history(ours, rl), _history(theirs, rl)
  key = "loss/policy" if rl else "loss/sft"
  first_loss, first_norm = ours_history[0]
  loss_diff, norm_diff = check_first_step_agrees({key: first_loss, "grad/norm": first_norm}, theirs_history, key)
  if verbose:
    print(f"{'RL update' if rl else 'SFT step'}, first step: loss {first_loss:.6f} "
          f"(relative diff {loss_diff:.1e}), grad norm {first_norm:.5f} (relative diff {norm_diff:.1e})")
    print("loss per step, ours:  " + " ".join(f"{loss:.6f}" for loss, _ in ours_history))
    print("loss per step, torch: " + " ".join(f"{loss:.6f}" for loss, _ in theirs_history))
  return ours_s, theirs_s


def run_cpu(args, cfg: models.ModelConfig) -> None:
  """Ours vs PyTorch + transformers, fp32, same CPU, same run; prints the header and the ratio, and
  with --scaling the row-length table."""
  torch = bench_util.load_torch(bench_util.cpu_threads())
  ours_s, theirs_s = compare_step(args, cfg, torch, args.batch, args.length, args.remat, verbose=True, header=True)
  rl_ours_s, rl_theirs_s = compare_step(args, cfg, torch, args.batch, args.length, args.remat, verbose=True, rl=True)
  tokens = args.batch * args.length
  bench_util.print_table([(f"train step ({args.batch}x{args.length}) tok/s", tokens / ours_s, tokens / theirs_s, True),
                          ("train step ms", 1e3 * ours_s, 1e3 * theirs_s, False),
                          ("RL update + old log-probs ms", 1e3 * rl_ours_s, 1e3 * rl_theirs_s, False)], "torch")
  if args.scaling:
    lengths = (32,) if args.quick else (512, 1024, 2048, 4096, 8192)
    print(f"\nhow the step's cost grows with the row length: 1 row, both sides recomputing layers in the "
          f"backward pass (ours remat full), prompt_len {args.prompt_len}; median of {args.repeats}")
    rows = []
    for length in lengths:
      ours_s, theirs_s = compare_step(args, cfg, torch, 1, length, "full", verbose=False)
      rows.append((f"T={length} ms per step", 1e3 * ours_s, 1e3 * theirs_s, False))
      print(f"  T={length}: ours {1e3 * ours_s:.0f} ms, torch {1e3 * theirs_s:.0f} ms", flush=True)
    bench_util.print_table(rows, "torch")


def measure_train_mfu(cfg: models.ModelConfig, batch: int, length: int, prompt_len: int, microbatches: int,
                      remat: str, logits_chunk: int, repeats: int, peak_tflops: float, seed: int = 0) -> float:
  """Train steps of a batch x length batch on the default device; prints MFU, returns s per step."""
  params = models.init_params(cfg, jax.random.key(seed))
  bench_util.print_header("train step: bf16 throughput and MFU", cfg, params)
  print(f"remat {remat}, logits_chunk {logits_chunk}, {microbatches} microbatch(es) of "
        f"{batch // microbatches} rows")
  step = OurStep(cfg, params, make_batch(cfg, batch, length, prompt_len, microbatches, seed + 1), remat,
                 logits_chunk, seed)
  [seconds] = bench_util.median_seconds([bench_util.Timed(step)], repeats)
  print("loss per step: " + " ".join(f"{float(m['loss/sft']):.4f}" for m in step.metrics))
  bench_util.print_mfu(f"train step {batch}x{length}", batch * length, seconds,
                       bench_util.flops_per_token(cfg, length, training=True), peak_tflops)
  return seconds


def main():
  flags = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bench_util.add_common_flags(flags)
  flags.add_argument("--batch", type=int, help="B rows (default: cpu 4, gpu 8, quick 2)")
  flags.add_argument("--length", type=int, help="T positions per row (default: cpu 512, gpu 2048, quick 32)")
  flags.add_argument("--prompt_len", type=int, default=64, help="leading tokens outside the loss")
  flags.add_argument("--microbatches", type=int, default=1, help="M (our step accumulates over M)")
  flags.add_argument("--remat", choices=REMAT_POLICIES, help="default: cpu none, gpu dots")
  flags.add_argument("--logits_chunk", type=int, help="positions per log-prob chunk, 0: all "
                     "(default: cpu 0, gpu 512)")
  flags.add_argument("--param_dtype", choices=DTYPES, default="float32", help="gpu mode")
  flags.add_argument("--scaling", action="store_true", help="cpu: also the row-length table (module docstring)")
  flags.add_argument("--attention_chunk", type=int, default=512,
                     help="cpu: ours' ModelConfig.attention_chunk (quick: at most 16)")
  flags.add_argument("--processes", choices=("separate", "same"), default="separate",
                     help="cpu: each side in processes of its own (default) or both in this one")
  flags.add_argument("--rounds", type=int, default=2, help="cpu, separate: processes per side, alternating")
  flags.add_argument("--side", choices=("ours", "torch"), help=argparse.SUPPRESS)  # one side's process
  flags.add_argument("--rl", action="store_true", help=argparse.SUPPRESS)  # with --side: the RL update
  args = flags.parse_args()
  if args.rounds < 1:
    flags.error(f"--rounds must be >= 1, got {args.rounds}")
  if args.quick:
    args.batch, args.length, args.prompt_len, args.repeats = args.batch or 2, args.length or 32, 8, 1
    args.attention_chunk = min(args.attention_chunk, 16)  # the chunked path at the quick lengths
  if args.device == "gpu":
    if jax.default_backend() != "gpu":
      flags.error(f"--device gpu needs a GPU, but JAX's default backend is {jax.default_backend()!r}")
    cfg = bench_util.quick_config() if args.quick else bench_util.gpu_config()
    cfg = bench_util.with_scan_unroll(cfg.replace(dtype="bfloat16", param_dtype=args.param_dtype), args.scan_unroll)
    logits_chunk = 512 if args.logits_chunk is None else args.logits_chunk
    measure_train_mfu(cfg, args.batch or 8, args.length or 2048, args.prompt_len, args.microbatches,
                      args.remat or "dots", logits_chunk, args.repeats, args.peak_tflops, args.seed)
    return
  args.batch, args.length = args.batch or 4, args.length or 512
  args.remat, args.logits_chunk = args.remat or "none", args.logits_chunk or 0
  cfg = bench_util.with_scan_unroll(bench_util.quick_config() if args.quick else bench_util.cpu_config(),
                                    args.scan_unroll).replace(attention_chunk=args.attention_chunk)
  if args.side:
    run_one_side(args, cfg)
  else:
    run_cpu(args, cfg)


if __name__ == "__main__":
  main()
