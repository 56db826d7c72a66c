"""The JAX engine against step-by-step full forwards: greedy tokens, logprobs, stops, budgets,
continuous batching (more requests than slots, chunked prefill), sharding, errors, compilation.

  python -m pytest -q tests/rollout_engine_test.py
"""
import asyncio

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from rstar_jax import models
from rstar_jax import rollout
import compile_counter
import tiny_models

# vocab 96 divides over tensor=2 for the sharded test.
CFG = tiny_models.tiny_config("qwen3", vocab_size=96)
PROMPT_LENS = (3, 11, 6, 20, 1)
MAX_NEW = 7


@pytest.fixture(scope="module")
def params():
  return models.init_params(CFG, jax.random.key(0))


def _prompts():
  return [tiny_models.random_ids((n,), seed=10 + i, vocab=96).tolist() for i, n in enumerate(PROMPT_LENS)]


def _requests(**sampling):
  sampling = {"max_new_tokens": MAX_NEW, **sampling}
  return [rollout.GenerateRequest(f"r{i}", ids, rollout.SamplingParams(sampling_seed=i, **sampling))
          for i, ids in enumerate(_prompts())]


def _reference_logits(params, prompt, outputs) -> np.ndarray:
  """Logits [len(outputs), V] of each output position from one full forward."""
  ids = np.array([prompt + list(outputs)], np.int32)
  return np.asarray(models.logits(CFG, params, ids))[0, len(prompt) - 1:-1]


def _reference_greedy(params, prompt, max_new, stop_ids=()):
  outputs = []
  while len(outputs) < max_new:
    ids = np.array([prompt + outputs], np.int32)
    outputs.append(int(np.argmax(np.asarray(models.logits(CFG, params, ids))[0, -1])))
    if outputs[-1] in stop_ids:
      break
  return outputs


# max_length 64: every call attends the whole cache; 512: a 128-position bucket, under a third of it
@pytest.mark.parametrize("num_slots, prefill_chunk, max_length", [(2, 4, 64), (8, 256, 64), (1, 1, 64),
                                                                  (8, 256, 512)])
def test_greedy_equals_step_by_step_full_forwards(params, num_slots, prefill_chunk, max_length):
  engine = rollout.JaxEngine(CFG, params, num_slots=num_slots, max_length=max_length, eos_token_ids=(),
                             prefill_chunk=prefill_chunk)
  results = engine.generate(_requests(temperature=0.0))
  for prompt, result in zip(_prompts(), results):
    expected = _reference_greedy(params, prompt, MAX_NEW)
    assert result.output_ids.tolist() == expected
    assert result.finish_reason == {"type": "length", "length": MAX_NEW}
    assert (result.prompt_tokens, result.completion_tokens) == (len(prompt), MAX_NEW)
    reference = jax.nn.log_softmax(_reference_logits(params, prompt, expected))
    np.testing.assert_allclose(result.output_logprobs,
                               np.asarray(reference)[np.arange(MAX_NEW), expected], atol=1e-4)


def test_sampling_is_reproducible_and_independent_of_batching(params):
  sampling = dict(temperature=0.9, top_k=20, top_p=0.95)
  runs = []
  for num_slots, chunk in [(2, 4), (8, 256)]:
    engine = rollout.JaxEngine(CFG, params, num_slots=num_slots, max_length=64, eos_token_ids=(),
                               prefill_chunk=chunk, seed=5)
    runs.append(engine.generate(_requests(**sampling)))
  for a, b, prompt in zip(*runs, _prompts()):
    assert a.output_ids.tolist() == b.output_ids.tolist()
    scaled = np.asarray(jax.nn.log_softmax(_reference_logits(params, prompt, a.output_ids.tolist()) / 0.9))
    np.testing.assert_allclose(a.output_logprobs, scaled[np.arange(MAX_NEW), a.output_ids], atol=1e-4)
  greedy = rollout.JaxEngine(CFG, params, num_slots=8, max_length=64, eos_token_ids=()).generate(
      _requests(temperature=0.0))
  assert [r.output_ids.tolist() for r in runs[0]] != [r.output_ids.tolist() for r in greedy]


