"""The main job on the tiny default's smoke variant (SFT, then GRPO-RoC through three stages):
the files it writes, config errors, and exact resume after kills at every phase.

  python -m pytest -q tests/main_test.py
"""
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
from rstar_jax import rollout
from rstar_jax.rollout import local_servers
from rstar_jax.train import metrics as metrics_lib
from rstar_jax.train import rollout_backend
from rstar_jax.train import run as run_lib
from rstar_jax.train import validate

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
import tiny  # pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORIGIN = "experiments/tiny.py:smoke"
# The smoke variant on 2 of the 8 test devices (its microbatches have 2 rows).
OVERRIDES = ["--config.mesh.num_devices=2"]
PHASES = ["sft", "stage1", "stage2", "stage3"]
RL_KEYS = ["stage", "rl/step", "reward/mean", "down_sampling/after_sampling_trace_num",
           "reject_equal_reward/solve_equal_total_ratio", "roc_error_ratio/positive_err_ratio",
           "rollout/tool_calls_mean", "rollout/tool_error_ratio", "rollout/positive_tool_error_ratio",
           "rollout/response_tokens_mean", "rollout/response_tokens_max", "rollout/truncated_fraction",
           "rollout/finish/stop", "loss/policy", "policy/clip_frac_low", "policy/clip_frac_high", "grad/norm",
           "optim/lr", "rollout/kl_sampler_k3", "time/rollout_s", "time/update_s", "time/score_s",
           "time/score_hidden_fraction", "throughput/response_tokens_per_s", "sandbox/error_calls"]


def _smoke_config():
  config = tiny.get_config("smoke")
  config.mesh.num_devices = 2
  return config


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("smoke")
  summary = run_lib.run(_smoke_config(), str(workdir), origin=ORIGIN)
  return workdir, summary


def test_smoke_job_trains_sft_then_three_rl_stages(smoke_run):
  workdir, _ = smoke_run
  rows = metrics_lib.read_metrics(str(workdir))
  config = _smoke_config()
  num_rl = sum(stage["steps"] for stage in config.data.stages)
  assert [r["step"] for r in rows] == list(range(1, config.sft.steps + num_rl + 1))
  sft_rows, rl_rows = rows[:config.sft.steps], rows[config.sft.steps:]
  assert all(r["stage"] == "sft" and np.isfinite(r["loss/sft"]) for r in sft_rows)
  assert [r["stage"] for r in rl_rows] == ["stage1", "stage1", "stage2", "stage3"]
  assert [r["rl/step"] for r in rl_rows] == [1, 2, 3, 4]
  for row in rl_rows:
    missing = [k for k in RL_KEYS if k not in row]
    assert not missing, missing
    assert row["down_sampling/before_sampling_trace_num"] == 4 * 8  # prompts x num_rollouts
  assert rl_rows[-1]["optim/lr"] == 0.0 or rl_rows[-1]["update/skipped"] == 0.0


def test_smoke_job_writes_policies_evaluations_plots_and_summary(smoke_run):
  workdir, summary = smoke_run
  for phase in PHASES:
    cfg, params = models.load_hf(str(workdir / "policies" / phase))
    assert (workdir / "policies" / phase / "tokenizer.json").exists()
    assert json.loads((workdir / "policies" / phase / "rstar_chat_format.json").read_text())["variant"] == "compact"
    assert rollout.ToolEnvironment.load(str(workdir / "policies" / phase)) == rollout.ToolEnvironment.from_dict(
        _smoke_config().env)  # the environment it was trained in, for `python -m rstar_jax.eval`
    metrics = json.loads((workdir / "evals" / phase / "eval.json").read_text())
    assert metrics["eval/num_rollouts"] == 4 * 2 and 0 <= metrics["eval/avg@2"] <= metrics["eval/pass@2"] <= 1
    assert summary["evals"][phase] == metrics
    samples = [json.loads(line) for line in (workdir / "evals" / phase / "eval_samples.jsonl").read_text().splitlines()]
    assert metrics["eval/avg@2"] == np.mean([s["reward"] for s in samples])
    assert (workdir / "evals" / phase / "eval_samples.md").read_text().startswith("# Evaluation samples")
  ids = np.arange(8, dtype=np.int32)[None]
  cfg, params = models.load_hf(str(workdir / "policy"))
  assert np.isfinite(np.asarray(models.logits(cfg, params, ids))).all()
  for name in ("reward", "tool_errors", "tool_calls", "response_length", "eval"):
    assert (workdir / "plots" / f"{name}.png").stat().st_size > 1000
  assert (workdir / "loss.png").exists() and any((workdir / "tensorboard").iterdir())
  table = (workdir / "eval_table.md").read_text().splitlines()
  assert table[0].startswith("| phase | avg@2 | pass@2 |") and [line.split(" |")[0][2:] for line in table[2:]] == PHASES
  saved = json.loads((workdir / "summary.json").read_text())
  assert saved["rl"]["steps"] == 4 and saved["sft"]["steps"] == 4 and list(saved["evals"]) == PHASES
  hard = [json.loads(line) for line in (workdir / "data" / "hard_stage3.jsonl").read_text().splitlines()]
  stats = json.loads((workdir / "data" / "hard_stage3.stats.json").read_text())
  assert stats["num_kept"] == len(hard) and stats["num_samples"] == 2


