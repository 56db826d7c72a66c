"""Incremental decoding with the KV cache equals the full forward; steady calls never recompile."""
import jax
import numpy as np
import pytest

from rstar_jax import models
import compile_counter
import tiny_models

CFG = tiny_models.tiny_config("qwen3")


def _params(seed=0):
  return models.init_params(CFG, jax.random.key(seed))


def test_prefill_then_one_token_steps_equal_full_forward():
  params = _params()
  ids = tiny_models.random_ids((2, 12), seed=1)
  full = np.asarray(models.logits(CFG, params, ids))
  cache = models.init_cache(CFG, 2, 16)
  last, cache = models.extend(CFG, params, cache, ids[:, :5], np.array([5, 5]))
  np.testing.assert_allclose(last, full[:, 4], atol=1e-5)
  for t in range(5, 12):
    last, cache = models.extend(CFG, params, cache, ids[:, t:t + 1], np.array([1, 1]))
    np.testing.assert_allclose(last, full[:, t], atol=1e-5, err_msg=f"step {t}")
  np.testing.assert_array_equal(cache.lengths, [12, 12])


def test_padded_batch_of_different_lengths_decodes_like_each_alone():
  params = _params(1)
  lengths = [3, 9, 6]
  seqs = [tiny_models.random_ids((1, n + 4), seed=10 + i)[0] for i, n in enumerate(lengths)]
  prompt = np.zeros((3, max(lengths)), np.int32)  # right padding with id 0
  for i, n in enumerate(lengths):
    prompt[i, :n] = seqs[i][:n]
  cache = models.init_cache(CFG, 3, 16)
  last, cache = models.extend(CFG, params, cache, prompt, np.array(lengths))
  alone = [np.asarray(models.logits(CFG, params, s[None]))[0] for s in seqs]
  for i, n in enumerate(lengths):
    np.testing.assert_allclose(last[i], alone[i][n - 1], atol=1e-5)
  for step in range(4):
    tokens = np.array([[s[n + step]] for s, n in zip(seqs, lengths)], np.int32)
    last, cache = models.extend(CFG, params, cache, tokens, np.ones(3, np.int32))
    for i, n in enumerate(lengths):
      np.testing.assert_allclose(last[i], alone[i][n + step], atol=1e-5, err_msg=f"seq {i} step {step}")


def test_multi_token_append_and_slot_refill_continue_correctly():
  """A tool output of several tokens is one extend; a finished slot is reset and refilled while the
  other slot keeps decoding (continuous batching)."""
  params = _params(2)
  a = tiny_models.random_ids((1, 14), seed=20)[0]
  b = tiny_models.random_ids((1, 10), seed=21)[0]
  c = tiny_models.random_ids((1, 6), seed=22)[0]
  full = {name: np.asarray(models.logits(CFG, params, s[None]))[0] for name, s in (("a", a), ("b", b), ("c", c))}
  cache = models.init_cache(CFG, 2, 16)
  _, cache = models.extend(CFG, params, cache, np.stack([a[:4], b[:4]]), np.array([4, 4]))
  # slot 0 appends 5 environment tokens at once; slot 1 appends 1 token (right-padded row).
  chunk = np.zeros((2, 5), np.int32)
  chunk[0], chunk[1, 0] = a[4:9], b[4]
  last, cache = models.extend(CFG, params, cache, chunk, np.array([5, 1]))
  np.testing.assert_allclose(last[0], full["a"][8], atol=1e-5)
  np.testing.assert_allclose(last[1], full["b"][4], atol=1e-5)
  # slot 1 finishes; it is reset and refilled with sequence c while slot 0 idles (num_new 0).
  cache = models.reset_slots(cache, np.array([False, True]))
  refill = np.zeros((2, 3), np.int32)
  refill[1] = c[:3]
  last, cache = models.extend(CFG, params, cache, refill, np.array([0, 3]))
  np.testing.assert_allclose(last[1], full["c"][2], atol=1e-5)
  for t in range(3):
    last, cache = models.extend(CFG, params, cache, np.array([[a[9 + t]], [c[3 + t]]]), np.array([1, 1]))
    np.testing.assert_allclose(last[0], full["a"][9 + t], atol=1e-5)
    np.testing.assert_allclose(last[1], full["c"][3 + t], atol=1e-5)
  np.testing.assert_array_equal(cache.lengths, [12, 6])


