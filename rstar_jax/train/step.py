"""The jitted update: token log-probs over packed microbatches, accumulated gradients, one optax step.

  train_step = make_train_step(model_cfg, objective, optimizer, mesh_rules)
  state, metrics = train_step(state, batch)          # batch: PackedBatch, arrays [M, b, T]

Gradient accumulation sums each microbatch's masked numerator and token count and divides once:
  L = sum_m sum_t mask_mt * l_mt / sum_m sum_t mask_mt,   grad L = sum_m grad(sum_t mask l) / N,
so any split into microbatches gives the same update as the whole batch (up to fp rounding).
Log-probs use the logits at the sampling temperature tau (1 unless the RL rollouts sample at
another): log pi(x_t | x_<t) = log_softmax(z_t / tau)[x_t], the sampler's convention (verl divides
the logits by the rollout temperature too), so trainer and sampler log-probs agree. With
`logits_chunk` > 0 they are computed in chunks of that many positions, each chunk's logits
rematerialized in the backward pass, so [b, T, V] logits are never stored (the memory a 151K
vocabulary needs); 0 keeps the whole logits for the backward pass (faster when they fit).
"""
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from rstar_jax import models
from rstar_jax import rl
from rstar_jax.models import MeshRules
from rstar_jax.train.optim import TrainState, current_learning_rate
from rstar_jax.train.packing import PackedBatch

BATCH_AXES = ("batch", "length")


class Objective(NamedTuple):
  """A loss as masked sums: `sums(logp, mb)` -> (numerator, sums pytree); `add` combines two
  sums; `zeros()` is the empty sum; `finalize(sums)` -> (loss, metrics) divides once."""
  sums: Callable[[jax.Array, PackedBatch], tuple[jax.Array, Any]]
  add: Callable[[Any, Any], Any]
  zeros: Callable[[], Any]
  finalize: Callable[[Any], tuple[jax.Array, dict]]


OLD_LOGPROBS = ("batch", "current")


def grpo_objective(eps_low: float = 0.2, eps_high: float = 0.28, dual_clip: float | None = 3.0,
                   old_logprobs: str = "batch") -> Objective:
  """GRPO-RoC token-mean PPO-clip (rl.losses, PAPER.md §6) over the policy's tokens.

  old_logprobs: "batch" reads log pi_old from `mb.old_logp` (recomputed before the update, or the
  sampler's); "current" takes stop_gradient(log pi_theta), which is what a recomputation gives at
  the first (here the only) update of a step, without its forward pass (rho = 1).
  Also reports "rollout/kl_sampler_k3": the k3 estimate of KL(pi_sampler || pi_theta) over the
  policy's tokens, mean of (r - 1 - log r) with log r = log pi_theta - log pi_sampler, from
  `mb.sampler_logp` (meaningless for a batch packed without the sampler's log-probs): how far the
  trainer's numbers are from the sampler's (fp differences, bf16, or staleness).
  """
  if old_logprobs not in OLD_LOGPROBS:
    raise ValueError(f"old_logprobs must be one of {OLD_LOGPROBS}, got {old_logprobs!r}")

  def sums(logp, mb):
    old = jax.lax.stop_gradient(logp) if old_logprobs == "current" else mb.old_logp
    s = rl.policy_loss_sums(logp, old, mb.advantages, mb.loss_mask,
                            eps_low=eps_low, eps_high=eps_high, dual_clip=dual_clip)
    log_r = jnp.clip(jax.lax.stop_gradient(logp) - mb.sampler_logp, -rl.losses.LOG_RATIO_CLAMP,
                     rl.losses.LOG_RATIO_CLAMP)
    written = (mb.loss_mask > 0).astype(jnp.float32)
    kl = (jnp.sum(written * (jnp.exp(log_r) - 1.0 - log_r)), jnp.sum(written))
    return s.loss, (s, kl)

  def add(a, b):
    return rl.add_policy_loss_sums(a[0], b[0]), (a[1][0] + b[1][0], a[1][1] + b[1][1])

  def zeros():
    return rl.empty_policy_loss_sums(), (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))

  def finalize(s):
    loss, metrics = rl.policy_loss_from_sums(s[0])
    kl_sum, kl_count = s[1]
    return loss, {"loss/policy": loss, **metrics,
                  "rollout/kl_sampler_k3": kl_sum / jnp.maximum(kl_count, 1.0)}

  return Objective(sums, add, zeros, finalize)


def sft_objective() -> Objective:
  """Token-mean negative log-likelihood of the tokens the model wrote: -sum m log p / sum m."""
  def sums(logp, mb):
    nll = -jnp.sum(logp * mb.loss_mask)
    return nll, (nll, jnp.sum(mb.loss_mask))

  def finalize(s):
    loss = s[0] / jnp.maximum(s[1], 1.0)
    return loss, {"loss/sft": loss, "sft/num_tokens": s[1]}

  return Objective(sums, lambda a, b: jax.tree.map(jnp.add, a, b),
                   lambda: (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)), finalize)