def test_requests_without_a_seed_draw_fresh_samples_on_each_call(params):
  engine = rollout.JaxEngine(CFG, params, num_slots=4, max_length=64, eos_token_ids=())
  request = [rollout.GenerateRequest("a", [1, 2, 3], rollout.SamplingParams(max_new_tokens=12))]
  first, second = engine.generate(request)[0], engine.generate(request)[0]
  assert first.output_ids.tolist() != second.output_ids.tolist()
  again = rollout.JaxEngine(CFG, params, num_slots=4, max_length=64, eos_token_ids=()).generate(request)[0]
  assert again.output_ids.tolist() == first.output_ids.tolist()


def test_stop_ids_end_the_output_and_are_kept(params):
  prompt = _prompts()[1]
  free = _reference_greedy(params, prompt, MAX_NEW)
  stop = free[3]
  expected = free[:free.index(stop) + 1]
  for engine_eos, request_stop in [((stop,), ()), ((), (stop,))]:
    engine = rollout.JaxEngine(CFG, params, num_slots=2, max_length=64, eos_token_ids=engine_eos)
    result = engine.generate([rollout.GenerateRequest("s", prompt, rollout.SamplingParams(
        max_new_tokens=MAX_NEW, temperature=0.0, stop_token_ids=request_stop))])[0]
    assert result.output_ids.tolist() == expected
    assert result.finish_reason == {"type": "stop", "matched": stop}
  engine = rollout.JaxEngine(CFG, params, num_slots=2, max_length=64, eos_token_ids=(stop,))
  ignored = engine.generate([rollout.GenerateRequest("s", prompt, rollout.SamplingParams(
      max_new_tokens=MAX_NEW, temperature=0.0, ignore_eos=True))])[0]
  assert ignored.output_ids.tolist() == free


def test_a_stop_check_ends_the_output_at_the_token_it_matches(params):
  prompt = _prompts()[1]
  free = _reference_greedy(params, prompt, MAX_NEW)
  seen = []

  def third_token(output_ids):  # a match once three tokens are out
    seen.append(list(output_ids))
    return "three" if len(output_ids) == 3 else None

  engine = rollout.JaxEngine(CFG, params, num_slots=2, max_length=64, eos_token_ids=())
  result = engine.generate([rollout.GenerateRequest("s", prompt, rollout.SamplingParams(
      max_new_tokens=MAX_NEW, temperature=0.0), stop_check=third_token)])[0]
  assert result.output_ids.tolist() == free[:3]
  assert result.finish_reason == {"type": "stop", "matched": "three"}
  assert seen == [free[:1], free[:2], free[:3]]  # asked after every token, with the outputs so far
  # a stop id wins over the check at the same token, and is not shown to it
  engine = rollout.JaxEngine(CFG, params, num_slots=2, max_length=64, eos_token_ids=(free[2],))
  seen.clear()
  result = engine.generate([rollout.GenerateRequest("s", prompt, rollout.SamplingParams(
      max_new_tokens=MAX_NEW, temperature=0.0), stop_check=third_token)])[0]
  assert result.finish_reason == {"type": "stop", "matched": free[2]} and seen == [free[:1], free[:2]]


def test_a_failing_stop_check_aborts_its_request_only(params):
  prompts = _prompts()
  free = _reference_greedy(params, prompts[0], MAX_NEW)

  def broken(output_ids):
    raise KeyError(output_ids[-1])

  engine = rollout.JaxEngine(CFG, params, num_slots=2, max_length=64, eos_token_ids=())
  sampling = rollout.SamplingParams(max_new_tokens=MAX_NEW, temperature=0.0)
  healthy, failed = engine.generate([rollout.GenerateRequest("ok", prompts[0], sampling),
                                     rollout.GenerateRequest("bad", prompts[1], sampling, stop_check=broken)])
  assert healthy.output_ids.tolist() == free and healthy.finish_reason["type"] == "length"
  assert failed.output_ids.size == 1 and failed.finish_reason["type"] == "abort"
  assert failed.finish_reason["message"].startswith("stop_check failed: KeyError")


def test_async_progress_reports_each_step_of_a_request(params):
  engine = rollout.JaxEngine(CFG, params, num_slots=2, max_length=64, eos_token_ids=(), prefill_chunk=4)
  front = rollout.AsyncJaxEngine(engine)
  request = _requests(temperature=0.0)[3]  # a 20-token prompt: 5 prefill steps, then 7 tokens
  snapshots = []
  result = asyncio.run(front.generate(request, snapshots.append))
  assert [s.output_ids.tolist() for s in snapshots] == [result.output_ids[:n].tolist() for n in range(1, MAX_NEW)]
  assert all(s.finish_reason is None and s.rid == request.rid for s in snapshots)
  assert [len(s.output_logprobs) for s in snapshots] == list(range(1, MAX_NEW))
  assert not front._watchers  # forgotten once answered


