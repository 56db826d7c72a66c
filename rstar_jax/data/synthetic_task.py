"""Writes the synthetic task of the tiny default: train/eval problems, SFT traces, statistics.

Files written under `out_dir` (all deterministic in the seed):

  train.jsonl       RL problems (load with "problems:OUT/train.jsonl")
  eval.jsonl        evaluation problems
  sft.jsonl         SFT traces (`sft_traces`), on their own problems ("sft" split)
  task_stats.json   problems per split / family / level, and `sft_traces.trace_stats`

The three splits share no problem text (`synthetic_splits`): eval is drawn first, train
redraws what eval holds, and sft redraws what eval or train holds, so neither RL training
nor evaluation meets a problem the SFT traces solved.
"""
import collections
import os
import pathlib
from typing import Any, Callable, Sequence

from absl import logging

from rstar_jax import chat
from rstar_jax import sandbox
from rstar_jax.data import records
from rstar_jax.data import sft_traces
from rstar_jax.data import synthetic


def _split_counts(items: Sequence[synthetic.SyntheticItem]) -> dict[str, Any]:
  counts = collections.Counter((i.problem.meta["family"], i.problem.meta["level"]) for i in items)
  return {"num_problems": len(items),
          "by_family_level": {f"{family}/{level}": counts[family, level]
                              for family in synthetic.FAMILIES for level in synthetic.LEVELS
                              if counts[family, level]}}


def synthetic_splits(seed: int, *, num_train: int, num_eval: int, num_sft: int,
                     families: Sequence[str] = synthetic.FAMILIES,
                     levels: Sequence[int] = synthetic.LEVELS,
                     ) -> dict[str, list[synthetic.SyntheticItem]]:
  """The task's "train", "eval" and "sft" problems, pairwise disjoint in problem text.

  Args:
    seed: the task seed.
    num_train, num_eval, num_sft: problems per split.
    families, levels: the problem grid (`synthetic.synthetic_problems`).

  Returns:
    {"train": [...], "eval": [...], "sft": [...]}, each in item order.
  """
  grid = {"families": families, "levels": levels}
  evaluation = synthetic.synthetic_problems(seed, "eval", num_eval, **grid)
  taken = frozenset(item.problem.problem for item in evaluation)
  train = synthetic.synthetic_problems(seed, "train", num_train, exclude=taken, **grid)
  taken |= {item.problem.problem for item in train}
  sft = synthetic.synthetic_problems(seed, "sft", num_sft, exclude=taken, **grid)
  return {"train": train, "eval": evaluation, "sft": sft}


def write_synthetic_task(out_dir: str | os.PathLike, seed: int, *, num_train: int,
                         num_eval: int, num_sft: int,
                         mix: sft_traces.TraceMix = sft_traces.TraceMix(),
                         families: Sequence[str] = synthetic.FAMILIES,
                         levels: Sequence[int] = synthetic.LEVELS,
                         prompt_format: chat.ChatFormat = chat.DEFAULT_FORMAT,
                         tool_text: Callable[[sandbox.ExecutionResult], str] = sft_traces.released_tool_text,
                         traceback: str = "short") -> dict[str, Any]:
  """Generates and writes the task; returns the statistics also written to task_stats.json.

  Args:
    out_dir: output directory (created).
    seed: the task seed.
    num_train, num_eval, num_sft: problems per split (SFT: one trace each).
    mix: the SFT trace kinds (`sft_traces.TraceMix`).
    families, levels: the problem grid (`synthetic.synthetic_problems`).
    prompt_format: the chat format of the SFT prompts.
    tool_text, traceback: the tool environment of the SFT traces (`sft_traces.make_sft_traces`).
  """
  out_dir = pathlib.Path(out_dir)
  splits = synthetic_splits(seed, num_train=num_train, num_eval=num_eval, num_sft=num_sft,
                            families=families, levels=levels)
  train, evaluation, sft_items = splits["train"], splits["eval"], splits["sft"]
  traces = sft_traces.make_sft_traces(sft_items, seed, mix, prompt_format=prompt_format, tool_text=tool_text,
                                      traceback=traceback)
  records.write_problems(out_dir / "train.jsonl", [item.problem for item in train])
  records.write_problems(out_dir / "eval.jsonl", [item.problem for item in evaluation])
  sft_traces.write_sft_traces(out_dir / "sft.jsonl", traces)
  stats = {"seed": seed, "train": _split_counts(train), "eval": _split_counts(evaluation),
           "sft": _split_counts(sft_items) | sft_traces.trace_stats(traces)}
  records.write_json_atomic(out_dir / "task_stats.json", stats)
  logging.info("synthetic task (seed %d) -> %s: %d train, %d eval, %d SFT traces (accuracy %.2f, "
               "tool error ratio %.2f)", seed, out_dir, num_train, num_eval, num_sft,
               stats["sft"]["accuracy"], stats["sft"]["tool_error_ratio"])
  return stats
