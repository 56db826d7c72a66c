"""launch/slurm_train.sh, tpu_vm.sh, sglang_mi300x.sh: the commands each prints with --dry-run,
flag by flag; that a real run runs exactly those commands (fake srun, gcloud, docker and curl on
PATH record what they are given); and that bad input stops with a message naming the option.

  .venv/bin/python -m pytest -q tests/launch_scripts_test.py

Every test puts the fakes first on PATH, so a dry run that called a real tool would show up in their
log (and no test can reach a real scheduler, cloud or docker daemon).
"""
import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
IMAGE = "lmsysorg/sglang:v0.5.9-rocm720-mi30x"
CONFIG = "experiments/tiny.py:smoke=True"  # exists, unlike the recipe being written now

# One fake for srun, sbatch, gcloud, docker and curl: appends {"prog", "argv", "env"} to $FAKE_LOG.
# docker inspect prints $FAKE_RUNNING (default "true"); curl fails (exit 22, as `curl -f` on a 503)
# for URLs containing $FAKE_CURL_DOWN.
_FAKE = """#!{python}
import json, os, sys
prog, argv = os.path.basename(sys.argv[0]), sys.argv[1:]
env = {{k: os.environ[k] for k in ("XLA_PYTHON_CLIENT_MEM_FRACTION", "JAX_LOCAL_DEVICE_IDS",
                                   "JAX_COORDINATOR_PORT") if k in os.environ}}
with open(os.environ["FAKE_LOG"], "a") as f:
  f.write(json.dumps({{"prog": prog, "argv": argv, "env": env}}) + "\\n")
if prog == "docker" and argv[:1] == ["inspect"]:
  print(os.environ.get("FAKE_RUNNING", "true"))
if prog == "docker" and argv[:1] == ["logs"]:
  print("fake log: HIP out of memory")
down = os.environ.get("FAKE_CURL_DOWN")
if prog == "curl" and down and any(down in a for a in argv):
  sys.exit(22)
"""
_TOOLS = ("srun", "sbatch", "scontrol", "gcloud", "docker", "curl")


@pytest.fixture(name="env")
def _env(tmp_path):
  """The environment for the scripts: fakes first on PATH, no SLURM or JAX variables inherited."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for tool in _TOOLS:
    path = bin_dir / tool
    path.write_text(_FAKE.format(python=sys.executable))
    path.chmod(0o755)
  env = {k: v for k, v in os.environ.items()
         if not k.startswith("SLURM_") and k not in ("XLA_PYTHON_CLIENT_MEM_FRACTION", "JAX_LOCAL_DEVICE_IDS",
                                                     "JAX_COORDINATOR_PORT")}
  env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
  env["FAKE_LOG"] = str(tmp_path / "fake.log")
  return env


def _run(script, args, env, cwd=ROOT):
  return subprocess.run(["bash", script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
                        check=False)


def _launch(name, args, env, cwd=ROOT):
  return _run(os.path.join(LAUNCH, name), args, env, cwd)


def _commands(stdout):
  """The printed commands (lines starting "+ "), each split into its words."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def _fake_calls(env, prog=None):
  if not os.path.exists(env["FAKE_LOG"]):
    return []
  with open(env["FAKE_LOG"], encoding="utf-8") as f:
    calls = [json.loads(line) for line in f]
  return [c for c in calls if prog is None or c["prog"] == prog]


def _flag_value(words, flag):
  """The word after `flag` (all occurrences' values, in order)."""
  return [words[i + 1] for i, word in enumerate(words[:-1]) if word == flag]


@pytest.fixture(name="model")
def _model(tmp_path):
  path = tmp_path / "ckpt"
  path.mkdir()
  (path / "config.json").write_text("{}")
  return str(path)


@pytest.fixture(name="key")
def _key(tmp_path):
  path = tmp_path / "sglang.key"
  path.write_text("s3cret-key\n")
  return str(path)


def _urls_file(tmp_path, text, name="urls.txt"):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


# ---------------------------------------------------------------- slurm_train.sh


