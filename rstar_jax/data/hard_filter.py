"""The stage-3 hard-problem filter: keep the problems the current policy does not always solve.

PAPER.md §7 (stage 2 -> 3): the step-385 policy rolls out 8 times on each of the
42K problems; problems solved 8/8 are removed, leaving 17.3K. Here the policy is a
rollout function, so the same step serves any engine:

  rollout_fn(problems: Sequence[Problem], n: int) -> rewards [len(problems), n] float

A rollout counts as correct when its reward is >= 0.5 (rewards are 1 for a correct
final answer and 0 otherwise, PAPER.md §4). A problem with c_i correct rollouts out
of n is dropped when c_i = n and kept otherwise. The kept problems are written as a
problems JSONL file (`records.write_problems`, loadable as "problems:PATH", with
`num_correct` / `num_samples` per row) and the statistics as JSON beside it.

Long filters resume: each finished chunk is appended to `PATH.progress.jsonl` with one
write, then flushed and fsync-ed, and a rerun over the same problems skips the rows
found there; the file is removed once the outputs are written. A hard kill (SIGKILL,
power loss) during a write can leave a last line without its newline: a rerun drops
that partial line (cutting it from the file) and redoes its problems. Any other bad
line is an error naming the file and line.
"""
import collections
import json
import os
import pathlib
import time
from typing import Any, Callable, Sequence

from absl import logging
import numpy as np

from rstar_jax.data import records

RolloutFn = Callable[[Sequence[records.Problem], int], Any]


def _rewards(rollout_fn: RolloutFn, chunk: Sequence[records.Problem], n: int) -> np.ndarray:
  rewards = np.asarray(rollout_fn(chunk, n), dtype=np.float64)
  if rewards.shape != (len(chunk), n):
    raise ValueError(f"rollout_fn returned rewards of shape {rewards.shape}, expected "
                     f"({len(chunk)}, {n}) = (problems, num_samples)")
  if not np.all(np.isfinite(rewards)):
    raise ValueError("rollout_fn returned non-finite rewards")
  return rewards


def _read_progress(path: pathlib.Path, problems: Sequence[records.Problem],
                   n: int) -> list[tuple[int, float]]:
  """(num_correct, mean reward) of the problems finished in an earlier run.

  A trailing line without a newline (a write cut by a kill) is dropped and cut from the file,
  so that appends start on a fresh line.
  """
  if not path.exists():
    return []
  content = path.read_bytes()
  complete = content[:content.rfind(b"\n") + 1]
  if len(complete) < len(content):
    logging.warning("hard filter: dropping a partial last line of %s (%d bytes, an interrupted "
                    "write); its problems run again", path, len(content) - len(complete))
    with path.open("r+b") as f:
      f.truncate(len(complete))
  done = []
  for number, line in enumerate(complete.splitlines(), start=1):
    try:
      row = json.loads(line.decode("utf-8"))
      key = (row["id"], row["num_samples"])
      result = (int(row["num_correct"]), float(row["mean_reward"]))
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"'{path}' line {number} is not a progress row ({e}): {line[:200]!r}; "
                       "remove the file to start over") from e
    i = len(done)
    if i >= len(problems) or key != (problems[i].id, n):
      raise ValueError(f"'{path}' comes from another filter run (line {number}: {row}); remove "
                       "it to start over")
    done.append(result)
  logging.info("hard filter: resuming after %d finished problems from %s", len(done), path)
  return done


def _append_durably(f, text: str) -> None:
  """Appends `text` with one write, then flushes and fsyncs, so finished work survives a kill."""
  f.write(text.encode("utf-8"))
  f.flush()
  os.fsync(f.fileno())


