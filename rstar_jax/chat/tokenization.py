"""Tokenizers behind one interface: a Hugging Face `tokenizer.json`, or a tiny character vocab.

Both map the ChatML special tokens `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` (PAPER.md §2.1)
to single ids wherever they appear in the text. For `CharTokenizer` every other tag (`<reason>`,
`<tool_call>`, ...) is plain text; a `tokenizer.json` may add more single-id tokens (Qwen2.5/Qwen3
add `<tool_call>`, `</tool_call>`, `<tool_response>`, ...: chat.tiktoken_bpe), while `<reason>`
stays plain text. `eos_id` is the id of `<|im_end|>`, the token that ends an assistant turn.
"""
import json
import os
import pathlib
import re
from typing import Protocol, Sequence, runtime_checkable

import tokenizers

from rstar_jax.chat import template


@runtime_checkable
class Tokenizer(Protocol):
  """What the rest of rstar_jax needs from a tokenizer."""

  @property
  def vocab_size(self) -> int:
    """Number of ids, special tokens included."""

  @property
  def eos_id(self) -> int:
    """The id of `<|im_end|>`."""

  @property
  def pad_id(self) -> int:
    """The id used for right padding (loss mask 0)."""

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, special-token strings mapped to their single ids, no BOS/EOS added."""

  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`, special tokens written out."""

  def token_to_id(self, token: str) -> int:
    """The id of one vocabulary entry; ValueError if absent."""


# Character vocabulary: the specials, the fallback, tab, newline, then printable ASCII 32..126.
UNK_TOKEN = "<|unk|>"
UNK_TEXT = "\ufffd"
_CHAR_SPECIALS = (template.ENDOFTEXT, template.IM_START, template.IM_END, UNK_TOKEN)
_CHARS = "\t\n" + "".join(chr(c) for c in range(32, 127))
_SPECIAL_RE = re.compile("(" + "|".join(re.escape(t) for t in template.SPECIAL_TOKENS) + ")")


class CharTokenizer:
  """One id per character, for tiny experiments; deterministic, with no files.

  Vocabulary (101 ids): 0 `<|endoftext|>` (also the pad id), 1 `<|im_start|>`, 2 `<|im_end|>`
  (the eos id), 3 `<|unk|>`, 4 tab, 5 newline, 6..100 the printable ASCII characters ' '..'~' in
  code-point order. Any other character (non-ASCII, other control characters) encodes to the
  fallback id 3, which decodes to U+FFFD, so decode(encode(x)) == x exactly when x uses only tab,
  newline and printable ASCII. The special-token strings become their single ids.
  """

  def __init__(self):
    self._id_to_token = list(_CHAR_SPECIALS) + list(_CHARS)
    self._token_to_id = {token: i for i, token in enumerate(self._id_to_token)}
    self._unk_id = self._token_to_id[UNK_TOKEN]

  @property
  def vocab_size(self) -> int:
    return len(self._id_to_token)

  @property
  def eos_id(self) -> int:
    return self._token_to_id[template.IM_END]

  @property
  def pad_id(self) -> int:
    return self._token_to_id[template.ENDOFTEXT]

  def encode(self, text: str) -> list[int]:
    ids = []
    for piece in _SPECIAL_RE.split(text):
      if piece in template.SPECIAL_TOKENS:
        ids.append(self._token_to_id[piece])
      else:
        ids.extend(self._token_to_id.get(char, self._unk_id) for char in piece)
    return ids

  def decode(self, ids: Sequence[int]) -> str:
    pieces = []
    for position, token_id in enumerate(ids):
      token_id = int(token_id)
      if not 0 <= token_id < len(self._id_to_token):
        raise ValueError(f"ids[{position}]={token_id} is outside the vocabulary "
                         f"[0, {len(self._id_to_token)})")
      pieces.append(UNK_TEXT if token_id == self._unk_id else self._id_to_token[token_id])
    return "".join(pieces)

  def token_to_id(self, token: str) -> int:
    if token not in self._token_to_id:
      raise ValueError(f"token {token!r} is not in the character vocabulary")
    return self._token_to_id[token]


class HFTokenizer:
  """A Hugging Face fast tokenizer (`tokenizer.json`), run with the `tokenizers` library.

  `encode` adds no special tokens of its own (no BOS/EOS post-processing); added tokens such as
  `<|im_start|>` are matched in the text. `decode` keeps special tokens. `vocab_size` counts added
  tokens; a model's embedding table may be larger (Qwen pads it to a multiple of 128).
  """

  def __init__(self, tokenizer: tokenizers.Tokenizer, pad_token: str | None = None,
               source: str = "tokenizer"):
    self._tokenizer = tokenizer
    self._source = source
    self._eos_id = self.token_to_id(template.IM_END)
    if pad_token is None:
      pad_token = (template.ENDOFTEXT if tokenizer.token_to_id(template.ENDOFTEXT) is not None
                   else template.IM_END)
    self._pad_id = self.token_to_id(pad_token)

  @classmethod
  def from_dir(cls, path: str | os.PathLike) -> "HFTokenizer":
    """Loads `path/tokenizer.json`; the pad token comes from `tokenizer_config.json` if set.

    Without a configured pad token, `<|endoftext|>` pads (as for Qwen), else `<|im_end|>`.
    """
    directory = pathlib.Path(path)
    file = directory / "tokenizer.json"
    if not file.is_file():
      raise ValueError(f"no tokenizer.json in checkpoint directory {str(directory)!r}")
    try:
      tokenizer = tokenizers.Tokenizer.from_file(str(file))
    except Exception as e:
      raise ValueError(f"cannot load {str(file)!r}: {e}") from e
    return cls(tokenizer, _configured_pad_token(directory), source=str(file))

  @property
  def vocab_size(self) -> int:
    return self._tokenizer.get_vocab_size(with_added_tokens=True)

  @property
  def eos_id(self) -> int:
    return self._eos_id

  @property
  def pad_id(self) -> int:
    return self._pad_id

  def encode(self, text: str) -> list[int]:
    return self._tokenizer.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int]) -> str:
    return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

  def save(self, directory: str | os.PathLike) -> None:
    """Writes directory/tokenizer.json (next to a checkpoint's config.json)."""
    self._tokenizer.save(str(pathlib.Path(directory) / "tokenizer.json"))

  def token_to_id(self, token: str) -> int:
    token_id = self._tokenizer.token_to_id(token)
    if token_id is None:
      raise ValueError(f"token {token!r} is not in the vocabulary of {self._source!r}")
    return token_id


def _configured_pad_token(directory: pathlib.Path) -> str | None:
  config_file = directory / "tokenizer_config.json"
  if not config_file.is_file():
    return None
  try:
    pad = json.loads(config_file.read_text(encoding="utf-8")).get("pad_token")
  except (ValueError, AttributeError) as e:
    raise ValueError(f"{str(config_file)!r} is not a JSON object: {e}") from e
  if isinstance(pad, dict):  # an AddedToken record
    pad = pad.get("content")
  return pad if isinstance(pad, str) else None


def load_tokenizer(spec: str | os.PathLike) -> Tokenizer:
  """"char" gives a `CharTokenizer`; any other value is a checkpoint directory for `HFTokenizer`."""
  if isinstance(spec, str) and spec == "char":
    return CharTokenizer()
  if not pathlib.Path(spec).is_dir():
    raise ValueError(f"tokenizer spec must be 'char' or a checkpoint directory, got {str(spec)!r}")
  return HFTokenizer.from_dir(spec)
