"""The optimizer and the train state: AdamW, linear warm-up then constant LR, global-norm clipping.

lr(s) = peak_lr * min(1, (s + 1) / warmup_steps), s counting optimizer updates since the last
(re)initialization. `optim.reset_at_steps` lists global updates (from 0) before which the optimizer
state (moments and schedule count) is re-initialized, as between curriculum stages (PAPER.md §7:
stage 3 resets the optimizer); the warm-up restarts with it ([R]). The reset lives inside the
optimizer state, so a resumed run resets at the same step as an uninterrupted one.
Defaults follow PAPER.md §7: constant lr 1e-6 after 20 warm-up steps, AdamW(0.9, 0.999),
weight decay 0.01, clip 1.0.
"""
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec

from rstar_jax.models import MeshRules


@struct.dataclass
class TrainState:
  """step: int32 scalar (updates done); params; opt_state; rng: uint32 [2] raw key of the run."""
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  rng: jax.Array


def learning_rate_schedule(optim: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up over `optim.warmup_steps` to `optim.learning_rate`, then constant."""
  peak, warmup = optim.learning_rate, optim.warmup_steps
  if warmup <= 0:
    return optax.constant_schedule(peak)
  return lambda count: peak * jnp.minimum(1.0, (count + 1) / warmup)


class ResetState(NamedTuple):
  """count: int32 updates done; inner: the wrapped optimizer's state."""
  count: jax.Array
  inner: optax.OptState


def reset_at_steps(inner: optax.GradientTransformation, steps: Sequence[int]) -> optax.GradientTransformation:
  """`inner`, re-initialized (`inner.init(params)`) before each update whose index is in `steps`."""
  if any(not isinstance(s, int) or s < 1 for s in steps):
    raise ValueError(f"reset steps must be integers >= 1 (update indices from 0), got {list(steps)}")
  boundaries = tuple(sorted(set(steps)))

  def init(params):
    return ResetState(jnp.zeros((), jnp.int32), inner.init(params))

  def update(updates, state, params=None):
    is_reset = jnp.isin(state.count, jnp.asarray(boundaries, jnp.int32)) if boundaries else False
    inner_state = jax.lax.cond(is_reset, lambda s: inner.init(params), lambda s: s, state.inner)
    updates, inner_state = inner.update(updates, inner_state, params)
    return updates, ResetState(state.count + 1, inner_state)

  return optax.GradientTransformation(init, update)


def make_optimizer(optim: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """clip_by_global_norm(optim.max_grad_norm) then AdamW with the schedule above, reset before the
  updates listed in optim.reset_at_steps.

  Reads optim.{learning_rate, warmup_steps, b1, b2, eps, weight_decay, max_grad_norm,
  reset_at_steps}.
  """
  chain = []
  if optim.max_grad_norm:
    chain.append(optax.clip_by_global_norm(optim.max_grad_norm))
  chain.append(optax.inject_hyperparams(optax.adamw)(
      learning_rate=learning_rate_schedule(optim), b1=optim.b1, b2=optim.b2, eps=optim.eps,
      weight_decay=optim.weight_decay))
  return reset_at_steps(optax.chain(*chain), tuple(optim.get("reset_at_steps", ())))


def current_learning_rate(opt_state) -> jax.Array:
  """The learning rate the last update used (from the inject_hyperparams state)."""
  return optax.tree_utils.tree_get(opt_state, "learning_rate",
                                   filtering=lambda _, value: isinstance(value, jax.Array))


def opt_state_shardings(optimizer: optax.GradientTransformation, params, mesh_rules: MeshRules):
  """The optimizer state's shardings: moments like their parameters, counters replicated.
  `params` may be arrays or ShapeDtypeStructs carrying shardings."""
  replicated = NamedSharding(mesh_rules.mesh, PartitionSpec())
  return optax.tree_map_params(
      optimizer, lambda _, sharding: sharding, jax.eval_shape(optimizer.init, params),
      jax.tree.map(lambda p: p.sharding, params), transform_non_params=lambda _: replicated)


def _init_opt_state(params, optimizer: optax.GradientTransformation, mesh_rules: MeshRules | None):
  """optimizer.init with moments sharded like their parameters and counters replicated."""
  if mesh_rules is None:
    return jax.jit(optimizer.init)(params)
  return jax.jit(optimizer.init, out_shardings=opt_state_shardings(optimizer, params, mesh_rules))(params)


def init_train_state(params, optimizer: optax.GradientTransformation, seed: int,
                     mesh_rules: MeshRules | None = None) -> TrainState:
  """Step 0, fresh optimizer moments placed like the parameters, the run key from `seed`."""
  step, rng = jnp.zeros((), jnp.int32), jax.random.PRNGKey(seed)
  if mesh_rules is not None:
    step, rng = jax.device_put((step, rng), NamedSharding(mesh_rules.mesh, PartitionSpec()))
  return TrainState(step=step, params=params, opt_state=_init_opt_state(params, optimizer, mesh_rules), rng=rng)