def test_slurm_dry_run_exports_env_and_runs_one_trainer_per_node(env, tmp_path):
  result = _launch("slurm_train.sh", ["--dry-run", "--config", CONFIG, "--workdir", "runs/r2"], env)
  assert result.returncode == 0, result.stderr
  assert _commands(result.stdout) == [
      ["export", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.90"],
      ["export", "JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7"],  # all 8 GPUs, not JAX's [SLURM_LOCALID]
      ["srun", "--nodes=8", "--ntasks=8", "--ntasks-per-node=1", "--export=ALL", "--kill-on-bad-exit=1",
       f"--chdir={ROOT}", PYTHON, "-m", "rstar_jax.main", "--config", CONFIG, "--workdir", "runs/r2",
       "--config.distributed.mode=auto"],
  ]
  assert not _fake_calls(env)  # nothing ran


def test_slurm_dry_run_passes_rollout_sandbox_and_extra_flags(env, tmp_path, key):
  urls = _urls_file(tmp_path, "# written by sglang_mi300x.sh\nhttp://gpu-a:30000\n\n  http://gpu-b:30001  \r\n"
                    "http://gpu-b:30002")  # comment, blank line, spaces, CRLF, no final newline
  result = _launch("slurm_train.sh", [
      "--dry-run", "--config", CONFIG, "--workdir", "runs/r2", "--rollout-urls-file", urls,
      "--rollout-api-key-file", key, "--sandbox-url", "http://cpu0:8080", "--sandbox-api-key-file", key,
      "--", "--config.rl.temperature=1.2", "--config.distributed.mode=explicit"], env)
  assert result.returncode == 0, result.stderr
  srun = _commands(result.stdout)[-1]
  trainer = srun[srun.index(PYTHON) + 1:]
  assert trainer[6:] == [
      "--config.distributed.mode=auto",
      "--config.rollout.backend=sglang",
      '--config.rollout.urls=("http://gpu-a:30000","http://gpu-b:30001","http://gpu-b:30002")',
      f"--config.rollout.api_key_file={key}",
      "--config.sandbox.url=http://cpu0:8080",
      f"--config.sandbox.api_key_file={key}",
      "--config.rl.temperature=1.2",
      "--config.distributed.mode=explicit",  # after auto, so it wins (absl keeps the last value)
  ]


def test_slurm_one_url_is_a_one_element_tuple(env, tmp_path):
  urls = _urls_file(tmp_path, "https://gpu-a:30000/\n")
  result = _launch("slurm_train.sh", ["--dry-run", "--config", CONFIG, "--workdir", "w",
                                      "--rollout-urls-file", urls], env)
  assert result.returncode == 0, result.stderr
  assert '--config.rollout.urls=("https://gpu-a:30000/",)' in _commands(result.stdout)[-1]


def test_slurm_inside_allocation_runs_the_printed_command_with_its_env(env):
  env.update(SLURM_JOB_ID="4242", SLURM_JOB_NUM_NODES="2", SLURM_GPUS_ON_NODE="4", SLURM_CPUS_ON_NODE="96")
  args = ["--config", CONFIG, "--workdir", "runs/r2", "--coordinator-port", "50123"]
  dry = _launch("slurm_train.sh", ["--dry-run", *args], env)
  assert dry.returncode == 0, dry.stderr
  printed = _commands(dry.stdout)
  assert printed[:3] == [["export", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.90"], ["export", "JAX_LOCAL_DEVICE_IDS=0,1,2,3"],
                         ["export", "JAX_COORDINATOR_PORT=50123"]]
  assert printed[3][:7] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--export=ALL",
                            "--kill-on-bad-exit=1", f"--chdir={ROOT}"]
  assert "--cpus-per-task=96" in printed[3]
  real = _launch("slurm_train.sh", args, env)
  assert real.returncode == 0, real.stderr
  [call] = _fake_calls(env, "srun")
  assert ["srun", *call["argv"]] == printed[3]
  assert call["env"] == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.90", "JAX_LOCAL_DEVICE_IDS": "0,1,2,3",
                         "JAX_COORDINATOR_PORT": "50123"}


