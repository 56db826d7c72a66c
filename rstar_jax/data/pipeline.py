"""The training prompt stream: a seeded, sharded, resumable Grain pipeline of prompt batches.

Stream. Epoch e is a permutation of the N problems (Grain's index shuffle seeded
with `s + e`, where s is drawn from SHA-256 of `seed` so that nearby seeds, e.g.
one per stage, do not share shifted epoch orders); epochs follow each other
without end, so a step's batch may straddle two epochs. Global batch k is rows
[kB, (k+1)B) of that stream, B the global batch size (prompts per step).

Sharding. Process p of P takes the stream rows p, p+P, p+2P, ... in batches of
b = B/P, so process p's k-th batch holds global rows kB + jP + p (j < b): the P
processes together hold global batch k, each row exactly once, and which global
batch comes next does not depend on P.

Resume. `get_state()` is a small JSON-able dict (the next global batch index plus
a fingerprint of the problems, seed and B); `set_state()` on an iterator over the
same problems continues with exactly the batches an uninterrupted run would
have seen, also after a change of process count.

Prompts are tokenized once, up front (`encode_prompts`), so over-long prompts are
counted and dropped before sharding and every process sees the same stream.
"""
import hashlib
from typing import Any, Mapping, NamedTuple, Sequence

from absl import logging
import grain
import jax
import numpy as np

from rstar_jax import chat
from rstar_jax.data import records

_STATE_VERSION = 1


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


class _GatherBatch:
  """Grain batch function: stream indices -> `collate` of those prompts.

  Grain shuffles and shards indices (a `MapDataset.range`), which costs half of what
  passing the records themselves through its per-element source bookkeeping does.
  """

  def __init__(self, prompts: Sequence[EncodedPrompt]):
    self._prompts = prompts

  def __call__(self, indices: Sequence[int]) -> records.PromptBatch:
    return collate([self._prompts[int(i)] for i in indices])


def _shuffle_seed(seed: int) -> int:
  digest = hashlib.sha256(f"rstar_jax.data.pipeline/{seed}".encode()).digest()
  return int.from_bytes(digest[:4], "big")


def _fingerprint(prompts: Sequence[EncodedPrompt], seed: int, global_batch_size: int) -> str:
  digest = hashlib.sha256(f"{seed}\0{global_batch_size}\0".encode())
  for prompt in prompts:
    digest.update(prompt.problem.id.encode() + b"\0")
  return digest.hexdigest()[:16]


class PromptIterator:
  """Yields this process's `PromptBatch` for each training step, forever.

  Args:
    prompts: the encoded problems (`encode_prompts`), identical on every process.
    global_batch_size: B, prompts per step over all processes (PAPER.md §7: 512).
    seed: the shuffle seed (any integer).
    process_index: this process's index p; default `jax.process_index()`.
    process_count: the number of processes P; default `jax.process_count()`.
      B must be a multiple of P.
  """

  def __init__(self, prompts: Sequence[EncodedPrompt], global_batch_size: int, seed: int, *,
               process_index: int | None = None, process_count: int | None = None):
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if not prompts:
      raise ValueError("no problems left to iterate over (every row was skipped; see the log)")
    if isinstance(seed, bool) or not isinstance(seed, int):
      raise ValueError(f"seed must be an integer, got {seed!r}")
    if not isinstance(process_count, int) or process_count < 1:
      raise ValueError(f"process_count must be a positive integer, got {process_count!r}")
    if not isinstance(process_index, int) or not 0 <= process_index < process_count:
      raise ValueError(f"process_index must be in [0, {process_count}), got {process_index!r}")
    if (not isinstance(global_batch_size, int) or global_batch_size < 1
        or global_batch_size % process_count):
      raise ValueError(f"global_batch_size must be a positive multiple of process_count="
                       f"{process_count}, got {global_batch_size!r}")
    self.num_problems = len(prompts)
    self.global_batch_size = global_batch_size
    self.batch_size = global_batch_size // process_count
    self.fingerprint = _fingerprint(prompts, seed, global_batch_size)
    dataset = grain.MapDataset.range(len(prompts)).shuffle(seed=_shuffle_seed(seed)).repeat()
    dataset = dataset[process_index::process_count].batch(
        self.batch_size, batch_fn=_GatherBatch(list(prompts)))
    # In-memory rows: no reader threads (Grain's advice for data already in memory).
    read_options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    self._iterator = iter(dataset.to_iter_dataset(read_options))
    if global_batch_size > self.num_problems:
      logging.warning("prompt stream: %d prompts per step exceed the %d problems; every batch "
                      "repeats problems", global_batch_size, self.num_problems)
    logging.info("prompt stream: %d problems, %d prompts per step (%d on process %d of %d), "
                 "%.2f steps per epoch", self.num_problems, global_batch_size, self.batch_size,
                 process_index, process_count, self.num_problems / global_batch_size)

  def __iter__(self) -> "PromptIterator":
    return self

  def __next__(self) -> records.PromptBatch:
    return next(self._iterator)

  @property
  def step(self) -> int:
    """The index of the global batch the next `next()` returns."""
    return self._iterator.get_state()["next_index"]

  @property
  def epoch(self) -> float:
    """Passes over the problems consumed so far (rows yielded / N, all processes)."""
    return self.step * self.global_batch_size / self.num_problems

  def get_state(self) -> dict[str, Any]:
    """A JSON-able dict from which `set_state` resumes exactly."""
    return {"version": _STATE_VERSION, "step": self.step, "fingerprint": self.fingerprint,
            "num_problems": self.num_problems, "global_batch_size": self.global_batch_size}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Continues from a `get_state()` dict of an iterator over the same stream.

    The dict may come back from a checkpoint with numpy integers for its numbers.

    Raises:
      ValueError: the state is malformed, or comes from other problems, another
        seed or another global batch size (the continuation would not be exact).
    """
    if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
      raise ValueError(f"data iterator state: expected a dict with version {_STATE_VERSION}, "
                       f"got {state!r}")
    if state.get("fingerprint") != self.fingerprint:
      raise ValueError(
          "data iterator state comes from another stream: fingerprint "
          f"{state.get('fingerprint')!r} (num_problems={state.get('num_problems')}, "
          f"global_batch_size={state.get('global_batch_size')}) != {self.fingerprint!r} "
          f"(num_problems={self.num_problems}, global_batch_size={self.global_batch_size}); "
          "the problems, seed or prompts per step changed since it was saved")
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
      raise ValueError(f"data iterator state: step must be a non-negative integer, got {step!r}")
    self._iterator.set_state({"next_index": int(step)})
