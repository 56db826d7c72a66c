"""Generation speed: our JAX engine (continuous batching) against transformers' `generate` on the same
CPU in the same run, greedy, on a workload of prompts of mixed lengths.

  python benchmarks/engine_bench.py                  # CPU, ours vs transformers (2-4 minutes on 2 cores)
  python benchmarks/engine_bench.py --quick          # a tiny model, for a smoke run
  taskset -c 0 python benchmarks/engine_bench.py     # both on one core
  taskset -c 0 python benchmarks/engine_bench.py --scaling   # also how tokens/s grows (~20 min)

Workload: R requests (`--requests`) with prompt lengths drawn from [--min_prompt, --max_prompt]
(seeded), each generating exactly N tokens (`--new_tokens`; no EOS on either side), greedy, fp32.
  ours   one `rollout.JaxEngine.generate` over all R requests with B slots (`--slots`): prefill over
         just the new slots, decode over all, a finished slot refilled at once;
  theirs transformers `generate(input_ids, attention_mask, max_new_tokens=N, min_new_tokens=N,
         do_sample=False)` on consecutive batches of B requests, left-padded (its static batching).
Second row, groups (as an RL step samples them): G prompts of `--group_prompt` tokens, each
requested `--group` times (`--groups` x `--group` requests through `--group` slots); transformers
generates each group as one batch of identical rows. Ours prefills each prompt once
(`share_prefixes`; the cached_tokens of the results are printed); a third row runs ours without
sharing, against ours with it.
`--scaling` adds how throughput grows, each cell B requests of a C-token context (prompt C - N,
N = `--scaling_new_tokens` generated) through B slots against one transformers batch of B equal
rows: B = 1, 8, 32, 64 at C = 256, then C = 512 to 4K at B = 8 (prefill included, as in a rollout).
Both use the same weights (our random parameters -> models.save_hf -> from_pretrained). Checks: the
first generated token of every request agrees (both compute the same function); the number of
requests whose N tokens agree exactly is printed (fp rounding can flip a near-tie late in a
sequence). Tokens/s counts the R x N generated tokens; medians of `--repeats` runs after
`--warmup` (compilation excluded), ours and theirs interleaved.
"""
from rstar_jax import host_malloc

if __name__ == "__main__":  # first, before JAX loads and its threads start (host_malloc's docstring)
  host_malloc.reexec_with_kept_memory()

import argparse

import jax
import numpy as np

from rstar_jax import models
from rstar_jax import rollout
import bench_util


def make_prompts(cfg: models.ModelConfig, requests: int, min_prompt: int, max_prompt: int,
                 seed: int) -> list[np.ndarray]:
  """R prompts of random ids with lengths uniform in [min_prompt, max_prompt]."""
  if not 1 <= min_prompt <= max_prompt:
    raise ValueError(f"need 1 <= min_prompt <= max_prompt, got {min_prompt}, {max_prompt}")
  rng = np.random.default_rng(seed)
  lengths = rng.integers(min_prompt, max_prompt + 1, size=requests)
  return [rng.integers(0, cfg.vocab_size, size=n, dtype=np.int32) for n in lengths]


class OurGenerate:
  """All prompts through one engine; `outputs` holds the last call's generated ids."""

  def __init__(self, cfg: models.ModelConfig, params, prompts, slots: int, new_tokens: int,
               share_prefixes: bool = True):
    self.engine = rollout.JaxEngine(cfg, params, num_slots=slots,
                                    max_length=max(p.size for p in prompts) + new_tokens + 1,
                                    eos_token_ids=(), share_prefixes=share_prefixes)
    sampling = rollout.SamplingParams(max_new_tokens=new_tokens, temperature=0.0)
    self.requests = [rollout.GenerateRequest(f"r{i}", p.tolist(), sampling) for i, p in enumerate(prompts)]
    self.outputs = []
    self.cached_tokens = 0

  def __call__(self, _=None):
    self.engine.flush_cache()  # every call starts cold, as transformers' does: no prompt kept from the last
    results = self.engine.generate(self.requests)
    self.outputs = [r.output_ids for r in results]
    self.cached_tokens = sum(r.cached_tokens for r in results)