def test_slurm_keeps_the_callers_jax_env(env):
  env.update(XLA_PYTHON_CLIENT_MEM_FRACTION="0.5", JAX_LOCAL_DEVICE_IDS="0,1")
  result = _launch("slurm_train.sh", ["--dry-run", "--config", CONFIG, "--workdir", "w", "--gpus-per-node", "4"], env)
  assert _commands(result.stdout)[:2] == [["export", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.5"],
                                          ["export", "JAX_LOCAL_DEVICE_IDS=0,1"]]


def test_slurm_spool_copy_finds_the_repo_from_the_submit_dir(env, tmp_path):
  # sbatch runs a copy of the script from its spool directory.
  spool = tmp_path / "spool"
  spool.mkdir()
  shutil.copy(os.path.join(LAUNCH, "slurm_train.sh"), spool / "slurm_script")
  args = ["--dry-run", "--config", CONFIG, "--workdir", "w"]
  lost = _run(str(spool / "slurm_script"), args, env, cwd=str(tmp_path))
  assert lost.returncode == 2 and "cannot find the repository" in lost.stderr
  env.update(SLURM_JOB_ID="7", SLURM_SUBMIT_DIR=ROOT)
  found = _run(str(spool / "slurm_script"), args, env, cwd=str(tmp_path))
  assert found.returncode == 0, found.stderr
  assert f"--chdir={ROOT}" in _commands(found.stdout)[-1]


def test_slurm_header_asks_for_8_nodes_of_8_gpus_one_task_each():
  with open(os.path.join(LAUNCH, "slurm_train.sh"), encoding="utf-8") as f:
    lines = f.read().splitlines()
  first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
  directives = [line for line in lines[:first_command] if line.startswith("#SBATCH")]
  # sbatch reads directives only up to the first command, so all must come before it.
  assert directives == [line for line in lines if line.startswith("#SBATCH")]
  for directive in ("#SBATCH --nodes=8", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8"):
    assert directive in directives


@pytest.mark.parametrize("args, message", [
    (["--nodes", "2"], "unknown option '--nodes'"),
    (["--workdir", "w"], "--config FILE[:ARG] is required"),
    (["--config", CONFIG], "--workdir DIR is required"),
    (["--config", "experiments/nope.py:x", "--workdir", "w"], "--config experiments/nope.py:x: no such file"),
    (["--config", CONFIG, "--workdir"], "--workdir needs a value"),
    (["--config", CONFIG, "--workdir", "w", "--sandbox-url", "cpu0:8080"], "--sandbox-url must be an http"),
    (["--config", CONFIG, "--workdir", "w", "--sandbox-api-key-file", "no/such.key"],
     "--sandbox-api-key-file no/such.key: no such file"),
    (["--config", CONFIG, "--workdir", "w", "--gpus-per-node", "0"], "--gpus-per-node must be a positive integer"),
    (["--config", CONFIG, "--workdir", "w", "--venv", "no/venv"], "--venv no/venv has no bin/python"),
])
def test_slurm_bad_input_names_the_option(env, args, message):
  result = _launch("slurm_train.sh", ["--dry-run", *args], env)
  assert result.returncode == 2
  assert message in result.stderr
  assert not result.stdout


@pytest.mark.parametrize("text, message", [
    ("http://gpu-a:30000\ngpu-b:30001\n", "line 2: must be an http:// or https:// URL, got 'gpu-b:30001'"),
    ("# only a comment\n\n", "holds no URLs"),
    ('http://gpu-a:30000",\n', "line 1: must be an http"),  # would break the tuple literal
])
def test_slurm_bad_urls_file_names_the_line(env, tmp_path, text, message):
  urls = _urls_file(tmp_path, text)
  result = _launch("slurm_train.sh", ["--dry-run", "--config", CONFIG, "--workdir", "w",
                                      "--rollout-urls-file", urls], env)
  assert result.returncode == 2
  assert message in result.stderr


def test_slurm_outside_an_allocation_refuses_to_run(env):
  result = _launch("slurm_train.sh", ["--config", CONFIG, "--workdir", "w"], env)
  assert result.returncode == 2
  assert "not inside a SLURM allocation" in result.stderr
  assert not _fake_calls(env)


def test_slurm_help_prints_the_usage_block(env):
  result = _launch("slurm_train.sh", ["--help"], env)
  assert result.returncode == 0
  assert "sbatch launch/slurm_train.sh --config experiments/rstar2_qwen3_14b.py:policy=SHARED/ckpt/sft,data=SHARED/data" in result.stdout
  assert "--rollout-urls-file FILE" in result.stdout
  assert "#SBATCH" not in result.stdout and "set -euo" not in result.stdout


# ---------------------------------------------------------------- tpu_vm.sh

_TPU = ["--name", "v5p-64-a", "--zone", "us-east5-a", "--project", "proj-1"]


def _remote(command):
  """A gcloud --command's words, as the workers' shell splits them."""
  return shlex.split(command)


def test_tpu_dry_run_runs_the_trainer_on_all_workers(env, tmp_path):
  urls = _urls_file(tmp_path, "http://gpu-a:30000\nhttp://gpu-a:30001\n")
  result = _launch("tpu_vm.sh", ["--dry-run", *_TPU, "--config", CONFIG, "--workdir", "/mnt/gcs/runs/r2",
                                 "--rollout-urls-file", urls, "--sandbox-url", "http://10.0.0.5:8080",
                                 "--", "--config.rl.temperature=1.2"], env)
  assert result.returncode == 0, result.stderr
  assert not result.stderr  # an absolute workdir: no warning
  [gcloud] = _commands(result.stdout)
  assert gcloud[:-1] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "v5p-64-a", "--zone", "us-east5-a",
                         "--project", "proj-1", "--worker=all", "--command"]
  assert _remote(gcloud[-1]) == [
      "cd", "rstar_jax", "&&", ".venv/bin/python", "-m", "rstar_jax.main", "--config", CONFIG,
      "--workdir", "/mnt/gcs/runs/r2", "--config.distributed.mode=auto", "--config.rollout.backend=sglang",
      '--config.rollout.urls=("http://gpu-a:30000","http://gpu-a:30001")',
      "--config.sandbox.url=http://10.0.0.5:8080", "--config.rl.temperature=1.2"]
  assert not _fake_calls(env)


def test_tpu_setup_clones_and_installs_first(env):
  result = _launch("tpu_vm.sh", ["--dry-run", *_TPU, "--setup", "--git-url", "https://github.com/org/rstar_jax.git",
                                 "--repo-dir", "~/src/rstar", "--config", CONFIG, "--workdir", "/mnt/gcs/r"], env)
  assert result.returncode == 0, result.stderr
  setup, train = _commands(result.stdout)
  assert setup[:-1] == train[:-1]
  assert setup[-1].startswith("if [ ! -d ~/src/rstar ]; then git clone https://github.com/org/rstar_jax.git"
                              " ~/src/rstar; fi && cd ~/src/rstar && ")  # ~ left for the remote shell
  assert setup[-1].endswith("&& python3 -m venv .venv && .venv/bin/pip install -e . 'jax[tpu]'")
  assert _remote(train[-1])[:2] == ["cd", "~/src/rstar"]


def test_tpu_setup_alone_only_installs(env):
  result = _launch("tpu_vm.sh", ["--dry-run", "--name", "t1", "--zone", "z", "--setup"], env)
  assert result.returncode == 0, result.stderr
  [setup] = _commands(result.stdout)
  assert "--project" not in setup  # gcloud's configured project
  assert setup[-1] == "cd rstar_jax && python3 -m venv .venv && .venv/bin/pip install -e . 'jax[tpu]'"


def test_tpu_real_run_gives_gcloud_the_printed_command(env):
  args = [*_TPU, "--config", CONFIG, "--workdir", "/mnt/gcs/r", "--sandbox-url", "http://s:8080"]
  printed = _commands(_launch("tpu_vm.sh", ["--dry-run", *args], env).stdout)
  result = _launch("tpu_vm.sh", args, env)
  assert result.returncode == 0, result.stderr
  assert [["gcloud", *c["argv"]] for c in _fake_calls(env, "gcloud")] == printed


def test_tpu_relative_workdir_warns(env):
  result = _launch("tpu_vm.sh", ["--dry-run", *_TPU, "--config", CONFIG, "--workdir", "runs/r2"], env)
  assert result.returncode == 0
  assert "warning: --workdir runs/r2 is relative" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--zone", "z", "--config", CONFIG, "--workdir", "/w"], "--name NAME is required"),
    (["--name", "t", "--config", CONFIG, "--workdir", "/w"], "--zone ZONE is required"),
    (["--name", "t", "--zone", "z", "--config", CONFIG], "--workdir DIR is required"),
    (["--name", "t", "--zone", "z", "--workdir", "/w"], "--config FILE[:ARG] is required"),
    (["--name", "t", "--zone", "z", "--git-url", "https://x/y.git"], "--git-url is only used with --setup"),
    (["--name", "t", "--zone", "z", "--worker", "all"], "unknown option '--worker'"),
])
def test_tpu_bad_input_names_the_option(env, args, message):
  result = _launch("tpu_vm.sh", ["--dry-run", *args], env)
  assert result.returncode == 2
  assert message in result.stderr