def test_extending_chosen_slots_leaves_the_others_untouched():
  params = _params(3)
  seqs = [tiny_models.random_ids((1, 12), seed=30 + i)[0] for i in range(3)]
  full = [np.asarray(models.logits(CFG, params, s[None]))[0] for s in seqs]
  cache = models.init_cache(CFG, 3, 16)
  _, cache = models.extend(CFG, params, cache, np.stack([s[:4] for s in seqs]), np.array([4, 4, 4]))
  before = [np.asarray(k[1]) for k in cache.k]
  # slots 2 and 0 (in that order) take a prefill chunk of 5 and 2 tokens; slot 1 is not computed
  chunk = np.zeros((2, 5), np.int32)
  chunk[0], chunk[1, :2] = seqs[2][4:9], seqs[0][4:6]
  last, cache = models.extend(CFG, params, cache, chunk, np.array([5, 2]), slots=np.array([2, 0]))
  np.testing.assert_allclose(last[0], full[2][8], atol=1e-5)
  np.testing.assert_allclose(last[1], full[0][5], atol=1e-5)
  np.testing.assert_array_equal(cache.lengths, [6, 4, 9])
  np.testing.assert_array_equal([k[1] for k in cache.k], before)
  last, cache = models.extend(CFG, params, cache, np.array([[seqs[0][6]], [seqs[1][4]], [seqs[2][9]]]),
                              np.ones(3, np.int32))
  for i, position in enumerate((6, 4, 9)):
    np.testing.assert_allclose(last[i], full[i][position], atol=1e-5)


def test_bad_slots_are_refused():
  cache = models.init_cache(CFG, 3, 16)
  for slots in ([0, 0], [0, 3], [1]):
    with pytest.raises(ValueError, match="slots must be 2 distinct indices in \\[0, 3\\)"):
      models.extend(CFG, _params(), cache, np.zeros((2, 1), np.int32), np.ones(2, np.int32), slots=slots)


def test_packed_segments_equal_separate_sequences():
  params = _params(3)
  a, b = tiny_models.random_ids((1, 5), seed=30)[0], tiny_models.random_ids((1, 7), seed=31)[0]
  packed = np.concatenate([a, b])[None]
  segments = np.array([[1] * 5 + [2] * 7])
  positions = np.array([list(range(5)) + list(range(7))])
  out = np.asarray(models.forward(CFG, params, packed, positions=positions, segment_ids=segments))[0]
  np.testing.assert_allclose(out[:5], np.asarray(models.logits(CFG, params, a[None]))[0], atol=1e-5)
  np.testing.assert_allclose(out[5:], np.asarray(models.logits(CFG, params, b[None]))[0], atol=1e-5)


def test_repeated_calls_of_equal_shape_compile_once():
  params = _params(4)
  ids = tiny_models.random_ids((2, 6), seed=40)
  models.logits(CFG, params, ids)  # warm: compiles
  cache = models.init_cache(CFG, 2, 12)
  _, cache = models.extend(CFG, params, cache, ids, np.array([6, 6]))
  _, cache = models.extend(CFG, params, cache, ids[:, :1], np.array([1, 1]))
  with compile_counter.count_compiles() as compiles:
    for seed in range(3):
      models.logits(CFG, params, tiny_models.random_ids((2, 6), seed=seed))
      _, cache = models.extend(CFG, params, cache, ids[:, seed:seed + 1], np.array([1, 1]))
  assert not compiles, f"{len(compiles)} recompilations"
  with compile_counter.count_compiles() as compiles:
    models.logits(CFG, params, tiny_models.random_ids((2, 7)))
  assert len(compiles) == 1  # the counter does see a new shape


