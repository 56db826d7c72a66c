"""The next-token sampler: filters, logprob convention, greedy, seeding; SamplingParams checks.

  python -m pytest -q tests/rollout_sampling_test.py
"""
import jax
import numpy as np
import pytest

from rstar_jax.rollout import sampling

# probabilities 0.5, 0.25, 0.15, 0.1 at temperature 1
PROBS = np.array([0.5, 0.25, 0.15, 0.1])
LOGITS = np.log(PROBS).astype(np.float32)


def _sample(logits, temperature=1.0, top_p=1.0, top_k=-1, min_p=0.0, seeds=None, steps=None,
            use_filters=True):
  b = logits.shape[0]
  seeds = np.zeros(b, np.uint32) if seeds is None else np.asarray(seeds, np.uint32)
  steps = np.arange(b, dtype=np.int32) if steps is None else np.asarray(steps, np.int32)
  full = lambda v, dtype: np.full(b, v, dtype)
  tokens, logprobs = sampling.sample_tokens(
      logits, 0, seeds, steps, full(temperature, np.float32), full(top_p, np.float32),
      full(top_k, np.int32), full(min_p, np.float32), use_filters=use_filters)
  return np.asarray(tokens), np.asarray(logprobs)


@pytest.mark.parametrize("filters, allowed", [
    (dict(top_k=2), {0, 1}),
    (dict(top_k=1), {0}),
    (dict(top_p=0.75), {0, 1, 2}),  # mass before token 2 is 0.75 <= 0.75 (SGLang keeps it)
    (dict(top_p=0.6), {0, 1}),
    (dict(top_p=0.4), {0}),
    (dict(min_p=0.5), {0, 1}),      # p >= 0.25
    (dict(min_p=0.6), {0}),
    (dict(top_k=3, top_p=0.6, min_p=0.25), {0, 1}),
])
def test_filters_keep_exactly_the_allowed_tokens(filters, allowed):
  tokens, _ = _sample(np.tile(LOGITS, (4000, 1)), **filters)
  assert set(tokens.tolist()) == allowed


def test_frequencies_follow_the_renormalized_distribution():
  tokens, logprobs = _sample(np.tile(LOGITS, (20000, 1)), top_k=2)
  assert abs(np.mean(tokens == 0) - 2 / 3) < 0.015
  # logprobs are taken before the filters: log 0.5 and log 0.25, not the renormalized ones
  np.testing.assert_allclose(logprobs, np.log(PROBS)[tokens], rtol=1e-5)
  unfiltered, _ = _sample(np.tile(LOGITS, (20000, 1)), use_filters=False)
  np.testing.assert_allclose(np.bincount(unfiltered, minlength=4) / 20000, PROBS, atol=0.015)


def test_temperature_scales_logits_and_logprobs():
  tokens, logprobs = _sample(np.tile(LOGITS, (20000, 1)), temperature=0.5)
  scaled = PROBS ** 2 / np.sum(PROBS ** 2)
  np.testing.assert_allclose(np.bincount(tokens, minlength=4) / 20000, scaled, atol=0.015)
  np.testing.assert_allclose(logprobs, np.log(scaled)[tokens], rtol=1e-5)


def test_greedy_takes_the_argmax_with_the_raw_logprob():
  logits = np.array([[0.0, 3.0, 1.0], [2.0, -1.0, 0.5]], np.float32)
  tokens, logprobs = _sample(logits, temperature=0.0)
  np.testing.assert_array_equal(tokens, [1, 0])
  np.testing.assert_allclose(logprobs, np.asarray(jax.nn.log_softmax(logits))[[0, 1], [1, 0]], rtol=1e-6)


def test_a_row_draws_from_its_own_seed_and_step():
  logits = np.tile(np.zeros(50, np.float32), (6, 1))
  a, _ = _sample(logits, seeds=[1, 1, 2, 2, 3, 3], steps=[0, 1, 0, 1, 0, 1])
  b, _ = _sample(logits[:2], seeds=[2, 2], steps=[0, 1])
  np.testing.assert_array_equal(a[2:4], b)
  assert len(set(a.tolist())) > 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-0.1), "temperature must be non-negative"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_k=0), "top_k must be -1"),
    (dict(min_p=1.5), r"min_p must be in \[0, 1\]"),
    (dict(max_new_tokens=-1), "max_new_tokens must be an int >= 0"),
    (dict(stop_token_ids=(3, -2)), "stop_token_ids must be non-negative ints"),
    (dict(sampling_seed=1.5), "sampling_seed must be an int"),
])
def test_bad_sampling_params_name_the_field(kwargs, message):
  with pytest.raises(ValueError, match=message):
    sampling.SamplingParams(**kwargs)


def test_needs_filter():
  assert not sampling.SamplingParams().needs_filter
  assert sampling.SamplingParams(top_p=0.9).needs_filter
  assert not sampling.SamplingParams(temperature=0.0, top_k=5).needs_filter


def test_ids_past_the_vocab_limit_are_never_drawn_but_logprobs_cover_the_whole_vocabulary():
  logits = np.tile(np.array([0.0, 0.0, 5.0, 5.0], np.float32), (2000, 1))
  b = logits.shape[0]
  for temperature in (1.0, 0.0):
    tokens, logprobs = sampling.sample_tokens(
        logits, 0, np.zeros(b, np.uint32), np.arange(b, dtype=np.int32), np.full(b, temperature, np.float32),
        np.ones(b, np.float32), np.full(b, -1, np.int32), np.zeros(b, np.float32), 2)
    tokens = np.asarray(tokens)
    assert set(tokens.tolist()) == ({0, 1} if temperature else {0})
    np.testing.assert_allclose(logprobs, np.log(1 / (2 + 2 * np.exp(5.0))), rtol=1e-5)


def test_first_argmax_equals_argmax_with_ties_infinities_and_nans():
  rng = np.random.default_rng(0)
  x = rng.integers(-3, 4, size=(64, 50)).astype(np.float32)  # many ties
  x[1] = -np.inf
  x[2, [7, 30]] = np.inf
  x[3, [9, 20]] = np.nan
  x[4, 0] = np.nan
  np.testing.assert_array_equal(sampling.first_argmax(x), np.asarray(jax.numpy.argmax(x, axis=-1)))
  assert sampling.first_argmax(x).dtype == np.int32


def test_categorical_draws_what_jax_random_categorical_draws():
  logits = np.random.default_rng(1).normal(size=(200, 300)).astype(np.float32)
  logits[:, 250:] = -np.inf
  keys = jax.random.split(jax.random.key(7), 200)
  np.testing.assert_array_equal(jax.vmap(sampling.categorical)(keys, logits),
                                jax.vmap(jax.random.categorical)(keys, logits))
