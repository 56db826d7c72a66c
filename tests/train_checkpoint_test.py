"""Checkpoints: round trip into shardings, keep-last-N, unreadable newest falls back, failed save deletes nothing."""
import json

import jax
import ml_collections
import numpy as np
import pytest

from rstar_jax import models
from rstar_jax.train import checkpoint, metrics, optim
import tiny_models

CFG = tiny_models.tiny_config("qwen2", vocab_size=96)


def _state(seed=0, mesh_rules=None):
  optimizer = optim.make_optimizer(ml_collections.ConfigDict(dict(
      learning_rate=1e-3, warmup_steps=0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, max_grad_norm=1.0)))
  params = models.init_params(CFG, jax.random.key(seed), mesh_rules)
  return optim.init_train_state(params, optimizer, seed=seed, mesh_rules=mesh_rules)


def _assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_restores_state_meta_and_shardings(tmp_path):
  mesh_rules = models.MeshRules(models.make_mesh(data=2, fsdp=2, tensor=2))
  state = _state(1, mesh_rules)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  meta = {"stage": 1, "data_state": {"step": 7, "fingerprint": "abc"}}
  ckpt.save(5, state.replace(step=state.step + 5), meta)
  ckpt.wait()
  restored, restored_meta = ckpt.restore_latest(_state(2, mesh_rules))
  assert restored_meta == meta and int(restored.step) == 5
  _assert_trees_equal(restored.params, state.params)
  _assert_trees_equal(restored.opt_state, state.opt_state)
  q = restored.params["layers"]["self_attn"]["q_proj_kernel"]
  assert q.sharding == state.params["layers"]["self_attn"]["q_proj_kernel"].sharding
  ckpt.close()


def test_keeps_only_the_last_n(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), max_to_keep=2)
  state = _state()
  for step in (1, 2, 3, 4):
    ckpt.save(step, state, {"step": step})
  ckpt.wait()
  assert ckpt.steps() == [3, 4]
  ckpt.close()


def test_unreadable_newest_is_reported_kept_aside_and_previous_used(tmp_path, caplog):
  directory = tmp_path / "checkpoints"
  ckpt = checkpoint.Checkpointer(str(directory))
  first, second = _state(1), _state(2)
  ckpt.save(1, first, {"which": "first"})
  ckpt.save(2, second, {"which": "second"})
  ckpt.close()
  for path in (directory / "2" / "state").rglob("*"):  # corrupt every data file of the newest
    if path.is_file() and path.stat().st_size > 0:
      path.write_bytes(b"\0" * 7)
  ckpt = checkpoint.Checkpointer(str(directory))
  restored, meta = ckpt.restore_latest(_state(3))
  assert meta == {"which": "first"}
  _assert_trees_equal(restored.params, first.params)
  assert "checkpoint 2" in caplog.text and "unreadable" in caplog.text
  aside = list((tmp_path / checkpoint.UNREADABLE_DIR).iterdir())
  assert len(aside) == 1 and aside[0].name.startswith("2-")  # kept, not deleted
  ckpt.save(2, second, {"which": "again"})  # the step can be written anew
  ckpt.wait()
  assert ckpt.steps() == [1, 2]
  ckpt.close()


def test_failed_save_deletes_nothing(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), max_to_keep=1, async_save=False)
  state = _state()
  ckpt.save(1, state, {"ok": True})
  with pytest.raises(Exception):
    ckpt.save(2, state, {"not_json": object()})
    ckpt.wait()
  assert ckpt.steps() == [1]
  restored, meta = ckpt.restore_latest(_state(4))
  assert meta == {"ok": True}
  ckpt.close()


def test_metrics_truncate_after_keeps_earlier_lines_exactly(tmp_path):
  writer = metrics.MetricsWriter(str(tmp_path))
  for step in range(1, 6):
    writer.write(step, {"loss/sft": 1.0 / step, "nan": float("nan")})
  writer.close()
  with open(tmp_path / metrics.METRICS_FILE, "a") as f:
    f.write('{"step": 6, "loss/s')  # a line cut off by a kill
  before = (tmp_path / metrics.METRICS_FILE).read_text().splitlines()
  writer = metrics.MetricsWriter(str(tmp_path))
  writer.truncate_after(3)
  after = (tmp_path / metrics.METRICS_FILE).read_text().splitlines()
  assert after == before[:3]
  assert [row["step"] for row in metrics.read_metrics(str(tmp_path))] == [1, 2, 3]
  assert json.loads(after[0])["nan"] == "nan"
  writer.close()
