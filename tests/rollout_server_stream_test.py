"""`rstar-serve` with a tokenizer: SSE streaming, stop strings and input log-probs, against the
same server's plain answers, the tokenizer and the model's own forward pass. Runs a real
`rstar-serve` process on loopback.
  python -m pytest -q tests/rollout_server_stream_test.py
"""
import http.client
import json
import time
import urllib.parse

import jax
import numpy as np
import pytest

from rstar_jax import chat
from rstar_jax import models
from rstar_jax.rollout import local_servers
from rstar_jax.rollout import server
from rstar_jax.rollout import weight_sync
from tests import tiny_models
from tests.rollout_server_test import _call

MAX_LENGTH = 96
TEXTS = ["def f(x):\n    return x * 2\n", "The answer is 42.", "print(sum(range(10)))", "so the result is 7"] * 8
PROMPT_TEXT = "The answer is"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  """(url, tokenizer, config, params): a tiny random model with a byte-level BPE tokenizer."""
  root = tmp_path_factory.mktemp("with_tokenizer")
  tokenizer = chat.train_bpe_tokenizer(TEXTS, 300, root / "tok")
  cfg = tiny_models.tiny_config(vocab_size=320, eos_token_id=tokenizer.eos_id)
  params = models.init_params(cfg, jax.random.key(3))
  checkpoint = weight_sync.write_version(cfg, params, str(root), version=0, keep=1)
  tokenizer = chat.train_bpe_tokenizer(TEXTS, 300, checkpoint)  # tokenizer.json beside the weights
  process, url = local_servers.start_server(checkpoint, ["--num-slots", "4", "--max-length", str(MAX_LENGTH),
                                                         "--prefill-chunk", "16"])
  yield url, tokenizer, cfg, params
  process.stop()


def _stream(url: str, body: dict) -> tuple[int, str, list]:
  """(status, content type, the events' parsed data; '[DONE]' as the string) of a streamed call."""
  parts = urllib.parse.urlsplit(url)
  connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
  connection.request("POST", "/generate", json.dumps({**body, "stream": True}),
                     {"Content-Type": "application/json"})
  response = connection.getresponse()
  raw = response.read().decode()
  connection.close()
  events = [chunk[len("data: "):] for chunk in raw.split("\n\n") if chunk]
  return response.status, response.getheader("Content-Type"), [e if e == "[DONE]" else json.loads(e) for e in events]


def _greedy(url, prompt, max_new, **extra):
  body = {"input_ids": prompt, "sampling_params": {"temperature": 0, "max_new_tokens": max_new, "ignore_eos": True},
          **extra}
  status, answer = _call(url, "/generate", body)
  assert status == 200, answer
  return answer


def test_a_stream_sends_growing_answers_then_the_plain_answer_then_done(served):
  url, tokenizer, _, _ = served
  prompt = tokenizer.encode(PROMPT_TEXT)
  plain = _greedy(url, prompt, 12, return_logprob=True)
  status, content_type, events = _stream(url, {"input_ids": prompt, "return_logprob": True, "sampling_params": {
      "temperature": 0, "max_new_tokens": 12, "ignore_eos": True}})
  assert status == 200 and content_type.startswith("text/event-stream")
  assert events[-1] == "[DONE]" and len(events) >= 3
  answers = events[:-1]
  final = answers[-1]
  assert final["output_ids"] == plain["output_ids"] and final["text"] == plain["text"]
  assert final["meta_info"]["finish_reason"] == plain["meta_info"]["finish_reason"] == {"type": "length", "length": 12}
  np.testing.assert_allclose([e[0] for e in final["meta_info"]["output_token_logprobs"]],
                             [e[0] for e in plain["meta_info"]["output_token_logprobs"]], atol=1e-5)
  for answer in answers[:-1]:  # cumulative: each a prefix of the final one, still running
    n = len(answer["output_ids"])
    assert 0 < n < 12 and answer["output_ids"] == plain["output_ids"][:n]
    # a character whose bytes are not all out yet is held back, so each text is a prefix of the next
    assert answer["text"] == tokenizer.decode(plain["output_ids"][:n]).rstrip("\ufffd")
    assert final["text"].startswith(answer["text"])
    assert answer["meta_info"]["finish_reason"] is None and "index" not in answer
  assert [len(a["output_ids"]) for a in answers] == sorted(len(a["output_ids"]) for a in answers)


def test_a_streamed_batch_tags_each_event_with_its_index(served):
  url, tokenizer, _, _ = served
  prompts = [tokenizer.encode(PROMPT_TEXT), tokenizer.encode("print(")]
  plain = [_greedy(url, p, 8) for p in prompts]
  status, _, events = _stream(url, {"input_ids": prompts, "sampling_params": {
      "temperature": 0, "max_new_tokens": 8, "ignore_eos": True}})
  assert status == 200 and events[-1] == "[DONE]"
  for index in (0, 1):
    mine = [e for e in events[:-1] if e["index"] == index]
    assert mine[-1]["output_ids"] == plain[index]["output_ids"]
    assert mine[-1]["meta_info"]["finish_reason"] == {"type": "length", "length": 8}
  # a refused request is refused before the stream starts
  assert _call(url, "/generate", {"input_ids": [], "stream": True})[0] == 400


def _first_match(tokenizer, ids, stop):
  """Reference: the fewest leading ids whose text holds `stop`."""
  return next(n for n in range(1, len(ids) + 1) if stop in tokenizer.decode(ids[:n]))


