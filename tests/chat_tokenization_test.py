"""Tokenizers: the character vocabulary, a local Hugging Face tokenizer.json, and load_tokenizer.

Run: python -m pytest -q tests/chat_tokenization_test.py
The HF tokenizer is a tiny byte-level BPE trained here on a few sentences (nothing downloaded),
with the ChatML special tokens added as Qwen's tokenizer.json has them.
"""
import json

import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from rstar_jax import chat

CORPUS = [chat.prompt_text("What is 6*7?"), chat.tool_call_text("print(6*7)"),
          chat.tool_response_text(["Tool call success\nstdout: 42\n\nexecution time: 0.00s"]),
          "hello world, hello reasoning. The answer is \\boxed{42}."] * 20


def _write_hf_tokenizer(directory, pad_token=None):
  tokenizer = tokenizers.Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(chat.SPECIAL_TOKENS),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(CORPUS, trainer)
  directory.mkdir(parents=True, exist_ok=True)
  tokenizer.save(str(directory / "tokenizer.json"))
  if pad_token is not None:
    (directory / "tokenizer_config.json").write_text(json.dumps({"pad_token": pad_token}))
  return directory


def test_char_vocabulary_layout():
  tok = chat.CharTokenizer()
  assert tok.vocab_size == 101
  assert [tok.token_to_id(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>",
                                       "<|unk|>", "\t", "\n", " ", "0", "~")] == (
      [0, 1, 2, 3, 4, 5, 6, 6 + ord("0") - 32, 100])
  assert (tok.eos_id, tok.pad_id) == (2, 0)


def test_char_round_trip_with_special_tokens_as_single_ids():
  tok = chat.CharTokenizer()
  text = chat.prompt_text("Find x:\tx^2 = 4 ~ {1,2}") + "</reason><|im_end|>"
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert ids[0] == 1 and ids[-1] == 2
  assert ids.count(tok.eos_id) == text.count("<|im_end|>")
  assert tok.encode("<|im_end") == [tok.token_to_id(c) for c in "<|im_end"]  # not special


def test_char_unsupported_characters_use_fallback():
  tok = chat.CharTokenizer()
  assert tok.encode("π\r") == [3, 3]
  assert tok.decode(tok.encode("a π b")) == "a \ufffd b"


def test_char_decode_out_of_range_raises():
  with pytest.raises(ValueError, match=r"ids\[1\]=101"):
    chat.CharTokenizer().decode([5, 101])


def test_char_token_to_id_unknown_raises():
  with pytest.raises(ValueError, match="'ab'"):
    chat.CharTokenizer().token_to_id("ab")


def test_hf_round_trip_and_special_ids(tmp_path):
  tok = chat.HFTokenizer.from_dir(_write_hf_tokenizer(tmp_path / "ckpt"))
  text = (chat.prompt_text("What is 6*7? π ≤ 4") +
          "</reason>\n<answer>\\boxed{42}</answer><|im_end|>")
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert tok.eos_id == tok.token_to_id("<|im_end|>") == ids[-1]
  assert tok.token_to_id("<|im_start|>") == ids[0]
  assert tok.pad_id == tok.token_to_id("<|endoftext|>")
  assert tok.vocab_size == 400
  assert len(tok.encode("hello world")) < len("hello world")  # merges were learned


def test_hf_pad_token_from_tokenizer_config(tmp_path):
  tok = chat.HFTokenizer.from_dir(_write_hf_tokenizer(tmp_path, pad_token="<|im_end|>"))
  assert tok.pad_id == tok.eos_id
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(
      {"pad_token": {"content": "<|im_start|>", "special": True}}))
  assert chat.HFTokenizer.from_dir(tmp_path).pad_id == tok.token_to_id("<|im_start|>")


def test_hf_missing_file_names_the_directory(tmp_path):
  with pytest.raises(ValueError, match="no tokenizer.json in checkpoint directory"):
    chat.HFTokenizer.from_dir(tmp_path)


def test_hf_without_im_end_raises(tmp_path):
  tokenizer = tokenizers.Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
  tokenizer.save(str(tmp_path / "tokenizer.json"))
  with pytest.raises(ValueError, match="'<\\|im_end\\|>' is not in the vocabulary"):
    chat.HFTokenizer.from_dir(tmp_path)


def test_load_tokenizer_by_spec(tmp_path):
  assert isinstance(chat.load_tokenizer("char"), chat.CharTokenizer)
  loaded = chat.load_tokenizer(_write_hf_tokenizer(tmp_path))
  assert isinstance(loaded, chat.HFTokenizer)
  for tok in (chat.load_tokenizer("char"), loaded):
    assert isinstance(tok, chat.Tokenizer)
  with pytest.raises(ValueError, match="'char' or a checkpoint directory"):
    chat.load_tokenizer(tmp_path / "missing")