def test_split_layers_compute_what_the_stacked_parameters_compute():
  params = _params(5)
  split = models.split_layers(params)
  assert isinstance(split["layers"], tuple) and len(split["layers"]) == CFG.num_layers
  assert models.split_layers(split) is split
  np.testing.assert_array_equal(split["layers"][1]["mlp"]["up_proj_kernel"], params["layers"]["mlp"]["up_proj_kernel"][1])
  given_up = dict(params)
  consumed = models.split_layers(given_up, consume=True)  # the same arrays, the stacked ones dropped
  assert "layers" not in given_up and jax.tree.structure(consumed) == jax.tree.structure(split)
  for a, b in zip(jax.tree.leaves(consumed), jax.tree.leaves(split)):
    np.testing.assert_array_equal(a, b)
  ids = tiny_models.random_ids((2, 9), seed=50)
  np.testing.assert_allclose(models.logits(CFG, split, ids), models.logits(CFG, params, ids), atol=1e-6)
  caches = [models.init_cache(CFG, 2, 16) for _ in range(2)]
  for t, n in ((0, 6), (6, 1), (7, 2)):
    outs = []
    for i, p in enumerate((params, split)):
      last, caches[i] = models.extend(CFG, p, caches[i], ids[:, t:t + n], np.array([n, n]))
      outs.append(np.asarray(last))
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-6, err_msg=f"tokens {t}..{t + n}")
  np.testing.assert_allclose(caches[1].k, caches[0].k, atol=1e-6)  # tuples of per-layer arrays


@pytest.mark.parametrize("split", [False, True])
def test_a_packed_prefill_equals_the_padded_one(split):
  """Rows of 11, 2, 0 and 6 new tokens after 0, 3, 0 and 5 cached ones, packed into one row of 24:
  the same logits of every row's last token and the same keys/values at every written position."""
  params = _params(6)
  params = models.split_layers(params) if split else params
  prefix = tiny_models.random_ids((4, 5), seed=60)
  tokens = tiny_models.random_ids((4, 11), seed=61)
  num_new, cached = np.array([11, 2, 0, 6], np.int32), np.array([0, 3, 0, 5], np.int32)
  results = []
  for packed_length in (None, 24):
    cache = models.init_cache(CFG, 5, 20)
    _, cache = models.extend(CFG, params, cache, prefix, cached, slots=np.array([4, 0, 1, 3]))
    last, cache = models.extend(CFG, params, cache, tokens, num_new, slots=np.array([4, 0, 1, 3]),
                                packed_length=packed_length)
    results.append((np.asarray(last), cache))
  (padded, padded_cache), (packed, packed_cache) = results
  np.testing.assert_allclose(packed[num_new > 0], padded[num_new > 0], atol=1e-5)
  np.testing.assert_array_equal(packed_cache.lengths, padded_cache.lengths)
  np.testing.assert_array_equal(packed_cache.lengths, [5, 0, 0, 11, 11])
  for slot, length in enumerate(np.asarray(packed_cache.lengths)):
    for got, want in zip(packed_cache.k, padded_cache.k):  # keys [B, K, D, S]
      np.testing.assert_allclose(got[slot, ..., :length], want[slot, ..., :length], atol=1e-5)
    for got, want in zip(packed_cache.v, padded_cache.v):  # values [B, K, S, D]
      np.testing.assert_allclose(got[slot, :, :length], want[slot, :, :length], atol=1e-5)
  full = np.asarray(models.logits(CFG, params, np.concatenate([prefix[3, :5], tokens[3, :6]])[None]))[0]
  np.testing.assert_allclose(packed[3], full[10], atol=1e-5)


def test_a_packed_length_shorter_than_the_tokens_is_refused():
  cache = models.init_cache(CFG, 2, 16)
  with pytest.raises(ValueError, match=r"packed_length must be in \[7 \(the real tokens\), 8 \(b x T\)\]"):
    models.extend(CFG, _params(), cache, np.zeros((2, 4), np.int32), np.array([4, 3]), packed_length=6)
