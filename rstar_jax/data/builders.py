"""Builds a run's problems and prompt stream from its config.

Fields read from the data section (`config.data`; the stage list is read by
`curriculum.curriculum_from_config`):

  train_files        list of "SCHEMA:PATH" (see `sources`), the training problems;
                     a curriculum stage's own `train_files` replace it
  decontam_files     list of "SCHEMA:PATH" (default empty: no decontamination), the
                     evaluation sets whose n-grams training problems must not share
                     (PAPER.md §8: MATH-500, AIME24, AIME25, HMMT25)
  decontam_ngram     int (default 8), the n of the n-gram overlap test
  integer_answers    bool (default True), keep only integer answers (§8)
  max_answer_digits  int (default 40), drop longer integer answers (§8, Project Euler)
  deduplicate        bool (default True), drop repeated problem texts
  max_prompt_tokens  int (default 2048), the prompt budget (§2.5)
  prompts_per_step   int, prompts per RL step over all processes (§7: 512)
  seed               int, the shuffle seed
"""
from typing import Any, Sequence

from rstar_jax import chat
from rstar_jax.data import decontam
from rstar_jax.data import pipeline
from rstar_jax.data import records
from rstar_jax.data import sources

_DEFAULTS = {"decontam_files": (), "decontam_ngram": 8, "integer_answers": True,
             "max_answer_digits": 40, "deduplicate": True, "max_prompt_tokens": 2048}


def _field(data_config: Any, key: str) -> Any:
  if key in data_config:
    return data_config[key]
  if key in _DEFAULTS:
    return _DEFAULTS[key]
  raise ValueError(f"config.data.{key}: missing (required)")


def decontam_index(data_config: Any) -> decontam.NgramIndex | None:
  """The n-gram index of `config.data.decontam_files`, or None when there are none."""
  specs = _field(data_config, "decontam_files")
  if not specs:
    return None
  problems, _ = sources.load_problems(specs, "config.data.decontam_files",
                                      integer_answers=False, deduplicate=False)
  return decontam.NgramIndex(problems, _field(data_config, "decontam_ngram"))


def train_problems(data_config: Any, train_files: Sequence[str] | None = None,
                   field: str = "config.data.train_files",
                   index: decontam.NgramIndex | None = None,
                   ) -> tuple[list[records.Problem], records.DataStats]:
  """Loads, filters, deduplicates and decontaminates the training problems.

  Args:
    data_config: `config.data`.
    train_files: specs to load instead of `config.data.train_files` (a curriculum
      stage's, with `field=f"{stage.field}.train_files"` so errors name that key).
    field: the config path of the specs, for messages.
    index: a prebuilt `decontam_index(data_config)` (reused across stages); None
      builds it.
  """
  specs = _field(data_config, "train_files") if train_files is None else train_files
  return sources.load_problems(
      specs, field, integer_answers=_field(data_config, "integer_answers"),
      max_answer_digits=_field(data_config, "max_answer_digits"),
      deduplicate=_field(data_config, "deduplicate"),
      decontam_index=decontam_index(data_config) if index is None else index)


def prompt_iterator(data_config: Any, tokenizer: chat.Tokenizer,
                    problems: Sequence[records.Problem], stats: records.DataStats, *,
                    seed: int | None = None, process_index: int | None = None,
                    process_count: int | None = None,
                    prompt_format: chat.ChatFormat = chat.DEFAULT_FORMAT,
                    ) -> pipeline.PromptIterator:
  """Tokenizes the problems' prompts and returns the sharded, resumable prompt stream.

  Args:
    data_config: `config.data` (max_prompt_tokens, prompts_per_step, seed).
    tokenizer: the policy's tokenizer.
    problems: from `train_problems`.
    stats: their counts; over-long prompts are added to it and the total is logged.
    seed: overrides `config.data.seed` (e.g. folded with the stage index).
    process_index, process_count: default to JAX's.
    prompt_format: the chat format of the prompts (PAPER.md §11 rows 1-2).
  """
  max_prompt_tokens = _field(data_config, "max_prompt_tokens")
  prompts = pipeline.encode_prompts(problems, tokenizer, max_prompt_tokens, stats, prompt_format)
  stats.log(f"prompts (max_prompt_tokens={max_prompt_tokens})")
  return pipeline.PromptIterator(
      prompts, _field(data_config, "prompts_per_step"),
      _field(data_config, "seed") if seed is None else seed,
      process_index=process_index, process_count=process_count)
