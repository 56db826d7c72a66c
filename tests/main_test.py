"""The main job on the tiny default's smoke variant: files written, and exact resume after a kill."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from rstar_jax import models
from rstar_jax.train import metrics as metrics_lib
from rstar_jax.train import run as run_lib

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
import tiny  # pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The smoke variant on 2 of the 8 test devices (its microbatches have 2 rows).
OVERRIDES = ["--config.mesh.num_devices=2"]


def _smoke_config(**sft):
  config = tiny.get_config("smoke")
  config.mesh.num_devices = 2
  config.sft.update(sft)
  return config


def test_smoke_run_writes_metrics_checkpoints_and_a_loadable_policy(tmp_path):
  summary = run_lib.run(_smoke_config(), str(tmp_path), origin="experiments/tiny.py:smoke")
  rows = metrics_lib.read_metrics(str(tmp_path))
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  assert all(np.isfinite(r["loss/sft"]) and r["sft/num_tokens"] > 0 for r in rows)
  assert ["eval/loss_sft" in r for r in rows] == [False, True, False, True]
  assert rows[-1]["loss/sft"] < rows[0]["loss/sft"]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
  assert json.loads((tmp_path / "summary.json").read_text())["final_metrics"] == rows[-1] == summary["final_metrics"]
  assert (tmp_path / "loss.png").stat().st_size > 1000
  assert any((tmp_path / "tensorboard").iterdir())
  cfg, params = models.load_hf(str(tmp_path / "policy"))
  assert cfg.vocab_size >= 259 and (tmp_path / "policy" / "tokenizer.json").exists()
  ids = np.arange(8, dtype=np.int32)[None]
  assert np.isfinite(np.asarray(models.logits(cfg, params, ids))).all()


def test_the_trained_policy_is_evaluated_with_real_tool_calls(tmp_path):
  config = _smoke_config()
  config.eval.num_problems = 4
  summary = run_lib.run(config, str(tmp_path), origin="experiments/tiny.py:smoke")
  metrics = json.loads((tmp_path / "eval.json").read_text())
  assert summary["eval"] == metrics and metrics["eval/num_rollouts"] == 4
  assert 0 <= metrics["eval/accuracy"] <= 1
  assert sum(metrics[f"eval/finish/{r}"] for r in ("stop", "length", "max_turns", "tool_response_overflow")) == 1
  samples = [json.loads(line) for line in (tmp_path / "eval_samples.jsonl").read_text().splitlines()]
  assert [s["id"] for s in samples] == [f"synthetic/eval/{i:06d}" for i in range(4)]
  assert metrics["eval/accuracy"] == np.mean([s["reward"] for s in samples])


def test_bad_config_values_are_named():
  config = _smoke_config(steps=0)
  with pytest.raises(ValueError, match=r"config.sft.steps=0 must be a positive integer \(experiments/tiny.py:smoke\)"):
    run_lib.validate(config, "experiments/tiny.py:smoke")
  config = _smoke_config(logits_chunk=7)
  with pytest.raises(ValueError, match="config.sft.logits_chunk=7 must be 0 or divide"):
    run_lib.validate(config)
  config = _smoke_config()
  config.eval.num_problems = 2
  config.data.sft_files = ["traces.jsonl"]
  with pytest.raises(ValueError, match="config.eval.problems_files=.* is empty but config.data.sft_files is set"):
    run_lib.validate(config)


def test_reruns_in_the_same_workdir_keep_what_was_written(tmp_path, caplog):
  config = _smoke_config(steps=3)
  first = run_lib.run(config, str(tmp_path))
  rows = metrics_lib.read_metrics(str(tmp_path))
  # A finished run rerun: nothing recomputed, the summary and metrics stay as they were.
  assert run_lib.run(config, str(tmp_path))["final_metrics"] == first["final_metrics"] == rows[-1]
  assert metrics_lib.read_metrics(str(tmp_path)) == rows
  # A config that changes what the workdir holds is refused before anything is touched.
  checkpoints = sorted(os.listdir(tmp_path / "checkpoints"))
  config_json = (tmp_path / "config.json").read_text()
  changed = _smoke_config(steps=3)
  changed.model.num_layers = 2
  with pytest.raises(ValueError, match=r"changed: config.model.num_layers=2 \(was 1\)"):
    run_lib.run(changed, str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == checkpoints
  assert (tmp_path / "config.json").read_text() == config_json
  # Killed before its first checkpoint: the rerun replaces the rows instead of appending.
  for step in checkpoints:
    for path in sorted((tmp_path / "checkpoints" / step).rglob("*"), reverse=True):
      path.unlink() if path.is_file() else path.rmdir()
    (tmp_path / "checkpoints" / step).rmdir()
  more_steps = _smoke_config(steps=3)
  more_steps.sft.eval_every_steps = 3  # a free key: allowed, and logged
  run_lib.run(more_steps, str(tmp_path))
  again = metrics_lib.read_metrics(str(tmp_path))
  assert [r["step"] for r in again] == [1, 2, 3]
  assert _comparable(again)[0] == _comparable(rows)[0]
  assert "changed settings: config.sft.eval_every_steps=3 (was 2)" in caplog.text


def _main(workdir, steps):
  command = [sys.executable, "-m", "rstar_jax.main", "--config", "experiments/tiny.py:smoke",
             "--workdir", str(workdir), f"--config.sft.steps={steps}", *OVERRIDES]
  return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _comparable(rows):
  return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


def test_killed_run_resumes_with_the_same_metrics_as_an_uninterrupted_run(tmp_path):
  steps = 6
  reference = _main(tmp_path / "reference", steps)
  interrupted = _main(tmp_path / "interrupted", steps)
  checkpoint_4 = tmp_path / "interrupted" / "checkpoints" / "4"
  deadline = time.time() + 600
  while not checkpoint_4.exists():  # killed right after its second checkpoint (step 4) completes
    assert interrupted.poll() is None, interrupted.stderr.read()[-3000:]
    assert time.time() < deadline
    time.sleep(0.05)
  interrupted.send_signal(signal.SIGKILL)
  interrupted.wait()
  killed_rows = metrics_lib.read_metrics(str(tmp_path / "interrupted"))
  assert 4 <= killed_rows[-1]["step"] < steps
  resumed = _main(tmp_path / "interrupted", steps)
  assert resumed.wait() == 0, resumed.stderr.read()[-3000:]
  assert reference.wait() == 0, reference.stderr.read()[-3000:]
  want = metrics_lib.read_metrics(str(tmp_path / "reference"))
  got = metrics_lib.read_metrics(str(tmp_path / "interrupted"))
  assert [r["step"] for r in got] == list(range(1, steps + 1))
  assert _comparable(got) == _comparable(want)  # bitwise: floats compare exactly
  _, params_want = models.load_hf(str(tmp_path / "reference" / "policy"))
  _, params_got = models.load_hf(str(tmp_path / "interrupted" / "policy"))
  for a, b in zip(jax.tree.leaves(params_want), jax.tree.leaves(params_got)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_tiny_default_learns_the_trace_format(tmp_path):
  """The README's main job (100 steps): training and held-out loss fall from ~6.9 to below 1, and
  the trained policy, evaluated as an agent, writes tool calls that the sandbox runs."""
  config = tiny.get_config()
  config.mesh.num_devices = 4  # 4-row microbatches over the fsdp axis
  summary = run_lib.run(config, str(tmp_path), origin="experiments/tiny.py")
  rows = metrics_lib.read_metrics(str(tmp_path))
  assert len(rows) == config.sft.steps and rows[0]["loss/sft"] > 5.0
  assert summary["final_metrics"]["loss/sft"] < 1.0 and summary["final_metrics"]["eval/loss_sft"] < 1.0
  assert summary["eval"]["eval/tool_calls_mean"] > 0.5 and summary["eval"]["eval/finish/stop"] > 0.5
