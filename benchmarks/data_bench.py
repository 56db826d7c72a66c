"""Data pipeline throughput, each stage beside a minimal plain-Python/pyarrow peer.

  python benchmarks/data_bench.py [--rows 100000] [--eval_problems 600] [--batch 512] [--traces 200]

Rows (rates, higher is better):
  load rows/s        `read_source` + dedup of an OpenMathReasoning-layout Parquet file (one
                     row per solution, so problems repeat; a 2 KB solution column is never
                     read) vs pyarrow `read_table(columns)` + `to_pylist` + a dict dedup
  decontam probs/s   `NgramIndex.match` (normalized words, 8-grams) vs whitespace-split
                     8-gram tuples in a set (no normalization)
  encode prompts/s   `encode_prompts` (PAPER.md §2.2 prompt, CharTokenizer) vs the same
                     `tokenizer.encode(chat.prompt_text(...))` loop without the bookkeeping
  stream batches/s   `PromptIterator` (Grain, sharding, state) vs indexing a numpy permutation
Then SFT trace generation (traces/s; one fresh Python process per snippet), alone.
"""
import argparse
import os
import pathlib
import random
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rstar_jax import chat
from rstar_jax import data

_WORDS = ("find", "the", "number", "of", "integers", "such", "that", "sum", "is", "prime", "let",
          "triangle", "with", "sides", "compute", "remainder", "when", "divided", "by", "$x^2$",
          "$\\frac{a}{b}$", "circle", "radius", "points", "probability", "expected", "value")


def _text(rng: random.Random, words: int) -> str:
  return " ".join(rng.choice(_WORDS) for _ in range(words)) + f" {rng.randint(0, 10**9)}?"


def _write_omr(path: pathlib.Path, rows: int, rng: random.Random) -> None:
  unique = [_text(rng, 50) for _ in range(max(1, rows // 3))]
  table = pa.Table.from_pylist([
      {"expected_answer": str(rng.randint(0, 999)) if rng.random() < 0.8 else "\\frac{1}{2}",
       "problem_type": "has_answer_extracted", "problem_source": "aops_c6",
       "generation_model": "DeepSeek-R1", "problem": unique[i % len(unique)],
       "generated_solution": "x" * 2048, "inference_mode": "cot"} for i in range(rows)])
  pq.write_table(table, path)


def _rate(count: int, fn) -> float:
  start = time.perf_counter()
  fn()
  return count / (time.perf_counter() - start)


def _peer_load(path: pathlib.Path) -> list[tuple[str, str]]:
  rows = pq.read_table(path, columns=["problem", "expected_answer", "problem_type"]).to_pylist()
  seen = {}
  for row in rows:
    if row["problem_type"] == "has_answer_extracted" and row["expected_answer"].isdigit():
      seen.setdefault(row["problem"], row["expected_answer"])
  return list(seen.items())


def _peer_index(texts):
  grams = set()
  for text in texts:
    words = text.split()
    grams.update(tuple(words[i:i + 8]) for i in range(len(words) - 7))
  return grams


def _peer_match(grams, text) -> bool:
  words = text.split()
  return any(tuple(words[i:i + 8]) in grams for i in range(len(words) - 7))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=100_000)
  parser.add_argument("--eval_problems", type=int, default=600)
  parser.add_argument("--batch", type=int, default=512)
  parser.add_argument("--traces", type=int, default=200)
  args = parser.parse_args()
  rng = random.Random(0)
  print(f"== data pipeline == load average {', '.join(f'{x:.2f}' for x in os.getloadavg())} on "
        f"{os.cpu_count()} cores (timings are noisy; compare ratios)")
  table = []
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "cot-00000-of-00001.parquet"
    _write_omr(path, args.rows, rng)
    problems = []
    ours = _rate(args.rows, lambda: problems.extend(
        data.load_problems([f"openmathreasoning:{path}"], "bench")[0]))
    peer_rows = []
    peer = _rate(args.rows, lambda: peer_rows.extend(_peer_load(path)))
    assert len(peer_rows) == len(problems), (len(peer_rows), len(problems))
    table.append(("load rows/s", ours, peer))

  evaluation = [data.Problem(f"e/{i}", _text(rng, 60), "1", "eval")
                for i in range(args.eval_problems)]
  index, grams = data.NgramIndex(evaluation), _peer_index([p.problem for p in evaluation])
  texts = [p.problem for p in problems]
  table.append(("decontam problems/s", _rate(len(texts), lambda: [index.match(t) for t in texts]),
                _rate(len(texts), lambda: [_peer_match(grams, t) for t in texts])))

  tokenizer, subset = chat.CharTokenizer(), problems[:5000]
  prompts = []
  ours = _rate(len(subset), lambda: prompts.extend(
      data.encode_prompts(subset, tokenizer, 4096, data.DataStats())))
  peer = _rate(len(subset), lambda: [np.asarray(tokenizer.encode(chat.prompt_text(p.problem)),
                                                np.int32) for p in subset])
  table.append(("encode prompts/s", ours, peer))

  steps = 200
  iterator = data.PromptIterator(prompts, args.batch, seed=0, process_index=0, process_count=1)
  order = np.random.default_rng(0).permutation(len(prompts))
  ours = _rate(steps, lambda: [next(iterator) for _ in range(steps)])
  peer = _rate(steps, lambda: [data.collate([prompts[order[(k * args.batch + j) % len(order)]]
                                             for j in range(args.batch)]) for k in range(steps)])
  table.append((f"stream batches/s (B={args.batch})", ours, peer))

  print(f"{'metric':32} {'ours':>12} {'peer':>12} {'ratio':>8}")
  for metric, ours, peer in table:
    print(f"{metric:32} {ours:12.1f} {peer:12.1f} {ours / peer:7.2f}x")
  print("ratio = ours / peer (> 1: ours is faster)")

  items = data.synthetic_problems(0, "sft", args.traces)
  rate = _rate(args.traces, lambda: data.make_sft_traces(items, seed=0))
  print(f"SFT traces/s: {rate:.1f} ({args.traces} traces, {os.cpu_count()} worker threads)")


if __name__ == "__main__":
  main()