def test_stop_strings_end_the_output_and_cut_the_text(served):
  url, tokenizer, _, _ = served
  prompt = tokenizer.encode(PROMPT_TEXT)
  free = _greedy(url, prompt, 40)["output_ids"]
  text = tokenizer.decode(free)
  # the (random model's) text's last printable two characters
  stop = next(text[i:i + 2] for i in reversed(range(len(text) - 1))
              if text[i:i + 2].isascii() and text[i:i + 2].isprintable())
  n = _first_match(tokenizer, free, stop)
  assert n < len(free)
  status, answer = _call(url, "/generate", {"input_ids": prompt, "sampling_params": {
      "temperature": 0, "max_new_tokens": 40, "ignore_eos": True, "stop": ["never seen \u2603", stop]}})
  assert status == 200
  assert answer["output_ids"] == free[:n]  # untrimmed: ends with the token completing the match
  assert answer["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop}
  decoded = tokenizer.decode(free[:n])
  assert answer["text"] == decoded[:decoded.find(stop)]
  kept = _call(url, "/generate", {"input_ids": prompt, "sampling_params": {
      "temperature": 0, "max_new_tokens": 40, "ignore_eos": True, "stop": stop, "no_stop_trim": True}})[1]
  assert kept["output_ids"] == free[:n] and kept["text"] == decoded
  # streamed, the same
  events = _stream(url, {"input_ids": prompt, "sampling_params": {
      "temperature": 0, "max_new_tokens": 40, "ignore_eos": True, "stop": stop}})[2]
  assert events[-2]["output_ids"] == free[:n] and events[-2]["text"] == answer["text"]
  for bad in (3, [""], ["a", 1]):
    status, answer = _call(url, "/generate", {"input_ids": prompt, "sampling_params": {"stop": bad}})
    assert status == 400 and "sampling_params.stop must be" in answer["error"]["message"]


def test_input_logprobs_equal_the_models_forward(served):
  url, tokenizer, cfg, params = served
  prompt = tokenizer.encode("so the result is 42 and print(x)")
  logits = np.asarray(models.logits(cfg, params, np.array([prompt], np.int32)))[0]
  for start, temperature in [(0, 0), (3, 0), (0, 0.7)]:
    status, answer = _call(url, "/generate", {
        "input_ids": prompt, "return_logprob": True, "logprob_start_len": start, "return_text_in_logprobs": True,
        "sampling_params": {"temperature": temperature, "max_new_tokens": 2}})
    assert status == 200
    entries = answer["meta_info"]["input_token_logprobs"]
    assert [e[1] for e in entries] == prompt[start:]
    assert [e[2] for e in entries] == [tokenizer.decode([t]) for t in prompt[start:]]
    assert entries[0][0] is None
    scaled = logits / (temperature or 1.0)
    want = [float(jax.nn.log_softmax(scaled[i - 1])[prompt[i]]) for i in range(start + 1, len(prompt))]
    np.testing.assert_allclose([e[0] for e in entries[1:]], want, atol=1e-5)
  status, answer = _call(url, "/generate", {"input_ids": prompt, "return_logprob": True,
                                            "logprob_start_len": len(prompt)})
  assert status == 400 and "logprob_start_len" in answer["error"]["message"]


def test_a_client_that_leaves_a_stream_has_its_request_aborted(served):
  """Paused, the request cannot finish on its own: it leaves the server only by being aborted."""
  url, tokenizer, _, _ = served
  assert _call(url, "/pause_generation", {"mode": "in_place"})[0] == 200
  parts = urllib.parse.urlsplit(url)
  connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
  connection.request("POST", "/generate", json.dumps({
      "input_ids": tokenizer.encode(PROMPT_TEXT), "rid": "leaver", "stream": True,
      "sampling_params": {"temperature": 0, "max_new_tokens": 8}}), {"Content-Type": "application/json"})
  assert connection.getresponse().status == 200  # the stream started
  assert _call(url, "/get_load")[1][0]["num_reqs"] == 1
  connection.close()
  deadline = time.monotonic() + 60
  while _call(url, "/get_load")[1][0]["num_reqs"]:
    assert time.monotonic() < deadline, "the request of a client that left was not aborted"
    time.sleep(0.05)
  assert _call(url, "/continue_generation", {})[0] == 200
  assert _greedy(url, tokenizer.encode(PROMPT_TEXT), 4)["meta_info"]["finish_reason"]["type"] == "length"


def test_stream_text_is_decoded_incrementally_and_holds_back_an_incomplete_character(tmp_path):
  """Byte-level BPE trained on ASCII: 'é' and '€' are 2 and 3 byte tokens. Each call's text is the
  whole decode without its trailing incomplete character, built from the new ids only."""
  tokenizer = chat.train_bpe_tokenizer(TEXTS, 300, tmp_path)
  ids = tokenizer.encode("so é costs 5€ x")
  decoded = []

  class Counting:
    def decode(self, part):
      decoded.append(len(part))
      return tokenizer.decode(part)

  item = server._Item(None, (), False, -1)  # pylint: disable=protected-access
  rendering = server._Rendering(Counting(), False, item, False, None)  # pylint: disable=protected-access
  held = 0
  for n in range(1, len(ids) + 1):
    full = tokenizer.decode(ids[:n])
    text = rendering.running_text(ids[:n])
    assert text == full.rstrip("\ufffd")
    held += full.endswith("\ufffd")
  assert held >= 3  # 1 byte of 'é' and 2 of '€' out before the rest
  assert max(decoded) <= 6 < len(ids)  # never the whole output: the last segment and the new ids
