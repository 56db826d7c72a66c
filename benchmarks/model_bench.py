"""Policy forward speed: prefill tokens/s and decode latency against HF transformers on the same CPU
in the same run; bf16 forward throughput and MFU on a GPU.

  python benchmarks/model_bench.py                 # CPU, ours vs transformers (1.5-3 minutes on 2 cores)
  python benchmarks/model_bench.py --quick         # a tiny model, for a smoke run
  python benchmarks/model_bench.py --device gpu [--batch 8 --prompt_len 2048 --peak_tflops 989]

CPU mode, fp32 on both sides: our random parameters (`models.init_params`) are written with
`models.save_hf` and loaded by `transformers.AutoModelForCausalLM.from_pretrained` (eval, no_grad),
so both compute the same function; their logits are checked to agree within 1e-3 first. torch
runs with as many intra-op threads as XLA's CPU pool has (both printed; both follow the CPU
affinity, so `taskset -c 0` compares on one core). Rows, each the median of `--repeats` timed
runs after `--warmup` untimed ones (compilation excluded), ours and HF runs interleaved:
  prefill, all logits    B x T prompt tokens/s: models.logits vs model(input_ids)
  prefill into cache     the same into an empty KV cache, last logits only: models.extend vs
                         model(input_ids, use_cache=True, logits_to_keep=1)
  decode                 ms per step, one greedy token for each of B sequences after a P-token
                         prompt, N steps with the KV cache: models.extend of one token vs
                         model(next, past_key_values=cache, use_cache=True) (not `generate`, so
                         both do the same work); the prefill is untimed
With `--scaling`, a table of how the decode step's cost grows: ms per step at B = 1, 8, 32, 64
sequences of 256 cached positions and at 256 .. 4096 cached positions for B = 8, each side
decoding from a cache of random keys/values (what a step computes does not depend on their
values; a prefill of 8 x 4096 tokens would dominate the run).

GPU mode (no transformers): bf16 parameters and compute on the ~1.1B `bench_util.gpu_config`,
forward (all logits) tokens/s over B x T and MFU = achieved FLOP/s / `--peak_tflops`, with
forward FLOPs per token = 2 * N_mm + 4 * L * T * H * D (bench_util: matmul parameters N_mm; the
attention term counts the full T x T products, not halved for the causal mask).
"""
from rstar_jax import host_malloc

if __name__ == "__main__":  # first, before JAX loads and its threads start (host_malloc's docstring)
  host_malloc.reexec_with_kept_memory()

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from rstar_jax import models
import bench_util

LOGITS_ATOL = 1e-3


def _random_ids(cfg: models.ModelConfig, shape, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, cfg.vocab_size, size=shape, dtype=np.int32)


def check_logits_agree(cfg: models.ModelConfig, params, hf_model, torch, seed: int) -> float:
  """Max |ours - transformers| of the logits of a 2 x 64 batch; raises if above LOGITS_ATOL."""
  ids = _random_ids(cfg, (2, 64), seed)
  ours = np.asarray(models.logits(cfg, params, ids))
  with torch.no_grad():
    theirs = hf_model(torch.as_tensor(ids, dtype=torch.long)).logits.numpy()
  diff = float(np.max(np.abs(ours - theirs)))
  if not diff <= LOGITS_ATOL:
    raise AssertionError(f"logits differ from transformers by {diff:.2e} > {LOGITS_ATOL}: "
                         "the two models do not compute the same function")
  return diff


def _our_prefill_logits(cfg, params, ids):
  return lambda _: models.logits(cfg, params, ids).block_until_ready()


def _our_prefill_cache(cfg, params, ids):
  b, t = ids.shape
  num_new = jnp.full((b,), t, jnp.int32)
  return lambda _: jax.block_until_ready(models.extend(cfg, params, models.init_cache(cfg, b, t), ids, num_new))


def _our_decode_steps(cfg: models.ModelConfig, params, num_steps: int):
  """run(state=(logits [B, V], cache)): N greedy steps with the cache; returns the tokens [B, N]."""
  def run(state):
    logits, cache = state
    one = jnp.ones((logits.shape[0],), jnp.int32)
    tokens = []
    for _ in range(num_steps):
      next_ids = jnp.argmax(logits, axis=-1).astype(jnp.int32)[:, None]
      tokens.append(next_ids)
      logits, cache = models.extend(cfg, params, cache, next_ids, one)
    jax.block_until_ready((logits, cache))  # the N-th step too, whose token nobody reads
    return np.asarray(jnp.concatenate(tokens, axis=1))
  return run


