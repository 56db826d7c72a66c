"""Smoke runs of benchmarks/model_bench.py, train_bench.py and engine_bench.py (`--quick`, a tiny
model) as a user runs them, checks of their ratio tables against their own columns, the FLOP formula by hand, and
the GPU-mode measurements run on CPU on the tiny model.

  python -m pytest -q tests/benchmarks_smoke_test.py
"""
import importlib
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

from rstar_jax import models

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
# "<metric>  <ours>  <peer>  <ratio>x", e.g. "decode ms/step (B=2, P=16, N=4)   0.33   1.20   3.61x".
ROW = re.compile(r"^(?P<metric>\S.*?)\s+(?P<ours>[\d.]+)\s+(?P<peer>[\d.]+)\s+(?P<ratio>[\d.]+)x$")


@pytest.fixture(scope="module")
def bench():
  """The benchmark scripts as modules (they import bench_util from their own folder)."""
  sys.path.insert(0, str(BENCHMARKS))
  try:
    yield {name: importlib.import_module(name) for name in ("bench_util", "model_bench", "train_bench")}
  finally:
    sys.path.remove(str(BENCHMARKS))


def _run_quick(script: str, *extra: str) -> str:
  # As a user runs it: one CPU device, not the 8 forced ones of conftest.py.
  env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "").replace(
      "--xla_force_host_platform_device_count=8", "")}
  done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick", *extra], capture_output=True, text=True,
                        env=env, timeout=300, check=False)
  assert done.returncode == 0, f"{script} --quick failed:\n{done.stdout}\n{done.stderr}"
  return done.stdout


def _table(stdout: str) -> dict[str, tuple[float, float, float]]:
  rows = {}
  for line in stdout.splitlines():
    match = ROW.match(line.strip())
    if match:
      rows[match["metric"]] = (float(match["ours"]), float(match["peer"]), float(match["ratio"]))
  return rows


def _check_ratios(rows, higher_is_better: dict[str, bool]) -> None:
  """Each row's ratio is our speed-up computed from its printed columns (4 significant digits
  each, the ratio to 2 decimals)."""
  assert set(rows) == set(higher_is_better), rows
  for metric, (ours, peer, ratio) in rows.items():
    assert ours > 0 and peer > 0, (metric, ours, peer)
    expected = ours / peer if higher_is_better[metric] else peer / ours
    assert ratio == pytest.approx(expected, rel=2e-3, abs=0.006), (metric, ours, peer, ratio)


def test_model_bench_quick_prints_parity_and_ratio_rows():
  stdout = _run_quick("model_bench.py", "--scaling")
  assert re.search(r"threads: jax \(XLA CPU pool\) \d+, torch intra-op \d+", stdout), stdout
  diff = float(re.search(r"logits max \|ours - transformers\| = (\S+)", stdout)[1])
  assert diff <= 1e-3
  scaling = {f"decode ms/step (B={b}, cached {p})": False
             for b, p in [(1, 256), (8, 256), (32, 256), (64, 256), (8, 1024), (8, 2048), (8, 4096)]}
  _check_ratios(_table(stdout), {"prefill, all logits (2x32) tok/s": True, "prefill into cache (2x32) tok/s": True,
                                 "decode ms/step (B=2, P=16, N=4)": False, "decode tok/s (B=2)": True, **scaling})


@pytest.mark.parametrize("flags", [("--processes", "same", "--scaling"), ("--rounds", "1")])
def test_train_bench_quick_prints_agreement_and_ratio_rows(flags):
  stdout = _run_quick("train_bench.py", *flags)
  assert "host malloc: GLIBC_TUNABLES=glibc.malloc.mmap_max=0:" in stdout, stdout
  losses = re.search(r"SFT step, first step: loss (\S+) \(relative diff (\S+)\), grad norm (\S+) \(relative diff (\S+)\)",
                     stdout)
  assert losses, stdout
  # Random 256-token vocabulary: the first loss is close to ln 256.
  assert float(losses[1]) == pytest.approx(math.log(256), abs=0.1)
  assert float(losses[2]) <= 1e-3 and float(losses[4]) <= 1e-3
  rl = re.search(r"RL update, first step: loss (\S+) \(relative diff (\S+)\), grad norm \S+ \(relative diff (\S+)\)",
                 stdout)
  assert rl, stdout
  # ratio 1 (old log-probs of the same parameters): loss = -mean advantage over the trained tokens
  assert float(rl[1]) == pytest.approx(-0.25, abs=1e-5)
  assert float(rl[2]) <= 1e-3 and float(rl[3]) <= 1e-3
  scaling = {"T=32 ms per step": False} if "--scaling" in flags else {}
  _check_ratios(_table(stdout), {"train step (2x32) tok/s": True, "train step ms": False,
                                 "RL update + old log-probs ms": False, **scaling})
  assert ("each side in processes of its own, 1 round(s)" if "--rounds" in flags
          else "both sides in this process, steps interleaved") in stdout, stdout


def test_engine_bench_quick_checks_outputs_and_prints_the_ratio():
  stdout = _run_quick("engine_bench.py", "--scaling")
  assert re.search(r"outputs: first token equal for all 6 requests; all 8 tokens equal for \d of 6; "
                   r"cached_tokens 0$", stdout, re.M), stdout  # every call starts from a flushed cache
  # 2 prompts of 48 tokens x 4 samples: 3 samples per prompt reuse its first 47 ids
  assert "cached_tokens 282 (each prompt prefilled once: 282), without sharing 0" in stdout, stdout
  scaling = {f"B={b}, context {c} tok/s": True for b, c in [(1, 32), (4, 32), (4, 64)]}
  _check_ratios(_table(stdout), {"generate (6 req, B=4) tok/s": True, "groups (2x4, B=4) tok/s": True,
                                 "groups: shared prefixes tok/s": True, **scaling})