class TheirGenerate:
  """transformers' generate on batches of `slots` left-padded prompts; `outputs` as above."""

  def __init__(self, hf_model, torch, prompts, slots: int, new_tokens: int):
    self.model, self.torch, self.new_tokens = hf_model, torch, new_tokens
    hf_model.generation_config.pad_token_id = 0
    hf_model.generation_config.eos_token_id = None
    self.batches = []
    for start in range(0, len(prompts), slots):
      batch = prompts[start:start + slots]
      width = max(p.size for p in batch)
      ids = np.zeros((len(batch), width), np.int64)
      mask = np.zeros((len(batch), width), np.int64)
      for row, p in enumerate(batch):
        ids[row, width - p.size:], mask[row, width - p.size:] = p, 1
      self.batches.append((torch.as_tensor(ids), torch.as_tensor(mask)))
    self.outputs = []

  def __call__(self, _=None):
    outputs = []
    with self.torch.no_grad():
      for ids, mask in self.batches:
        out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=self.new_tokens,
                                  min_new_tokens=self.new_tokens, do_sample=False)
        outputs += list(out[:, ids.shape[1]:].numpy())
    self.outputs = outputs


def compare_outputs(ours: list[np.ndarray], theirs: list[np.ndarray]) -> int:
  """How many requests agree on every token; raises if any first token differs."""
  first_differ = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a[0] != b[0]]
  if first_differ:
    raise AssertionError(f"first generated token differs from transformers for requests {first_differ}")
  return sum(np.array_equal(a, b) for a, b in zip(ours, theirs))


SCALING_SLOTS = (1, 8, 32, 64)
SCALING_CONTEXTS = (512, 1024, 2048, 4096)


def scaling_rows(cfg: models.ModelConfig, params, hf_model, torch, args) -> list[tuple]:
  """(label, ours tok/s, theirs tok/s, higher is better) per (B, C) cell of the scaling table."""
  n = args.scaling_new_tokens
  cells = [(b, 256) for b in SCALING_SLOTS] + [(8, c) for c in SCALING_CONTEXTS]
  if args.quick:
    cells = [(1, 32), (4, 32), (4, 64)]
  if not 0 < n < min(c for _, c in cells):
    raise SystemExit(f"--scaling_new_tokens must be in [1, {min(c for _, c in cells) - 1}], got {n}")
  rows = []
  for i, (slots, context) in enumerate(cells):
    prompts = make_prompts(cfg, slots, context - n, context - n, args.seed + 10 + i)
    ours = OurGenerate(cfg, params, prompts, slots, n)
    theirs = TheirGenerate(hf_model, torch, prompts, slots, n)
    ours_s, theirs_s = bench_util.median_seconds([bench_util.Timed(ours), bench_util.Timed(theirs)],
                                                 repeats=args.repeats, warmup=args.warmup)
    same = compare_outputs(ours.outputs, theirs.outputs)
    rows.append((f"B={slots}, context {context} tok/s", slots * n / ours_s, slots * n / theirs_s, True))
    print(f"  {rows[-1][0]}: {rows[-1][1]:.1f} vs {rows[-1][2]:.1f}; all {n} tokens equal for {same} of {slots}",
          flush=True)
  return rows