def test_budgets_are_clamped_to_the_context(params):
  engine = rollout.JaxEngine(CFG, params, num_slots=2, max_length=16, eos_token_ids=(), prefill_chunk=8)
  prompt = tiny_models.random_ids((13,), seed=3, vocab=96).tolist()
  results = engine.generate([
      rollout.GenerateRequest("none", prompt, rollout.SamplingParams(max_new_tokens=None, temperature=0.0)),
      rollout.GenerateRequest("big", prompt, rollout.SamplingParams(max_new_tokens=100, temperature=0.0)),
      rollout.GenerateRequest("zero", prompt, rollout.SamplingParams(max_new_tokens=0)),
  ])
  expected = _reference_greedy(params, prompt, 3)
  for result in results[:2]:
    assert result.output_ids.tolist() == expected
    assert result.finish_reason == {"type": "length", "length": 3}
  assert results[2].output_ids.tolist() == [] and results[2].finish_reason == {"type": "length", "length": 0}


def test_sharded_engine_equals_one_device(params):
  mesh_rules = models.MeshRules(models.make_mesh(data=2, fsdp=2, tensor=2))
  sharded_params = jax.device_put(params, models.param_shardings(CFG, mesh_rules))
  assert sharded_params["embed_tokens"].sharding.spec == P("tensor", "fsdp")
  engine = rollout.JaxEngine(CFG, sharded_params, num_slots=4, max_length=64, eos_token_ids=(),
                             prefill_chunk=8, mesh_rules=mesh_rules)
  single = rollout.JaxEngine(CFG, params, num_slots=4, max_length=64, eos_token_ids=(), prefill_chunk=8)
  for a, b in zip(engine.generate(_requests(temperature=0.0)), single.generate(_requests(temperature=0.0))):
    assert a.output_ids.tolist() == b.output_ids.tolist()


def test_a_decode_step_run_as_one_program_equals_the_model_call_then_sampling(params):
  split = models.split_layers(params)

  def prefilled_cache():
    cache = models.init_cache(CFG, 4, 32)
    prompts = np.stack([tiny_models.random_ids((6,), seed=s, vocab=96) for s in range(4)]).astype(np.int32)
    return models.extend(CFG, split, cache, prompts, np.array([6, 4, 5, 6], np.int32))[1]

  tokens, num_new = np.array([[5], [17], [40], [0]], np.int32), np.array([1, 1, 1, 0], np.int32)
  # rows: greedy; temperature + top_p; temperature + top_k + min_p; idle
  sampling_args = (3, np.array([1, 2, 3, 4], np.uint32), np.array([0, 2, 5, 0], np.int32),
                   np.array([0.0, 0.8, 1.3, 0.0], np.float32), np.array([1.0, 0.9, 1.0, 1.0], np.float32),
                   np.array([-1, -1, 5, -1], np.int32), np.array([0.0, 0.0, 0.05, 0.0], np.float32), 90)
  logits, separate_cache = models.extend(CFG, split, prefilled_cache(), tokens, num_new, attend_length=16)
  expected = rollout.sample_tokens(logits, *sampling_args, use_filters=True, all_greedy=False)
  (sampled, logprobs), fused_cache = rollout.jax_engine._decode_and_sample(
      CFG, split, prefilled_cache(), tokens, num_new, 16, sampling_args, None, use_filters=True, all_greedy=False)
  np.testing.assert_array_equal(sampled, expected[0])
  np.testing.assert_array_equal(logprobs, expected[1])
  for fused, separate in zip(jax.tree.leaves(fused_cache), jax.tree.leaves(separate_cache)):
    np.testing.assert_array_equal(fused, separate)


def test_a_second_call_of_the_same_shapes_compiles_nothing(params):
  engine = rollout.JaxEngine(CFG, params, num_slots=2, max_length=64, eos_token_ids=(), prefill_chunk=8)
  engine.generate(_requests(temperature=0.7, top_p=0.9))
  with compile_counter.count_compiles() as compiles:
    engine.generate(_requests(temperature=0.7, top_p=0.9))
  assert not compiles