# ---------------------------------------------------------------- sglang_mi300x.sh


def _docker_runs(commands):
  return [c for c in commands if c[:2] == ["docker", "run"]]


def test_sglang_dry_run_starts_one_server_per_gpu(env, model, key):
  result = _launch("sglang_mi300x.sh", ["--dry-run", "--model", model, "--api-key-file", key,
                                        "--url-host", "mi300x-1"], env)
  assert result.returncode == 0, result.stderr
  commands = _commands(result.stdout)
  runs = _docker_runs(commands)
  assert len(runs) == 8
  for i, words in enumerate(runs):
    port = 30000 + i
    assert words[:5] == ["docker", "run", "-d", "--name", f"rstar-sglang-{port}"]
    for flag in ("--network=host", "--ipc=host", "--device=/dev/kfd", "--device=/dev/dri", "--cap-add=SYS_PTRACE"):
      assert flag in words
    assert _flag_value(words, "--group-add") == ["video"]
    assert _flag_value(words, "--security-opt") == ["seccomp=unconfined"]
    assert _flag_value(words, "--shm-size") == ["16G"]
    assert _flag_value(words, "-e") == ["SGLANG_USE_AITER=1", f"HIP_VISIBLE_DEVICES={i}"]
    assert _flag_value(words, "-v") == [f"{model}:{model}:ro", f"{key}:/run/secrets/sglang_api_key:ro"]
    image_at = words.index(IMAGE)
    # The key file is read inside the container; its contents appear nowhere.
    assert words[image_at + 1:image_at + 5] == [
        "sh", "-c", 'exec python3 -m sglang.launch_server "$@" --api-key "$(cat /run/secrets/sglang_api_key)"',
        "sglang"]
    assert words[image_at + 5:] == ["--model-path", model, "--host", "0.0.0.0", "--tp-size", "1",
                                    "--skip-tokenizer-init", "--enable-metrics", "--port", str(port)]
  assert [c for c in commands if c[0] == "curl"] == [
      ["curl", "-fsS", "-o", "/dev/null", "--max-time", "30", f"http://mi300x-1:{30000 + i}/health"] for i in range(8)]
  assert "# rstar-sglang-30003: GPUs 3, http://mi300x-1:30003" in result.stdout
  lines = result.stdout.splitlines()
  assert lines[-9:-1] == [f"http://mi300x-1:{30000 + i}" for i in range(8)]
  assert lines[-1] == ("--config.rollout.backend=sglang --config.rollout.urls='(" +
                       ",".join(f'"http://mi300x-1:{30000 + i}"' for i in range(8)) + f")' "
                       f"--config.rollout.api_key_file={key}")
  assert "s3cret-key" not in result.stdout + result.stderr
  assert not _fake_calls(env)  # neither docker nor curl ran


