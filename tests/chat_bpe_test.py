"""The small byte-level BPE trained for tiny experiments: deterministic, lossless, ChatML-aware."""
import pytest

from rstar_jax import chat

TEXTS = [chat.prompt_text(f"What is {i} * {i + 7}?") + f"Compute it.</reason>\n<answer>\\boxed{{{i * (i + 7)}}}"
         f"</answer>{chat.IM_END}" for i in range(60)]


def test_training_is_deterministic(tmp_path):
  chat.train_bpe_tokenizer(TEXTS, 400, tmp_path / "a")
  chat.train_bpe_tokenizer(TEXTS, 400, tmp_path / "b")
  assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()


def test_special_tokens_are_single_ids_and_text_round_trips(tmp_path):
  tokenizer = chat.train_bpe_tokenizer(TEXTS, 400, tmp_path)
  assert [tokenizer.token_to_id(t) for t in chat.SPECIAL_TOKENS] == [0, 1, 2]
  assert tokenizer.eos_id == 2 and tokenizer.vocab_size <= 400
  text = TEXTS[3] + " unseen: ünïcode ✓"
  ids = tokenizer.encode(text)
  assert tokenizer.decode(ids) == text
  assert ids.count(tokenizer.token_to_id(chat.IM_END)) == text.count(chat.IM_END)
  assert len(ids) < len(text) / 2  # the merges compress the repeated prompt


def test_too_small_vocabulary_is_named(tmp_path):
  with pytest.raises(ValueError, match="vocab_size must be at least 259"):
    chat.train_bpe_tokenizer(TEXTS, 100, tmp_path)
