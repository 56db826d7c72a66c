"""Rootless mode: `rstar-sandbox serve` started by an ordinary user (uid 65534 here), each claim of
`rstar_jax.sandbox.isolation` about what changes without root tested against the real service.

The test itself runs as root only to create that user's process: in a private mount namespace it
makes the interpreter reachable for uid 65534 (it may live under /root), puts the user's home and a
file the user owns on a tmpfs over /mnt, and drops to the uid before Python starts. Nothing of the
host is changed. Skipped where the tests do not run as root or user namespaces are off.
"""
import concurrent.futures
import json
import os
import sys
import urllib.request

import pytest

import rstar_jax
from rstar_jax.sandbox import attacks
from rstar_jax.sandbox import isolation
from rstar_jax.sandbox import processes

USER = 65534
HOME = "/mnt/home"
OWNED_FILE = "/mnt/owned.txt"  # outside the home directory, writable by the user on the host


def _user_namespaces_enabled() -> bool:
  try:
    with open("/proc/sys/user/max_user_namespaces") as f:
      return int(f.read()) > 0
  except OSError:
    return False


pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not _user_namespaces_enabled(),
                                reason="needs root to start an ordinary user's process, and user namespaces")


def _as_user() -> None:
  """preexec: a private mount namespace with the interpreter and project reachable, the user's
  files on a tmpfs over /mnt, then uid 65534 (no groups)."""
  isolation._call("unshare", isolation._CLONE_NEWNS)  # pylint: disable=protected-access
  isolation._mount("none", "/", None, isolation._MS_REC | isolation._MS_PRIVATE, None)  # pylint: disable=protected-access
  project = os.path.dirname(os.path.dirname(rstar_jax.__file__))
  isolation.expose_paths([*isolation.interpreter_dirs(), project])
  isolation._mount("tmpfs", "/mnt", "tmpfs", 0, "mode=0755,size=1m")  # pylint: disable=protected-access
  os.makedirs(HOME, mode=0o700)
  with open(f"{HOME}/secret", "w") as f:
    f.write("the user's secret\n")
  with open(OWNED_FILE, "w") as f:
    f.write("original\n")
  for path in (HOME, f"{HOME}/secret", OWNED_FILE):
    os.chown(path, USER, USER)
  os.setgroups([])
  os.setresgid(USER, USER, USER)
  os.setresuid(USER, USER, USER)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
  port = processes.free_port()
  log = tmp_path_factory.mktemp("rootless") / "serve.log"
  process = processes.Process(
      [sys.executable, "-m", "rstar_jax.sandbox.cli", "serve", "--port", str(port), "--workers", "1",
       "--jobs-per-worker", "4", "--timeout-s", "2"], "rootless rstar-sandbox serve", str(log),
      cwd="/", env={"HOME": HOME, "PATH": "/usr/bin:/bin"}, preexec_fn=_as_user)
  url = f"http://127.0.0.1:{port}"
  try:
    processes.wait_until(lambda: (processes.health(url) or {}).get("workers_alive") == 1, process, 120)
  except (RuntimeError, TimeoutError) as e:
    raise RuntimeError(f"{e}:\n{log.read_text()}") from e
  yield url, process.popen
  process.stop()


def _run(service, code: str) -> dict:
  request = urllib.request.Request(service[0] + "/run", data=json.dumps(
      {"type": "python", "solution": code}).encode(), headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(request, timeout=60) as response:
    return json.loads(response.read())


def test_the_service_runs_as_the_ordinary_user(service):
  with open(f"/proc/{service[1].pid}/status") as f:
    uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
  assert set(uids) == {str(USER)}
  result = _run(service, "import sympy\nx = sympy.Symbol('x')\nprint(sympy.integrate(x * sympy.sin(x), (x, 0, 1)))")
  assert (result["status"], result["stdout"]) == ("ok", "-cos(1) + sin(1)\n"), result


def test_the_home_directory_is_hidden(service):
  result = _run(service, f"print(open({HOME + '/secret'!r}).read())")
  assert result["status"] == "runtime_error" and "FileNotFoundError" in result["stderr"], result


def test_files_the_user_owns_are_read_only(service):
  result = _run(service, f"print(open({OWNED_FILE!r}).read(), end='')\nopen({OWNED_FILE!r}, 'w').write('changed')")
  assert result["status"] == "runtime_error" and "Read-only file system" in result["stderr"], result
  assert result["stdout"] == "original\n"


def test_tmp_is_private_and_writable(service):
  code = "import os\nopen('/tmp/x', 'w').write('1')\nopen('/var/tmp/y', 'w').write('2')\nprint(sorted(os.listdir('/tmp')))"
  first, second = _run(service, code), _run(service, "import os\nprint(sorted(os.listdir('/tmp')))")
  # /var/tmp is the same tmpfs; the interpreter's directories that live under /tmp are bound back
  bound_back = [p.split("/")[2] for p in isolation.dirs_under(isolation.interpreter_dirs(), ("/tmp",))]
  assert (first["status"], first["stdout"]) == ("ok", f"{sorted(['source.py', 'x', 'y', *bound_back])}\n"), first
  assert second["stdout"] == f"{sorted(['source.py', *bound_back])}\n"


def test_no_capabilities_and_the_mounts_cannot_be_made_writable(service):
  code = ("import ctypes, os\n"
          "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
          "libc = ctypes.CDLL(None, use_errno=True)\n"
          "print(libc.mount(b'none', b'/', None, 0x20 | 0x1000, None), ctypes.get_errno())\n")  # remount, bind: rw
  result = _run(service, code)
  assert (result["status"], result["stdout"]) == ("ok", "0000000000000000\n-1 1\n"), result  # EPERM


def test_no_network(service):
  result = _run(service, "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)")
  assert result["status"] == "runtime_error" and "Network is unreachable" in result["stderr"], result


def test_a_fork_bomb_leaves_other_runs_able_to_fork(service):
  """Runs share one uid, yet RLIMIT_NPROC counts per run (each has its own user namespace); one
  zygote runs both, so without that the bomb's 32 processes would leave the other none."""
  fork = "import multiprocessing\nwith multiprocessing.Pool(3) as pool:\n  print(pool.map(abs, [-1, -2, -3]))"
  with concurrent.futures.ThreadPoolExecutor(2) as executor:
    bomb = executor.submit(_run, service, attacks.BY_NAME["fork bomb"].code)
    forked = executor.submit(_run, service, "import time\ntime.sleep(0.5)\n" + fork)
    assert bomb.result()["status"] == "timeout"
    assert (forked.result()["status"], forked.result()["stdout"]) == ("ok", "[1, 2, 3]\n"), forked.result()


def test_runs_cannot_see_each_other(service):
  with concurrent.futures.ThreadPoolExecutor(2) as executor:
    sleeper = executor.submit(_run, service, "import time\ntime.sleep(1)")
    looker = executor.submit(_run, service, "import time, os\ntime.sleep(0.3)\nprint(sorted(p for p in os.listdir('/proc') if p.isdigit()))")
    assert looker.result()["stdout"] == "['1']\n", looker.result()
    assert sleeper.result()["status"] == "ok"


def test_the_memory_budget_holds(service):
  result = _run(service, attacks.BY_NAME["forking allocator"].code)
  assert result["status"] == "memory_limit", result
