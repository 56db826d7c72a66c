"""Sampling parameters and the jitted next-token sampler, with SGLang's semantics (SGLANG_API.md §1.2).

Per row b with logits z (fp32 [V]) and temperature tau:
  greedy (tau < 1e-6):  x = argmax z,                  logprob = log_softmax(z)[x]
  otherwise:            p = softmax(z / tau), restricted to the tokens that pass all filters
                          top_k:  rank(v) < k                  (k = -1: every token)
                          top_p:  sum of the probabilities ranked before v <= top_p
                          min_p:  p_v >= min_p * max p
                        and renormalized; x ~ that distribution, logprob = log softmax(z / tau)[x]
Ids >= `vocab_limit` (the rows a checkpoint pads its vocabulary with, beyond the tokenizer's) are
never drawn, greedy included. The logprob is taken before the filters and that limit, over the
whole vocabulary, as SGLang returns it and the trainer computes it; the
most likely token always passes. The filters follow SGLang's torch sampler (sort, then
top_k, top_p, min_p on the sorted probabilities). Randomness: row b draws with
`fold_in(fold_in(key(seed), sample_seed[b]), step[b])`, so a sequence's tokens depend on its own
seed and position, not on which slot or batch it ran in.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp

GREEDY_TEMPERATURE = 1e-6


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How one request samples (SGLang `sampling_params` names and defaults).

  Attributes:
    max_new_tokens: tokens to generate at most; None: up to the engine's context.
    temperature: >= 0; below 1e-6 greedy.
    top_p: in (0, 1].
    top_k: -1 (whole vocabulary) or >= 1.
    min_p: in [0, 1].
    stop_token_ids: ids that end the generation besides the engine's EOS ids.
    ignore_eos: the engine's EOS ids do not end the generation (stop_token_ids still do).
    sampling_seed: the request's seed; None lets the engine number the request.
  """
  max_new_tokens: int | None = 128
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = -1
  min_p: float = 0.0
  stop_token_ids: tuple[int, ...] = ()
  ignore_eos: bool = False
  sampling_seed: int | None = None

  def __post_init__(self):
    object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
    checks = [
        (self.max_new_tokens is None or (_is_int(self.max_new_tokens) and self.max_new_tokens >= 0),
         f"max_new_tokens must be an int >= 0 or None, got {self.max_new_tokens!r}"),
        (self.temperature >= 0, f"temperature must be non-negative, got {self.temperature}"),
        (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
        (_is_int(self.top_k) and (self.top_k == -1 or self.top_k >= 1),
         f"top_k must be -1 (disable) or at least 1, got {self.top_k!r}"),
        (0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p}"),
        (all(_is_int(t) and t >= 0 for t in self.stop_token_ids),
         f"stop_token_ids must be non-negative ints, got {list(self.stop_token_ids)}"),
        (self.sampling_seed is None or _is_int(self.sampling_seed),
         f"sampling_seed must be an int or None, got {self.sampling_seed!r}"),
    ]
    for ok, message in checks:
      if not ok:
        raise ValueError(message)

  @property
  def is_greedy(self) -> bool:
    return self.temperature < GREEDY_TEMPERATURE

  @property
  def needs_filter(self) -> bool:
    """Whether top_k, top_p or min_p cut the distribution (else no sort is needed)."""
    return not self.is_greedy and (self.top_k != -1 or self.top_p < 1 or self.min_p > 0)


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def first_argmax(x):
  """int32 [...]: `jnp.argmax(x, axis=-1)` (the first maximum; the first NaN where there is one) as
  a max and a min over the last axis. XLA:CPU runs argmax's two-operand reduce as scalar code
  (~0.6 ms over [8, 32000], 5% of a small model's decode step); these two vectorize."""
  top = jnp.max(x, axis=-1, keepdims=True)
  hit = (x == top) | jnp.isnan(x)
  return jnp.min(jnp.where(hit, jnp.arange(x.shape[-1], dtype=jnp.int32), x.shape[-1]), axis=-1)


def categorical(key, logits):
  """`jax.random.categorical(key, logits)` for one row [V]: the same Gumbel draw, its maximum
  taken by `first_argmax`."""
  return first_argmax(jax.random.gumbel(key, logits.shape, logits.dtype) + logits)


def _filter_mask(scaled_logits, top_k, top_p, min_p):
  """bool [B, V]: the tokens that pass top_k, top_p and min_p (module docstring)."""
  order = jnp.argsort(-scaled_logits, axis=-1)
  sorted_probs = jnp.take_along_axis(jax.nn.softmax(scaled_logits, axis=-1), order, axis=-1)
  rank = jnp.arange(scaled_logits.shape[-1])[None, :]
  k = jnp.where(top_k < 0, scaled_logits.shape[-1], top_k)[:, None]
  mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
  keep_sorted = ((rank < k) & (mass_before <= top_p[:, None])
                 & (sorted_probs >= min_p[:, None] * sorted_probs[:, :1]))
  keep_sorted = keep_sorted.at[:, 0].set(True)
  return jnp.zeros_like(keep_sorted).at[jnp.arange(order.shape[0])[:, None], order].set(keep_sorted)


@functools.partial(jax.jit, static_argnames=("use_filters", "all_greedy"))
def sample_tokens(logits, seed, sample_seeds, steps, temperature, top_p, top_k, min_p,
                  vocab_limit=None, use_filters: bool = True, all_greedy: bool = False):
  """Next tokens and their logprobs for each row (module docstring).

  Args:
    logits: fp32 [B, V].
    seed: int scalar, the engine's seed.
    sample_seeds: uint32 [B], each row's sequence seed.
    steps: int32 [B], each row's output position (0 for the first new token).
    temperature, top_p, min_p: fp32 [B]; top_k: int32 [B] (-1: off).
    vocab_limit: int scalar, ids at or above it are never drawn; None: V.
    use_filters: False skips top_k/top_p/min_p (exact when no row sets them; avoids a sort).
    all_greedy: True skips drawing (exact when every row is greedy; avoids [B, V] random numbers).

  Returns:
    (tokens int32 [B], logprobs fp32 [B]).
  """
  logits = logits.astype(jnp.float32)
  greedy = temperature < GREEDY_TEMPERATURE
  scaled = logits / jnp.where(greedy, 1.0, temperature)[:, None]
  logprobs = jax.nn.log_softmax(scaled, axis=-1)
  if vocab_limit is not None:
    scaled = jnp.where(jnp.arange(scaled.shape[-1]) < vocab_limit, scaled, -jnp.inf)
  tokens = first_argmax(scaled)
  if not all_greedy:
    candidates = scaled
    if use_filters:
      candidates = jnp.where(_filter_mask(scaled, top_k, top_p, min_p), scaled, -jnp.inf)
    base = jax.random.key(seed)
    keys = jax.vmap(lambda s, t: jax.random.fold_in(jax.random.fold_in(base, s), t))(sample_seeds, steps)
    sampled = jax.vmap(categorical)(keys, candidates)
    tokens = jnp.where(greedy, tokens, sampled)
  return tokens, jnp.take_along_axis(logprobs, tokens[:, None], axis=-1)[:, 0]
