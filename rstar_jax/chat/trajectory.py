"""Trajectory: the token ids of a conversation and the loss mask of what the model wrote.

PAPER.md §2.6: the mask is 1 for every token the policy sampled (reasoning, tool-call JSON,
`<answer>`, the closing `<|im_end|>`) and 0 for the prompt and for every environment-inserted
token (`<|im_start|>user ... <|im_start|>assistant\\n<reason>`). Each segment is tokenized on its
own and the ids are concatenated, so text is never re-tokenized across a segment boundary, which
is also how rollouts append environment tokens to the ids the engine returned.
"""
import dataclasses
from typing import Sequence

import numpy as np

from rstar_jax.chat import tokenization


@dataclasses.dataclass
class Trajectory:
  """One conversation as ids.

  Attributes:
    token_ids: [T] int32, prompt then response.
    loss_mask: [T] int32, 1 where the model wrote the token, else 0 (always 0 on the prompt).
    prompt_len: number of leading prompt tokens, 0 <= prompt_len <= T.
  """
  token_ids: np.ndarray
  loss_mask: np.ndarray
  prompt_len: int

  def __post_init__(self):
    self.token_ids = _as_int32_vector("token_ids", self.token_ids)
    self.loss_mask = _as_int32_vector("loss_mask", self.loss_mask)
    if self.token_ids.shape != self.loss_mask.shape:
      raise ValueError(f"token_ids {self.token_ids.shape} and loss_mask {self.loss_mask.shape} "
                       "must have the same shape")
    if not np.isin(self.loss_mask, (0, 1)).all():
      raise ValueError("loss_mask must hold only 0 and 1")
    if (isinstance(self.prompt_len, bool) or not isinstance(self.prompt_len, (int, np.integer))
        or not 0 <= self.prompt_len <= self.token_ids.shape[0]):
      raise ValueError(f"prompt_len must be an int in [0, {self.token_ids.shape[0]}], got "
                       f"{self.prompt_len!r}")
    self.prompt_len = int(self.prompt_len)
    if self.loss_mask[:self.prompt_len].any():
      raise ValueError("loss_mask must be 0 over the prompt")

  @property
  def response_ids(self) -> np.ndarray:
    """[T - prompt_len] int32: the ids after the prompt (model and environment tokens)."""
    return self.token_ids[self.prompt_len:]

  @property
  def num_model_tokens(self) -> int:
    """How many tokens the model wrote (the loss mask's sum)."""
    return int(self.loss_mask.sum())


def _as_int32_vector(name: str, values) -> np.ndarray:
  array = np.asarray(values)
  if array.ndim != 1:
    raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
  if array.size and not np.issubdtype(array.dtype, np.integer):
    raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
  return array.astype(np.int32)


def encode_segments(tokenizer: tokenization.Tokenizer,
                    segments: Sequence[tuple[str, bool]]) -> Trajectory:
  """Tokenizes each `(text, written_by_model)` segment on its own and concatenates them.

  Args:
    tokenizer: any `Tokenizer`.
    segments: the first is the prompt (written_by_model False), e.g. `chat.prompt_text(problem)`;
      then alternating model turns (True) and environment segments such as
      `chat.tool_response_text(...)` (False).

  Returns:
    A `Trajectory` whose loss mask is 1 exactly on the tokens of model-written segments.
  """
  if not segments:
    raise ValueError("segments must hold at least the prompt segment")
  ids, mask = [], []
  prompt_len = 0
  for i, segment in enumerate(segments):
    if not (isinstance(segment, tuple) and len(segment) == 2 and isinstance(segment[0], str)
            and isinstance(segment[1], bool)):
      raise ValueError(f"segments[{i}] must be a (str, bool) tuple, got {segment!r:.80}")
    text, written_by_model = segment
    if i == 0 and written_by_model:
      raise ValueError("segments[0] is the prompt and must have written_by_model=False")
    segment_ids = tokenizer.encode(text)
    if i == 0:
      prompt_len = len(segment_ids)
    ids.extend(segment_ids)
    mask.extend([int(written_by_model)] * len(segment_ids))
  return Trajectory(token_ids=np.asarray(ids, np.int32), loss_mask=np.asarray(mask, np.int32),
                    prompt_len=prompt_len)
