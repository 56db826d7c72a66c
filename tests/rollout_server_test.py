"""The SGLang-compatible server (`rstar-serve`) and its client: every route's JSON and errors,
greedy equal to the in-process engine, log-probs equal to the model's, weight updates with
versions, pause / abort / continue, the API key. Runs real `rstar-serve` processes on loopback.
  python -m pytest -q tests/rollout_server_test.py
"""
import asyncio
import concurrent.futures
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors
import safetensors.numpy

from rstar_jax import models
from rstar_jax import rollout
from rstar_jax.rollout import local_servers
from rstar_jax.rollout import server
from rstar_jax.rollout import sglang_client
from rstar_jax.rollout import weight_sync
from tests import tiny_models

EOS = 5
MAX_LENGTH = 64
CFG = tiny_models.tiny_config(eos_token_id=EOS)
SERVER_ARGS = ["--num-slots", "4", "--max-length", str(MAX_LENGTH), "--prefill-chunk", "16"]


def _params(seed: int):
  return models.init_params(CFG, jax.random.key(seed))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """Two versions of the tiny model's weights (v0, v1), as Hugging Face directories."""
  root = tmp_path_factory.mktemp("weights")
  return [weight_sync.write_version(CFG, _params(seed), str(root), version=seed, keep=2) for seed in (0, 1)]


@pytest.fixture(scope="module")
def url(checkpoints):
  process, url = local_servers.start_server(checkpoints[0], SERVER_ARGS)
  yield url
  process.stop()


def _call(url: str, path: str, body=None, method=None, headers=None, raw: bytes | None = None):
  """(status, parsed JSON or text) of one HTTP call."""
  data = raw if raw is not None else None if body is None else json.dumps(body).encode()
  request = urllib.request.Request(url + path, data=data, method=method,
                                   headers={"Content-Type": "application/json", **(headers or {})})
  try:
    with urllib.request.urlopen(request, timeout=120) as response:
      status, text = response.status, response.read().decode()
  except urllib.error.HTTPError as e:
    status, text = e.code, e.read().decode()
  try:
    return status, json.loads(text) if text else None
  except ValueError:
    return status, text


def _greedy_in_process(params, prompt, max_new, ignore_eos=False):
  engine = rollout.JaxEngine(CFG, params, num_slots=1, max_length=MAX_LENGTH, eos_token_ids=(EOS,))
  return engine.generate([rollout.GenerateRequest("r", prompt, rollout.SamplingParams(
      max_new_tokens=max_new, temperature=0.0, ignore_eos=ignore_eos))])[0]


PROMPT = [3, 17, 42, 8, 91, 23, 7]


def test_generate_answers_sglang_shape_and_equals_the_in_process_engine(url):
  status, answer = _call(url, "/generate", {"input_ids": PROMPT, "rid": "g0", "return_logprob": True,
                                            "sampling_params": {"temperature": 0, "max_new_tokens": 12}})
  assert status == 200
  meta = answer["meta_info"]
  assert set(meta) >= {"id", "finish_reason", "prompt_tokens", "completion_tokens", "cached_tokens",
                       "weight_version", "e2e_latency", "output_token_logprobs", "input_token_logprobs"}
  assert "text" not in answer  # no tokenizer.json: ids only, as --skip-tokenizer-init
  expected = _greedy_in_process(_params(0), PROMPT, 12)
  assert answer["output_ids"] == expected.output_ids.tolist()
  assert meta["id"] == "g0" and meta["prompt_tokens"] == len(PROMPT)
  assert meta["completion_tokens"] == len(answer["output_ids"])
  assert meta["finish_reason"] == expected.finish_reason
  assert meta["weight_version"] == "default"
  assert meta["input_token_logprobs"] == [[None, PROMPT[-1], None]]
  assert [entry[1] for entry in meta["output_token_logprobs"]] == answer["output_ids"]
  # log-probs equal the model's: log softmax of the full forward's logits (fp32)
  ids = np.array([PROMPT + answer["output_ids"]], np.int32)
  logprobs = jax.nn.log_softmax(models.logits(CFG, _params(0), ids)[0], axis=-1)
  want = [float(logprobs[len(PROMPT) - 1 + i, t]) for i, t in enumerate(answer["output_ids"])]
  np.testing.assert_allclose([entry[0] for entry in meta["output_token_logprobs"]], want, atol=1e-5)