@pytest.mark.parametrize("request_, message", [
    (rollout.GenerateRequest("e", []), "request 'e': input_ids must be a non-empty list of ints"),
    (rollout.GenerateRequest("v", [1, 96]), r"request 'v': input_ids must be in \[0, 96\)"),
    (rollout.GenerateRequest("l", list(range(16))), "request 'l': 16 prompt tokens leave no room"),
])
def test_bad_requests_name_the_request(params, request_, message):
  engine = rollout.JaxEngine(CFG, params, num_slots=2, max_length=16, eos_token_ids=())
  with pytest.raises(ValueError, match=message):
    engine.generate([rollout.GenerateRequest("ok", [1, 2]), request_])


def test_repeated_rids_and_bad_engine_settings_are_errors(params):
  engine = rollout.JaxEngine(CFG, params, num_slots=2, max_length=16, eos_token_ids=())
  with pytest.raises(ValueError, match="request 'a': rid repeated"):
    engine.generate([rollout.GenerateRequest("a", [1]), rollout.GenerateRequest("a", [2])])
  with pytest.raises(ValueError, match=r"eos_token_ids \[200\] are outside the vocabulary"):
    rollout.JaxEngine(CFG, params, num_slots=2, max_length=16, eos_token_ids=(200,))
  with pytest.raises(ValueError, match="need num_slots >= 1"):
    rollout.JaxEngine(CFG, params, num_slots=0, max_length=16, eos_token_ids=())


def test_async_callers_share_the_batch_and_get_their_own_results(params):
  engine = rollout.JaxEngine(CFG, params, num_slots=2, max_length=64, eos_token_ids=(), prefill_chunk=4)
  front = rollout.AsyncJaxEngine(engine)
  requests = _requests(temperature=0.0)

  async def late(request, delay_s):
    await asyncio.sleep(delay_s)  # joins while the others decode
    return await front.generate(request)

  async def main():
    return await asyncio.gather(*(late(r, 0.05 * i) for i, r in enumerate(requests)))

  results = asyncio.run(main())
  for prompt, result, request in zip(_prompts(), results, requests):
    assert result.rid == request.rid
    assert result.output_ids.tolist() == _reference_greedy(params, prompt, MAX_NEW)
  assert not engine.has_work


def test_async_errors_reach_every_caller_and_the_engine_recovers(params):
  engine = rollout.JaxEngine(CFG, params, num_slots=2, max_length=64, eos_token_ids=())
  front = rollout.AsyncJaxEngine(engine)
  requests = _requests(temperature=0.0)

  async def duplicate():
    first = asyncio.ensure_future(front.generate(requests[0]))
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="request 'r0': rid already in flight"):
      await front.generate(requests[0])
    return await first

  assert asyncio.run(duplicate()).output_ids.tolist() == _reference_greedy(params, _prompts()[0], MAX_NEW)
  engine.set_params({**params, "embed_tokens": np.zeros(3)})  # fails inside the step

  async def all_fail():
    return await asyncio.gather(*(front.generate(r) for r in requests[:3]), return_exceptions=True)

  errors = asyncio.run(all_fail())
  assert all(isinstance(e, Exception) for e in errors) and not engine.has_work
  engine.set_params(params)
  assert asyncio.run(front.generate(requests[1])).output_ids.tolist() == _reference_greedy(
      params, _prompts()[1], MAX_NEW)


def test_a_follow_up_request_reuses_the_cached_prefix(params):
  engine = rollout.JaxEngine(CFG, params, num_slots=2, max_length=64, eos_token_ids=(), prefill_chunk=4)
  first = engine.generate(_requests(temperature=0.0)[1:2])[0]
  follow_up = _prompts()[1] + first.output_ids.tolist() + [5, 6, 7]
  request = rollout.GenerateRequest("next", follow_up, rollout.SamplingParams(max_new_tokens=5, temperature=0.0))
  reused = engine.generate([request])[0]
  assert reused.cached_tokens == len(_prompts()[1]) + MAX_NEW - 1
  assert reused.output_ids.tolist() == _reference_greedy(params, follow_up, 5)
  fresh = rollout.JaxEngine(CFG, params, num_slots=2, max_length=64, eos_token_ids=()).generate([request])[0]
  assert fresh.cached_tokens == 0 and fresh.output_ids.tolist() == reused.output_ids.tolist()
  # the same ids again: all but the last prompt id are reused; new weights reuse nothing
  assert engine.generate([request])[0].cached_tokens == len(follow_up) - 1
  engine.set_params(params)
  assert engine.generate([request])[0].cached_tokens == 0


