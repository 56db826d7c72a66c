"""Rollouts across processes, measured live on local `rstar-serve` processes (CPU):

  python benchmarks/serve_bench.py                 # weight sync (tiny and ~0.5B) + router vs round-robin
  python benchmarks/serve_bench.py --quick         # small sizes, for a smoke run

1. Weight sync (`rollout.weight_sync.send_version`) to `--sync_servers` servers, both ways on the
   same servers, an untimed round, then alternating over `--sync_repeats` rounds (medians): as in
   an RL job's later steps, not its first sync (compiles, fresh pages). "disk" writes version v as
   safetensors (`write_version`), then every server loads it (`/update_weights_from_disk`: read,
   shard, swap, prefix cache dropped); "push" sends the tensors over HTTP in 256 MiB chunks
   (`push_version`: gather and serialize a chunk while the last travels), then every server swaps
   them in (`/update_weights_from_upload`). Printed per model: seconds of each and disk / push.
   Models: the tiny default's policy shape and a random model of Qwen2.5-0.5B's shape (fp32).
2. Router, live: R multi-turn rollouts over 2 servers (`--slots` each), turn lengths long-tailed
   (log-normal, seeded; `ignore_eos`), a tool call between turns (log-normal sleep, median
   `--tool_ms`). `rollout.Router` (placement by free KV tokens, sticky) against round-robin
   (rollout i on server i mod 2, sticky, all dispatched at once): wall time and generated tokens/s,
   both on the same servers in the same run over `--repeats` workloads (seeded), each first run
   once per policy untimed (the servers compile the shapes it meets: otherwise whichever policy
   runs first pays them), then timed with the order alternating.
Progress with an ETA goes to stderr as router runs finish (at most every 10 s).
"""
from rstar_jax import host_malloc

if __name__ == "__main__":  # first, before JAX loads and its threads start (host_malloc's docstring)
  host_malloc.reexec_with_kept_memory()

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time

from absl import logging
import jax
import numpy as np

from rstar_jax import models
from rstar_jax import rollout
from rstar_jax.rollout import local_servers
from rstar_jax.rollout import weight_sync
from rstar_jax.train import progress


def tiny_default_config() -> models.ModelConfig:
  """experiments/tiny.py's policy shape (BPE vocabulary of 1024)."""
  return models.qwen("qwen3", vocab_size=1024, hidden_size=256, intermediate_size=768, num_layers=4,
                     num_heads=8, num_kv_heads=4, head_dim=32, eos_token_id=1)


def qwen_half_b_config() -> models.ModelConfig:
  """Qwen2.5-0.5B's shape: 24 layers, E 896, F 4864, 14 heads, 2 kv heads, tied 151936 vocabulary."""
  return models.qwen("qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_layers=24,
                     num_heads=14, num_kv_heads=2, head_dim=64, tie_word_embeddings=True, eos_token_id=1)


def measure_sync(cfg: models.ModelConfig, root: str, num_servers: int, repeats: int) -> dict:
  """Median seconds of each weight-sync mode (module docstring) and the policy's GB."""
  params = models.init_params(cfg, jax.random.key(0))
  first = weight_sync.write_version(cfg, params, root, version=0)
  seconds = {mode: [] for mode in weight_sync.MODES}
  version = 0
  with local_servers.LocalServers(first, num_servers, ["--num-slots", "2", "--max-length", "64"]) as servers:
    for repeat in range(-1, repeats):  # an untimed round first: both sides' first syncs compile and fault pages in
      for mode in sorted(seconds, reverse=repeat % 2 == 1):  # who goes first alternates
        version += 1
        took = asyncio.run(_sync(cfg, params, servers.urls, version, mode, root))
        if repeat >= 0:
          seconds[mode].append(took)
  size = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  return {**{mode: statistics.median(s) for mode, s in seconds.items()}, "gb": size / 1e9}


async def _sync(cfg, params, urls, version: int, mode: str, root: str) -> float:
  async with contextlib.AsyncExitStack() as stack:
    engines = [await stack.enter_async_context(rollout.SGLangEngine(url)) for url in urls]
    seconds = await weight_sync.send_version(cfg, params, engines, version, mode, root)
    versions = await asyncio.gather(*(engine.weight_version() for engine in engines))
    assert versions == [str(version)] * len(engines), versions
  return seconds


def workload(args, seed: int):
  rng = np.random.default_rng(seed)
  rollouts = []
  for _ in range(args.rollouts):
    turns = int(rng.integers(1, args.max_turns + 1))
    lengths = np.minimum(rng.lognormal(np.log(args.median_turn), 0.8, size=turns).astype(int) + 1, args.max_turn)
    tools = rng.lognormal(np.log(args.tool_ms / 1000), 1.0, size=turns)
    rollouts.append((rng.integers(0, 1000, size=args.prompt).tolist(), lengths.tolist(), tools.tolist()))
  return rollouts


