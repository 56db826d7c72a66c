"""Shared pieces of the model and train-step benchmarks: configs, FLOP counts, timing, header, table.

FLOPs per token of a decoder (model FLOPs, the MFU convention of PaLM, arXiv:2204.02311 App. B):
  N_mm = L * (E*H*D + 2*E*K*D + H*D*E + 3*E*F) + E*V      matmul parameters a token passes through
  forward  = 2 * N_mm + 4 * L * T * H * D                  per token, context T
  training = 6 * N_mm + 12 * L * T * H * D                 forward + backward (2x forward)
L layers, E hidden, H query heads, K kv heads, D head dim, F SwiGLU width, V vocab (the output
projection is a matmul whether or not it is tied to the embedding; the embedding lookup is not).
The attention term counts the full T x T score and value products, as PaLM does and as our dense
attention executes; it is not halved for the causal mask. Rematerialized recomputation is not
counted (that would be hardware FLOPs, not model FLOPs).
"""
import math
import os
import platform
import statistics
import tempfile
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax

from rstar_jax import models

# Dense bf16 peak of one H100 SXM (NVIDIA H100 datasheet, without sparsity).
H100_BF16_PEAK_TFLOPS = 989.0


def cpu_config() -> models.ModelConfig:
  """The small CPU comparison model (Qwen3 layout, 57.9M parameters, 41.5M of them in matmuls)."""
  return models.qwen("qwen3", vocab_size=32000, hidden_size=512, intermediate_size=1536, num_layers=8,
                     num_heads=8, num_kv_heads=4, head_dim=64, rope_theta=1_000_000.0,
                     max_position_embeddings=4096)


def quick_config() -> models.ModelConfig:
  """A tiny model for smoke runs of the benchmark scripts (seconds, not minutes)."""
  return models.qwen("qwen3", vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                     num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=512)


def gpu_config() -> models.ModelConfig:
  """~1.1B parameters: Qwen3-1.7B's widths (E 2048, F 6144, H 16, K 8, D 128, tied 151936 vocab),
  16 layers instead of 28; bf16 parameters and compute."""
  return models.qwen("qwen3", vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_layers=16,
                     num_heads=16, num_kv_heads=8, head_dim=128, tie_word_embeddings=True,
                     max_position_embeddings=40960, dtype="bfloat16", param_dtype="bfloat16")


def matmul_params(cfg: models.ModelConfig) -> int:
  """N_mm of the module docstring: parameters each token multiplies through (blocks and output)."""
  e, h, k, d, f = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
  return cfg.num_layers * (e * h * d + 2 * e * k * d + h * d * e + 3 * e * f) + e * cfg.vocab_size


def num_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def flops_per_token(cfg: models.ModelConfig, context: int, training: bool) -> float:
  """Model FLOPs per token at context length `context` (forward, or forward + backward)."""
  if context <= 0:
    raise ValueError(f"context must be positive, got {context}")
  attention = 4 * cfg.num_layers * context * cfg.num_heads * cfg.head_dim
  return (3 if training else 1) * (2 * matmul_params(cfg) + attention)


def cpu_threads() -> int:
  """Cores this process may run on: the size of XLA's CPU intra-op thread pool, and the torch
  thread count we set (so `taskset -c 0 python ...` compares both on one core)."""
  return len(os.sched_getaffinity(0))


def load_torch(threads: int):
  """Imports torch (only the CPU comparison needs it) and sets its intra-op threads to `threads`."""
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(threads)
  return torch


def to_transformers(cfg: models.ModelConfig, params, torch_module):
  """The same weights as a transformers AutoModelForCausalLM (fp32, CPU): save_hf, from_pretrained."""
  import transformers  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as path:
    models.save_hf(cfg, params, path)
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch_module.float32)


class Timed(NamedTuple):
  """One thing to time: `run(setup())`, with `setup` (untimed) building each call's fresh input,
  e.g. a prefilled KV cache. `run` must return only once its work is done (block_until_ready)."""
  run: Callable[[Any], object]
  setup: Callable[[], Any] = lambda: None


def timed_seconds(timed: Sequence[Timed], repeats: int, warmup: int = 1) -> list[list[float]]:
  """Wall times of each `Timed` over `repeats` calls after `warmup` untimed ones.

  Calls are interleaved (all warm-ups, then round r calls each in turn), so a change of machine
  load during the run falls on every side of a comparison alike.
  """
  if repeats < 1 or warmup < 0:
    raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
  for _ in range(warmup):
    for item in timed:
      item.run(item.setup())
  times = [[] for _ in timed]
  for _ in range(repeats):
    for item, item_times in zip(timed, times):
      state = item.setup()
      start = time.perf_counter()
      item.run(state)
      item_times.append(time.perf_counter() - start)
  return times


