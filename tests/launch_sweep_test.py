"""launch/sweep.py: commands of a sweep, grouping over seeds, aggregates, the reproducibility check."""
import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("sweep", os.path.join(ROOT, "launch", "sweep.py"))
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)
ABLATION = os.path.join(ROOT, "experiments", "roc_ablation.py")


def test_print_mode_lists_one_command_per_entry_and_the_repeat(capsys, tmp_path):
  assert sweep.main(["--config", ABLATION, "--workdir", str(tmp_path), "--print"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 6 + 1  # 2 arms x 3 seeds, and the first one again
  assert "--config experiments/roc_ablation.py:roc=False,seed=0" in lines[0].replace(ROOT + "/", "")
  assert lines[0].endswith(f"--workdir {tmp_path}/roc=False,seed=0")
  assert lines[-1].endswith(f"--workdir {tmp_path}/roc=False,seed=0.repeat1")
  assert not list(tmp_path.iterdir())  # nothing ran


def test_names_and_groups():
  entry = {"config": "roc=True,seed=2", "rl.temperature": 1.2}
  assert sweep.run_name(entry) == "roc=True,seed=2,rl.temperature=1.2"
  assert sweep.group_name(entry) == "roc=True,rl.temperature=1.2"
  assert sweep.command("c.py", entry, "w")[-2:] == ["w", "--config.rl.temperature=1.2"]


def _fake_run(run_dir, values, accuracy):
  os.makedirs(os.path.join(run_dir, "evals", "rl"))
  with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
    for step, value in enumerate(values, start=1):
      f.write(json.dumps({"step": step, "rl/step": step, "reward/mean": value, "time/step_s": step * 0.1}) + "\n")
  with open(os.path.join(run_dir, "evals", "rl", "eval.json"), "w") as f:
    json.dump({"eval/avg@4": accuracy, "eval/time_s": 1.0}, f)
  with open(os.path.join(run_dir, "summary.json"), "w") as f:
    json.dump({"evals": {"rl": {}}}, f)


def test_aggregate_gives_mean_and_spread_over_seeds(tmp_path):
  entries = [{"config": f"roc={roc},seed={seed}"} for roc in (False, True) for seed in (0, 1)]
  for entry, (values, accuracy) in zip(entries, [([0.1, 0.2], 0.3), ([0.1, 0.4], 0.5),
                                                  ([0.2, 0.5], 0.6), ([0.2, 0.7], 0.8)]):
    _fake_run(tmp_path / sweep.run_name(entry), values, accuracy)
  table = sweep.aggregate(str(tmp_path), entries)
  grpo, roc = table["roc=False"], table["roc=True"]
  assert grpo["last step reward/mean"]["mean"] == pytest.approx(0.3)
  assert grpo["last step reward/mean"]["std"] == pytest.approx(0.1)
  assert roc["final eval/avg@4"]["min"] == 0.6 and roc["final eval/avg@4"]["max"] == 0.8
  assert roc["final eval/avg@4"]["n"] == 2
  assert "| final eval/avg@4 | 0.400 ± 0.100 (n=2) | 0.700 ± 0.100 (n=2) |" in (tmp_path / "sweep.md").read_text()
  assert (tmp_path / "sweep.csv").read_text().startswith("group,metric,mean,std,min,max,n")
  assert (tmp_path / "sweep_reward_mean.png").stat().st_size > 1000


def test_reproduced_ignores_timings_and_catches_any_other_difference(tmp_path):
  _fake_run(tmp_path / "a", [0.1, 0.2], 0.5)
  _fake_run(tmp_path / "b", [0.1, 0.2], 0.5)
  lines = (tmp_path / "b" / "metrics.jsonl").read_text().replace('"time/step_s": 0.1', '"time/step_s": 9.0')
  (tmp_path / "b" / "metrics.jsonl").write_text(lines)
  assert sweep.reproduced(str(tmp_path / "a"), str(tmp_path / "b"))[0]
  _fake_run(tmp_path / "c", [0.1, 0.2000001], 0.5)
  ok, detail = sweep.reproduced(str(tmp_path / "a"), str(tmp_path / "c"))
  assert not ok and "step 2 differs in ['reward/mean']" in detail