def _group_requests(prompts, samples: int, **sampling):
  return [rollout.GenerateRequest(f"p{i}/s{k}", prompt, rollout.SamplingParams(
      max_new_tokens=MAX_NEW, sampling_seed=100 * i + k, **sampling))
          for i, prompt in enumerate(prompts) for k in range(samples)]


def _generate(params, requests, share: bool, num_slots=4, prefill_chunk=16):
  engine = rollout.JaxEngine(CFG, params, num_slots=num_slots, max_length=128, eos_token_ids=(),
                             prefill_chunk=prefill_chunk, share_prefixes=share)
  return engine, engine.generate(requests)


def test_the_samples_of_a_prompt_prefill_it_once(params):
  prompt = tiny_models.random_ids((50,), seed=7, vocab=96).tolist()
  requests = _group_requests([prompt], samples=4, temperature=0.8)
  _, shared = _generate(params, requests, share=True)
  _, unshared = _generate(params, requests, share=False)
  assert [r.cached_tokens for r in shared] == [0, 49, 49, 49]  # the last prompt id is written for its logits
  assert [r.cached_tokens for r in unshared] == [0, 0, 0, 0]
  for a, b in zip(shared, unshared):
    assert a.output_ids.tolist() == b.output_ids.tolist()
    np.testing.assert_allclose(a.output_logprobs, b.output_logprobs, atol=1e-5)
  greedy = _generate(params, _group_requests([prompt], samples=3, temperature=0.0), share=True)[1]
  assert all(r.output_ids.tolist() == _reference_greedy(params, prompt, MAX_NEW) for r in greedy)


def test_a_shared_system_prompt_is_computed_once_while_a_sharer_runs(params):
  system = tiny_models.random_ids((40,), seed=8, vocab=96).tolist()
  prompts = [system + tiny_models.random_ids((n,), seed=20 + n, vocab=96).tolist() for n in (3, 9, 5, 12, 7, 20)]
  requests = _group_requests(prompts, samples=2, temperature=0.0)  # 12 requests through 4 slots, chunks of 16
  engine, shared = _generate(params, requests, share=True)
  _, unshared = _generate(params, requests, share=False)
  for request, a, b in zip(requests, shared, unshared):
    assert a.output_ids.tolist() == b.output_ids.tolist() == _reference_greedy(params, list(request.input_ids), MAX_NEW)
  assert sum(r.cached_tokens for r in shared) >= 10 * 40  # all but the first request and at most one more
  engine.set_params(models.init_params(CFG, jax.random.key(1)))  # new weights: nothing old is reused
  again = engine.generate(requests[:3])
  fresh = _generate(models.init_params(CFG, jax.random.key(1)), requests[:3], share=False)[1]
  assert [r.output_ids.tolist() for r in again] == [r.output_ids.tolist() for r in fresh]


def test_copy_prefixes_checks_its_arguments(params):
  cache = models.init_cache(CFG, 4, 16)
  with pytest.raises(ValueError, match="distinct targets that are not sources"):
    models.copy_prefixes(cache, [0, 1], [1, 2], [3, 3])
  empty = models.init_cache(CFG, 4, 16)
  size = empty.k[0].size
  copied = models.copy_prefixes(empty.replace(k=tuple(
      jax.numpy.arange(layer * size, (layer + 1) * size, dtype=jax.numpy.float32).reshape(empty.k[0].shape)
      for layer in range(CFG.num_layers))), [2], [0], [5])
  for k in copied.k:
    np.testing.assert_array_equal(k[0], k[2])
    assert not np.array_equal(k[1], k[2])
  assert copied.lengths.tolist() == [5, 0, 0, 0]


def test_kv_bytes_per_slot_and_the_budget_refusal(params):
  per_slot = 2 * CFG.num_layers * CFG.num_kv_heads * 64 * CFG.head_dim * 4  # fp32
  engine = rollout.JaxEngine(CFG, params, num_slots=4, max_length=64, eos_token_ids=(), kv_budget_bytes=4 * per_slot)
  assert engine.kv_bytes_per_slot == per_slot
  assert sum(x.nbytes for x in engine.cache.k + engine.cache.v) == 4 * per_slot
  with pytest.raises(ValueError, match=r"KV cache does not fit its budget: 5 slots x .* MiB > kv_budget_bytes"):
    rollout.JaxEngine(CFG, params, num_slots=5, max_length=64, eos_token_ids=(), kv_budget_bytes=4 * per_slot)


