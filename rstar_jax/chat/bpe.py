"""Trains a small byte-level BPE tokenizer (Qwen's scheme) on local text, written as tokenizer.json.

For tiny experiments whose corpus is known (the synthetic task): the ChatML special tokens get
ids 0..2 (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`), the 256 byte symbols follow, then the
merges learned from `texts`, up to `vocab_size` in all. Training is deterministic for the same
texts in the same order. The result loads with `HFTokenizer.from_dir(out_dir)`.
"""
import os
import pathlib
from typing import Iterable

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from rstar_jax.chat import template
from rstar_jax.chat.tokenization import HFTokenizer


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike) -> HFTokenizer:
  """Learns a byte-level BPE of `vocab_size` ids from `texts`; writes out_dir/tokenizer.json."""
  minimum = len(template.SPECIAL_TOKENS) + 256
  if vocab_size < minimum:
    raise ValueError(f"vocab_size must be at least {minimum} (special tokens and bytes), got {vocab_size}")
  tokenizer = tokenizers.Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
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