def test_sglang_tp_groups(env, model):
  result = _launch("sglang_mi300x.sh", ["--dry-run", "--model", model, "--tp", "2", "--host", "127.0.0.1"], env)
  assert result.returncode == 0, result.stderr
  runs = _docker_runs(_commands(result.stdout))
  assert [_flag_value(w, "-e")[-1] for w in runs] == [f"HIP_VISIBLE_DEVICES={g}" for g in ("0,1", "2,3", "4,5", "6,7")]
  assert [w[-2:] for w in runs] == [["--port", str(30000 + i)] for i in range(4)]
  assert all(_flag_value(w, "--tp-size") == ["2"] for w in runs)
  assert all(w[w.index(IMAGE) + 1:w.index(IMAGE) + 4] == ["python3", "-m", "sglang.launch_server"]
             for w in runs)  # no key: launched directly
  # A loopback bind: the URLs name it, and no key is needed.
  assert result.stdout.splitlines()[-1] == ("--config.rollout.backend=sglang --config.rollout.urls='(" +
                                            ",".join(f'"http://127.0.0.1:{30000 + i}"' for i in range(4)) + ")'")


def test_sglang_options_reach_docker_and_the_server(env, model, tmp_path):
  sync = tmp_path / "weight_sync"
  sync.mkdir()
  result = _launch("sglang_mi300x.sh", [
      "--dry-run", "--model", model, "--gpus", "4", "--tp", "2", "--base-port", "31000", "--trusted-network",
      "--url-host", "mi300x-2", "--image", "rocm/sgl-dev:v0.5.9-rocm630-mi30x-20260101", "--mem-fraction", "0.8",
      "--context-length", "40960", "--mount", str(sync), "--", "--max-running-requests", "256"], env)
  assert result.returncode == 0, result.stderr
  runs = _docker_runs(_commands(result.stdout))
  assert [_flag_value(w, "--name") for w in runs] == [["rstar-sglang-31000"], ["rstar-sglang-31001"]]
  for words in runs:
    assert _flag_value(words, "-v") == [f"{model}:{model}:ro", f"{sync}:{sync}:ro"]
    at = words.index("rocm/sgl-dev:v0.5.9-rocm630-mi30x-20260101")
    assert words[at + 1:at + 3] == ["python3", "-m"]
    assert _flag_value(words, "--mem-fraction-static") == ["0.8"]
    assert _flag_value(words, "--context-length") == ["40960"]
    assert words[-2:] == ["--max-running-requests", "256"]  # pass-through flags last
  assert result.stdout.splitlines()[-3:-1] == ["http://mi300x-2:31000", "http://mi300x-2:31001"]


