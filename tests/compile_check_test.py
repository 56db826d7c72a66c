"""Compile-only checks at full shape: the Qwen3-14B recipe's RL update and engine extend compile on
64 forced CPU devices with the recipe's mesh; every parameter shards as the rules say; the compiled
memory per device is within 20% of the dry run's estimate (train/plan.py)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _compile(spec: str, devices: int) -> dict:
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "compile_check_worker.py"), spec],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("arg, devices", [("", 64), (":release", 8)])
def test_recipe_compiles_at_full_shape_within_the_plan(arg, devices):
  out = _compile(f"experiments/rstar2_qwen3_14b.py{arg}", devices)
  assert out["devices"] == devices and out["parameters"] == 14
  assert out["mismatched_shardings"] == []
  # parameters and Adam moments: the arguments XLA holds are what the plan counts
  assert out["update_arguments"] == pytest.approx(out["state_estimate"], rel=0.01)
  assert out["update_compiled"] == pytest.approx(out["update_estimate"], rel=0.2)
  assert out["extend_arguments"] == pytest.approx(out["engine_estimate"], rel=0.01)