def median_seconds(timed: Sequence[Timed], repeats: int, warmup: int = 1) -> list[float]:
  """Median wall time of each `Timed` (`timed_seconds`)."""
  return [statistics.median(item_times) for item_times in timed_seconds(timed, repeats, warmup)]


def print_header(title: str, cfg: models.ModelConfig, params, torch_module=None, hf_model=None) -> None:
  """Versions, devices, thread counts, load and the model; torch and transformers when compared."""
  print(f"== {title} ==")
  print(f"python {platform.python_version()}, jax {jax.__version__}, backend {jax.default_backend()}, "
        f"devices {[d.device_kind for d in jax.local_devices()]}")
  if torch_module is not None:
    import transformers  # pylint: disable=import-outside-toplevel  # only the CPU comparison needs it
    attention = hf_model.config._attn_implementation  # pylint: disable=protected-access  # no public name
    print(f"torch {torch_module.__version__}, transformers {transformers.__version__} ({attention} attention)")
    print(f"threads: jax (XLA CPU pool) {cpu_threads()}, torch intra-op {torch_module.get_num_threads()}")
  print(f"host malloc: GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES') or '(unset: the system defaults)'} "
        "(rstar_jax.host_malloc; the same for both sides)")
  load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
  print(f"load average {load} on {os.cpu_count()} cores: other processes may be running, so timings "
        "are noisy; compare ratios, which share the same conditions")
  if torch_module is not None and torch_module.get_num_threads() > 1 and os.getloadavg()[0] > os.cpu_count():
    print("warning: more runnable processes than cores; torch's OpenMP threads then wait for each other "
          "at every op, which costs it more than XLA (small ops most: decode); `taskset -c 0` compares "
          "on one core")
  print(f"model: {cfg.model_type} L={cfg.num_layers} E={cfg.hidden_size} F={cfg.intermediate_size} "
        f"H={cfg.num_heads} K={cfg.num_kv_heads} D={cfg.head_dim} V={cfg.vocab_size} "
        f"tied={cfg.tie_word_embeddings}; {num_params(params) / 1e6:.1f}M parameters "
        f"({matmul_params(cfg) / 1e6:.1f}M in matmuls), dtype {cfg.dtype}, param dtype {cfg.param_dtype}, "
        f"ours' layer scan unrolled {cfg.scan_unroll}")


def _significant(x: float, digits: int = 4) -> str:
  """x with `digits` significant digits, never in exponent form (0.3312, 895.7, 14103)."""
  if not math.isfinite(x) or x == 0:
    return f"{x:.{digits - 1}f}"
  return f"{x:.{max(0, digits - 1 - math.floor(math.log10(abs(x))))}f}"


def print_table(rows: Sequence[tuple[str, float, float, bool]], peer: str) -> None:
  """Rows (metric, ours, peer, higher_is_better); ratio = our speed-up, > 1 when we are faster."""
  print(f"{'metric':34} {'ours':>12} {peer:>12} {'ratio':>8}")
  for metric, ours, theirs, higher_is_better in rows:
    ratio = ours / theirs if higher_is_better else theirs / ours
    print(f"{metric:34} {_significant(ours):>12} {_significant(theirs):>12} {ratio:7.2f}x")
  print(f"ratio = our speed-up over {peer} (> 1: ours is faster); load average at the end "
        f"{os.getloadavg()[0]:.2f}")


def print_mfu(what: str, tokens: int, seconds: float, flops_token: float, peak_tflops: float) -> None:
  """tokens/s, achieved TFLOP/s and MFU = achieved / peak."""
  achieved = tokens * flops_token / seconds
  print(f"{what}: {tokens} tokens in {seconds * 1e3:.1f} ms = {tokens / seconds:,.0f} tokens/s; "
        f"{flops_token / 1e9:.2f} GFLOP/token -> {achieved / 1e12:.1f} TFLOP/s; "
        f"MFU {100 * achieved / (peak_tflops * 1e12):.1f}% of {peak_tflops:g} TFLOP/s")


def add_common_flags(flags) -> None:
  """The flags both model_bench.py and train_bench.py take (device, quick, repeats, peak, seed)."""
  flags.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
  flags.add_argument("--quick", action="store_true", help="tiny model and shapes (smoke run)")
  flags.add_argument("--repeats", type=int, default=3)
  flags.add_argument("--warmup", type=int, default=1)
  flags.add_argument("--peak_tflops", type=float, default=H100_BF16_PEAK_TFLOPS,
                     help="dense bf16 peak of the GPU (H100 SXM: 989)")
  flags.add_argument("--seed", type=int, default=0)
  flags.add_argument("--scan_unroll", type=int, default=0,
                     help="ours: layers per iteration of the layer scan (ModelConfig.scan_unroll); 0: all")


def with_scan_unroll(cfg: models.ModelConfig, scan_unroll: int) -> models.ModelConfig:
  """cfg with --scan_unroll applied (0: every layer unrolled)."""
  return cfg.replace(scan_unroll=scan_unroll or cfg.num_layers)
