"""Trajectory encoding: per-segment tokenization and the loss mask of PAPER.md §2.6.

Run: python -m pytest -q tests/chat_trajectory_test.py
"""
import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from rstar_jax import chat


def _segments():
  return [(chat.prompt_text("6*7?"), False),
          ("Let me compute.\n" + chat.tool_call_text("print(6*7)") + "<|im_end|>", True),
          (chat.tool_response_text(["Tool call success\nstdout: 42\n\nexecution time: 0.00s"]),
           False),
          ("</reason>\n<answer>\\boxed{42}</answer><|im_end|>", True)]


def test_encode_segments_mask_is_one_exactly_on_model_text():
  tok = chat.CharTokenizer()
  segments = _segments()
  traj = chat.encode_segments(tok, segments)
  lengths = [len(tok.encode(text)) for text, _ in segments]
  expected_mask = np.concatenate([np.full(n, int(by_model)) for n, (_, by_model)
                                  in zip(lengths, segments)])
  np.testing.assert_array_equal(traj.loss_mask, expected_mask)
  assert traj.prompt_len == lengths[0]
  assert traj.token_ids.dtype == np.int32 and traj.loss_mask.dtype == np.int32
  assert tok.decode(traj.token_ids) == "".join(text for text, _ in segments)
  assert traj.num_model_tokens == lengths[1] + lengths[3]
  # The environment's "<|im_start|>assistant\n<reason>" is masked; the model's <|im_end|> is not.
  assert traj.loss_mask[sum(lengths[:2]) - 1] == 1 and traj.token_ids[sum(lengths[:2]) - 1] == 2
  np.testing.assert_array_equal(traj.response_ids, traj.token_ids[lengths[0]:])


def test_encode_segments_never_retokenizes_across_boundaries():
  tokenizer = tokenizers.Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  tokenizer.train_from_iterator(["reasoning " * 50, "<|im_end|>"], trainers.BpeTrainer(
      vocab_size=300, special_tokens=list(chat.SPECIAL_TOKENS),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok = chat.HFTokenizer(tokenizer)
  traj = chat.encode_segments(tok, [("reas", False), ("oning", True)])
  # "reasoning" as one text is one merged token; as two segments it keeps the split.
  assert len(tok.encode("reasoning")) == 1
  assert traj.token_ids.tolist() == tok.encode("reas") + tok.encode("oning")
  assert traj.loss_mask.tolist() == [0] * len(tok.encode("reas")) + [1] * len(tok.encode("oning"))


@pytest.mark.parametrize("segments, message", [
    ([], "at least the prompt"),
    ([("prompt", True)], "segments\\[0\\] is the prompt"),
    ([("prompt", False), ("x", 1)], "segments\\[1\\] must be a \\(str, bool\\)"),
])
def test_encode_segments_bad_input_raises(segments, message):
  with pytest.raises(ValueError, match=message):
    chat.encode_segments(chat.CharTokenizer(), segments)


def test_trajectory_coerces_lists_to_int32():
  traj = chat.Trajectory([1, 2, 3], [0, 1, 1], 1)
  assert traj.token_ids.dtype == np.int32 and traj.loss_mask.tolist() == [0, 1, 1]


@pytest.mark.parametrize("kwargs, message", [
    ({"token_ids": [1, 2], "loss_mask": [0], "prompt_len": 1}, "same shape"),
    ({"token_ids": [[1]], "loss_mask": [[0]], "prompt_len": 0}, "token_ids must be 1-D"),
    ({"token_ids": [1.5], "loss_mask": [0], "prompt_len": 0}, "must hold integers"),
    ({"token_ids": [1, 2], "loss_mask": [0, 2], "prompt_len": 1}, "only 0 and 1"),
    ({"token_ids": [1, 2], "loss_mask": [0, 1], "prompt_len": 3}, "prompt_len"),
    ({"token_ids": [1, 2], "loss_mask": [1, 1], "prompt_len": 1}, "0 over the prompt"),
])
def test_trajectory_invalid_fields_raise(kwargs, message):
  with pytest.raises(ValueError, match=message):
    chat.Trajectory(**kwargs)
