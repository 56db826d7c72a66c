"""The GRPO-RoC policy loss: token-mean PPO-clip with Clip-Higher and dual clip (PAPER.md §6).

Shapes: `B` sequences, `T` tokens. With m_t the loss mask (1 where the policy wrote the
token), A the advantage (per sequence, broadcast over T, or per token) and the clamped
log-ratio

  d_t   = clamp(logpi_theta(t) - logpi_old(t), -20, 20),   rho_t = exp(d_t),
  l_t   = max(-A·rho_t, -A·clip(rho_t, 1 - eps_low, 1 + eps_high))       (Clip-Higher)
  l_t   = min(l_t, -A·c)   where A < 0, when the dual clip c is set,
  L     = sum_t m_t l_t / sum_t m_t     over every token of the update batch,

with no KL and no entropy term (J-shang/verl@d0dc976 `compute_policy_loss_vanilla`,
`agg_loss(..., "token-mean")`; PAPER.md §11 rows 17-18). The recipe uses eps_low = 0.2,
eps_high = 0.28 and c = 3.0 (§6; the trainer passes c from its config).

Gradient accumulation (STYLE.md rule 5): `policy_loss_sums` returns numerators and token
counts for one micro-batch, `add_policy_loss_sums` sums them over micro-batches, and
`policy_loss_from_sums` divides once (`empty_policy_loss_sums` starts an accumulator).
`policy_loss` does it all for a single batch.
Gradients flow through logp only; old_logp and advantages are constants.
"""
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

# Clamp of the log-ratio before exp, for stability (released).
LOG_RATIO_CLAMP = 20.0


class PolicyLossSums(NamedTuple):
  """Masked sums over the tokens of one micro-batch; each a float scalar.

  Attributes:
    loss: sum_t m_t l_t.
    num_tokens: sum_t m_t.
    clipped_low: sum_t m_t [A < 0 and rho_t < 1 - eps_low] (the clipped branch is active).
    clipped_high: sum_t m_t [A > 0 and rho_t > 1 + eps_high].
    dual_clipped: sum_t m_t [A < 0 and max(-A rho_t, -A clip(rho_t)) > -A c].
    neg_log_ratio: sum_t m_t (-d_t), numerator of the k1 estimate of KL(pi_old || pi_theta).
    kl_k3: sum_t m_t (rho_t - 1 - d_t), numerator of the k3 estimate (>= 0).
    ratio: sum_t m_t rho_t.
    ratio_sq: sum_t m_t rho_t^2.
    ratio_max: max of rho_t over tokens with m_t > 0 (-inf if none).
    ratio_min: min of rho_t over tokens with m_t > 0 (+inf if none).
  """
  loss: chex.Array
  num_tokens: chex.Array
  clipped_low: chex.Array
  clipped_high: chex.Array
  dual_clipped: chex.Array
  neg_log_ratio: chex.Array
  kl_k3: chex.Array
  ratio: chex.Array
  ratio_sq: chex.Array
  ratio_max: chex.Array
  ratio_min: chex.Array


class _TokenTerms(NamedTuple):
  loss: chex.Array
  log_ratio: chex.Array
  ratio: chex.Array
  is_clipped_low: chex.Array
  is_clipped_high: chex.Array
  is_dual_clipped: chex.Array


def _check_clip_args(eps_low, eps_high, dual_clip):
  if not 0 <= eps_low < 1:
    raise ValueError(f"`eps_low` must be in [0, 1), got {eps_low!r}")
  if not eps_high >= 0:
    raise ValueError(f"`eps_high` must be >= 0, got {eps_high!r}")
  if dual_clip is not None and not dual_clip > 1:
    raise ValueError(f"`dual_clip` must be None or > 1, got {dual_clip!r}")


