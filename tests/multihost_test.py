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
