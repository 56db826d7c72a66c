"""Compiles an experiment's RL update and engine extend at full shape on forced CPU devices and
prints one JSON line: the compiled bytes per device, the plan's estimate and whether every
parameter is sharded as the rules say. Run by tests/compile_check_test.py in a fresh process:

  XLA_FLAGS=--xla_force_host_platform_device_count=64 python tests/compile_check_worker.py CONFIG[:ARG]
"""
import json
import os
import sys

import jax

from rstar_jax import models
from rstar_jax.train import compile_check, config_lib, plan, policy

NUM_MICROBATCHES = 2


def _config(spec: str):
  path, _, arg = spec.partition(":")
  return config_lib.load_module(path).get_config(arg or None)


def main(spec: str) -> None:
  config = _config(spec)
  mesh_rules = policy.build_mesh_rules(config.mesh)
  cfg, _ = plan.model_config(config)
  update = compile_check.compile_rl_update(config, cfg, mesh_rules, NUM_MICROBATCHES)
  expected = models.param_shardings(cfg, mesh_rules)
  compiled_params = update.input_shardings[0][0].params
  leaves_got = jax.tree_util.tree_leaves_with_path(compiled_params, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  leaves_want = jax.tree.leaves(expected, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  shapes = jax.tree.leaves(models.param_shapes(cfg))
  mismatched = [jax.tree_util.keystr(path) for (path, got), want, shape in zip(leaves_got, leaves_want, shapes)
                if not got.is_equivalent_to(want, len(shape.shape))]
  abstract = plan.abstract_mesh(plan.mesh_sizes(config.mesh))
  rules = models.sharding.normalize_rules(tuple(tuple(r) for r in config.mesh.rules))
  estimate = plan.train_memory(cfg, abstract, rules, config.rl.rows_per_microbatch, config.rl.row_length,
                               NUM_MICROBATCHES, config.rl.logits_chunk)
  longest = max(stage["max_response_tokens"] for stage in config.data.stages)
  max_length = config.data.max_prompt_tokens + longest
  extend = compile_check.compile_extend(cfg, mesh_rules, config.rl.num_slots, max_length, chunk=1)
  engine = plan.engine_memory(cfg, abstract, rules, config.rl.num_slots, max_length)
  stats = extend.memory_analysis()
  print(json.dumps({
      "devices": jax.device_count(), "parameters": len(shapes), "mismatched_shardings": mismatched,
      "update_compiled": compile_check.compiled_bytes(update), "update_estimate": estimate.total,
      "update_arguments": update.memory_analysis().argument_size_in_bytes,
      "state_estimate": estimate.parameters + estimate.optimizer,
      "extend_arguments": stats.argument_size_in_bytes,
      "engine_estimate": engine["parameters"] + engine["kv_cache"],
  }))


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main(sys.argv[1])
