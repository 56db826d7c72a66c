"""The shared step harness and the RL loop's fault checks: a non-finite metric stops the run before
anything of that step is written or saved; a sandbox that fails too many calls stops it."""
import jax
import ml_collections
import pytest

from rstar_jax import models
from rstar_jax.train import grpo, harness, metrics, optim
import tiny_models

CFG = tiny_models.tiny_config("qwen3", vocab_size=64)


def _state():
  optimizer = optim.make_optimizer(ml_collections.ConfigDict(dict(
      learning_rate=1e-3, warmup_steps=0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, max_grad_norm=1.0)))
  return optim.init_train_state(models.init_params(CFG, jax.random.key(0)), optimizer, 0)


def test_a_non_finite_metric_stops_before_the_step_is_written_or_saved(tmp_path):
  steps = harness.StepHarness(str(tmp_path), ml_collections.ConfigDict(dict(max_to_keep=2, async_save=False)))
  state = _state()
  steps.finish_step(1, state, {"loss/policy": 0.5}, {"phase": "rl"}, save=True)
  steps.checkpointer.wait()
  with pytest.raises(FloatingPointError, match=r"non-finite loss/policy at step 2; nothing of this step was "
                                               r"saved, and checkpoint 1 stays the newest"):
    steps.finish_step(2, state, {"loss/policy": float("nan"), "grad/norm": 1.0}, {"phase": "rl"}, save=True)
  steps.close()
  assert [row["step"] for row in metrics.read_metrics(str(tmp_path))] == [1]
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]
  restored, meta = harness.StepHarness(str(tmp_path), ml_collections.ConfigDict(
      dict(max_to_keep=2, async_save=False))).restore(_state())
  assert meta["global_step"] == 1 and meta["phase"] == "rl"


def test_a_failing_sandbox_stops_the_run_past_its_error_budget():
  grpo.check_sandbox_errors(["ok", "sandbox_error", "runtime_error", "ok"], 0.5, 3, 2)  # 1 of 4: goes on
  grpo.check_sandbox_errors([], 0.5, 3, 2)  # no call at all: goes on
  with pytest.raises(RuntimeError, match=r"the sandbox failed 3 of 4 tool calls at RL step 7 .*max_sandbox_error"
                                         r"_fraction=0.5.*The newest checkpoint is 6"):
    grpo.check_sandbox_errors(["sandbox_error"] * 3 + ["ok"], 0.5, 7, 6)
