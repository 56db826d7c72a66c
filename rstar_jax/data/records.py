"""The data records: one problem, one prompt batch, and counts of skipped rows.

A `Problem` is what every loader yields and every writer stores (one JSON object
per line, see `write_problems`); a `PromptBatch` is what the pipeline hands to
the rollout engines; `DataStats` counts rows read, kept and skipped by reason,
and is logged with absl so a run shows what its filters removed.
"""
import collections
import dataclasses
import json
import os
import pathlib
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np

# Reasons a row is skipped, in the order a row meets them (DataStats.log order).
SKIP_REASONS = (
    "broken_json",                # a JSONL line that is not a JSON object
    "excluded_by_schema",         # the schema's row filter (e.g. OpenMathReasoning problem_type)
    "missing_problem",            # problem field absent, empty or not a string
    "missing_answer",             # answer field absent, null or empty
    "non_integer_answer",         # integer answers required (PAPER.md §8) and this one is not
    "answer_too_long",            # integer answer with too many digits (§8, Project Euler)
    "duplicate",                  # same normalized problem text as an earlier row, same answer
    "duplicate_answer_conflict",  # same normalized text, different answer: later row dropped
    "contaminated",               # n-gram overlap with an evaluation problem (§8)
    "prompt_too_long",            # tokenized prompt longer than the prompt budget (§2.5)
    "trajectory_too_long",        # an SFT trajectory longer than a training row
)


@dataclasses.dataclass(frozen=True)
class Problem:
  """One math problem with its reference answer.

  Attributes:
    id: `"{schema}/{row id}"` for loaded rows (a text hash where the source has no id
      column), kept verbatim when read back from a problems file; unique within a load,
      where a repeat in a file is numbered `#k` and ids shared across files are qualified
      `@{file}` (`sources` module docstring).
    problem: the raw problem text, the `{QUESTION}` of PAPER.md §2.2.
    answer: the reference answer as a string; a canonical integer ("-12", no sign
      for positives, no separators) when integer answers are required.
    source: where it came from (a schema name such as "dapo_math", or "synthetic").
    meta: small JSON-able extras (e.g. family and level of a synthetic problem).
  """
  id: str
  problem: str
  answer: str
  source: str
  meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def to_json(self) -> dict[str, Any]:
    row = {"id": self.id, "problem": self.problem, "answer": self.answer, "source": self.source}
    if self.meta:
      row["meta"] = dict(self.meta)
    return row


@dataclasses.dataclass(frozen=True)
class PromptBatch:
  """One process's share of a step's prompts, ready for a rollout engine.

  `P` below is the per-process batch size.

  Attributes:
    ids: [P] problem ids.
    problems: [P] raw problem texts.
    answers: [P] reference answers (strings, see `Problem.answer`).
    sources: [P] problem sources.
    prompt_ids: [P] int32 arrays, each the token ids of `chat.prompt_text(problem)`
      (ragged: prompts differ in length; none is longer than the prompt budget).
    prompt_lens: [P] int32, the lengths of `prompt_ids`.
  """
  ids: tuple[str, ...]
  problems: tuple[str, ...]
  answers: tuple[str, ...]
  sources: tuple[str, ...]
  prompt_ids: tuple[np.ndarray, ...]
  prompt_lens: np.ndarray

  def __len__(self) -> int:
    return len(self.ids)


@dataclasses.dataclass
class DataStats:
  """Counts of rows read, kept and skipped (by reason) while building a dataset.

  Attributes:
    rows_read: rows seen in the files (including bad ones).
    kept: rows that became problems.
    skipped: reason (one of SKIP_REASONS) -> count.
  """
  rows_read: int = 0
  kept: int = 0
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  def skip(self, reason: str, count: int = 1) -> None:
    if reason not in SKIP_REASONS:
      raise ValueError(f"unknown skip reason {reason!r}; expected one of {SKIP_REASONS}")
    self.skipped[reason] += count

  def merge(self, other: "DataStats") -> None:
    self.rows_read += other.rows_read
    self.kept += other.kept
    self.skipped.update(other.skipped)

  def to_dict(self) -> dict[str, Any]:
    return {"rows_read": self.rows_read, "kept": self.kept,
            "skipped": {r: self.skipped[r] for r in SKIP_REASONS if self.skipped[r]}}

  def log(self, what: str) -> None:
    """Logs one line: rows read, kept, and each non-zero skip reason."""
    parts = ", ".join(f"{r}={self.skipped[r]}" for r in SKIP_REASONS if self.skipped[r])
    logging.info("%s: %d rows read, %d kept, skipped: %s", what, self.rows_read, self.kept,
                 parts or "none")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
  """Writes `obj` as indented JSON to `path` via a temporary file and a rename."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
  os.replace(tmp, path)


def write_jsonl_atomic(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
  """Writes one JSON object per line (UTF-8, non-ASCII kept) via a temporary file."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  with tmp.open("w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  os.replace(tmp, path)


def write_problems(path: str | os.PathLike, problems: Sequence[Problem],
                   extra: Sequence[Mapping[str, Any]] | None = None) -> None:
  """Writes problems as JSONL (the "problems" schema of `sources.SCHEMAS`).

  Args:
    path: output file; parent directories are created; written atomically.
    problems: the rows, in order.
    extra: optional per-problem extra fields merged into each row (same length).
  """
  if extra is not None and len(extra) != len(problems):
    raise ValueError(f"extra has {len(extra)} rows for {len(problems)} problems")
  rows = [p.to_json() | (dict(extra[i]) if extra is not None else {})
          for i, p in enumerate(problems)]
  write_jsonl_atomic(path, rows)