def _token_terms(logp, old_logp, advantages, eps_low, eps_high, dual_clip) -> _TokenTerms:
  chex.assert_rank([logp, old_logp], 2)
  chex.assert_equal_shape([logp, old_logp])
  chex.assert_type([logp, old_logp], float)
  chex.assert_rank(advantages, {1, 2})
  chex.assert_type(advantages, float)
  _check_clip_args(eps_low, eps_high, dual_clip)
  if advantages.ndim == 1:
    chex.assert_axis_dimension(advantages, 0, logp.shape[0])
    advantages = advantages[:, None]
  else:
    chex.assert_equal_shape([advantages, logp])
  # At least float32, so that bfloat16 log-probs are not summed over many tokens in bf16.
  dtype = jnp.promote_types(logp.dtype, jnp.float32)
  adv = jax.lax.stop_gradient(advantages).astype(dtype)
  log_ratio = jnp.clip(logp.astype(dtype) - jax.lax.stop_gradient(old_logp).astype(dtype),
                       -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  ratio = jnp.exp(log_ratio)
  unclipped = -adv * ratio
  clipped = -adv * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
  loss = jnp.maximum(unclipped, clipped)
  # The clipped branch is active (and its gradient zero) exactly where it is the larger.
  is_active = clipped > unclipped
  is_clipped_low = is_active & (adv < 0)
  is_clipped_high = is_active & (adv > 0)
  if dual_clip is None:
    is_dual_clipped = jnp.zeros_like(is_active)
  else:
    bound = -adv * dual_clip
    is_dual_clipped = (adv < 0) & (loss > bound)
    loss = jnp.where(adv < 0, jnp.minimum(loss, bound), loss)
  return _TokenTerms(loss, log_ratio, ratio, is_clipped_low, is_clipped_high, is_dual_clipped)


def token_policy_loss(logp: chex.Array, old_logp: chex.Array, advantages: chex.Array, *,
                      eps_low: float = 0.2, eps_high: float = 0.28,
                      dual_clip: float | None = None) -> chex.Array:
  """The per-token loss l_t of the module docstring, unmasked.

  Args:
    logp: [B, T] float, log pi_theta of each sampled token.
    old_logp: [B, T] float, log pi_old (recomputed by the trainer, PAPER.md §11 row 19).
    advantages: [B] float (broadcast over T) or [B, T] float.
    eps_low: lower clip range, in [0, 1); a static Python number.
    eps_high: upper clip range (Clip-Higher), >= 0; a static Python number.
    dual_clip: None (off) or c > 1, applied where A < 0; a static Python number.

  Returns:
    [B, T] l_t in float32, or float64 for float64 inputs.
  """
  return _token_terms(logp, old_logp, advantages, eps_low, eps_high, dual_clip).loss


def policy_loss_sums(logp: chex.Array, old_logp: chex.Array, advantages: chex.Array,
                     mask: chex.Array, *, eps_low: float = 0.2, eps_high: float = 0.28,
                     dual_clip: float | None = None) -> PolicyLossSums:
  """Masked sums of the loss and its diagnostics over one micro-batch.

  Args:
    logp, old_logp, advantages, eps_low, eps_high, dual_clip: as in `token_policy_loss`.
    mask: [B, T] bool or float; multiplies each token (0 for the prompt, environment tokens
      and padding, PAPER.md §2.6). Masked positions must hold finite log-probs.

  Returns:
    A PolicyLossSums of float32 scalars (float64 for float64 inputs).
  """
  chex.assert_equal_shape([logp, mask])
  terms = _token_terms(logp, old_logp, advantages, eps_low, eps_high, dual_clip)
  dtype = terms.loss.dtype
  m = jnp.asarray(mask).astype(dtype)
  present = m > 0

  def masked_sum(x):
    return jnp.sum(m * x.astype(dtype))

  return PolicyLossSums(
      loss=masked_sum(terms.loss),
      num_tokens=jnp.sum(m),
      clipped_low=masked_sum(terms.is_clipped_low),
      clipped_high=masked_sum(terms.is_clipped_high),
      dual_clipped=masked_sum(terms.is_dual_clipped),
      neg_log_ratio=masked_sum(-terms.log_ratio),
      kl_k3=masked_sum(terms.ratio - 1.0 - terms.log_ratio),
      ratio=masked_sum(terms.ratio),
      ratio_sq=masked_sum(terms.ratio ** 2),
      ratio_max=jnp.max(jnp.where(present, terms.ratio, -jnp.inf)),
      ratio_min=jnp.min(jnp.where(present, terms.ratio, jnp.inf)),
  )


def empty_policy_loss_sums(dtype=jnp.float32) -> PolicyLossSums:
  """The sums of no token: zeros, ratio_max = -inf, ratio_min = +inf (accumulator start)."""
  zero = jnp.zeros((), dtype)
  return PolicyLossSums(*([zero] * 9), ratio_max=jnp.full((), -jnp.inf, dtype),
                        ratio_min=jnp.full((), jnp.inf, dtype))


def add_policy_loss_sums(a: PolicyLossSums, b: PolicyLossSums) -> PolicyLossSums:
  """Combines the sums of two micro-batches (sums add; ratio_max/ratio_min take max/min)."""
  total = jax.tree.map(jnp.add, a, b)
  return total._replace(ratio_max=jnp.maximum(a.ratio_max, b.ratio_max),
                        ratio_min=jnp.minimum(a.ratio_min, b.ratio_min))


def policy_loss_from_sums(sums: PolicyLossSums) -> tuple[chex.Array, dict[str, chex.Array]]:
  """The token mean L = sums.loss / sums.num_tokens, and the metrics.

  Every mean divides by the token count sum_t m_t (never by T); with no unmasked token the
  loss and every metric are 0.

  Args:
    sums: PolicyLossSums, possibly added over micro-batches.

  Returns:
    (loss, metrics): a float scalar, and a flat dict of float scalars:
      "policy/clip_frac_low", "policy/clip_frac_high": token fractions where the low / high
        clip is active (their sum is verl's `pg_clipfrac`);
      "policy/dual_clip_frac": fraction where the dual clip is active (`pg_clipfrac_lower`);
      "policy/approx_kl": k1 = mean(-d_t) (verl's `ppo_kl`); "policy/approx_kl_k3": k3;
      "policy/ratio_mean", "policy/ratio_std", "policy/ratio_max", "policy/ratio_min";
      "policy/num_tokens".
  """
  count = sums.num_tokens
  has_tokens = count > 0
  safe_count = jnp.where(has_tokens, count, 1.0)

  def mean(x):
    return x / safe_count

  ratio_mean = mean(sums.ratio)
  ratio_var = jnp.maximum(mean(sums.ratio_sq) - ratio_mean ** 2, 0.0)
  zero = jnp.zeros_like(count)
  metrics = {
      "policy/clip_frac_low": mean(sums.clipped_low),
      "policy/clip_frac_high": mean(sums.clipped_high),
      "policy/dual_clip_frac": mean(sums.dual_clipped),
      "policy/approx_kl": mean(sums.neg_log_ratio),
      "policy/approx_kl_k3": mean(sums.kl_k3),
      "policy/ratio_mean": ratio_mean,
      "policy/ratio_std": jnp.sqrt(ratio_var),
      "policy/ratio_max": jnp.where(has_tokens, sums.ratio_max, zero),
      "policy/ratio_min": jnp.where(has_tokens, sums.ratio_min, zero),
      "policy/num_tokens": count,
  }
  return mean(sums.loss), metrics


def policy_loss(logp: chex.Array, old_logp: chex.Array, advantages: chex.Array,
                mask: chex.Array, eps_low: float = 0.2, eps_high: float = 0.28,
                dual_clip: float | None = None) -> tuple[chex.Array, dict[str, chex.Array]]:
  """Token-mean PPO-clip loss of one batch: L = sum_t m_t l_t / sum_t m_t (module docstring).

  Args:
    logp: [B, T] float, log pi_theta of each sampled token.
    old_logp: [B, T] float, log pi_old.
    advantages: [B] float (broadcast over T) or [B, T] float.
    mask: [B, T] bool or float, the loss mask.
    eps_low: lower clip range, in [0, 1) (recipe 0.2).
    eps_high: upper clip range, >= 0 (recipe 0.28).
    dual_clip: None or c > 1 for A < 0 (recipe 3.0).

  Returns:
    (loss, metrics) as in `policy_loss_from_sums`; the loss is a float scalar.
  """
  return policy_loss_from_sums(policy_loss_sums(
      logp, old_logp, advantages, mask, eps_low=eps_low, eps_high=eps_high,
      dual_clip=dual_clip))