def test_a_finished_run_rerun_recomputes_nothing(smoke_run):
  workdir, summary = smoke_run
  rows = metrics_lib.read_metrics(str(workdir))
  again = run_lib.run(_smoke_config(), str(workdir), origin=ORIGIN)
  assert metrics_lib.read_metrics(str(workdir)) == rows
  assert again["evals"] == summary["evals"]


def test_the_router_response_estimate_takes_a_mode_or_a_number():
  assert [rollout_backend.expected_response_tokens(v) for v in ("mean", "budget", "3000", 3000)] == [
      "mean", "budget", 3000, 3000]
  config = _smoke_config()
  config.rollout.expected_response_tokens = "3000"  # as --config.rollout.expected_response_tokens=3000 sets it
  validate.validate(config, ORIGIN)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.rl.update(keep=12), r"config.rl.keep=12 exceeds config.rl.num_rollouts=8"),
    (lambda c: c.rl.update(keep=3, num_rollouts=5),
     r"config.rl.keep=3 with config.rl.num_rollouts=5 and the 'code' count rule"),
    (lambda c: c.rl.update(roc_mode="best"), r"config.rl.roc_mode: `mode` must be one of"),
    (lambda c: c.data.stages[1].update(max_response_tokens=400),
     r"config.data.stages\[1\].max_response_tokens=400 plus config.data.max_prompt_tokens=128 is 528 tokens, "
     r"more than a packing row holds \(config.rl.row_length=256 \+ 1\)"),
    (lambda c: c.rl.update(num_rollouts=0), r"config.rl.num_rollouts=0 must be a positive integer"),
    (lambda c: c.sft.update(steps=0), r"config.sft.steps=0 must be a positive integer"),
    (lambda c: c.update(job="ppo"), r"config.job='ppo' must be one of"),
    (lambda c: c.rollout.update(sync_dtype="fp8"),
     r"config.rollout.sync_dtype='fp8' must be one of \('', 'bfloat16', 'float32', 'float16'\)"),
    (lambda c: c.rollout.update(weight_sync="nfs"),
     r"config.rollout.weight_sync='nfs' must be one of \('disk', 'push'\) \('push' needs rstar-serve servers\)"),
    (lambda c: c.env.update(output_format="html"), r"config.env: output_format must be one of \('code', 'paper'\)"),
    (lambda c: c.rollout.update(expected_response_tokens="median"),
     r"config.rollout.expected_response_tokens='median' must be 'mean', 'budget' or a positive number"),
    (lambda c: c.sandbox.update(cpu_s=-1), r"config.sandbox.cpu_s=-1 must be a non-negative integer"),
    (lambda c: c.sandbox.update(timeout_s=0.0), r"config.sandbox.timeout_s=0.0 must be positive"),
    (lambda c: c.sandbox.update(url="http://127.0.0.1:8080", timeout_s=30.0),
     r"config.sandbox.url='http://127.0.0.1:8080' runs the tool calls with its own limits \(rstar-sandbox serve "
     r"--timeout-s, --cpu-s\): config.sandbox.timeout_s=30.0 and config.sandbox.cpu_s=0 limit the in-process "
     r"pool only; leave them at 4.0 and 0"),
])
def test_bad_config_values_are_named_with_their_origin(change, message):
  config = _smoke_config()
  change(config)
  with pytest.raises(validate.ConfigError, match=message + r".*\(experiments/tiny.py:smoke\)"):
    validate.validate(config, ORIGIN)