def batch_shardings(mesh_rules: MeshRules | None):
  """PackedBatch of NamedShardings: microbatch axis replicated, rows over (data, fsdp)."""
  if mesh_rules is None:
    return None
  spec = PartitionSpec(None, *mesh_rules.spec(BATCH_AXES))
  return PackedBatch(*([NamedSharding(mesh_rules.mesh, spec)] * len(PackedBatch._fields)))


def _global_norm(tree) -> jax.Array:
  return optax.global_norm(jax.tree.map(lambda x: x.astype(jnp.float32), tree))


def make_train_step(cfg: models.ModelConfig, objective: Objective, optimizer: optax.GradientTransformation,
                    mesh_rules: MeshRules | None = None, logits_chunk: int = 0, temperature: float = 1.0):
  """A pure `train_step(state, batch) -> (state, metrics)` (not jitted; see `jit_train_step`)."""
  def microbatch_sums(params, mb):
    logp = models.token_logprobs(cfg, params, mb.input_ids, mb.targets, mb.positions, mb.segment_ids,
                          mesh_rules, logits_chunk, temperature)
    return objective.sums(logp, mb)

  grad_fn = jax.grad(microbatch_sums, has_aux=True)

  def train_step(state: TrainState, batch: PackedBatch):
    num_tokens = jnp.maximum(jnp.sum(batch.loss_mask), 1.0)

    def accumulate(carry, mb):
      grads, sums = carry
      mb_grads, mb_sums = grad_fn(state.params, mb)
      return (jax.tree.map(lambda g, d: g + d.astype(jnp.float32), grads, mb_grads),
              objective.add(sums, mb_sums)), None

    zero_grads = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
    (grads, sums), _ = jax.lax.scan(accumulate, (zero_grads, objective.zeros()), batch)
    grads = jax.tree.map(lambda g, p: (g / num_tokens).astype(p.dtype), grads, state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    loss, metrics = objective.finalize(sums)
    metrics = {**metrics, "grad/norm": _global_norm(grads), "param/norm": _global_norm(params),
               "update/norm": _global_norm(updates), "optim/lr": current_learning_rate(opt_state)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def make_logprob_fn(cfg: models.ModelConfig, mesh_rules: MeshRules | None = None, logits_chunk: int = 0,
                    temperature: float = 1.0):
  """A pure `logprobs(params, batch) -> [M, b, T]` fp32 (the trainer's old log-probs, §11 row 19)."""
  def logprobs(params, batch: PackedBatch):
    return jax.lax.map(lambda mb: models.token_logprobs(cfg, params, mb.input_ids, mb.targets, mb.positions,
                                                 mb.segment_ids, mesh_rules, logits_chunk, temperature),
                       batch)
  return logprobs


def put_batch(batch: PackedBatch, mesh_rules: MeshRules | None) -> PackedBatch:
  """The packed batch as global arrays, rows sharded over (data, fsdp). Every process holds the
  whole batch (train/distributed.py) and gives each of its devices that device's rows, so the
  same call is right on one host and on several."""
  if mesh_rules is None:
    return batch

  def put(sharding, x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return PackedBatch(*(put(sharding, x) for sharding, x in zip(batch_shardings(mesh_rules), batch)))


def jit_train_step(train_step, state: TrainState, mesh_rules: MeshRules | None):
  """jax.jit with the state donated and its shardings pinned (in = out), batch rows sharded
  (`put_batch`): `step(state, host_batch) -> (state, metrics)`."""
  state_shardings = jax.tree.map(lambda x: x.sharding, state) if mesh_rules is not None else None
  jitted = jax.jit(train_step, donate_argnums=(0,),
                   in_shardings=(state_shardings, batch_shardings(mesh_rules)),
                   out_shardings=(state_shardings, None))
  return lambda state, batch: jitted(state, put_batch(batch, mesh_rules))


def jit_logprobs(logprobs, state: TrainState, mesh_rules: MeshRules | None):
  """jax.jit of `make_logprob_fn`'s function with the parameter and batch shardings pinned:
  `logprobs(params, host_batch)` -> numpy [M, b, T], replicated so that every process reads it whole."""
  params_shardings = jax.tree.map(lambda x: x.sharding, state.params) if mesh_rules is not None else None
  replicated = NamedSharding(mesh_rules.mesh, PartitionSpec()) if mesh_rules is not None else None
  jitted = jax.jit(logprobs, in_shardings=(params_shardings, batch_shardings(mesh_rules)), out_shardings=replicated)
  return lambda params, batch: np.asarray(jitted(params, put_batch(batch, mesh_rules)).addressable_data(0))
