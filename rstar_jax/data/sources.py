"""Loaders for the paper's problem sources and evaluation sets (PAPER.md §8, §10).

A source is named in config as `"SCHEMA:PATH"`, e.g.
`"dapo_math:data/DAPO-Math-17k-Processed/en/train-*.parquet"`; the schema says which
fields of a row hold the problem, the answer and the id in that dataset's Hugging
Face export (checked against the dataset cards):

| schema            | Hub dataset                               | problem    | answer           | id                 |
|-------------------|-------------------------------------------|------------|------------------|--------------------|
| dapo_math         | open-r1/DAPO-Math-17k-Processed (en)      | prompt     | solution         | extra_info.index   |
| openmathreasoning | nvidia/OpenMathReasoning (cot/tir/...)    | problem    | expected_answer  | (text hash)        |
| project_euler     | alexandonian/project-euler                | problem    | numerical_answer | id                 |
| aime_2024         | HuggingFaceH4/aime_2024                   | problem    | answer           | id                 |
| aime_2025         | opencompass/AIME2025 (AIME2025-I, -II)    | question   | answer           | (text hash)        |
| math_500          | HuggingFaceH4/MATH-500                    | problem    | answer           | unique_id          |
| hmmt_feb_2025     | MathArena/hmmt_feb_2025                   | problem    | answer           | problem_idx        |
| problems          | our own JSONL (`records.write_problems`)  | problem    | answer           | id (verbatim)      |

OpenMathReasoning rows are one per generated solution, so the same problem repeats
(deduplication removes the repeats), and only rows with
`problem_type == "has_answer_extracted"` are problems with a usable answer; the
paper's further cleaning (Qwen3-32B answer agreement) needs a model and is not done
here. Bad rows are skipped and counted (`records.SKIP_REASONS`); they never stop a
load. A path that matches no file is one ValueError naming the config field.

Ids. A row's id is `{schema}/{row id}` (the id column, or the first 16 hex digits of the
SHA-1 of the problem text where the source has none; our own files keep theirs verbatim).
The ids of one load (`read_source`, or `load_problems` after deduplication and
decontamination) are unique:
  * Within a file, a repeated id on a row with the same problem text is a repeat of that
    problem (OpenMathReasoning has one row per solution): the k-th occurrence is
    `{id}#{k}` (k >= 2). Deduplication, on by default, drops such repeats first. The same
    id on a different text contradicts the file's id column: a ValueError naming both rows.
  * Across files, id columns may restart (DAPO-Math-17k-Processed's `en` and `cn` both
    number from 0). When rows of different files share an id, every row of each such file
    is qualified with the file, `{id}@{file}`, `file` being its path relative to the
    directory those files have in common: "dapo_math/17@cn/train-00000-of-00001.parquet".
    Other files keep their plain ids, so adding an unrelated source changes no id.
  * An id still shared after that (the same file listed twice, with deduplication off) is
    a ValueError naming both rows.
"""
import collections
import dataclasses
import hashlib
import os
import pathlib
from typing import Any, NamedTuple, Sequence

from absl import logging

from rstar_jax import rewards
from rstar_jax.data import decontam
from rstar_jax.data import files
from rstar_jax.data import filters
from rstar_jax.data import records

# How many skipped rows per reason are logged with their file location.
_EXAMPLES_PER_REASON = 3


@dataclasses.dataclass(frozen=True)
class Schema:
  """Where a dataset's rows keep their fields (dotted paths reach into structs).

  Attributes:
    name: the SCHEMA of a `"SCHEMA:PATH"` spec, and the default problem source.
    hub_id: the Hugging Face dataset this layout comes from (for documentation).
    problem: field of the problem text.
    answer: field of the reference answer.
    id: field of a row id; None (or an empty value): a hash of the problem text.
    keep: optional (field, allowed values): other rows count as "excluded_by_schema".
    verbatim: ids and sources are taken from the row as written (our own files).
  """
  name: str
  hub_id: str
  problem: str
  answer: str
  id: str | None = None
  keep: tuple[str, tuple[str, ...]] | None = None
  verbatim: bool = False

  def columns(self) -> list[str]:
    fields = [self.problem, self.answer, self.id, self.keep[0] if self.keep else None]
    fields += ["source", "meta"] if self.verbatim else []
    return [f.split(".")[0] for f in fields if f]


SCHEMAS = {s.name: s for s in (
    Schema("dapo_math", "open-r1/DAPO-Math-17k-Processed", "prompt", "solution",
           id="extra_info.index"),
    Schema("openmathreasoning", "nvidia/OpenMathReasoning", "problem", "expected_answer",
           keep=("problem_type", ("has_answer_extracted",))),
    Schema("project_euler", "alexandonian/project-euler", "problem", "numerical_answer", id="id"),
    Schema("aime_2024", "HuggingFaceH4/aime_2024", "problem", "answer", id="id"),
    Schema("aime_2025", "opencompass/AIME2025", "question", "answer"),
    Schema("math_500", "HuggingFaceH4/MATH-500", "problem", "answer", id="unique_id"),
    Schema("hmmt_feb_2025", "MathArena/hmmt_feb_2025", "problem", "answer", id="problem_idx"),
    Schema("problems", "-", "problem", "answer", id="id", verbatim=True),
)}


