"""The training prompt stream: a seeded, sharded, resumable Grain pipeline of prompt batches.

The stream's order, sharding by process and exact resume are those of `stream.ShardedStream`
(global batch k is the same set of problems whatever the process count).

Prompts are tokenized once, up front (`encode_prompts`), so over-long prompts are
counted and dropped before sharding and every process sees the same stream.
"""
from typing import NamedTuple, Sequence

import numpy as np

from rstar_jax import chat
from rstar_jax.data import records
from rstar_jax.data import stream


class EncodedPrompt(NamedTuple):
  """A problem and the token ids of its first-turn prompt (PAPER.md §2.2)."""
  problem: records.Problem
  ids: np.ndarray  # [T] int32


def encode_prompts(problems: Sequence[records.Problem], tokenizer: chat.Tokenizer,
                   max_prompt_tokens: int, stats: records.DataStats,
                   prompt_format: chat.ChatFormat = chat.DEFAULT_FORMAT) -> list[EncodedPrompt]:
  """Tokenizes `chat.prompt_text(problem)` for each problem; drops over-long prompts.

  Args:
    problems: the problems, in order.
    tokenizer: any `chat.Tokenizer`.
    max_prompt_tokens: the prompt budget (PAPER.md §2.5: 2048); longer prompts are
      skipped and counted as "prompt_too_long" in `stats` (`stats.kept` shrinks).
    stats: counts to update.
    prompt_format: the chat format (PAPER.md §11 rows 1-2); default the §2.2 prompt.

  Returns:
    The kept problems with their int32 token ids, in order.
  """
  if not isinstance(max_prompt_tokens, int) or max_prompt_tokens < 1:
    raise ValueError(f"max_prompt_tokens must be a positive integer, got {max_prompt_tokens!r}")
  encoded = []
  for problem in problems:
    text = chat.prompt_text(problem.problem, prompt_format)
    ids = np.asarray(tokenizer.encode(text), dtype=np.int32)
    if ids.shape[0] > max_prompt_tokens:
      stats.skip("prompt_too_long")
      stats.kept -= 1
      continue
    encoded.append(EncodedPrompt(problem, ids))
  return encoded


def collate(items: Sequence[EncodedPrompt]) -> records.PromptBatch:
  """Stacks encoded prompts into a `PromptBatch` (ragged ids, int32 lengths)."""
  return records.PromptBatch(
      ids=tuple(item.problem.id for item in items),
      problems=tuple(item.problem.problem for item in items),
      answers=tuple(item.problem.answer for item in items),
      sources=tuple(item.problem.source for item in items),
      prompt_ids=tuple(item.ids for item in items),
      prompt_lens=np.asarray([item.ids.shape[0] for item in items], dtype=np.int32),
  )


class PromptIterator(stream.ShardedStream):
  """Yields this process's `PromptBatch` for each training step, forever (`stream.ShardedStream`).

  Args:
    prompts: the encoded problems (`encode_prompts`), identical on every process.
    global_batch_size: B, prompts per step over all processes (PAPER.md §7: 512).
    seed: shuffle seed in [0, 2**32).
    process_index: this process's index p; default `jax.process_index()`.
    process_count: the number of processes P; default `jax.process_count()`.
      B must be a multiple of P.
  """

  def __init__(self, prompts: Sequence[EncodedPrompt], global_batch_size: int, seed: int, *,
               process_index: int | None = None, process_count: int | None = None):
    super().__init__(prompts, global_batch_size, seed, collate, key=lambda prompt: prompt.problem.id,
                     name="problem", process_index=process_index, process_count=process_count)

  @property
  def num_problems(self) -> int:
    return self.num_items