def our_decode(cfg: models.ModelConfig, params, prompt: jax.Array, num_steps: int) -> bench_util.Timed:
  """A bench_util.Timed: setup prefills a cache of P + N positions with the prompt [B, P]; run
  decodes N greedy tokens one step at a time and returns them [B, N]."""
  b, p = prompt.shape

  def setup():
    cache = models.init_cache(cfg, b, p + num_steps)
    return jax.block_until_ready(models.extend(cfg, params, cache, prompt, jnp.full((b,), p, jnp.int32)))

  return bench_util.Timed(_our_decode_steps(cfg, params, num_steps), setup)


def our_decode_on_random_cache(cfg: models.ModelConfig, params, batch: int, length: int,
                               num_steps: int) -> bench_util.Timed:
  """As `our_decode`, from a cache whose first `length` positions per slot hold random keys/values."""
  def setup():
    shapes = models.kv_cache.layer_shapes(cfg, batch, length + num_steps)
    k, v = (tuple(jax.random.normal(jax.random.key(2 * layer + i), shape, jnp.dtype(cfg.dtype))
                  for layer in range(cfg.num_layers)) for i, shape in enumerate(shapes))
    cache = models.KVCache(k, v, jnp.full((batch,), length, jnp.int32))
    return jax.block_until_ready((jnp.zeros((batch, cfg.vocab_size)), cache))
  return bench_util.Timed(_our_decode_steps(cfg, params, num_steps), setup)


def hf_decode_on_random_cache(hf_model, torch, cfg: models.ModelConfig, batch: int, length: int,
                              num_steps: int) -> bench_util.Timed:
  """As `hf_decode`, from a transformers DynamicCache of `length` random keys/values per layer."""
  import transformers  # pylint: disable=import-outside-toplevel  # CPU comparison only

  def setup():
    generator = torch.Generator().manual_seed(0)
    cache = transformers.DynamicCache(config=hf_model.config)
    for layer in range(cfg.num_layers):
      k, v = (torch.randn(batch, cfg.num_kv_heads, length, cfg.head_dim, generator=generator) for _ in range(2))
      cache.update(k, v, layer)
    return torch.zeros(batch, cfg.vocab_size), cache

  return bench_util.Timed(_hf_decode_steps(hf_model, torch, num_steps), setup)


def hf_decode(hf_model, torch, prompt: np.ndarray, num_steps: int) -> bench_util.Timed:
  """A bench_util.Timed as `our_decode`, with transformers' cache: model(next, past_key_values=...)."""
  prompt = torch.as_tensor(prompt, dtype=torch.long)

  def setup():
    with torch.no_grad():
      out = hf_model(prompt, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1], out.past_key_values

  return bench_util.Timed(_hf_decode_steps(hf_model, torch, num_steps), setup)


def _hf_decode_steps(hf_model, torch, num_steps: int):
  """run(state=(logits, cache)) for transformers, as `_our_decode_steps`."""
  def run(state):
    logits, cache = state
    tokens = []
    with torch.no_grad():
      for _ in range(num_steps):
        next_ids = logits.argmax(dim=-1, keepdim=True)
        tokens.append(next_ids)
        out = hf_model(next_ids, past_key_values=cache, use_cache=True)
        logits, cache = out.logits[:, -1], out.past_key_values
    return torch.cat(tokens, dim=1).numpy()
  return run


def decode_scaling(cfg: models.ModelConfig, params, hf_model, torch, num_steps: int, timing: dict) -> None:
  """The --scaling table (module docstring)."""
  shapes = [(b, 256) for b in (1, 8, 32, 64)] + [(8, p) for p in (1024, 2048, 4096)]
  rows = []
  for b, p in shapes:
    ours, hf = (our_decode_on_random_cache(cfg, params, b, p, num_steps),
                hf_decode_on_random_cache(hf_model, torch, cfg, b, p, num_steps))
    ours_s, hf_s = (s / num_steps for s in bench_util.median_seconds([ours, hf], **timing))
    rows.append((f"decode ms/step (B={b}, cached {p})", 1e3 * ours_s, 1e3 * hf_s, False))
    print(f"  B={b} cached={p}: ours {1e3 * ours_s:.1f} ms/step, transformers {1e3 * hf_s:.1f}", flush=True)
  bench_util.print_table(rows, "HF")