def parse_spec(spec: str, field: str) -> tuple[Schema, str]:
  """Splits `"SCHEMA:PATH"` into its schema and path; `field` is named in errors."""
  name, sep, path = str(spec).partition(":")
  if not sep or not path or name not in SCHEMAS:
    raise ValueError(f"{field}={spec!r}: expected 'SCHEMA:PATH' with SCHEMA one of "
                     f"{sorted(SCHEMAS)}")
  return SCHEMAS[name], path


def _get(row: dict[str, Any], dotted: str) -> Any:
  value: Any = row
  for part in dotted.split("."):
    if not isinstance(value, dict):
      return None
    value = value.get(part)
  return value


class _Skipper:
  """Counts a skipped row and logs the first few locations per reason."""

  def __init__(self, stats: records.DataStats):
    self.stats = stats
    self.logged = collections.Counter()

  def __call__(self, reason: str, location: str) -> None:
    self.stats.skip(reason)
    if self.logged[reason] < _EXAMPLES_PER_REASON:
      self.logged[reason] += 1
      logging.warning("skipped %s (%s)", location, reason)


def _row_to_problem(row: dict[str, Any] | None, schema: Schema, location: str,
                    integer_answers: bool, max_answer_digits: int,
                    skip: _Skipper) -> records.Problem | None:
  if row is None:
    skip("broken_json", location)
    return None
  if schema.keep and _get(row, schema.keep[0]) not in schema.keep[1]:
    skip("excluded_by_schema", location)
    return None
  text = _get(row, schema.problem)
  if not isinstance(text, str) or not text.strip():
    skip("missing_problem", location)
    return None
  answer = filters.field_text(_get(row, schema.answer))
  if answer is None:
    skip("missing_answer", location)
    return None
  if integer_answers:
    integer = rewards.canonical_integer(answer)
    if integer is None:
      skip("non_integer_answer", location)
      return None
    if len(integer.lstrip("-")) > max_answer_digits:
      skip("answer_too_long", location)
      return None
    answer = integer
  row_id = filters.field_text(_get(row, schema.id)) if schema.id else None
  if schema.verbatim:
    source = filters.field_text(row.get("source")) or schema.name
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    if row_id is None:
      row_id = f"{source}/{hashlib.sha1(text.encode()).hexdigest()[:16]}"
    return records.Problem(row_id, text, answer, source, meta)
  row_id = row_id or hashlib.sha1(text.encode()).hexdigest()[:16]
  return records.Problem(f"{schema.name}/{row_id}", text, answer, schema.name)


class _Row(NamedTuple):
  """A loaded problem with where it came from: its file (resolved path), location and field."""
  problem: records.Problem
  path: str
  location: str
  field: str


def _renamed(problem: records.Problem, new_id: str) -> records.Problem:
  return records.Problem(new_id, problem.problem, problem.answer, problem.source, problem.meta)


def _check_file_ids(rows: Sequence[_Row]) -> None:
  """Raises if one file gives one id to two different problems (rows of one file, in order)."""
  first: dict[str, _Row] = {}
  for row in rows:
    earlier = first.setdefault(row.problem.id, row)
    if earlier is not row and earlier.problem.problem != row.problem.problem:
      raise ValueError(f"{row.field}: rows {earlier.location} and {row.location} have the same "
                       f"id {row.problem.id!r} but different problems; ids must be unique "
                       "within a file")


def _unique_ids(rows: Sequence[_Row]) -> list[records.Problem]:
  """The rows' problems with unique ids: repeats numbered, shared ids qualified by file.

  Rules in the module docstring; rows come in load order, each file checked by
  `_check_file_ids`, so one id within one file (and spec) is one problem.
  """
  occurrences: collections.Counter = collections.Counter()
  files_of_id = collections.defaultdict(set)
  numbered = []
  for row in rows:
    key = (row.problem.id, row.path, row.field)
    occurrences[key] += 1
    if occurrences[key] > 1:
      row = row._replace(problem=_renamed(row.problem, f"{row.problem.id}#{occurrences[key]}"))
    files_of_id[row.problem.id].add(row.path)
    numbered.append(row)
  shared = {path for paths in files_of_id.values() if len(paths) > 1 for path in paths}
  if shared:
    common = os.path.commonpath([os.path.dirname(path) for path in shared])
    tags = {path: pathlib.Path(path).relative_to(common).as_posix() for path in shared}
    numbered = [row._replace(problem=_renamed(row.problem, f"{row.problem.id}@{tags[row.path]}"))
                if row.path in shared else row for row in numbered]
    logging.info("problem ids shared across files: ids of %s qualified with the file",
                 sorted(tags.values()))
  seen: dict[str, _Row] = {}
  for row in numbered:
    earlier = seen.setdefault(row.problem.id, row)
    if earlier is not row:
      raise ValueError(f"problem id {row.problem.id!r} is used by {earlier.field} "
                       f"({earlier.location}) and {row.field} ({row.location}); is a file "
                       "listed twice?")
  return [row.problem for row in numbered]


