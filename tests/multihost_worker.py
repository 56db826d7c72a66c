"""One GRPO-RoC update (with the old log-prob pass) of a tiny policy on a mesh over every device of
every process; prints the update's metrics and parameter checksums as one JSON line (process 0).
Run by tests/multihost_test.py as one process with 8 devices or two with 4 each:

  python tests/multihost_worker.py [COORDINATOR_ADDRESS NUM_PROCESSES PROCESS_ID [broadcast|fail|restore DIR]]

`broadcast`: process 0's 40 MiB object (three chunks) on every process, printed as its digest;
`fail`: a step that raises on process 0; `restore DIR`: checkpoints 1 and 2 of a sharded state
written into DIR by both processes, then restored while process 1 cannot see step 2 whole (its
check made to fail); each process prints the step it restored.
"""
import os
import hashlib
import json
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rstar_jax import chat, models, rl
from rstar_jax.train import checkpoint, distributed, optim
from rstar_jax.train import rl as rl_train

CFG = models.qwen("qwen3", vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                  num_kv_heads=2, head_dim=8)


def _rollouts() -> rl_train.RolloutGroups:
  """4 prompts x 4 rollouts of random ids, rewards mixed in every group."""
  rng = np.random.default_rng(0)
  groups = []
  for _ in range(4):
    group = []
    for _ in range(4):
      prompt, response = int(rng.integers(3, 8)), int(rng.integers(4, 20))
      ids = rng.integers(0, 96, prompt + response).astype(np.int32)
      mask = np.zeros_like(ids)
      mask[prompt:] = 1
      group.append(chat.Trajectory(ids, mask, prompt))
    groups.append(group)
  rewards = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
  records = [[rl.RolloutRecord(("ok",), 1, "<answer>\\boxed{1}</answer>")] * 4] * 4
  return rl_train.RolloutGroups(groups, rewards, records)


def main(argv) -> None:
  if argv:
    address, count, index = argv[:3]
    distributed.initialize(ml_collections.ConfigDict(dict(
        mode="explicit", coordinator_address=address, num_processes=int(count), process_id=int(index))))
  if argv[3:] == ["broadcast"]:
    payload = distributed.on_process_zero(lambda: np.random.default_rng(0).bytes(40 * 2**20 + 5))
    print(json.dumps({"process": jax.process_index(), "size": len(payload),
                      "sha256": hashlib.sha256(payload).hexdigest()}), flush=True)
    return
  if argv[3:] == ["fail"]:
    distributed.on_process_zero(lambda: 1 / 0, "the test step")
    return
  mesh_rules = models.MeshRules(models.make_mesh(data=2, fsdp=4, tensor=1))
  if argv[3:4] == ["restore"]:
    _restore_with_one_unreadable_step(argv[4], mesh_rules)
    return
  optim_config = ml_collections.ConfigDict(dict(learning_rate=1e-2, warmup_steps=0, b1=0.9, b2=0.999, eps=1e-8,
                                                weight_decay=0.01, max_grad_norm=1.0))
  optimizer = optim.make_optimizer(optim_config)
  state = optim.init_train_state(models.init_params(CFG, jax.random.key(0), mesh_rules), optimizer, 0, mesh_rules)
  rl_config = ml_collections.ConfigDict(dict(
      keep=4, roc={}, roc_mode=None, reject_equal=True, adv_std="unbiased", adv_epsilon=1e-6, eps_low=0.2,
      eps_high=0.28, dual_clip=3.0, loss_agg="token_mean", use_sampler_logprobs=False, temperature=1.0,
      updates_per_step=2, row_length=32, rows_per_microbatch=8, num_microbatches=None, logits_chunk=0))
  updater = rl_train.RLUpdater(CFG, rl_config, optimizer, mesh_rules, state)
  state, metrics = updater.update(state, _rollouts(), seed=(0, 1))
  checksums = {jax.tree_util.keystr(path): float(jnp.sum(jnp.square(leaf.astype(jnp.float32))))
               for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)}
  if distributed.is_writer():
    print(json.dumps({"processes": jax.process_count(), "devices": jax.device_count(), "metrics": metrics,
                      "param_sq_sums": checksums}), flush=True)


def _restore_with_one_unreadable_step(directory: str, mesh_rules: models.MeshRules) -> None:
  optimizer = optim.make_optimizer(ml_collections.ConfigDict(dict(
      learning_rate=1e-2, warmup_steps=0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, max_grad_norm=1.0)))
  state = optim.init_train_state(models.init_params(CFG, jax.random.key(0), mesh_rules), optimizer, 0, mesh_rules)
  ckpt = checkpoint.Checkpointer(os.path.join(directory, "checkpoints"), async_save=False)
  for step in (1, 2):
    ckpt.save(step, state, {"step": step})
  ckpt.wait()
  if jax.process_index() == 1:  # as if process 1's view of the shared disk lacked step 2's files
    looks_whole = ckpt._looks_whole  # pylint: disable=protected-access
    ckpt._looks_whole = lambda step: step != 2 and looks_whole(step)  # pylint: disable=protected-access
  _, meta = ckpt.restore_latest(state)
  print(json.dumps({"process": jax.process_index(), "restored": meta["step"], "steps": ckpt.steps()}), flush=True)
  ckpt.close()


if __name__ == "__main__":
  main(sys.argv[1:])