def run_cpu(args, cfg: models.ModelConfig) -> None:
  """Ours vs transformers, fp32, same CPU, same run; prints the header and the ratio table."""
  torch = bench_util.load_torch(bench_util.cpu_threads())
  params = models.init_params(cfg, jax.random.key(args.seed))
  hf_model = bench_util.to_transformers(cfg, params, torch).eval()
  bench_util.print_header("model: ours (JAX) vs HF transformers (PyTorch), fp32 CPU", cfg, params, torch,
                          hf_model)
  print(f"logits max |ours - transformers| = {check_logits_agree(cfg, params, hf_model, torch, args.seed):.1e}"
        f" (<= {LOGITS_ATOL})")

  b, t = args.batch, args.prompt_len
  ids = _random_ids(cfg, (b, t), args.seed + 1)
  ids_jax, ids_torch = jnp.asarray(ids), torch.as_tensor(ids, dtype=torch.long)
  timing = dict(repeats=args.repeats, warmup=args.warmup)

  def hf_prefill(**kwargs):
    def run(_):
      with torch.no_grad():
        return hf_model(ids_torch, **kwargs)
    return run

  rows = []
  for metric, ours_fn, hf_fn in (
      (f"prefill, all logits ({b}x{t}) tok/s", _our_prefill_logits(cfg, params, ids_jax), hf_prefill()),
      (f"prefill into cache ({b}x{t}) tok/s", _our_prefill_cache(cfg, params, ids_jax),
       hf_prefill(use_cache=True, logits_to_keep=1))):
    ours_s, hf_s = bench_util.median_seconds([bench_util.Timed(ours_fn), bench_util.Timed(hf_fn)], **timing)
    rows.append((metric, b * t / ours_s, b * t / hf_s, True))

  p, n = args.decode_prompt_len, args.decode_tokens
  prompt = _random_ids(cfg, (b, p), args.seed + 2)
  ours, hf = our_decode(cfg, params, jnp.asarray(prompt), n), hf_decode(hf_model, torch, prompt, n)
  same = float(np.mean(ours.run(ours.setup()) == hf.run(hf.setup())))
  ours_s, hf_s = (s / n for s in bench_util.median_seconds([ours, hf], **timing))
  rows.append((f"decode ms/step (B={b}, P={p}, N={n})", 1e3 * ours_s, 1e3 * hf_s, False))
  rows.append((f"decode tok/s (B={b})", b / ours_s, b / hf_s, True))
  print(f"greedy decode: {100 * same:.0f}% of the {b}x{n} tokens equal between ours and transformers "
        "(random weights make near-ties common; the work done is the same either way)")
  bench_util.print_table(rows, "HF")
  if args.scaling:
    print("decode cost by batch and cached length:")
    decode_scaling(cfg, params, hf_model, torch, n, timing)


def measure_forward_mfu(cfg: models.ModelConfig, batch: int, length: int, repeats: int, peak_tflops: float,
                        seed: int = 0) -> float:
  """Forward (all logits) of a batch x length batch on the default device; prints MFU, returns s."""
  params = models.init_params(cfg, jax.random.key(seed))
  bench_util.print_header("model: bf16 forward throughput and MFU", cfg, params)
  ids = jax.random.randint(jax.random.key(seed + 1), (batch, length), 0, cfg.vocab_size, jnp.int32)
  [seconds] = bench_util.median_seconds([bench_util.Timed(_our_prefill_logits(cfg, params, ids))], repeats)
  bench_util.print_mfu(f"forward {batch}x{length}", batch * length, seconds,
                       bench_util.flops_per_token(cfg, length, training=False), peak_tflops)
  return seconds


def main():
  flags = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bench_util.add_common_flags(flags)
  flags.add_argument("--batch", type=int, help="B (default: cpu 4, gpu 8, quick 2)")
  flags.add_argument("--prompt_len", type=int, help="prefill T (default: cpu 512, gpu 2048, quick 32)")
  flags.add_argument("--decode_prompt_len", type=int, default=128, help="P before decoding (cpu)")
  flags.add_argument("--decode_tokens", type=int, default=32, help="N decode steps (cpu)")
  flags.add_argument("--scaling", action="store_true", help="also the decode-cost table (module docstring)")
  args = flags.parse_args()
  if args.quick:
    args.batch, args.prompt_len = args.batch or 2, args.prompt_len or 32
    args.decode_prompt_len, args.decode_tokens, args.repeats = 16, 4, 1
  if args.device == "gpu":
    if jax.default_backend() != "gpu":
      flags.error(f"--device gpu needs a GPU, but JAX's default backend is {jax.default_backend()!r}")
    cfg = bench_util.quick_config().replace(dtype="bfloat16", param_dtype="bfloat16") if args.quick else \
        bench_util.gpu_config()
    cfg = bench_util.with_scan_unroll(cfg, args.scan_unroll)
    measure_forward_mfu(cfg, args.batch or 8, args.prompt_len or 2048, args.repeats, args.peak_tflops, args.seed)
  else:
    args.batch, args.prompt_len = args.batch or 4, args.prompt_len or 512
    run_cpu(args, bench_util.with_scan_unroll(bench_util.quick_config() if args.quick else bench_util.cpu_config(),
                                              args.scan_unroll))


if __name__ == "__main__":
  main()
