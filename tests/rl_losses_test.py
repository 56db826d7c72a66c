"""Tests of rstar_jax.rl.losses: hand-computed values, accumulation, gradients, jit/vmap.

Run: python -m pytest -q tests/rl_losses_test.py
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rstar_jax.rl import losses

VARIANTS = [pytest.param(jax.jit, id="jit"), pytest.param(lambda f: f, id="nojit")]

# Two sequences, T = 4. Ratios rho = exp(logp - old_logp) per token, chosen so that every
# regime of the clipped loss appears once:
#   row 0, A = +1: rho 1.5 (clip high: l = -1.28), 0.5 (A > 0, unclipped: l = -0.5),
#                  1.0 (l = -1), and a masked 1.1.
#   row 1, A = -2: rho 0.5 (clip low: l = 2·0.8 = 1.6), 4 (unclipped: l = 8; dual clip
#                  c = 3: l = min(8, 6) = 6), 1.1 (l = 2.2), 1.0 (l = 2).
RATIOS = np.array([[1.5, 0.5, 1.0, 1.1], [0.5, 4.0, 1.1, 1.0]])
OLD_LOGP = np.array([[-1.0, -2.0, -0.5, -3.0], [-0.7, -4.0, -1.2, -2.2]])
LOGP = OLD_LOGP + np.log(RATIOS)
ADV = np.array([1.0, -2.0])
MASK = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])
# Sum of l over the 7 unmasked tokens.
LOSS_SUM_NO_DUAL = -1.28 - 0.5 - 1.0 + 1.6 + 8.0 + 2.2 + 2.0   # 11.02
LOSS_SUM_DUAL = -1.28 - 0.5 - 1.0 + 1.6 + 6.0 + 2.2 + 2.0      # 9.02
# sum of -log rho and of rho over the unmasked tokens: the product of the ratios is 1.65.
NEG_LOG_RATIO_SUM = -math.log(1.5 * 0.5 * 1.0 * 0.5 * 4.0 * 1.1 * 1.0)
RATIO_SUM = 1.5 + 0.5 + 1.0 + 0.5 + 4.0 + 1.1 + 1.0              # 9.6
RATIO_SQ_SUM = 1.5**2 + 0.5**2 + 1.0 + 0.5**2 + 16.0 + 1.1**2 + 1.0


def _f32(*arrays):
  return [jnp.asarray(a, jnp.float32) for a in arrays]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dual_clip, loss_sum", [(None, LOSS_SUM_NO_DUAL), (3.0, LOSS_SUM_DUAL)])
def test_policy_loss_matches_hand_computed_values(variant, dual_clip, loss_sum):
  fn = variant(functools.partial(losses.policy_loss, eps_low=0.2, eps_high=0.28,
                                 dual_clip=dual_clip))
  loss, metrics = fn(*_f32(LOGP, OLD_LOGP, ADV), jnp.asarray(MASK))
  np.testing.assert_allclose(loss, loss_sum / 7, rtol=1e-5)
  expected = {
      "policy/clip_frac_high": 1 / 7,
      "policy/clip_frac_low": 1 / 7,
      "policy/dual_clip_frac": (1 / 7) if dual_clip else 0.0,
      "policy/approx_kl": NEG_LOG_RATIO_SUM / 7,
      "policy/approx_kl_k3": (RATIO_SUM - 7 + NEG_LOG_RATIO_SUM) / 7,  # sum(rho - 1 - d) / 7
      "policy/ratio_mean": RATIO_SUM / 7,
      "policy/ratio_std": math.sqrt(RATIO_SQ_SUM / 7 - (RATIO_SUM / 7) ** 2),
      "policy/ratio_max": 4.0,
      "policy/ratio_min": 0.5,
      "policy/num_tokens": 7.0,
  }
  assert set(metrics) == set(expected)
  for name, value in expected.items():
    np.testing.assert_allclose(metrics[name], value, rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("variant", VARIANTS)
def test_token_policy_loss_matches_hand_computed_values_unmasked(variant):
  fn = variant(functools.partial(losses.token_policy_loss, dual_clip=3.0))
  per_token = fn(*_f32(LOGP, OLD_LOGP, ADV))
  np.testing.assert_allclose(per_token, [[-1.28, -0.5, -1.0, -1.1], [1.6, 6.0, 2.2, 2.0]],
                             rtol=1e-5)


def test_policy_loss_per_token_advantages_equal_broadcast_sequence_advantages():
  logp, old, adv = _f32(LOGP, OLD_LOGP, ADV)
  per_seq, _ = losses.policy_loss(logp, old, adv, MASK)
  per_token, _ = losses.policy_loss(logp, old, jnp.broadcast_to(adv[:, None], logp.shape), MASK)
  np.testing.assert_allclose(per_seq, per_token, rtol=1e-6)


def test_policy_loss_divides_by_mask_sum_when_padding_added():
  logp, old, adv = _f32(LOGP, OLD_LOGP, ADV)
  pad = ((0, 0), (0, 5))
  padded, _ = losses.policy_loss(jnp.pad(logp, pad), jnp.pad(old, pad), adv,
                                 np.pad(MASK, pad))
  plain, _ = losses.policy_loss(logp, old, adv, MASK)
  np.testing.assert_allclose(padded, plain, rtol=1e-6)
  np.testing.assert_allclose(plain, LOSS_SUM_NO_DUAL / 7, rtol=1e-5)


def test_policy_loss_on_policy_is_reinforce_with_token_mean_gradient():
  # rho = 1 everywhere: L = -sum_t m_t A / sum_t m_t and dL/dlogp_t = -m_t A / sum m.
  logp = jnp.asarray(OLD_LOGP, jnp.float32)
  adv = jnp.asarray(ADV, jnp.float32)
  loss, metrics = losses.policy_loss(logp, logp, adv, MASK)
  np.testing.assert_allclose(loss, -(3 * 1.0 + 4 * -2.0) / 7, rtol=1e-6)
  assert metrics["policy/clip_frac_low"] == 0 and metrics["policy/clip_frac_high"] == 0
  grad = jax.grad(lambda x: losses.policy_loss(x, logp, adv, MASK)[0])(logp)
  np.testing.assert_allclose(grad, -MASK * ADV[:, None] / 7, rtol=1e-6)


def test_policy_loss_gradient_matches_finite_differences_float64():
  rng = np.random.default_rng(0)
  shape = (3, 5)
  # Ratios away from the kinks at 0.8, 1.28 and 3 so that central differences are exact
  # enough; includes clipped tokens (zero gradient) and dual-clipped ones.
  ratios = np.array([[1.05, 0.9, 1.5, 0.6, 1.2],
                     [0.95, 1.1, 0.5, 4.0, 1.0],
                     [1.02, 0.7, 1.4, 2.0, 0.85]])
  adv = np.array([0.7, -1.3, 0.4])
  mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 0.5, 1, 1]])
  with jax.enable_x64(True):
    old = jnp.asarray(rng.normal(-1.0, 0.3, shape), jnp.float64)
    logp = old + jnp.log(jnp.asarray(ratios))

    @jax.jit
    def loss_fn(x):
      return losses.policy_loss(x, old, jnp.asarray(adv), jnp.asarray(mask), dual_clip=3.0)[0]

    grad = np.asarray(jax.grad(loss_fn)(logp))
    h = 1e-6
    numeric = np.zeros(shape)
    for i in range(shape[0]):
      for j in range(shape[1]):
        step = jnp.zeros(shape, jnp.float64).at[i, j].set(h)
        numeric[i, j] = (loss_fn(logp + step) - loss_fn(logp - step)) / (2 * h)
  np.testing.assert_allclose(grad, numeric, atol=1e-8)
  # Clipped (rho 1.5 and 1.4 with A > 0; rho 0.5 with A < 0) and dual-clipped (rho 4 with
  # A < 0) tokens carry no gradient; unclipped ones carry -A rho m / sum m.
  for i, j in [(0, 2), (1, 2), (1, 3), (2, 2)]:
    assert grad[i, j] == 0.0
  np.testing.assert_allclose(grad[0, 0], -0.7 * 1.05 / mask.sum(), rtol=1e-9)


def test_policy_loss_clamps_log_ratio_at_20():
  logp, old = _f32([[30.0, 0.0]], [[0.0, 0.0]])
  adv = jnp.asarray([-1.0])
  loss, metrics = losses.policy_loss(logp, old, adv, np.ones((1, 2)))
  np.testing.assert_allclose(metrics["policy/ratio_max"], math.exp(20.0), rtol=1e-5)
  np.testing.assert_allclose(loss, (math.exp(20.0) + 1.0) / 2, rtol=1e-5)
  grad = jax.grad(lambda x: losses.policy_loss(x, old, adv, np.ones((1, 2)))[0])(logp)
  assert grad[0, 0] == 0.0 and grad[0, 1] == pytest.approx(0.5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_policy_loss_sums_added_over_microbatches_equal_full_batch(variant):
  rng = np.random.default_rng(1)
  logp, old = _f32(rng.normal(-1, 0.5, (6, 8)), rng.normal(-1, 0.5, (6, 8)))
  adv = jnp.asarray(rng.normal(size=6), jnp.float32)
  mask = (rng.random((6, 8)) < 0.7).astype(np.float32)
  kwargs = dict(eps_low=0.2, eps_high=0.28, dual_clip=3.0)
  full_loss, full_metrics = losses.policy_loss(logp, old, adv, mask, **kwargs)
  sums_fn = variant(functools.partial(losses.policy_loss_sums, **kwargs))
  parts = [sums_fn(logp[s], old[s], adv[s], mask[s])
           for s in (slice(0, 1), slice(1, 4), slice(4, 6))]
  total = functools.reduce(variant(losses.add_policy_loss_sums), parts,
                           losses.empty_policy_loss_sums())
  acc_loss, acc_metrics = variant(losses.policy_loss_from_sums)(total)
  np.testing.assert_allclose(acc_loss, full_loss, rtol=1e-5)
  for name in full_metrics:
    np.testing.assert_allclose(acc_metrics[name], full_metrics[name], rtol=1e-5, atol=1e-7,
                               err_msg=name)
  # The accumulated mean is not the mean of micro-batch means (sizes differ).
  per_part = [losses.policy_loss_from_sums(p)[0] for p in parts]
  assert abs(np.mean(per_part) - full_loss) > 1e-4


def test_policy_loss_vmapped_over_microbatches_equals_each_slice():
  rng = np.random.default_rng(2)
  logp, old = _f32(rng.normal(-1, 0.5, (3, 2, 5)), rng.normal(-1, 0.5, (3, 2, 5)))
  adv = jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)
  mask = jnp.asarray(rng.random((3, 2, 5)) < 0.8)
  batched, batched_metrics = jax.jit(jax.vmap(losses.policy_loss))(logp, old, adv, mask)
  for k in range(3):
    loss, metrics = losses.policy_loss(logp[k], old[k], adv[k], mask[k])
    np.testing.assert_allclose(batched[k], loss, rtol=1e-6)
    np.testing.assert_allclose(batched_metrics["policy/clip_frac_high"][k],
                               metrics["policy/clip_frac_high"], rtol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_policy_loss_is_zero_with_finite_gradient_when_mask_empty(variant):
  logp, old, adv = _f32(LOGP, OLD_LOGP, ADV)
  mask = jnp.zeros(logp.shape)
  loss, metrics = variant(losses.policy_loss)(logp, old, adv, mask)
  assert float(loss) == 0.0
  assert all(float(v) == 0.0 for v in metrics.values())
  grad = jax.grad(lambda x: losses.policy_loss(x, old, adv, mask)[0])(logp)
  assert np.all(np.asarray(grad) == 0.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(eps_low=1.0), "eps_low"),
    (dict(eps_low=-0.1), "eps_low"),
    (dict(eps_high=-0.01), "eps_high"),
    (dict(dual_clip=1.0), "dual_clip"),
])
def test_policy_loss_rejects_bad_clip_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    losses.policy_loss(*_f32(LOGP, OLD_LOGP, ADV), MASK, **kwargs)


def test_policy_loss_rejects_mismatched_shapes():
  logp, old, adv = _f32(LOGP, OLD_LOGP, ADV)
  with pytest.raises(AssertionError):
    losses.policy_loss(logp, old[:, :3], adv, MASK)
  with pytest.raises(AssertionError):
    losses.policy_loss(logp, old, adv[:1], MASK)
  with pytest.raises(AssertionError):
    losses.policy_loss(logp, old, adv, MASK[:, :3])


def test_empty_policy_loss_sums_is_identity_of_add():
  sums = losses.policy_loss_sums(*_f32(LOGP, OLD_LOGP, ADV), MASK)
  total = losses.add_policy_loss_sums(losses.empty_policy_loss_sums(), sums)
  for name, a, b in zip(losses.PolicyLossSums._fields, total, sums):
    np.testing.assert_allclose(a, b, rtol=1e-7, err_msg=name)


def test_policy_loss_sums_bfloat16_inputs_in_float32():
  logp, old, adv = (jnp.asarray(a, jnp.bfloat16) for a in (LOGP, OLD_LOGP, ADV))
  sums = losses.policy_loss_sums(logp, old, adv, MASK)
  assert all(x.dtype == jnp.float32 for x in sums)
  reference = losses.policy_loss_sums(*_f32(logp, old, adv), MASK)
  np.testing.assert_allclose(sums.loss, reference.loss, rtol=1e-6)
  grad = jax.grad(lambda x: losses.policy_loss(x, old, adv, MASK)[0])(logp)
  assert grad.dtype == jnp.bfloat16