def test_batches_n_and_rids(url):
  prompts = [PROMPT, [9, 9, 9, 1]]
  status, answers = _call(url, "/generate", {"input_ids": prompts, "rid": "b",
                                             "sampling_params": {"temperature": 0, "max_new_tokens": 5}})
  assert status == 200 and [a["meta_info"]["id"] for a in answers] == ["b_0", "b_1"]
  for prompt, answer in zip(prompts, answers):
    assert answer["output_ids"] == _greedy_in_process(_params(0), prompt, 5).output_ids.tolist()
  status, answers = _call(url, "/generate", {"input_ids": PROMPT, "sampling_params": {
      "temperature": 1.0, "max_new_tokens": 6, "n": 3, "ignore_eos": True}})
  assert status == 200 and len(answers) == 3 and all(len(a["output_ids"]) == 6 for a in answers)
  # the n samples prefill the prompt once: the later ones copy it (or reuse a slot holding it)
  assert len({a["meta_info"]["id"] for a in answers}) == 3
  # a seeded request repeats exactly
  body = {"input_ids": PROMPT, "sampling_params": {"temperature": 1.0, "max_new_tokens": 8, "sampling_seed": 7}}
  assert _call(url, "/generate", body)[1]["output_ids"] == _call(url, "/generate", body)[1]["output_ids"]


@pytest.mark.parametrize("body, status, message", [
    ({"sampling_params": {}}, 400, "Either text, input_ids or input_embeds should be provided."),
    ({"input_ids": []}, 400, "input_ids cannot be empty."),
    ({"input_ids": [1, 200]}, 400, "outside the vocabulary [0, 97)"),
    ({"input_ids": [1] * MAX_LENGTH}, 400, f"The input ({MAX_LENGTH} tokens) is longer than the model's context "
                                           f"length ({MAX_LENGTH} tokens)."),
    ({"input_ids": [1, 2], "sampling_params": {"top_p": 0}}, 400, "top_p must be in (0, 1], got 0"),
    ({"input_ids": [1, 2], "sampling_params": {"foo": 1}}, 400, "unknown field sampling_params.foo"),
    ({"input_ids": [1, 2], "sampling_params": {"temperature": "hot"}}, 400, "sampling_params.temperature"),
    ({"input_ids": [1, 2], "sampling_params": {"repetition_penalty": 1.3}}, 400, "repetition_penalty=1.3 is not"),
    ({"input_ids": [1, 2], "sampling_params": {"stop": "x"}}, 400, "sampling_params.stop needs a tokenizer"),
    ({"input_ids": [1, 2], "logprob_start_len": -2}, 400, "logprob_start_len must be an int >= -1"),
    ({"text": "hello"}, 400, "text input needs a tokenizer"),
    ({"input_ids": [[1, 2], [3]], "sampling_params": [{}]}, 400, "sampling_params has 1 entries for 2 prompts"),
])
def test_bad_requests_get_a_400_naming_the_field(url, body, status, message):
  got_status, answer = _call(url, "/generate", body)
  assert got_status == status
  assert message in answer["error"]["message"]


def test_bad_json_unknown_routes_and_the_server_keeps_serving(url):
  status, answer = _call(url, "/generate", raw=b"{not json")
  assert status == 400 and "not JSON" in answer["error"]["message"]
  assert _call(url, "/nope")[0] == 404
  status, answer = _call(url, "/update_weights_from_tensor", {})
  assert status == 400 and answer["success"] is False
  assert _call(url, "/health")[0] == 200
  assert _call(url, "/health_generate")[0] == 200


def test_information_and_load_routes(url, checkpoints):
  for path in ("/get_model_info", "/model_info"):
    status, info = _call(url, path)
    assert status == 200 and info["model_path"] == checkpoints[0] and info["is_generation"] is True
  status, info = _call(url, "/get_server_info")
  assert info["max_total_num_tokens"] == 4 * MAX_LENGTH and info["context_length"] == MAX_LENGTH
  assert info["max_running_requests"] == 4 and info["status"] == "ready"
  assert _call(url, "/v1/models")[1]["data"][0]["max_model_len"] == MAX_LENGTH
  status, load = _call(url, "/get_load")
  assert status == 200 and load == [{"dp_rank": 0, "num_reqs": 0, "num_waiting_reqs": 0, "num_tokens": 0}]
  loads = _call(url, "/v1/loads")[1]["loads"][0]
  assert loads["max_total_num_tokens"] == 4 * MAX_LENGTH and loads["num_used_tokens"] == 0
  assert _call(url, "/get_weight_version")[1] == {"weight_version": "default"}
  assert _call(url, "/flush_cache", method="POST", raw=b"")[0] == 200


