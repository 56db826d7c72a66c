"""The code environment: a sandboxed executor, its Code-Judge-compatible service and client.

Modules: `result` (ExecutionResult and its statuses), `wrapper` (the §3.1 notebook-cell
wrapper), `tool_text` (the §3.3 tool-output text), `codejudge` (Code Judge's wire format),
`config` (limits and pool shape), `isolation` / `program` / `runs` / `zygote` (what runs in a
zygote and its children), `frames` (the pool-zygote messages), `pool` (the executor: its
module docstring lists what is and is not covered), `server` / `metrics` (the HTTP service),
`client` (the async client), `redis_queue` (multi-host mode), `cli` (`rstar-sandbox
serve|worker`), `processes` and `workloads` (local processes, known-answer workloads and a
load generator for tests and benchmarks).

The service-side names (`Pool`, `SandboxClient`, ...) are imported on first use, so that a
zygote, which imports `rstar_jax.sandbox.zygote`, forks from an image without aiohttp or
redis in it.
"""
import importlib

from rstar_jax.sandbox.codejudge import RequestError
from rstar_jax.sandbox.codejudge import Submission
from rstar_jax.sandbox.config import Limits
from rstar_jax.sandbox.config import PoolConfig
from rstar_jax.sandbox.result import ExecutionResult
from rstar_jax.sandbox.result import STATUSES
from rstar_jax.sandbox.tool_text import OUTPUT_FORMATS
from rstar_jax.sandbox.tool_text import format_code_judge_result
from rstar_jax.sandbox.tool_text import tool_output_text
from rstar_jax.sandbox.wrapper import TRACEBACKS
from rstar_jax.sandbox.wrapper import wrap_code

_LAZY = {
    "Pool": "pool",
    "RedisFront": "redis_queue",
    "RedisWorker": "redis_queue",
    "SandboxClient": "client",
    "SandboxUnavailableError": "client",
    "Service": "server",
}

__all__ = [
    "ExecutionResult",
    "Limits",
    "OUTPUT_FORMATS",
    "Pool",
    "PoolConfig",
    "RedisFront",
    "RedisWorker",
    "RequestError",
    "STATUSES",
    "SandboxClient",
    "SandboxUnavailableError",
    "Service",
    "Submission",
    "TRACEBACKS",
    "format_code_judge_result",
    "tool_output_text",
    "wrap_code",
]


def __getattr__(name: str):
  if name not in _LAZY:
    raise AttributeError(f"module 'rstar_jax.sandbox' has no attribute {name!r}")
  value = getattr(importlib.import_module(f"rstar_jax.sandbox.{_LAZY[name]}"), name)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(_LAZY))