def test_router_sim_quick_prints_every_policy_ratio_rows_and_the_ceiling():
  stdout = _run_quick("router_sim.py")
  policies = ("static_sync", "round_robin", "least_in_flight", "paper_prototype", "router")
  for policy in policies:
    assert re.search(rf"^{policy}\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+\d+\s+[\d.]+\s+[\d.]+$", stdout, re.M), stdout
  assert re.search(r"^ceiling\s+[\d.]+\s+[\d.]+\s+\(step-time bounds", stdout, re.M), stdout
  ratios = _table(stdout)
  _check_ratios(ratios, {**{f"tokens/s router vs {peer}": True for peer in policies[:4]},
                         **{f"tokens/s {policy} vs ceiling": True for policy in policies}})
  for policy in policies:  # no schedule passes the ceiling
    assert ratios[f"tokens/s {policy} vs ceiling"][2] <= 1.0, stdout


def test_serve_bench_quick_syncs_weights_and_compares_the_router():
  stdout = _run_quick("serve_bench.py")
  assert "sync seconds tiny default (0.015 GB)" in stdout, stdout  # 3.7M fp32 parameters
  _check_ratios(_table(stdout), {"tokens/s Router vs round_robin": True,
                                 "sync seconds tiny default (0.015 GB)": False})


def test_flops_per_token_matches_hand_count(bench):
  cfg = bench["bench_util"].quick_config()  # L=2 E=64 F=128 H=4 K=2 D=16 V=256
  # N_mm = 2 * (64*64 + 2*64*32 + 64*64 + 3*64*128) + 64*256 = 2 * 36864 + 16384 = 90112
  assert bench["bench_util"].matmul_params(cfg) == 90112
  # forward at T=32: 2 * 90112 + 4 * 2 * 32 * 4 * 16 = 180224 + 16384
  assert bench["bench_util"].flops_per_token(cfg, 32, training=False) == 196608
  assert bench["bench_util"].flops_per_token(cfg, 32, training=True) == 3 * 196608
  with pytest.raises(ValueError, match="context must be positive"):
    bench["bench_util"].flops_per_token(cfg, 0, training=False)


def test_matmul_params_counts_tied_output_projection(bench):
  cfg = bench["bench_util"].quick_config()
  params = models.param_shapes(cfg.replace(tie_word_embeddings=True))
  # Tied: every parameter but the norms is a matmul kernel, the embedding doubling as the output.
  norms = 2 * (64 + 64 + 16 + 16) + 64
  assert bench["bench_util"].num_params(params) - norms == bench["bench_util"].matmul_params(cfg)


def test_train_batch_masks_prompt_targets_and_rejects_bad_sizes(bench):
  make_batch, cfg = bench["train_bench"].make_batch, bench["bench_util"].quick_config()
  batch = make_batch(cfg, batch=2, length=16, prompt_len=4, num_microbatches=2, seed=0)
  assert batch.input_ids.shape == (2, 1, 16)
  # Row targets are tokens 1..16; tokens 0..3 are prompt, so targets 1..3 are out: 16 - 3 per row.
  assert batch.loss_mask.sum() == 2 * 13 and not batch.loss_mask[:, :, :3].any()
  with pytest.raises(ValueError, match=r"prompt_len must be in \[0, 16\), got 16"):
    make_batch(cfg, batch=2, length=16, prompt_len=16, num_microbatches=1, seed=0)
  with pytest.raises(ValueError, match=r"batch \(3\) must be a multiple of num_microbatches \(2\)"):
    make_batch(cfg, batch=3, length=16, prompt_len=4, num_microbatches=2, seed=0)


def test_median_seconds_interleaves_calls_with_fresh_setup(bench):
  util, calls, setups = bench["bench_util"], [], iter(range(10))
  timed = [util.Timed(lambda x: calls.append(("a", x)), setup=lambda: next(setups)),
           util.Timed(lambda x: calls.append(("b", x)))]
  assert len(util.median_seconds(timed, repeats=2, warmup=1)) == 2
  assert calls == [("a", 0), ("b", None), ("a", 1), ("b", None), ("a", 2), ("b", None)]
  with pytest.raises(ValueError, match="repeats must be >= 1"):
    util.median_seconds(timed, repeats=0)


def test_gpu_mode_measurements_run_on_cpu_with_tiny_model(bench, capsys):
  cfg = bench["bench_util"].quick_config().replace(dtype="bfloat16", param_dtype="bfloat16")
  assert bench["model_bench"].measure_forward_mfu(cfg, 2, 16, repeats=1, peak_tflops=1.0) > 0
  assert bench["train_bench"].measure_train_mfu(cfg.replace(param_dtype="float32"), 2, 16, 4, 2, "dots", 8,
                                                repeats=1, peak_tflops=1.0) > 0
  stdout = capsys.readouterr().out
  assert re.search(r"forward 2x16: 32 tokens in .* MFU [\d.]+% of 1 TFLOP/s", stdout), stdout
  assert re.search(r"train step 2x16: 32 tokens in .* MFU [\d.]+% of 1 TFLOP/s", stdout), stdout
  losses = [float(x) for x in re.search(r"loss per step: (.*)", stdout)[1].split()]
  assert len(losses) == 2 and all(math.isfinite(x) for x in losses)


@pytest.mark.parametrize("script", ["model_bench", "train_bench"])
def test_gpu_mode_without_gpu_names_the_backend(bench, script, monkeypatch, capsys):
  monkeypatch.setattr(sys, "argv", [script, "--device", "gpu"])
  with pytest.raises(SystemExit):
    bench[script].main()
  assert "--device gpu needs a GPU, but JAX's default backend is 'cpu'" in capsys.readouterr().err
