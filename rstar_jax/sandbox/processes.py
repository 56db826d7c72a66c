"""Local sandbox processes on loopback ports: a redis server, the service, its workers.

Used by the tests and the benchmark to run the real thing as a user would (`rstar-sandbox`
through `python -m rstar_jax.sandbox.cli`, `redis-server` from PATH), and to stop exactly the
processes they started.
"""
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


def is_loopback(host: str) -> bool:
  """Whether binding `host` listens on this machine's loopback only ("localhost", 127.0.0.0/8, ::1)."""
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def read_api_key(path: str) -> str | None:
  """The API key held by the file at `path` (surrounding whitespace dropped); None for no path.

  Raises:
    OSError: the file cannot be read.
    ValueError: the file is empty.
  """
  if not path:
    return None
  with open(path, encoding="utf-8") as f:
    key = f.read().strip()
  if not key:
    raise ValueError(f"the API key file {path} is empty")
  return key


def free_port() -> int:
  """A TCP port on 127.0.0.1 that was free a moment ago."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Process:
  """A started child process that `stop()` ends (SIGTERM, then SIGKILL).

  With `own_group`, the process leads a new process group and `stop()` signals the whole
  group, for programs whose children outlive them (Code Judge's worker manager). `preexec_fn`
  runs in the child before the program starts (as subprocess.Popen's).
  """

  def __init__(self, args: list[str], name: str, log_path: str | None = None,
               cwd: str | None = None, env: dict[str, str] | None = None,
               own_group: bool = False, preexec_fn=None):
    self.name = name
    self._own_group = own_group
    self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    self.popen = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log,
                                  stderr=self._log, cwd=cwd, env=env,
                                  start_new_session=own_group, preexec_fn=preexec_fn)

  @property
  def pid(self) -> int:
    return self.popen.pid

  def alive(self) -> bool:
    return self.popen.poll() is None

  def _signal(self, sig: int) -> None:
    if self._own_group:
      try:
        os.killpg(self.popen.pid, sig)
      except ProcessLookupError:
        pass
    elif self.alive():
      self.popen.send_signal(sig)

  def stop(self, timeout_s: float = 10.0) -> None:
    """Stops the process (and its group, with own_group) and waits for it."""
    self._signal(signal.SIGTERM)
    try:
      self.popen.wait(timeout_s)
    except subprocess.TimeoutExpired:
      self._signal(signal.SIGKILL)
      self.popen.wait()
    if self._own_group:  # what ignored SIGTERM in the group
      self._signal(signal.SIGKILL)
    if self._log is not subprocess.DEVNULL:
      self._log.close()


def wait_until(ready, process: Process, timeout_s: float) -> None:
  """Polls `ready()` until true; raises if `process` exits or `timeout_s` passes first."""
  deadline = time.monotonic() + timeout_s
  while not ready():
    if not process.alive():
      raise RuntimeError(f"{process.name} exited with status {process.popen.returncode}")
    if time.monotonic() > deadline:
      process.stop()
      raise TimeoutError(f"{process.name} was not ready after {timeout_s} s")
    time.sleep(0.05)


def start_redis(port: int | None = None, timeout_s: float = 10.0) -> tuple[Process, str]:
  """Starts `redis-server` on 127.0.0.1 without persistence; returns (process, URL)."""
  if shutil.which("redis-server") is None:
    raise FileNotFoundError("redis-server is not on PATH (apt-get install redis-server)")
  port = port or free_port()
  process = Process(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--maxclients", "10000"], f"redis-server :{port}")

  def ready() -> bool:
    try:
      with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
    except OSError:
      return False

  wait_until(ready, process, timeout_s)
  return process, f"redis://127.0.0.1:{port}/0"


def health(url: str) -> dict | None:
  """The service's /health body (200 or 503), or None when it does not answer."""
  try:
    with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=2) as response:
      return json.loads(response.read())
  except urllib.error.HTTPError as e:
    return json.loads(e.read()) if e.code == 503 else None
  except (urllib.error.URLError, OSError, ValueError):
    return None


def start_service(args: list[str], port: int | None = None, log_path: str | None = None,
                  min_workers: int = 1, timeout_s: float = 120.0) -> tuple[Process, str]:
  """Starts `rstar-sandbox serve ARGS` on 127.0.0.1; returns (process, base URL).

  Waits until /health reports at least `min_workers` workers alive (with `--redis`, workers
  started separately count).
  """
  port = port or free_port()
  process = Process([sys.executable, "-m", "rstar_jax.sandbox.cli", "serve", "--host",
                     "127.0.0.1", "--port", str(port), *args], f"rstar-sandbox serve :{port}",
                    log_path)
  url = f"http://127.0.0.1:{port}"

  def ready() -> bool:
    body = health(url)
    return body is not None and body["workers_alive"] >= min_workers

  wait_until(ready, process, timeout_s)
  return process, url


def start_worker(args: list[str], log_path: str | None = None) -> Process:
  """Starts `rstar-sandbox worker ARGS` (it registers itself in redis once its pool is up)."""
  return Process([sys.executable, "-m", "rstar_jax.sandbox.cli", "worker", *args],
                 "rstar-sandbox worker", log_path)


def wait_for_workers(url: str, count: int, process: Process, timeout_s: float = 120.0) -> None:
  """Waits until the service at `url` reports `count` workers alive."""
  def ready() -> bool:
    body = health(url)
    return body is not None and body["workers_alive"] >= count
  wait_until(ready, process, timeout_s)
