"""Local data files in the layouts of Hugging Face dataset exports: find them, read rows.

Supported: JSON Lines (`.jsonl`, or `.json` written by `Dataset.to_json`), a JSON
array (`.json` starting with `[`), and Parquet (`.parquet`, as in the Hub's
`data/train-00000-of-00001.parquet`). A path may be a file, a directory (every
data file below it, recursively, sorted, skipping `datasets` metadata files and
hidden directories) or a glob (`data/cot-*.parquet`).
"""
import glob
import json
import pathlib
from typing import Any, Iterator, Sequence

import pyarrow.parquet as pq

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
# Metadata a directory scan skips: `datasets` save/cache files and hidden directories
# (a Hub snapshot's `.cache/huggingface/`).
_METADATA_NAMES = ("dataset_info.json", "dataset_infos.json", "state.json")


def resolve(pattern: str, field: str) -> list[pathlib.Path]:
  """The data files a path, directory or glob names, sorted.

  Args:
    pattern: a file, a directory or a glob.
    field: the config field the path came from, named in the error.

  Raises:
    ValueError: naming `field` and `pattern` when nothing matches.
  """
  path = pathlib.Path(pattern).expanduser()
  if glob.has_magic(pattern):
    found = [pathlib.Path(p) for p in glob.glob(str(path), recursive=True)]
  elif path.is_dir():
    found = [p for p in path.rglob("*") if p.name not in _METADATA_NAMES
             and not any(part.startswith(".") for part in p.relative_to(path).parts)]
  else:
    found = [path] if path.is_file() else []
  found = sorted(p for p in found if p.is_file() and p.suffix in DATA_SUFFIXES)
  if not found:
    kind = "directory holds no" if path.is_dir() else "path matches no"
    raise ValueError(f"{field}: {kind} data file: '{pattern}' (expected {', '.join(DATA_SUFFIXES)} "
                     "files, a directory of them, or a glob)")
  return found


def parquet_columns(path: pathlib.Path) -> list[str]:
  """The top-level column names of a Parquet file."""
  try:
    return list(pq.ParquetFile(path).schema_arrow.names)
  except Exception as e:  # pyarrow raises several types for a corrupt file
    raise ValueError(f"cannot read Parquet file '{path}': {e}") from e


def iter_rows(path: pathlib.Path,
              columns: Sequence[str]) -> Iterator[tuple[str, dict[str, Any] | None]]:
  """Yields `(location, row)` for every row of a data file.

  Args:
    path: a file returned by `resolve`.
    columns: the top-level fields needed; Parquet reads only those that exist
      (OpenMathReasoning's solution column alone is tens of GB).

  Yields:
    location: "path:line" (JSON Lines, 1-based) or "path:row" (Parquet / JSON
      array, 0-based), for messages.
    row: the row as a dict, or None when the line is not a JSON object (a bad row
      the caller counts as "broken_json").
  """
  if path.suffix == ".parquet":
    yield from _parquet_rows(path, columns)
    return
  with path.open("r", encoding="utf-8", errors="replace") as f:
    head = f.read(4096).lstrip()
    f.seek(0)
    if path.suffix == ".json" and head.startswith("["):
      try:
        items = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"'{path}' is not valid JSON: {e}") from e
      for i, item in enumerate(items):
        yield f"{path}:{i}", item if isinstance(item, dict) else None
      return
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        row = None
      yield f"{path}:{number}", row if isinstance(row, dict) else None


def _parquet_rows(path: pathlib.Path,
                  columns: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
  present = set(parquet_columns(path))
  wanted = [c for c in dict.fromkeys(columns) if c in present]
  index = 0
  try:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096, columns=wanted):
      for row in batch.to_pylist():
        yield f"{path}:{index}", row
        index += 1
  except OSError as e:
    raise ValueError(f"cannot read Parquet file '{path}' at row {index}: {e}") from e
