"""Problems and prompts for training and evaluation (level 2; PAPER.md §7, §8).

Sources and filters (`sources`, `filters`, `decontam`), the seeded, sharded,
resumable Grain stream (`stream`; of prompts in `pipeline`, built from config by `builders`),
curriculum stages (`curriculum`), the stage-3 hard-problem filter (`hard_filter`),
and the synthetic task of the tiny default (`synthetic` problems, `sft_traces`,
written together by `synthetic_task`).
"""
from rstar_jax.data.builders import decontam_index, prompt_iterator, train_problems
from rstar_jax.data.curriculum import Curriculum, Stage, curriculum_from_config
from rstar_jax.data.decontam import NgramIndex, decontaminate, words
from rstar_jax.data.files import DATA_SUFFIXES, iter_rows, resolve
from rstar_jax.data.filters import dedup, dedup_key, field_text
from rstar_jax.data.hard_filter import RolloutFn, filter_hard_problems
from rstar_jax.data.pipeline import EncodedPrompt, PromptIterator, collate, encode_prompts
from rstar_jax.data.records import (
    SKIP_REASONS, DataStats, Problem, PromptBatch, write_json_atomic, write_jsonl_atomic,
    write_problems)
from rstar_jax.data.sft_traces import (
    TRACE_KINDS, SftTrace, TraceMix, make_sft_traces, read_sft_traces, trace_stats,
    write_sft_traces)
from rstar_jax.data.stream import ShardedStream
from rstar_jax.data.sources import SCHEMAS, Schema, load_problems, parse_spec, read_source
from rstar_jax.data.synthetic import FAMILIES, LEVELS, Draw, SyntheticItem, synthetic_problems
from rstar_jax.data.synthetic_task import synthetic_splits, write_synthetic_task

__all__ = [
    "decontam_index", "prompt_iterator", "train_problems",
    "Curriculum", "Stage", "curriculum_from_config",
    "NgramIndex", "decontaminate", "words",
    "DATA_SUFFIXES", "iter_rows", "resolve",
    "dedup", "dedup_key", "field_text",
    "RolloutFn", "filter_hard_problems",
    "EncodedPrompt", "PromptIterator", "collate", "encode_prompts",
    "SKIP_REASONS", "DataStats", "Problem", "PromptBatch", "write_json_atomic",
    "write_jsonl_atomic", "write_problems",
    "TRACE_KINDS", "SftTrace", "TraceMix", "make_sft_traces", "read_sft_traces", "trace_stats",
    "write_sft_traces",
    "ShardedStream",
    "SCHEMAS", "Schema", "load_problems", "parse_spec", "read_source",
    "FAMILIES", "LEVELS", "Draw", "SyntheticItem", "synthetic_problems",
    "synthetic_splits", "write_synthetic_task",
]