def test_sglang_real_run_waits_for_health_then_writes_the_urls(env, model, key, tmp_path):
  urls_file = tmp_path / "shared" / "run" / "sglang_urls.txt"
  args = ["--model", model, "--api-key-file", key, "--url-host", "mi300x-1", "--tp", "4",
          "--urls-file", str(urls_file), "--wait-s", "5", "--poll-s", "0.1"]
  printed = _commands(_launch("sglang_mi300x.sh", ["--dry-run", *args], env).stdout)
  assert not urls_file.exists()  # the dry run wrote nothing
  result = _launch("sglang_mi300x.sh", args, env)
  assert result.returncode == 0, result.stderr
  assert [["docker", *c["argv"]] for c in _fake_calls(env, "docker")] == _docker_runs(printed)
  assert [["curl", *c["argv"]] for c in _fake_calls(env, "curl")] == [c for c in printed if c[0] == "curl"]
  assert urls_file.read_text() == "http://mi300x-1:30000\nhttp://mi300x-1:30001\n"
  assert result.stdout.splitlines() == [
      "http://mi300x-1:30000", "http://mi300x-1:30001",
      f"--config.rollout.backend=sglang --config.rollout.urls='(\"http://mi300x-1:30000\",\"http://mi300x-1:30001\")' "
      f"--config.rollout.api_key_file={key}"]