def test_abort_by_rid_prefix_returns_the_tokens_so_far_and_frees_the_slots(params):
  engine = rollout.JaxEngine(CFG, params, num_slots=2, max_length=64, eos_token_ids=(), prefill_chunk=4)
  for request in _requests(temperature=0.0):
    engine.submit(request)
  for _ in range(6):
    engine.step()
  load = engine.load()
  assert load.running == 2 and load.waiting == 3 and load.used_tokens > 0
  aborted = {r.rid: r for r in engine.abort("r1")}  # running or queued alike
  assert set(aborted) == {"r1"}
  partial = aborted["r1"]
  assert partial.finish_reason == {"type": "abort", "message": "Aborted"}
  assert partial.output_ids.tolist() == _reference_greedy(params, _prompts()[1], MAX_NEW)[:partial.completion_tokens]
  assert engine.abort("r1") == []  # gone
  results = {}
  while engine.has_work:
    results.update((r.rid, r) for r in engine.step())
  assert set(results) == {"r0", "r2", "r3", "r4"}
  for rid, result in results.items():
    assert result.output_ids.tolist() == _reference_greedy(params, _prompts()[int(rid[1:])], MAX_NEW)
  assert engine.load() == rollout.EngineLoad()


def test_a_request_waiting_to_copy_from_an_aborted_one_computes_its_prompt(params):
  engine = rollout.JaxEngine(CFG, params, num_slots=2, max_length=128, eos_token_ids=(), prefill_chunk=8)
  prompt = tiny_models.random_ids((60,), seed=3, vocab=96).tolist()
  greedy = rollout.SamplingParams(max_new_tokens=MAX_NEW, temperature=0.0)
  engine.submit(rollout.GenerateRequest("source", prompt, greedy))
  engine.submit(rollout.GenerateRequest("copy", prompt, greedy))
  engine.step()  # both admitted: "copy" waits for the source's 59 shared ids
  assert [r.rid for r in engine.abort("source", exact=True)] == ["source"]
  results = []
  while engine.has_work:
    results += engine.step()
  assert [r.rid for r in results] == ["copy"] and results[0].cached_tokens == 0
  assert results[0].output_ids.tolist() == _reference_greedy(params, prompt, MAX_NEW)


def test_async_abort_pause_and_cancellation(params):
  engine = rollout.JaxEngine(CFG, params, num_slots=2, max_length=64, eos_token_ids=(), prefill_chunk=4)
  front = rollout.AsyncJaxEngine(engine)
  requests = _requests(temperature=0.0, max_new_tokens=40)

  async def main():
    tasks = [asyncio.ensure_future(front.generate(r)) for r in requests[:3]]
    while not engine.load().running:
      await asyncio.sleep(0.01)
    front.pause()
    await asyncio.sleep(0.05)
    steps = engine._iterations
    await asyncio.sleep(0.1)
    assert engine._iterations == steps  # paused: no step runs
    assert await front.abort("r2") == 1  # the queued one, answered at once
    tasks[1].cancel()  # a cancelled caller's request is dropped from the engine
    front.resume()
    first = await tasks[0]
    assert (await tasks[2]).finish_reason["type"] == "abort"
    with pytest.raises(asyncio.CancelledError):
      await tasks[1]
    await front.wait_idle()
    return first

  first = asyncio.run(main())
  assert first.output_ids.tolist() == _reference_greedy(params, _prompts()[0], 40)
  assert not engine.has_work


def test_a_rid_reused_after_its_caller_was_cancelled_is_answered(params):
  engine = rollout.JaxEngine(CFG, params, num_slots=2, max_length=64, eos_token_ids=(), prefill_chunk=4)
  front = rollout.AsyncJaxEngine(engine)
  request = _requests(temperature=0.0)[0]

  async def main():
    first = asyncio.ensure_future(front.generate(request))
    await asyncio.sleep(0)  # queued, not yet submitted
    first.cancel()
    await asyncio.sleep(0)
    return await asyncio.wait_for(front.generate(request), 60)  # the same rid again

  assert asyncio.run(main()).output_ids.tolist() == _reference_greedy(params, _prompts()[0], MAX_NEW)
  assert not engine.has_work