def test_a_config_error_is_one_line_and_a_nonzero_exit(tmp_path):
  command = [sys.executable, "-m", "rstar_jax.main", "--config", "experiments/tiny.py:smoke", "--workdir",
             str(tmp_path), "--config.rl.keep=12"]
  proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last == ("config error: config.rl.keep=12 exceeds config.rl.num_rollouts=8 (RoC keeps `keep` of the "
                  "rollouts of each prompt; the paper samples 2 x keep) (experiments/tiny.py:smoke)")
  assert not (tmp_path / "checkpoints").exists()


def test_a_changed_workdir_key_is_refused_before_anything_is_touched(smoke_run):
  workdir, _ = smoke_run
  config_json = (workdir / "config.json").read_text()
  changed = _smoke_config()
  changed.model.num_layers = 2
  with pytest.raises(validate.ConfigError, match=r"changed: config.model.num_layers=2 \(was 1\)"):
    run_lib.run(changed, str(workdir))
  assert (workdir / "config.json").read_text() == config_json


def test_a_workdir_from_before_config_env_resumes_with_the_environment_it_ran(tmp_path):
  """config.json of an older run: no `env`, the tool settings under rl. Its implied environment
  (the released one, with those settings) is compared, so an equal config resumes."""
  config = _smoke_config()
  older = json.loads(config.to_json_best_effort())
  env = older.pop("env")
  older["rl"].update(max_parallel_calls=env["max_parallel_calls"], max_tool_response_chars=512)
  (tmp_path / "config.json").write_text(json.dumps(older))
  with pytest.raises(validate.ConfigError, match=r"changed: config.env.max_tool_response_chars=256 \(was 512\)"):
    run_lib._check_workdir(config, str(tmp_path), ORIGIN)  # pylint: disable=protected-access
  config.env.max_tool_response_chars = 512
  run_lib._check_workdir(config, str(tmp_path), ORIGIN)  # pylint: disable=protected-access


def _main(workdir):
  command = [sys.executable, "-m", "rstar_jax.main", "--config", "experiments/tiny.py:smoke",
             "--workdir", str(workdir), *OVERRIDES]
  return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_when(proc, pattern: str, deadline_s: float = 600):
  """SIGKILLs `proc` as soon as a line of its log contains `pattern`; returns the log so far."""
  lines, deadline = [], time.time() + deadline_s
  for line in proc.stderr:
    lines.append(line)
    if pattern in line:
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      return "".join(lines)
    assert time.time() < deadline, f"no {pattern!r} within {deadline_s}s"
  raise AssertionError(f"the run ended without logging {pattern!r}:\n{''.join(lines[-30:])}")


def _comparable(rows):
  return [{k: v for k, v in row.items() if not k.startswith(("time/", "throughput/"))} for row in rows]


def _evals(workdir):
  out = {}
  for phase in PHASES:
    metrics = json.loads((workdir / "evals" / phase / "eval.json").read_text())
    out[phase] = {k: v for k, v in metrics.items() if k not in ("eval/time_s", "eval/rollouts_per_s")}
  return out