def test_sglang_server_that_never_answers_is_named(env, model, key, tmp_path):
  env["FAKE_CURL_DOWN"] = ":30005/"
  urls_file = tmp_path / "urls.txt"
  result = _launch("sglang_mi300x.sh", ["--model", model, "--api-key-file", key, "--url-host", "mi300x-1",
                                        "--urls-file", str(urls_file), "--wait-s", "1", "--poll-s", "0.2"], env)
  assert result.returncode == 1
  assert ("server rstar-sglang-30005 (http://mi300x-1:30005, GPUs 5) did not answer GET /health with 200 "
          "within 1 s") in result.stderr
  assert not urls_file.exists() and not result.stdout
  polled = {c["argv"][-1] for c in _fake_calls(env, "curl")}
  assert "http://mi300x-1:30006/health" not in polled  # stopped at the first server that failed


def test_sglang_server_whose_container_exits_is_named_with_its_log(env, model, key):
  env.update(FAKE_CURL_DOWN=":30002/", FAKE_RUNNING="false")
  result = _launch("sglang_mi300x.sh", ["--model", model, "--api-key-file", key, "--url-host", "mi300x-1",
                                        "--wait-s", "600", "--poll-s", "0.2"], env)
  assert result.returncode == 1
  assert "server rstar-sglang-30002 (http://mi300x-1:30002, GPUs 2) stopped before answering GET /health" \
      in result.stderr
  assert "fake log: HIP out of memory" in result.stderr
  assert ["logs", "--tail", "30", "rstar-sglang-30002"] in [c["argv"] for c in _fake_calls(env, "docker")]


def test_sglang_stop_removes_the_layouts_containers(env):
  result = _launch("sglang_mi300x.sh", ["--dry-run", "--stop", "--tp", "4", "--base-port", "32000"], env)
  assert result.returncode == 0, result.stderr
  assert _commands(result.stdout) == [["docker", "rm", "-f", "rstar-sglang-32000", "rstar-sglang-32001"]]


@pytest.mark.parametrize("args, message", [
    ([], "--model DIR is required"),
    (["--model", "MODEL", "--tp", "3"], "--tp 3 does not divide --gpus 8"),
    (["--model", "MODEL"], "--host 0.0.0.0 is beyond loopback: give --api-key-file FILE"),
    (["--model", "MODEL", "--host", "10.1.2.3"], "--host 10.1.2.3 is beyond loopback"),
    (["--model", "MODEL", "--trusted-network", "--mem-fraction", "1.5"], "--mem-fraction must be in (0, 1)"),
    (["--model", "MODEL", "--trusted-network", "--mount", "no/such/dir"], "--mount no/such/dir: no such directory"),
    (["--model", "MODEL", "--api-key-file", "no/such.key"], "--api-key-file no/such.key: no such file"),
    (["--model", "MODEL", "--trusted-network", "--base-port", "65530"], "passes port 65535"),
    (["--model", "MODEL", "--gpus", "eight"], "--gpus must be a positive integer, got 'eight'"),
    (["--model", "MODEL", "--port", "30000"], "unknown option '--port'"),
])
def test_sglang_bad_input_names_the_option(env, model, args, message):
  result = _launch("sglang_mi300x.sh", ["--dry-run", *[model if a == "MODEL" else a for a in args]], env)
  assert result.returncode == 2
  assert message in result.stderr
  assert not _commands(result.stdout)


def test_sglang_model_needs_a_config_json(env, tmp_path):
  result = _launch("sglang_mi300x.sh", ["--dry-run", "--model", str(tmp_path), "--trusted-network"], env)
  assert result.returncode == 2
  assert f"--model {tmp_path} holds no config.json" in result.stderr


@pytest.mark.parametrize("script", ["slurm_train.sh", "tpu_vm.sh", "sglang_mi300x.sh"])
def test_every_script_parses_and_prints_its_usage(env, script):
  assert subprocess.run(["bash", "-n", os.path.join(LAUNCH, script)], check=False).returncode == 0
  result = _launch(script, ["--help"], env)
  assert result.returncode == 0
  assert f"launch/{script}" in result.stdout and "--dry-run" in result.stdout


def test_sglang_help_names_the_default_image(env):
  result = _launch("sglang_mi300x.sh", ["--help"], env)
  assert f"--image IMAGE        docker image (default {IMAGE}" in result.stdout
