"""Trains a small byte-level BPE tokenizer (Qwen's scheme) on local text, written as tokenizer.json.

For tiny experiments whose corpus is known (the synthetic task): the ChatML special tokens get
ids 0..2 (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`), the 256 byte symbols follow, then the
merges learned from `texts`, up to `vocab_size` in all. Training is deterministic for the same
texts in the same order. The result loads with `HFTokenizer.from_dir(out_dir)`.

Pre-tokenization is Qwen2/Qwen3's (their tokenizer.json): text is split by `QWEN_PRETOKENIZE_PATTERN`,
which makes every digit its own piece, then mapped to byte symbols. So a number is spelled by the
same digit tokens wherever it appears (`What is 906` and `print(906` share `9`, `0`, `6`), which
is what lets a small model copy numbers from a question into code.
"""
import os
import pathlib
from typing import Iterable

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from rstar_jax.chat import template
from rstar_jax.chat.tokenization import HFTokenizer

# Qwen2/Qwen3 tokenizer.json, pre_tokenizer "Split" (behavior "Isolated"), before ByteLevel.
QWEN_PRETOKENIZE_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                            r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike) -> HFTokenizer:
  """Learns a byte-level BPE of `vocab_size` ids from `texts`; writes out_dir/tokenizer.json."""
  minimum = len(template.SPECIAL_TOKENS) + 256
  if vocab_size < minimum:
    raise ValueError(f"vocab_size must be at least {minimum} (special tokens and bytes), got {vocab_size}")
  tokenizer = tokenizers.Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(QWEN_PRETOKENIZE_PATTERN), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(template.SPECIAL_TOKENS),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tokenizer.train_from_iterator(texts, trainer)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  tmp = out / "tokenizer.json.tmp"
  tokenizer.save(str(tmp))
  os.replace(tmp, out / "tokenizer.json")
  return HFTokenizer.from_dir(out)