def _check_columns(path: pathlib.Path, schema: Schema, field: str) -> None:
  if path.suffix != ".parquet":
    return
  present = files.parquet_columns(path)
  required = [f.split(".")[0] for f in (schema.problem, schema.answer)]
  missing = [c for c in required if c not in present]
  if missing:
    raise ValueError(f"{field}: '{path}' has no column {missing} required by schema "
                     f"'{schema.name}' (its columns: {present})")


def _read_rows(spec: str, field: str, integer_answers: bool,
               max_answer_digits: int) -> tuple[list[_Row], records.DataStats]:
  """Every kept row of one spec, each file's ids checked; counts and logs the rest."""
  schema, pattern = parse_spec(spec, field)
  stats = records.DataStats()
  skip = _Skipper(stats)
  rows = []
  for path in files.resolve(pattern, field):
    _check_columns(path, schema, field)
    file_rows, resolved = [], str(path.resolve())
    for location, row in files.iter_rows(path, schema.columns()):
      stats.rows_read += 1
      problem = _row_to_problem(row, schema, location, integer_answers, max_answer_digits, skip)
      if problem is not None:
        file_rows.append(_Row(problem, resolved, location, field))
    if schema.id:  # text-hash ids are equal only for equal texts
      _check_file_ids(file_rows)
    rows += file_rows
  stats.kept = len(rows)
  stats.log(f"{field} ({spec})")
  if stats.rows_read and not rows:
    logging.warning("%s: none of %d rows was kept; do the files match schema '%s' (problem "
                    "field %r, answer field %r)?", field, stats.rows_read, schema.name,
                    schema.problem, schema.answer)
  return rows, stats


def read_source(spec: str, field: str, *, integer_answers: bool = True,
                max_answer_digits: int = 40) -> tuple[list[records.Problem], records.DataStats]:
  """Reads every row of one `"SCHEMA:PATH"` source into problems with unique ids.

  Args:
    spec: `"SCHEMA:PATH"`, PATH a file, directory or glob (see `files.resolve`).
    field: the config field the spec came from (e.g. "config.data.train_files[0]"),
      named in errors.
    integer_answers: require integer answers (PAPER.md §8); canonicalizes them
      (`rewards.canonical_integer`).
    max_answer_digits: integer answers with more digits are "answer_too_long".

  Returns:
    The problems in file order (ids as in the module docstring), and the counts of rows
    read, kept and skipped.

  Raises:
    ValueError: the spec is malformed, no file matches, a Parquet file lacks a required
      column, or a file gives one id to two different problems.
  """
  rows, stats = _read_rows(spec, field, integer_answers, max_answer_digits)
  return _unique_ids(rows), stats


def load_problems(specs: Sequence[str], field: str, *, integer_answers: bool = True,
                  max_answer_digits: int = 40, deduplicate: bool = True,
                  decontam_index: decontam.NgramIndex | None = None,
                  ) -> tuple[list[records.Problem], records.DataStats]:
  """Reads several sources, then deduplicates and decontaminates the union.

  Args:
    specs: `"SCHEMA:PATH"` strings (the value of a config field such as
      `config.data.train_files`).
    field: that config field's name, for messages (`{field}[i]` names one spec).
    integer_answers, max_answer_digits: see `read_source`.
    deduplicate: drop repeated problem texts across and within sources
      (`filters.dedup`; the first occurrence, in spec order, wins).
    decontam_index: when given, drop problems overlapping its evaluation sets.

  Returns:
    The problems in spec and file order, ids unique over the result (module docstring),
    and the merged counts.

  Raises:
    ValueError: as `read_source`, or an id still shared after qualification by file.
  """
  if isinstance(specs, str) or not specs:
    raise ValueError(f"{field}={specs!r}: expected a non-empty list of 'SCHEMA:PATH' strings")
  stats = records.DataStats()
  rows = []
  for i, spec in enumerate(specs):
    part, part_stats = _read_rows(spec, f"{field}[{i}]", integer_answers, max_answer_digits)
    rows += part
    stats.merge(part_stats)
  problems = [row.problem for row in rows]
  if deduplicate:
    problems = filters.dedup(problems, stats)
  if decontam_index is not None:
    problems = decontam.decontaminate(problems, decontam_index, stats)
  kept = {id(problem) for problem in problems}  # the filters return the same objects
  problems = _unique_ids([row for row in rows if id(row.problem) in kept])
  stats.log(field)
  return problems, stats
