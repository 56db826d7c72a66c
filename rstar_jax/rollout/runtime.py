"""One asyncio loop, with the sandbox tools entered on it, for a phase of synchronous code.

  with RolloutRuntime(lambda: sandbox.Pool(sandbox.PoolConfig(workers=2))) as runtime:
    batch = runtime.run(rollout_problems(engine, runtime.tools, ...))   # as often as needed
    ...                                                                 # jitted updates between

The trainer is synchronous (jitted updates between rollout phases) while rollouts are asyncio
code; a loop that lives as long as the tools lets every phase reuse the same warm sandbox
workers instead of starting them per call.
"""
import asyncio
import contextlib
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


class RolloutRuntime:
  """Owns an event loop and the async context manager `tools_factory()` entered on it."""

  def __init__(self, tools_factory: Callable[[], contextlib.AbstractAsyncContextManager]):
    self._factory = tools_factory
    self._loop: asyncio.AbstractEventLoop | None = None
    self._context = None
    self.tools = None

  def __enter__(self) -> "RolloutRuntime":
    self._loop = asyncio.new_event_loop()
    self._context = self._factory()
    try:
      self.tools = self._loop.run_until_complete(self._context.__aenter__())
    except BaseException:
      self._loop.close()
      raise
    return self

  def run(self, awaitable: Awaitable[T]) -> T:
    """Runs a coroutine on the runtime's loop to its end."""
    if self._loop is None:
      raise RuntimeError("RolloutRuntime.run needs `with RolloutRuntime(...) as runtime:` first")
    return self._loop.run_until_complete(awaitable)

  def __exit__(self, *exc_info) -> None:
    try:
      self._loop.run_until_complete(self._context.__aexit__(*exc_info))
    finally:
      self._loop.close()
      self._loop, self.tools = None, None