async def one_rollout(generate, prompt, lengths, tools, rid):
  ids = list(prompt)
  for turn, (n, pause) in enumerate(zip(lengths, tools)):
    result = await generate(rollout.GenerateRequest(f"{rid}/t{turn}", ids, rollout.SamplingParams(
        max_new_tokens=int(n), temperature=1.0, ignore_eos=True, sampling_seed=turn)))
    ids += result.output_ids.tolist() + [7, 8, 9]
    if turn + 1 < len(lengths):
      await asyncio.sleep(pause)
  return sum(lengths)


async def run_router(urls, rollouts) -> tuple[float, int]:
  router = rollout.Router.from_urls(urls)
  async with router:
    async def one(i, r):
      async with router.caller():
        return await one_rollout(router.generate, *r, f"k{i}")
    start = time.monotonic()
    tokens = sum(await asyncio.gather(*(one(i, r) for i, r in enumerate(rollouts))))
    return time.monotonic() - start, tokens


async def run_round_robin(urls, rollouts) -> tuple[float, int]:
  engines = [rollout.SGLangEngine(url) for url in urls]
  try:
    start = time.monotonic()
    tokens = sum(await asyncio.gather(*(one_rollout(engines[i % len(engines)].generate, *r, f"r{i}")
                                        for i, r in enumerate(rollouts))))
    return time.monotonic() - start, tokens
  finally:
    for engine in engines:
      await engine.close()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--rollouts", type=int, default=192)
  parser.add_argument("--slots", type=int, default=8)
  parser.add_argument("--prompt", type=int, default=64)
  parser.add_argument("--median_turn", type=int, default=24)
  parser.add_argument("--max_turn", type=int, default=160)
  parser.add_argument("--max_turns", type=int, default=4)
  parser.add_argument("--tool_ms", type=float, default=50.0)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--router_only", action="store_true", help="skip the weight-sync table")
  parser.add_argument("--sync_servers", type=int, default=1,
                      help="servers each weight version goes to (two 0.5B-shaped fp32 servers come close to a 24 GiB host)")
  parser.add_argument("--sync_repeats", type=int, default=3)
  args = parser.parse_args()
  logging.set_verbosity(logging.INFO)
  if args.quick:
    args.rollouts, args.slots, args.max_turn, args.repeats, args.sync_repeats = 8, 2, 24, 1, 1
  configs = [] if args.router_only else [("tiny default", tiny_default_config())] + (
      [] if args.quick else [("Qwen2.5-0.5B shape", qwen_half_b_config())])
  if configs:
    print(f"weight sync to {args.sync_servers} rstar-serve, median of {args.sync_repeats} (disk: write safetensors "
          "+ /update_weights_from_disk; push: /upload_weights chunks + /update_weights_from_upload)")
    print(f"{'metric':<48}{'push':>8}{'disk':>8}")
  for name, cfg in configs:
    with tempfile.TemporaryDirectory() as root:
      m = measure_sync(cfg, root, args.sync_servers, args.sync_repeats)
    metric = f"sync seconds {name} ({m['gb']:.3f} GB)"
    print(f"{metric:<48}{m['push']:>8.4g}{m['disk']:>8.4g}{m['disk'] / m['push']:>8.2f}x")

  cfg = tiny_default_config()
  max_length = args.prompt + args.max_turns * (args.max_turn + 3) + 1
  with tempfile.TemporaryDirectory() as root:
    path = weight_sync.write_version(cfg, models.init_params(cfg, jax.random.key(0)), root, version=0)
    server_args = ["--num-slots", str(args.slots), "--max-length", str(max_length)]
    with local_servers.LocalServers(path, 2, server_args) as servers:
      runs = {"router": run_router, "round_robin": run_round_robin}
      workloads = [workload(args, seed=repeat) for repeat in range(args.repeats)]
      bar, done = progress.Progress("serve_bench: router runs (untimed, then timed)",
                                   2 * len(runs) * args.repeats), 0
      for rollouts in workloads:  # untimed: compiles the shapes each workload meets under both policies
        for run in runs.values():
          asyncio.run(run(servers.urls, rollouts))
          done += 1
          bar.update(done)
      times = {name: [] for name in runs}
      for repeat, rollouts in enumerate(workloads):
        for name in sorted(runs, reverse=repeat % 2 == 1):  # who goes first alternates
          seconds, tokens = asyncio.run(runs[name](servers.urls, rollouts))
          times[name].append(seconds / tokens)
          done += 1
          bar.update(done)
  ours, theirs = (1 / statistics.median(times[n]) for n in ("router", "round_robin"))
  print(f"\nrouter, live: {args.rollouts} rollouts, 2 servers x {args.slots} slots, median of {args.repeats}")
  print(f"{'metric':<36}{'ours':>10}{'peer':>10}")
  print(f"tokens/s Router vs round_robin   {ours:.1f}   {theirs:.1f}   {ours / theirs:.2f}x")


if __name__ == "__main__":
  main()
