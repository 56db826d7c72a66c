"""`rstar-serve` processes on this machine's loopback ports, started and stopped together.

  with LocalServers(checkpoint, count=2, args=["--num-slots", "8"]) as servers:
    router = Router.from_urls(servers.urls)

Used by the RL job's `rollout.local_servers`, the tests and the benchmarks. Each server runs as
`python -m rstar_jax.serve` with its own JAX runtime; `__exit__` stops every one it started, also
when starting a later one or the work inside fails.
"""
import os
import sys
import urllib.error
import urllib.request
from typing import Sequence

from rstar_jax.sandbox import processes


def _healthy(url: str) -> bool:
  try:
    with urllib.request.urlopen(url + "/health", timeout=2) as response:
      return response.status == 200
  except (urllib.error.URLError, OSError):
    return False


def start_server(checkpoint: str, args: Sequence[str] = (), port: int | None = None,
                 log_path: str | None = None, env: dict[str, str] | None = None,
                 timeout_s: float = 300.0) -> tuple[processes.Process, str]:
  """Starts `rstar-serve --checkpoint CHECKPOINT ARGS` on 127.0.0.1; returns (process, base URL)
  once /health answers 200 (the warm-up generation has compiled)."""
  port = port or processes.free_port()
  process = processes.Process([sys.executable, "-m", "rstar_jax.serve", "--checkpoint", checkpoint,
                               "--host", "127.0.0.1", "--port", str(port), *args],
                              f"rstar-serve :{port}", log_path, env=env)
  url = f"http://127.0.0.1:{port}"
  processes.wait_until(lambda: _healthy(url), process, timeout_s)
  return process, url


class LocalServers:
  """`count` servers of one checkpoint (module docstring); `log_dir` keeps each one's output."""

  def __init__(self, checkpoint: str, count: int, args: Sequence[str] = (), log_dir: str | None = None,
               env: dict[str, str] | None = None, timeout_s: float = 300.0):
    if count < 1:
      raise ValueError(f"need at least one server, got count={count}")
    self._checkpoint, self._count, self._args = checkpoint, count, list(args)
    self._log_dir, self._env, self._timeout_s = log_dir, env, timeout_s
    self.processes: list[processes.Process] = []
    self.urls: list[str] = []

  def __enter__(self) -> "LocalServers":
    try:
      for i in range(self._count):
        log = None if self._log_dir is None else os.path.join(self._log_dir, f"rstar_serve_{i}.log")
        process, url = start_server(self._checkpoint, self._args, log_path=log, env=self._env,
                                    timeout_s=self._timeout_s)
        self.processes.append(process)
        self.urls.append(url)
    except BaseException:
      self.stop()
      raise
    return self

  def __exit__(self, *exc_info) -> None:
    self.stop()

  def stop(self) -> None:
    for process in self.processes:
      process.stop()
    self.processes, self.urls = [], []
