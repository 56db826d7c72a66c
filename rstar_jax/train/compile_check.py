"""Compile-only checks at full shape (as MaxText's train_compile): the RL update and the rollout
engine's extend lowered and compiled from shapes alone, on a mesh of any devices (tests force 64
CPU devices for the 14B recipe), so a config's shardings and memory are checked without weights.

  mesh_rules = policy.build_mesh_rules(config.mesh)
  compiled = compile_rl_update(config, cfg, mesh_rules, num_microbatches=2)
  compiled_bytes(compiled)          # what XLA's buffer assignment holds per device
"""
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding, PartitionSpec

from rstar_jax import models
from rstar_jax.models.kv_cache import LAYER_AXES, KVCache, layer_shapes
from rstar_jax.train import optim, step
from rstar_jax.train.packing import PackedBatch

_INT_FIELDS = ("input_ids", "targets", "positions", "segment_ids")


def abstract_params(cfg: models.ModelConfig, mesh_rules: models.MeshRules):
  """The parameters as ShapeDtypeStructs carrying their shardings (no allocation)."""
  return jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      models.param_shapes(cfg), models.param_shardings(cfg, mesh_rules))


def abstract_train_state(cfg: models.ModelConfig, optimizer, mesh_rules: models.MeshRules):
  """(TrainState of ShapeDtypeStructs, TrainState of shardings) as init_train_state places it."""
  params = abstract_params(cfg, mesh_rules)
  shapes = jax.eval_shape(lambda p: optim.TrainState(step=jnp.zeros((), jnp.int32), params=p,
                                                     opt_state=optimizer.init(p), rng=jax.random.PRNGKey(0)), params)
  replicated = NamedSharding(mesh_rules.mesh, PartitionSpec())
  shardings = optim.TrainState(step=replicated, params=jax.tree.map(lambda p: p.sharding, params),
                               opt_state=optim.opt_state_shardings(optimizer, params, mesh_rules), rng=replicated)
  return shapes, shardings


def compile_rl_update(config: ml_collections.ConfigDict, cfg: models.ModelConfig, mesh_rules: models.MeshRules,
                      num_microbatches: int) -> jax.stages.Compiled:
  """The RL update of train/step.py (GRPO-RoC objective, config.rl.optim) for a batch of
  `num_microbatches` x rl.rows_per_microbatch rows of rl.row_length tokens."""
  rl_config = config.rl
  optimizer = optim.make_optimizer(rl_config.optim)
  state, state_shardings = abstract_train_state(cfg, optimizer, mesh_rules)
  train_step = step.make_train_step(cfg, step.grpo_objective(rl_config.eps_low, rl_config.eps_high,
                                                             rl_config.dual_clip, old_logprobs="current"),
                                    optimizer, mesh_rules, rl_config.logits_chunk, rl_config.temperature)
  shape = (num_microbatches, rl_config.rows_per_microbatch, rl_config.row_length)
  batch = PackedBatch(*(jax.ShapeDtypeStruct(shape, jnp.int32 if name in _INT_FIELDS else jnp.float32)
                        for name in PackedBatch._fields))
  jitted = jax.jit(train_step, donate_argnums=(0,), in_shardings=(state_shardings, step.batch_shardings(mesh_rules)),
                   out_shardings=(state_shardings, None))
  return jitted.lower(state, batch).compile()


def compile_extend(cfg: models.ModelConfig, mesh_rules: models.MeshRules, num_slots: int, max_length: int,
                   chunk: int) -> jax.stages.Compiled:
  """models.extend over all `num_slots` slots of a `max_length` cache with a `chunk`-token step
  (1: a decode step), attending over the whole length."""
  k, v = ((jax.ShapeDtypeStruct(shape, jnp.dtype(cfg.dtype), sharding=mesh_rules.sharding(axes)),) * cfg.num_layers
          for shape, axes in zip(layer_shapes(cfg, num_slots, max_length), LAYER_AXES))
  batch = mesh_rules.sharding(("batch",))
  cache = KVCache(k, v, jax.ShapeDtypeStruct((num_slots,), jnp.int32, sharding=batch))
  tokens = jax.ShapeDtypeStruct((num_slots, chunk), jnp.int32, sharding=mesh_rules.sharding(("batch", "length")))
  num_new = jax.ShapeDtypeStruct((num_slots,), jnp.int32, sharding=batch)
  return models.lower_extend(cfg, abstract_params(cfg, mesh_rules), cache, tokens, num_new, mesh_rules).compile()


def compiled_bytes(compiled: jax.stages.Compiled) -> int:
  """Bytes per device XLA assigned: arguments + outputs not aliased to them + temporaries."""
  stats = compiled.memory_analysis()
  return (stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
          + stats.temp_size_in_bytes)