def main():
  flags = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bench_util.add_common_flags(flags)
  flags.add_argument("--requests", type=int, help="R (default: 16, quick 6)")
  flags.add_argument("--slots", type=int, help="B (default: 8, quick 4)")
  flags.add_argument("--min_prompt", type=int, help="shortest prompt (default: 32, quick 4)")
  flags.add_argument("--max_prompt", type=int, help="longest prompt (default: 256, quick 48)")
  flags.add_argument("--new_tokens", type=int, help="N per request (default: 64, quick 8)")
  flags.add_argument("--groups", type=int, help="G prompts of the group row (default: 4, quick 2)")
  flags.add_argument("--group", type=int, help="samples per prompt (default: 16, quick 4)")
  flags.add_argument("--group_prompt", type=int, help="prompt tokens of the group row (default: 256, quick 48)")
  flags.add_argument("--scaling", action="store_true", help="also the tokens/s table over slots and contexts")
  flags.add_argument("--scaling_new_tokens", type=int, help="N per request of the scaling table (default: 32, "
                     "quick 8)")
  args = flags.parse_args()
  if args.device != "cpu":
    raise SystemExit("engine_bench compares with transformers on CPU only")
  sizes = dict(requests=6, slots=4, min_prompt=4, max_prompt=24, new_tokens=8, groups=2, group=4,
               group_prompt=48, scaling_new_tokens=8) if args.quick else \
      dict(requests=16, slots=8, min_prompt=32, max_prompt=256, new_tokens=64, groups=4, group=16, group_prompt=256,
           scaling_new_tokens=32)
  for name, value in sizes.items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  if args.quick:
    args.repeats = 1
  cfg = bench_util.with_scan_unroll(bench_util.quick_config() if args.quick else bench_util.cpu_config(),
                                   args.scan_unroll)
  torch = bench_util.load_torch(bench_util.cpu_threads())
  params = models.init_params(cfg, jax.random.key(args.seed))
  hf_model = bench_util.to_transformers(cfg, params, torch).eval()
  bench_util.print_header("generation: our JAX engine vs transformers generate, greedy fp32 CPU", cfg, params,
                          torch, hf_model)
  prompts = make_prompts(cfg, args.requests, args.min_prompt, args.max_prompt, args.seed + 1)
  print(f"workload: {args.requests} requests, prompts {args.min_prompt}..{args.max_prompt} tokens "
        f"(mean {np.mean([p.size for p in prompts]):.0f}), {args.new_tokens} new tokens each, {args.slots} slots / "
        "batch rows")
  ours = OurGenerate(cfg, params, prompts, args.slots, args.new_tokens)
  theirs = TheirGenerate(hf_model, torch, prompts, args.slots, args.new_tokens)
  ours_s, theirs_s = bench_util.median_seconds([bench_util.Timed(ours), bench_util.Timed(theirs)],
                                               repeats=args.repeats, warmup=args.warmup)
  same = compare_outputs(ours.outputs, theirs.outputs)
  print(f"outputs: first token equal for all {args.requests} requests; all {args.new_tokens} tokens equal for "
        f"{same} of {args.requests}; cached_tokens {ours.cached_tokens}")
  tokens = args.requests * args.new_tokens
  rows = [(f"generate ({args.requests} req, B={args.slots}) tok/s", tokens / ours_s, tokens / theirs_s, True)]

  group_prompts = make_prompts(cfg, args.groups, args.group_prompt, args.group_prompt, args.seed + 2)
  samples = [p for p in group_prompts for _ in range(args.group)]
  ours = OurGenerate(cfg, params, samples, args.group, args.new_tokens)
  unshared = OurGenerate(cfg, params, samples, args.group, args.new_tokens, share_prefixes=False)
  theirs = TheirGenerate(hf_model, torch, samples, args.group, args.new_tokens)
  ours_s, unshared_s, theirs_s = bench_util.median_seconds(
      [bench_util.Timed(ours), bench_util.Timed(unshared), bench_util.Timed(theirs)], repeats=args.repeats,
      warmup=args.warmup)
  compare_outputs(ours.outputs, theirs.outputs)
  print(f"groups: {args.groups} prompts of {args.group_prompt} tokens x {args.group} samples; cached_tokens "
        f"{ours.cached_tokens} (each prompt prefilled once: {args.groups * (args.group - 1) * (args.group_prompt - 1)}),"
        f" without sharing {unshared.cached_tokens}")
  tokens = len(samples) * args.new_tokens
  rows.append((f"groups ({args.groups}x{args.group}, B={args.group}) tok/s", tokens / ours_s, tokens / theirs_s, True))
  bench_util.print_table(rows, "transformers")
  bench_util.print_table([("groups: shared prefixes tok/s", tokens / ours_s, tokens / unshared_s, True)],
                         "ours without sharing")
  if args.scaling:
    print(f"scaling: B requests of a C-token context, {args.scaling_new_tokens} generated each, B slots vs one "
          "batch of B")
    bench_util.print_table(scaling_rows(cfg, params, hf_model, torch, args), "transformers")


if __name__ == "__main__":
  main()