def test_killed_at_every_phase_the_job_resumes_to_the_same_metrics(smoke_run, tmp_path):
  """SIGKILLed during an RL step, during the stage-3 hard filter, and during an evaluation, the
  rerun of the same command ends with the metrics, evaluations and policy of an uninterrupted run
  (the module's smoke run: same config on 2 devices), compared bitwise."""
  reference, _ = smoke_run
  workdir = tmp_path / "interrupted"
  for pattern in ("rl step 1/4", "hard filter: 2/6 problems", "eval after stage3: 4 problems"):
    _kill_when(_main(workdir), pattern)
  resumed = _main(workdir)
  assert resumed.wait() == 0, resumed.stderr.read()[-3000:]
  want = metrics_lib.read_metrics(str(reference))
  got = metrics_lib.read_metrics(str(workdir))
  assert [r["step"] for r in got] == [r["step"] for r in want]
  assert _comparable(got) == _comparable(want)  # bitwise: floats compare exactly
  assert _evals(workdir) == _evals(reference)
  _, params_want = models.load_hf(str(reference / "policy"))
  _, params_got = models.load_hf(str(workdir / "policy"))
  for a, b in zip(jax.tree.leaves(params_want), jax.tree.leaves(params_got)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_tiny_default_learns_by_rl(tmp_path):
  """The README's main job: after SFT the policy solves some eval problems with the tool; RL raises
  the eval accuracy by at least 0.15 and lowers the tool-error ratio among correct rollouts."""
  config = tiny.get_config()
  summary = run_lib.run(config, str(tmp_path), origin="experiments/tiny.py")
  sft, final = summary["evals"]["sft"], summary["evals"]["stage3"]
  assert 0.05 <= sft["eval/avg@4"] <= 0.5
  assert final["eval/avg@4"] >= sft["eval/avg@4"] + 0.15
  assert final["eval/positive_tool_error_ratio"] < sft["eval/positive_tool_error_ratio"]


def test_the_eval_command_evaluates_a_saved_policy(smoke_run, tmp_path):
  workdir, _ = smoke_run
  command = [sys.executable, "-m", "rstar_jax.eval", "--policy", str(workdir / "policies" / "stage3"),
             "--problems", f"problems:{workdir / 'data' / 'eval.jsonl'}", "--samples", "2", "--num-problems", "3",
             "--max-response-tokens", "48", "--max-turns", "2", "--num-slots", "4", "--out", str(tmp_path / "out")]
  proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = json.loads((tmp_path / "out" / "eval.json").read_text())
  assert metrics["eval/num_problems"] == 3 and metrics["eval/num_rollouts"] == 6
  assert 0 <= metrics["eval/avg@2"] <= metrics["eval/pass@2"] <= 1
  rows = [json.loads(line) for line in (tmp_path / "out" / "eval_problems.jsonl").read_text().splitlines()]
  assert [len(row["rewards"]) for row in rows] == [2, 2, 2]
  bad = subprocess.run(command[:-2] + ["--max-turns", "0"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0 and "--max-turns=0 must be a positive integer" in bad.stderr


def test_the_eval_command_runs_a_suite_on_rollout_servers_as_in_process(smoke_run, tmp_path):
  """`--suite` evaluates each benchmark into its own directory; with `--rollout-urls` the servers
  load the policy and roll out; greedy, they give the in-process engine's rewards exactly."""
  workdir, _ = smoke_run
  policy_dir = workdir / "policies" / "stage3"
  eval_file = workdir / "data" / "eval.jsonl"
  suite = tmp_path / "suite.py"
  suite.write_text(
      "import ml_collections\n"
      "def get_config(arg=None):\n"
      "  del arg\n"
      "  config = ml_collections.ConfigDict()\n"
      f"  config.benchmarks = [dict(name=n, problems=('problems:{eval_file}',), num_samples=2, temperature=0.0,\n"
      "                             max_response_tokens=48, max_turns=2) for n in ('first', 'second')]\n"
      "  return config\n")
  base = [sys.executable, "-m", "rstar_jax.eval", "--policy", str(policy_dir), "--num-problems", "3",
          "--num-slots", "4", "--suite", str(suite)]
  in_process = subprocess.run(base + ["--out", str(tmp_path / "local")], cwd=ROOT, capture_output=True, text=True,
                              timeout=600)
  assert in_process.returncode == 0, in_process.stderr[-3000:]
  # a server started on other (random) weights: the eval command loads the policy on it first
  other = tmp_path / "other"
  cfg = models.read_hf_config(str(policy_dir / "config.json"))
  models.save_hf(cfg, models.init_params(cfg, jax.random.key(7)), str(other))
  with local_servers.LocalServers(str(other), 1, ["--num-slots", "4", "--max-length", "256"]) as servers:
    served = subprocess.run(base + ["--out", str(tmp_path / "served"), "--rollout-urls", servers.urls[0]], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
  assert served.returncode == 0, served.stderr[-3000:]
  summary = json.loads(served.stdout[served.stdout.index("{"):])
  assert sorted(summary) == ["first", "second"] and "eval/avg@2" in summary["first"]
  for name in ("first", "second"):
    local = [json.loads(line) for line in (tmp_path / "local" / f"eval_{name}" / "eval_problems.jsonl").open()]
    remote = [json.loads(line) for line in (tmp_path / "served" / f"eval_{name}" / "eval_problems.jsonl").open()]
    assert [row["rewards"] for row in remote] == [row["rewards"] for row in local] and len(remote) == 3
    local_samples = (tmp_path / "local" / f"eval_{name}" / "eval_samples.jsonl").read_text().splitlines()
    remote_samples = (tmp_path / "served" / f"eval_{name}" / "eval_samples.jsonl").read_text().splitlines()
    assert [json.loads(x)["response"] for x in remote_samples] == [json.loads(x)["response"] for x in local_samples]
  both = subprocess.run(base + ["--problems", f"problems:{eval_file}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert both.returncode != 0 and "give --problems or --suite, not both" in both.stderr
  overridden = subprocess.run(base + ["--samples", "3"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert overridden.returncode != 0 and "--samples: each benchmark of --suite sets its own" in overridden.stderr


@pytest.mark.parametrize("weight_sync", ["disk", "push"])
def test_rollouts_through_two_local_servers_give_the_in_process_metrics(smoke_run, tmp_path, weight_sync):
  """config.rollout.backend='sglang' with 2 `rstar-serve` processes started per stage (weights synced
  after every update, written and loaded or pushed): the same rollouts as the in-process engine, so
  the same metrics up to the float rounding of another batch composition and device count; every
  sample carries the version of the policy of its step."""
  reference, _ = smoke_run
  config = _smoke_config()
  config.rollout.update(backend="sglang", local_servers=2, weight_sync=weight_sync)
  run_lib.run(config, str(tmp_path), origin=ORIGIN)
  want = [r for r in metrics_lib.read_metrics(str(reference)) if "rl/step" in r]
  got = [r for r in metrics_lib.read_metrics(str(tmp_path)) if "rl/step" in r]
  assert len(got) == len(want) == 4
  for row_got, row_want in zip(_comparable(got), _comparable(want)):
    assert set(row_got) == set(row_want)
    assert row_got["rollout/off_version_samples"] == 0
    for key, value in row_want.items():
      if isinstance(value, str):
        assert row_got[key] == value, key
      else:
        np.testing.assert_allclose(row_got[key], value, rtol=1e-4, atol=1e-6, err_msg=key)
  # written: the newest two versions; pushed: only each stage's first, which the servers start from
  assert sorted(os.listdir(tmp_path / "weight_sync")) == (["v000003", "v000004"] if weight_sync == "disk" else
                                                          ["v000002", "v000003"])
  assert not [p for p in os.popen("ps -eo args").read().splitlines() if "rstar_jax.serve" in p
              and str(tmp_path) in p], "a server outlived the run"


def test_bounded_staleness_generates_the_next_step_during_the_update(tmp_path):
  """rl.max_staleness=1 on 2 local servers: every step trains, the rollouts of all but each stage's
  first step come from the policy one update older, none staler than the bound."""
  config = _smoke_config()
  config.rollout.update(backend="sglang", local_servers=2)
  config.rl.update(max_staleness=1, use_sampler_logprobs=True)
  config.eval.num_problems = 0
  run_lib.run(config, str(tmp_path), origin=ORIGIN)
  rows = [r for r in metrics_lib.read_metrics(str(tmp_path)) if "rl/step" in r]
  assert [r["rl/step"] for r in rows] == [1, 2, 3, 4]
  assert all(r["rollout/stale_groups_dropped"] == 0 for r in rows)
  staleness = [r["rollout/staleness_mean"] for r in rows]  # stage1 has 2 steps, then 1 and 1
  assert staleness[0] == staleness[2] == staleness[3] == 0 and 0 < staleness[1] <= 1
  assert all(0 <= r["time/rollout_wait_s"] <= r["time/rollout_s"] + 1e-6 for r in rows)
  assert all(np.isfinite(r["loss/policy"]) for r in rows if r["update/skipped"] == 0)


def test_staleness_without_servers_or_sampler_logprobs_is_refused():
  config = _smoke_config()
  config.rl.max_staleness = 1
  with pytest.raises(validate.ConfigError, match="config.rl.max_staleness=1 .*needs rollout servers"):
    validate.validate(config, ORIGIN)
  config.rollout.update(backend="sglang", local_servers=2)
  with pytest.raises(validate.ConfigError, match="config.rl.use_sampler_logprobs=False must be True"):
    validate.validate(config, ORIGIN)


def test_an_sft_job_without_evaluation_needs_no_sandbox(tmp_path):
  config = _smoke_config()
  config.update(job="sft")
  config.eval.num_problems = 0
  summary = run_lib.run(config, str(tmp_path), origin=ORIGIN)
  assert summary["sft"]["steps"] == config.sft.steps and summary["evals"] == {}
  assert (tmp_path / "policy" / "config.json").exists()
