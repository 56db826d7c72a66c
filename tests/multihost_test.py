"""Multi-process JAX on localhost: 2 processes x 4 CPU devices give the results of 1 process x 8
devices (up to the float rounding of cross-process reductions): one GRPO-RoC update, and the SFT
job through `rstar_jax.main` with a checkpoint written by both processes and resumed by both."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}


def _run_processes(commands_for, num_processes: int, devices: int, timeout: int = 600) -> list[str]:
  """Starts `commands_for(process_id)` for each process, waits, returns each one's stdout."""
  procs = [subprocess.Popen(commands_for(i), cwd=ROOT, env=_env(devices), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(num_processes)]
  outs = [p.communicate(timeout=timeout) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return [out for out, _ in outs]


def _json_line(stdout: str) -> dict:
  return json.loads(next(line for line in stdout.splitlines() if line.startswith("{")))


def test_rl_update_on_two_processes_equals_one_process():
  worker = [sys.executable, os.path.join(ROOT, "tests", "multihost_worker.py")]
  (single,) = _run_processes(lambda _: worker, 1, 8)
  address = f"127.0.0.1:{_free_port()}"
  outs = _run_processes(lambda i: worker + [address, "2", str(i)], 2, 4)
  one, two = _json_line(single), _json_line(outs[0])
  assert (one["processes"], two["processes"], one["devices"], two["devices"]) == (1, 2, 8, 8)
  assert not any(line.startswith("{") for line in outs[1].splitlines())  # process 0 reports
  assert one["metrics"]["update/num_updates"] == 2.0  # the old log-prob pass ran (2 mini-batches)
  assert one["metrics"].keys() == two["metrics"].keys()
  for key, value in one["metrics"].items():
    assert two["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
  for key, value in one["param_sq_sums"].items():
    assert two["param_sq_sums"][key] == pytest.approx(value, rel=1e-5), key


SFT_ARGS = ["--config", "experiments/tiny.py:smoke", "--config.job=sft", "--config.eval.num_problems=0",
            "--config.sft.rows_per_microbatch=8", "--config.sft.batch_size=8"]


def _main(workdir, steps, *extra):
  return [sys.executable, "-m", "rstar_jax.main", *SFT_ARGS, f"--workdir={workdir}", f"--config.sft.steps={steps}",
          *extra]


def _metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_sft_job_on_two_processes_checkpoints_resumes_and_equals_one_process(tmp_path):
  _run_processes(lambda _: _main(tmp_path / "single", 4), 1, 8)
  multi = tmp_path / "multi"

  def two_processes(steps):
    address = f"127.0.0.1:{_free_port()}"
    _run_processes(lambda i: _main(multi, steps, "--config.distributed.mode=explicit",
                                   f"--config.distributed.coordinator_address={address}",
                                   "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"),
                   2, 4)

  two_processes(2)  # checkpoint at step 2 (every_steps=2 in the smoke config), then stop
  assert sorted(os.listdir(multi / "checkpoints")) == ["2"]
  two_processes(4)  # both processes resume from it
  one, two = _metrics(tmp_path / "single"), _metrics(multi)
  assert [row["step"] for row in two] == [1, 2, 3, 4]  # one writer, no duplicate rows
  for a, b in zip(one, two):
    for key in ("loss/sft", "grad/norm", "param/norm", "update/norm", "sft/num_tokens", "data/tokens"):
      assert b[key] == pytest.approx(a[key], rel=1e-5), (a["step"], key)
  weights_one = load_file(str(tmp_path / "single" / "policy" / "model.safetensors"))
  weights_two = load_file(str(multi / "policy" / "model.safetensors"))
  assert weights_one.keys() == weights_two.keys()
  for name, value in weights_one.items():
    np.testing.assert_allclose(weights_two[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("overrides, message", [
    (dict(job="sft", eval_problems=4), "config.eval.num_problems=4 must be 0 in a multi-process run"),
    (dict(job="sft_rl", eval_problems=0), "config.rollout.backend='jax' must be 'sglang'"),
])
def test_multi_process_configs_refuse_what_does_not_span_processes(overrides, message):
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import tiny  # pylint: disable=import-outside-toplevel
  from rstar_jax.train import validate  # pylint: disable=import-outside-toplevel
  config = tiny.get_config("smoke")
  config.job = overrides["job"]
  config.eval.num_problems = overrides["eval_problems"]
  config.distributed.update(mode="explicit", coordinator_address="127.0.0.1:1234", num_processes=2)
  with pytest.raises(validate.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    validate.validate(config)


RL_CONFIG = '''
import os

from rstar_jax.train.config_lib import load_module

def get_config(arg=None):
  base, url = arg.split(",")
  config = load_module(os.path.join({root!r}, "experiments", "tiny.py")).get_config("smoke")
  config.job = "rl"
  config.model.hf_path = os.path.join(base, "policies", "sft")
  train = ["problems:" + os.path.join(base, "data", "train.jsonl")]
  config.data.stages = [
      dict(name="stage1", train_files=train, max_response_tokens=64, max_turns=2, steps=2),
      dict(name="stage2", train_files=train, max_response_tokens=64, max_turns=2, steps=1, reset_optimizer=True,
           hard_filter_samples=2)]
  config.eval.num_problems = 0
  config.rl.update(rows_per_microbatch=8, num_slots=8)
  config.rollout.update(backend="sglang", urls=(url,))
  return config
'''


def test_rl_job_on_two_processes_drives_the_servers_from_process_zero(tmp_path):
  """The RL job with two trainer processes: process 0 rolls out on the server (and runs the stage-2
  hard filter there), broadcasts the rollouts, both update; the run matches a one-process run on
  the same server up to float rounding, with the same filtered problems and one metrics writer."""
  base = tmp_path / "sft"
  _run_processes(lambda _: _main(base, 2), 1, 8)
  config_file = tmp_path / "rl_config.py"
  config_file.write_text(RL_CONFIG.replace("{root!r}", repr(ROOT)))
  from rstar_jax.rollout import local_servers  # pylint: disable=import-outside-toplevel
  with local_servers.LocalServers(str(base / "policies" / "sft"), 1,
                                  ["--num-slots", "8", "--max-length", "256"]) as servers:
    spec = f"{config_file}:{base},{servers.urls[0]}"
    command = [sys.executable, "-m", "rstar_jax.main", "--config", spec]
    _run_processes(lambda _: command + [f"--workdir={tmp_path / 'one'}"], 1, 8)
    address = f"127.0.0.1:{_free_port()}"
    _run_processes(lambda i: command + [f"--workdir={tmp_path / 'two'}", "--config.distributed.mode=explicit",
                                        f"--config.distributed.coordinator_address={address}",
                                        "--config.distributed.num_processes=2",
                                        f"--config.distributed.process_id={i}"], 2, 4)
  one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
  assert [row["rl/step"] for row in two] == [row["rl/step"] for row in one] == [1.0, 2.0, 3.0]
  for a, b in zip(one, two):
    for key in ("reward/mean", "loss/policy", "grad/norm", "rollout/response_tokens_mean"):
      assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-6), (a["rl/step"], key)
  filtered = [(tmp_path / run / "data" / "hard_stage2.jsonl").read_text() for run in ("one", "two")]
  assert filtered[0] == filtered[1] and filtered[0]


def test_process_zero_sends_large_objects_and_its_errors_to_every_process():
  worker = [sys.executable, os.path.join(ROOT, "tests", "multihost_worker.py")]
  address = f"127.0.0.1:{_free_port()}"
  outs = _run_processes(lambda i: worker + [address, "2", str(i), "broadcast"], 2, 4)
  digests = [_json_line(out) for out in outs]
  assert [d["process"] for d in digests] == [0, 1] and digests[0]["size"] == digests[1]["size"] == 40 * 2**20 + 5
  assert digests[0]["sha256"] == digests[1]["sha256"]
  address = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen(worker + [address, "2", str(i), "fail"], cwd=ROOT, env=_env(4), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  errors = [p.communicate(timeout=300)[1] for p in procs]
  assert [p.returncode != 0 for p in procs] == [True, True]  # neither waits forever
  assert "ZeroDivisionError" in errors[0]
  assert "ProcessZeroError: the test step failed on process 0: ZeroDivisionError" in errors[1]


def test_processes_restore_the_same_step_when_one_cannot_read_the_newest(tmp_path):
  """Step 2 fails to read on process 1 only: both set it aside (once, by process 0) and restore 1."""
  worker = [sys.executable, os.path.join(ROOT, "tests", "multihost_worker.py")]
  address = f"127.0.0.1:{_free_port()}"
  outs = _run_processes(lambda i: worker + [address, "2", str(i), "restore", str(tmp_path)], 2, 4, timeout=300)
  assert [_json_line(out) for out in outs] == [{"process": 0, "restored": 1, "steps": [1]},
                                              {"process": 1, "restored": 1, "steps": [1]}]
  assert [name.split("-")[0] for name in os.listdir(tmp_path / "checkpoints_unreadable")] == ["2"]