def filter_hard_problems(problems: Sequence[records.Problem], rollout_fn: RolloutFn,
                         num_samples: int, out_path: str | pathlib.Path, *,
                         chunk_size: int = 256) -> dict[str, Any]:
  """Rolls out `num_samples` times per problem, drops those always solved, writes the rest.

  Args:
    problems: the candidate problems (e.g. the stage-2 set).
    rollout_fn: `(problems, n) -> rewards [len(problems), n]` of the current policy.
    num_samples: n rollouts per problem (PAPER.md §7: 8).
    out_path: the kept set, JSONL; the statistics go to `out_path` with the suffix
      `.stats.json` (e.g. `hard.jsonl` -> `hard.stats.json`).
    chunk_size: problems per `rollout_fn` call (and per progress line in the log).

  Returns:
    The statistics written: num_problems, num_samples, num_kept, num_dropped_solved,
    kept_fraction, mean_reward, num_correct_histogram ("c" -> number of problems with
    c of n correct), per_source (problems, kept, mean_reward), kept_file.
  """
  if not isinstance(num_samples, int) or num_samples < 1:
    raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
  if not isinstance(chunk_size, int) or chunk_size < 1:
    raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
  if not problems:
    raise ValueError("no problems to filter")
  out_path = pathlib.Path(out_path)
  progress_path = out_path.with_name(out_path.name + ".progress.jsonl")
  out_path.parent.mkdir(parents=True, exist_ok=True)
  results = _read_progress(progress_path, problems, num_samples)
  start_time, start_count = time.monotonic(), len(results)
  with progress_path.open("ab") as progress:
    for begin in range(len(results), len(problems), chunk_size):
      chunk = problems[begin:begin + chunk_size]
      rewards = _rewards(rollout_fn, chunk, num_samples)
      lines = []
      for problem, row in zip(chunk, rewards):
        num_correct, mean_reward = int((row >= 0.5).sum()), float(row.mean())
        results.append((num_correct, mean_reward))
        lines.append(json.dumps({"id": problem.id, "num_samples": num_samples,
                                 "num_correct": num_correct, "mean_reward": mean_reward}) + "\n")
      _append_durably(progress, "".join(lines))
      done = len(results)
      rate = (done - start_count) / max(time.monotonic() - start_time, 1e-9)
      solved = sum(c == num_samples for c, _ in results)
      logging.info("hard filter: %d/%d problems, %.1f%% solved %d/%d, ETA %.0fs", done,
                   len(problems), 100 * solved / done, num_samples, num_samples,
                   (len(problems) - done) / rate)
  stats = _write_outputs(problems, results, num_samples, out_path)
  progress_path.unlink()
  return stats


def _write_outputs(problems: Sequence[records.Problem], results: Sequence[tuple[int, float]],
                   num_samples: int, out_path: pathlib.Path) -> dict[str, Any]:
  keep = [c < num_samples for c, _ in results]
  kept = [p for p, k in zip(problems, keep) if k]
  records.write_problems(out_path, kept, extra=[
      {"num_correct": c, "num_samples": num_samples} for (c, _), k in zip(results, keep) if k])
  histogram = collections.Counter(c for c, _ in results)
  per_source: dict[str, dict[str, Any]] = {}
  for problem, (_, mean_reward), k in zip(problems, results, keep):
    entry = per_source.setdefault(problem.source, {"problems": 0, "kept": 0, "reward_sum": 0.0})
    entry["problems"] += 1
    entry["kept"] += int(k)
    entry["reward_sum"] += mean_reward
  stats = {
      "num_problems": len(problems),
      "num_samples": num_samples,
      "num_kept": len(kept),
      "num_dropped_solved": len(problems) - len(kept),
      "kept_fraction": len(kept) / len(problems),
      "mean_reward": sum(r for _, r in results) / len(problems),
      "num_correct_histogram": {str(c): histogram[c] for c in range(num_samples + 1)},
      "per_source": {s: {"problems": e["problems"], "kept": e["kept"],
                         "mean_reward": e["reward_sum"] / e["problems"]}
                     for s, e in sorted(per_source.items())},
      "kept_file": str(out_path),
  }
  records.write_json_atomic(out_path.with_suffix(".stats.json"), stats)
  logging.info("hard filter: kept %d of %d problems (%.1f%%) -> %s", len(kept), len(problems),
               100 * stats["kept_fraction"], out_path)
  return stats
