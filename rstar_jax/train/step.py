"""The jitted update: token log-probs over packed microbatches, accumulated gradients, one optax step.

  train_step = make_train_step(model_cfg, objective, optimizer, mesh_rules)
  state, metrics = train_step(state, batch)          # batch: PackedBatch, arrays [M, b, T]

Gradient accumulation sums each microbatch's masked numerator and token count and divides once:
  L = sum_m sum_t mask_mt * l_mt / sum_m sum_t mask_mt,   grad L = sum_m grad(sum_t mask l) / N,
so any split into microbatches gives the same update as the whole batch (up to fp rounding).
Log-probs use the logits at temperature 1: log pi(x_t | x_<t) = log_softmax(z_t)[x_t]. With
`logits_chunk` > 0 they are computed in chunks of that many positions, each chunk's logits
rematerialized in the backward pass, so [b, T, V] logits are never stored (the memory a 151K
vocabulary needs); 0 keeps the whole logits for the backward pass (faster when they fit).
"""
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from rstar_jax import models
from rstar_jax import rl
from rstar_jax.models import MeshRules
from rstar_jax.train.optim import TrainState, current_learning_rate
from rstar_jax.train.packing import PackedBatch

BATCH_AXES = ("batch", "length")


def target_log_softmax(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """log_softmax(logits)[..., targets] fp32 [...], without a [..., V] log-softmax array.

  With m = max_v z_v (a constant for differentiation): log p_y = (z_y - m) - log sum_v exp(z_v - m),
  the same arithmetic as jax.nn.log_softmax followed by the gather, so the values agree bitwise.
  The gradient z -> onehot(y) - softmax(z) then fuses into one elementwise pass; gathering from a
  full log_softmax instead made XLA:CPU fuse the max and subtraction into the logits matmul, which
  ran 2.3x slower than the matmul alone (1.8 s vs 0.78 s on the CPU train-step benchmark).
  """
  shift = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return (picked - shift) - jnp.log(jnp.sum(jnp.exp(logits - shift[..., None]), axis=-1))


def token_logprobs(cfg: models.ModelConfig, params, input_ids, targets, positions, segment_ids,
                   mesh_rules: MeshRules | None = None, logits_chunk: int = 0) -> jax.Array:
  """log pi(targets | inputs) fp32 [b, T] for one packed microbatch (traceable)."""
  hidden = models.hidden_states(cfg, params, input_ids, positions, segment_ids, mesh_rules)
  b, t = targets.shape

  def logprobs(h, y):
    return target_log_softmax(models.output_logits(cfg, params, h), y)

  if not logits_chunk or logits_chunk >= t:  # keep the [b, T, V] logits for the backward pass
    return logprobs(hidden, targets)
  if t % logits_chunk:
    raise ValueError(f"logits_chunk={logits_chunk} must divide the row length {t}")
  h = hidden.reshape(b, t // logits_chunk, logits_chunk, -1).swapaxes(0, 1)
  y = targets.reshape(b, t // logits_chunk, logits_chunk).swapaxes(0, 1)
  chunk_logprobs = jax.checkpoint(logprobs)  # the backward pass recomputes each chunk's logits
  return jax.lax.map(lambda hy: chunk_logprobs(*hy), (h, y)).swapaxes(0, 1).reshape(b, t)


class Objective(NamedTuple):
  """A loss as masked sums: `sums(logp, mb)` -> (numerator, sums pytree); `add` combines two
  sums; `zeros()` is the empty sum; `finalize(sums)` -> (loss, metrics) divides once."""
  sums: Callable[[jax.Array, PackedBatch], tuple[jax.Array, Any]]
  add: Callable[[Any, Any], Any]
  zeros: Callable[[], Any]
  finalize: Callable[[Any], tuple[jax.Array, dict]]


def grpo_objective(eps_low: float = 0.2, eps_high: float = 0.28, dual_clip: float | None = 3.0) -> Objective:
  """GRPO-RoC token-mean PPO-clip (rl.losses, PAPER.md §6) over the policy's tokens."""
  def sums(logp, mb):
    s = rl.policy_loss_sums(logp, mb.old_logp, mb.advantages, mb.loss_mask,
                            eps_low=eps_low, eps_high=eps_high, dual_clip=dual_clip)
    return s.loss, s

  def finalize(s):
    loss, metrics = rl.policy_loss_from_sums(s)
    return loss, {"loss/policy": loss, **metrics}

  return Objective(sums, rl.add_policy_loss_sums, rl.empty_policy_loss_sums, finalize)


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
                    mesh_rules: MeshRules | None = None, logits_chunk: int = 0):
  """A pure `train_step(state, batch) -> (state, metrics)` (not jitted; see `jit_train_step`)."""
  def microbatch_sums(params, mb):
    logp = token_logprobs(cfg, params, mb.input_ids, mb.targets, mb.positions, mb.segment_ids,
                          mesh_rules, logits_chunk)
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


def make_logprob_fn(cfg: models.ModelConfig, mesh_rules: MeshRules | None = None, logits_chunk: int = 0):
  """A pure `logprobs(params, batch) -> [M, b, T]` fp32 (the trainer's old log-probs, §11 row 19)."""
  def logprobs(params, batch: PackedBatch):
    return jax.lax.map(lambda mb: token_logprobs(cfg, params, mb.input_ids, mb.targets, mb.positions,
                                                 mb.segment_ids, mesh_rules, logits_chunk), batch)
  return logprobs


def jit_train_step(train_step, state: TrainState, mesh_rules: MeshRules | None):
  """jax.jit with the state donated and its shardings pinned (in = out), batch rows sharded."""
  state_shardings = jax.tree.map(lambda x: x.sharding, state) if mesh_rules is not None else None
  return jax.jit(train_step, donate_argnums=(0,),
                 in_shardings=(state_shardings, batch_shardings(mesh_rules)),
                 out_shardings=(state_shardings, None))


def jit_logprobs(logprobs, state: TrainState, mesh_rules: MeshRules | None):
  """jax.jit of `make_logprob_fn`'s function with the parameter and batch shardings pinned."""
  params_shardings = jax.tree.map(lambda x: x.sharding, state.params) if mesh_rules is not None else None
  return jax.jit(logprobs, in_shardings=(params_shardings, batch_shardings(mesh_rules)))