def _in_background(fn, *args):
  pool = concurrent.futures.ThreadPoolExecutor(1)
  return pool.submit(fn, *args)


def _long_request(url, rid, max_new=MAX_LENGTH - len(PROMPT)):
  return _call(url, "/generate", {"input_ids": PROMPT, "rid": rid, "return_logprob": True, "sampling_params": {
      "temperature": 0, "max_new_tokens": max_new, "ignore_eos": True}})


def _wait_running(url):
  for _ in range(400):
    if _call(url, "/get_load")[1][0]["num_reqs"]:
      return
    asyncio.run(asyncio.sleep(0.01))
  raise AssertionError("the request never started")


def test_pause_abort_continue_and_abort_by_rid(url):
  # pause in place: a running request keeps its slot and finishes after continue
  pending = _in_background(_long_request, url, "pi")
  _wait_running(url)
  assert _call(url, "/pause_generation", {"mode": "in_place"}) == (
      200, {"message": "Generation paused successfully.", "status": "ok"})
  assert not pending.done()
  assert _call(url, "/flush_cache", method="POST", raw=b"")[0] == 400  # busy
  assert _call(url, "/continue_generation", {})[0] == 200
  status, answer = pending.result(timeout=120)
  assert answer["meta_info"]["finish_reason"] == {"type": "length", "length": MAX_LENGTH - len(PROMPT)}
  full = answer["output_ids"]
  # pause with abort: the running request ends "abort" with its tokens so far
  pending = _in_background(_long_request, url, "pa")
  _wait_running(url)
  assert _call(url, "/pause_generation", {"mode": "abort"})[0] == 200
  status, answer = pending.result(timeout=120)
  assert status == 200 and answer["meta_info"]["finish_reason"]["type"] == "abort"
  assert answer["output_ids"] == full[:len(answer["output_ids"])]
  assert _call(url, "/continue_generation", raw=b"")[0] == 200
  # abort by rid prefix, as SGLang matches
  pending = _in_background(_long_request, url, "victim-1")
  _wait_running(url)
  assert _call(url, "/abort_request", {"rid": "victim"}) == (200, None)
  assert pending.result(timeout=120)[1]["meta_info"]["finish_reason"]["type"] == "abort"
  assert _call(url, "/pause_generation", {"mode": "retract"})[0] == 400


def test_client_matches_the_engine_and_continues_an_aborted_turn(url):
  async def main():
    async with sglang_client.SGLangEngine(url) as engine:
      request = rollout.GenerateRequest("c0", PROMPT, rollout.SamplingParams(max_new_tokens=10, temperature=0.0))
      result = await engine.generate(request)
      expected = _greedy_in_process(_params(0), PROMPT, 10)
      assert result.output_ids.tolist() == expected.output_ids.tolist()
      np.testing.assert_allclose(result.output_logprobs, expected.output_logprobs, atol=1e-5)
      assert result.weight_versions == ("default",)
      # an aborted turn is resubmitted with its tokens so far and the rest of its budget
      budget = MAX_LENGTH - len(PROMPT)
      long = rollout.GenerateRequest("c1", PROMPT, rollout.SamplingParams(
          max_new_tokens=budget, temperature=0.0, ignore_eos=True))
      task = asyncio.ensure_future(engine.generate(long))
      while not (await engine.load()).running:
        await asyncio.sleep(0.01)
      await engine.call("POST", "/abort_request", {"rid": "c1"})
      result = await task
      assert engine.resubmitted_turns == 1
      assert result.finish_reason["type"] == "length" and result.completion_tokens == budget
      # greedy: the continued turn is the uninterrupted one
      uninterrupted = _greedy_in_process(_params(0), PROMPT, budget, ignore_eos=True)
      assert result.output_ids.tolist() == uninterrupted.output_ids.tolist()
      np.testing.assert_allclose(result.output_logprobs, uninterrupted.output_logprobs, atol=1e-5)
      assert result.output_logprobs.shape == result.output_ids.shape
      with pytest.raises(sglang_client.ServerError, match="HTTP 400: input_ids cannot be empty"):
        await engine.call("POST", "/generate", {"input_ids": []})
  asyncio.run(main())


def test_weight_update_serves_the_new_weights_with_their_version(url, checkpoints):
  status, answer = _call(url, "/update_weights_from_disk", {"model_path": checkpoints[1], "weight_version": "v1"})
  assert status == 200 and answer["success"] is True
  status, answer = _call(url, "/generate", {"input_ids": PROMPT, "sampling_params": {"temperature": 0,
                                                                                     "max_new_tokens": 12}})
  assert answer["output_ids"] == _greedy_in_process(_params(1), PROMPT, 12).output_ids.tolist()
  assert answer["meta_info"]["weight_version"] == "v1"
  assert answer["meta_info"]["cached_tokens"] == 0  # the old weights' prefixes were dropped
  # refused: a missing directory, another architecture; the served weights stay
  status, answer = _call(url, "/update_weights_from_disk", {"model_path": "/nonexistent/dir"})
  assert status == 400 and answer["success"] is False and "/nonexistent/dir" in answer["message"]
  assert _call(url, "/update_weights_from_disk", {"weight_version": "x"})[0] == 400
  assert _call(url, "/get_weight_version")[1] == {"weight_version": "v1"}
  # abort_all_requests: the request in flight ends "abort" and the update goes through at once.
  # Paused in place first, so the request cannot finish while the weights load on a slow machine.
  pending = _in_background(_long_request, url, "during-update")
  _wait_running(url)
  assert _call(url, "/pause_generation", {"mode": "in_place"})[0] == 200
  status, answer = _call(url, "/update_weights_from_disk", {"model_path": checkpoints[0], "weight_version": "v2",
                                                            "abort_all_requests": True})
  assert status == 200
  assert pending.result(timeout=120)[1]["meta_info"]["finish_reason"]["type"] == "abort"
  assert _call(url, "/continue_generation", {})[0] == 200
  answer = _call(url, "/generate", {"input_ids": PROMPT, "sampling_params": {"temperature": 0, "max_new_tokens": 12}})[1]
  assert answer["output_ids"] == _greedy_in_process(_params(0), PROMPT, 12).output_ids.tolist()
  assert answer["meta_info"]["weight_version"] == "v2"


def test_a_bf16_weight_version_serves_the_params_cast_to_bf16(url, tmp_path):
  params = _params(2)
  path = weight_sync.write_version(CFG, params, str(tmp_path), version=5, dtype="bfloat16")
  assert path == weight_sync.version_dir(str(tmp_path), 5) and sorted(os.listdir(tmp_path)) == ["v000005"]
  with safetensors.safe_open(os.path.join(path, "model.safetensors"), framework="numpy") as f:
    assert {f.get_slice(name).get_dtype() for name in f.keys()} == {"BF16"}
  status, _ = _call(url, "/update_weights_from_disk", {"model_path": path, "weight_version": "v5"})
  assert status == 200
  answer = _call(url, "/generate", {"input_ids": PROMPT, "sampling_params": {"temperature": 0, "max_new_tokens": 12}})[1]
  cast = jax.tree.map(lambda x: x.astype(jnp.bfloat16).astype(x.dtype), params)  # the server computes in fp32
  assert answer["output_ids"] == _greedy_in_process(cast, PROMPT, 12).output_ids.tolist()
  assert answer["meta_info"]["weight_version"] == "v5"


def test_pushed_weights_serve_as_written_ones_and_bad_uploads_are_refused(url):
  async def push(params, version, **kwargs):
    async with sglang_client.SGLangEngine(url) as engine:
      return await weight_sync.push_version(CFG, params, [engine], version, **kwargs)

  asyncio.run(push(_params(3), "p3", chunk_bytes=2_000))  # many chunks
  with pytest.MonkeyPatch.context() as patch:  # a tensor larger than one upload may be: named, nothing sent
    patch.setattr(server, "MAX_UPLOAD_BYTES", 1_000)
    with pytest.raises(ValueError, match=r"tensor 'model.embed_tokens.weight' is \d+ bytes, more than one upload"):
      asyncio.run(push(_params(4), "too-big", chunk_bytes=2_000))
  answer = _call(url, "/generate", {"input_ids": PROMPT, "sampling_params": {"temperature": 0, "max_new_tokens": 12}})[1]
  assert answer["output_ids"] == _greedy_in_process(_params(3), PROMPT, 12).output_ids.tolist()
  assert answer["meta_info"]["weight_version"] == "p3" and answer["meta_info"]["cached_tokens"] == 0
  status, answer = _call(url, "/update_weights_from_upload", {"weight_version": "p3"})  # a resent commit
  assert status == 200 and answer["message"] == "Already serving weight_version 'p3'."

  tensors = {name: t for group in models.hf_tensor_groups(CFG, _params(4), 1 << 30) for name, t in group.items()}
  def upload(version, chosen, query=True):
    return _call(url, "/upload_weights" + (f"?weight_version={version}" if query else ""),
                 raw=safetensors.numpy.save(chosen), headers={"Content-Type": "application/octet-stream"})

  status, answer = upload("p4", tensors, query=False)
  assert status == 400 and "weight_version" in answer["error"]["message"]
  status, answer = _call(url, "/upload_weights?weight_version=p4", raw=b"not safetensors")
  assert status == 400 and "not a safetensors blob" in answer["error"]["message"]
  status, answer = _call(url, "/update_weights_from_upload", {"weight_version": "never"})
  assert status == 400 and answer["success"] is False and "no tensors uploaded" in answer["message"]
  assert _call(url, "/update_weights_from_upload", {"weight_version": 4})[0] == 400
  # an incomplete upload is refused naming what is missing; a new version drops an earlier one's tensors
  status, answer = upload("old", {"model.norm.weight": tensors["model.norm.weight"]})
  assert status == 200 and answer["num_tensors"] == 1
  partial = {k: v for k, v in tensors.items() if k != "model.norm.weight"}
  status, answer = upload("p4", partial)
  assert status == 200 and answer["num_tensors"] == len(partial)
  status, answer = _call(url, "/update_weights_from_upload", {"weight_version": "p4"})
  assert status == 400 and "missing tensor(s) model.norm.weight" in answer["message"]
  assert _call(url, "/update_weights_from_upload", {"weight_version": "p4"})[0] == 400  # the upload was dropped
  # refused at the upload: a tensor of another shape, or one the served model has no place for
  status, answer = upload("p4", {"model.norm.weight": np.zeros(3, np.float32)})
  assert status == 400 and answer["error"]["message"] == (
      f"tensor 'model.norm.weight' has shape [3], the served model's is [{CFG.hidden_size}]")
  status, answer = upload("p4", {"model.layers.99.mlp.up_proj.weight": np.zeros(3, np.float32)})
  assert status == 400 and "'model.layers.99.mlp.up_proj.weight' is not a tensor of the served" in answer["error"]["message"]
  assert _call(url, "/get_weight_version")[1] == {"weight_version": "p3"}  # nothing swapped
  upload("p4", tensors)  # sent again whole: it goes through
  assert _call(url, "/update_weights_from_upload", {"weight_version": "p4"})[0] == 200
  answer = _call(url, "/generate", {"input_ids": PROMPT, "sampling_params": {"temperature": 0, "max_new_tokens": 12}})[1]
  assert answer["output_ids"] == _greedy_in_process(_params(4), PROMPT, 12).output_ids.tolist()
  assert answer["meta_info"]["weight_version"] == "p4"


def test_api_key_and_the_loopback_rule(checkpoints, tmp_path):
  key_file = tmp_path / "key"
  key_file.write_text("s3cret\n")
  process, url = local_servers.start_server(checkpoints[0], SERVER_ARGS + ["--api-key-file", str(key_file)])
  try:
    assert _call(url, "/health")[0] == 200  # open for probes
    status, answer = _call(url, "/generate", {"input_ids": [1, 2]})
    assert status == 401 and "API key" in answer["error"]["message"]
    status, _ = _call(url, "/generate", {"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 2}},
                      headers={"Authorization": "Bearer s3cret"})
    assert status == 200
  finally:
    process.stop()
  refused = subprocess.run([sys.executable, "-m", "rstar_jax.serve", "--checkpoint", checkpoints[0],
                            "--host", "0.0.0.0"], capture_output=True, text=True, timeout=120)
  assert refused.returncode != 0 and "beyond loopback: give --api-key" in refused.stderr


@pytest.mark.parametrize("length, temperature", [(7, 1.0), (700, 0.7)])
def test_prompt_logprobs_equal_the_log_softmax_of_the_models_logits(length, temperature):
  """The input log-prob pass (padded, in chunks of PROMPT_CHUNK past it) against the whole logits."""
  params = _params(0)
  prompt = [int(t) for t in tiny_models.random_ids((1, length), seed=length, vocab=CFG.vocab_size)[0]]
  logits = models.logits(CFG, params, np.asarray([prompt], np.int32))[0, :-1] / temperature
  want = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits, axis=-1)), np.asarray(prompt[1:])[:, None], -1)[:, 0]
  got = server.prompt_logprobs(CFG, params, prompt, temperature)
  assert got.shape == (length - 1,)
  np.testing.assert_allclose(got, want, atol=2e-5)
