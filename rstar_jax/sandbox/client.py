"""Async client of a Code Judge API (this service or Code Judge itself): batching, backpressure,
retries, and exactly one result per call.

    async with SandboxClient("http://127.0.0.1:8080") as client:
      result = await client.run(sandbox.wrap_code(code), stdin)   # an ExecutionResult

Calls are gathered into `/run/long-batch` requests of up to `batch_size` submissions (a batch
leaves when full or `batch_wait_s` after its first call), with at most `max_batches_in_flight`
requests open, as rStar2's RequestProcessor does (PAPER.md §3.5, which keeps 8 open). A batch
is answered when its slowest call ends, so one snippet sleeping to the time limit holds its
whole batch: the default keeps 64 batches open, which measured 1.5x the throughput of 8 on
the mixed workload (benchmarks/sandbox_bench.py). At most `max_pending` calls
are accepted at once: later callers wait in `run` (backpressure), so a burst of any size is
fine. A batch that fails (connection error, timeout, 5xx or malformed answer) is sent again
after 0.5·2^k s, up to `max_attempts` sends; items answered `queue_timeout` (only Code Judge
does) are sent again the same way. Each call's future is resolved once: the first answer
wins, and a call still unanswered when its batch ends for any reason (the last attempt
failed, `close()` stopped it, an unexpected error) raises SandboxUnavailableError saying why.
`run` before `start` (or `async with`) and after `close` raises RuntimeError. `api_key` is sent
as `Authorization: Bearer KEY` on every request.
"""
import asyncio
import collections
import dataclasses
import functools
import logging

import aiohttp

from rstar_jax.sandbox import codejudge
from rstar_jax.sandbox import config as config_lib
from rstar_jax.sandbox import result as result_lib

_CLOSED = "the sandbox client was closed"


class SandboxUnavailableError(RuntimeError):
  """The service did not answer a call within the client's attempts."""


@dataclasses.dataclass
class _Call:
  source: str
  stdin: str | None
  future: asyncio.Future


class SandboxClient:
  """Batches calls to a Code Judge API (module docstring)."""

  def __init__(self, url: str, *, batch_size: int = 32, max_batches_in_flight: int = 64,
               max_pending: int = 4096, batch_wait_s: float = 0.005, max_attempts: int = 4,
               backoff_s: float = 0.5, request_timeout_s: float = 600.0, api_key: str | None = None):
    for name, value in (("batch_size", batch_size), ("max_pending", max_pending),
                        ("max_batches_in_flight", max_batches_in_flight),
                        ("max_attempts", max_attempts)):
      config_lib.check_positive("SandboxClient", name, value)
    config_lib.check_positive("SandboxClient", "request_timeout_s", request_timeout_s, float)
    if batch_wait_s < 0 or backoff_s < 0:
      raise ValueError(f"batch_wait_s and backoff_s must be >= 0, got {batch_wait_s}, "
                       f"{backoff_s}")
    self.url = url.rstrip("/") + "/run/long-batch"
    self._headers = {} if api_key is None else {"Authorization": f"Bearer {api_key.strip()}"}
    self._batch_size, self._batch_wait_s = batch_size, batch_wait_s
    self._max_attempts, self._backoff_s = max_attempts, backoff_s
    self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
    self._max_batches_in_flight = max_batches_in_flight
    self._max_pending = max_pending
    self._queue: collections.deque[_Call] = collections.deque()
    self._wakeup = asyncio.Event()
    self.counters = collections.Counter()
    self._session = self._dispatcher = self._pending = self._in_flight = None
    self._batches: set[asyncio.Task] = set()
    self._closed = False

  async def __aenter__(self) -> "SandboxClient":
    await self.start()
    return self

  async def __aexit__(self, *exc) -> None:
    await self.close()

  async def start(self) -> None:
    """Opens the HTTP session and starts batching (once; a closed client stays closed)."""
    if self._closed or self._dispatcher is not None:
      state = "closed" if self._closed else "started"
      raise RuntimeError(f"the sandbox client was already {state}")
    self._pending = asyncio.Semaphore(self._max_pending)
    self._in_flight = asyncio.Semaphore(self._max_batches_in_flight)
    self._session = aiohttp.ClientSession(
        timeout=self._timeout, headers=self._headers,
        connector=aiohttp.TCPConnector(limit=self._max_batches_in_flight))
    self._dispatcher = asyncio.create_task(self._dispatch())

  async def close(self) -> None:
    """Stops batching; calls not yet answered raise SandboxUnavailableError. Idempotent."""
    if self._closed:
      return
    self._closed = True
    if self._dispatcher is None:  # never started
      return
    self._dispatcher.cancel()
    for task in list(self._batches):
      task.cancel()  # each batch's done callback resolves its calls
    await asyncio.gather(self._dispatcher, *self._batches, return_exceptions=True)
    for call in self._queue:
      _fail(call, _CLOSED)
    self._queue.clear()
    await self._session.close()

  async def run(self, source: str, stdin: str | None = "") -> result_lib.ExecutionResult:
    """Runs `source` (a whole program, e.g. `wrap_code(code)`) with `stdin`; one result.

    Raises:
      SandboxUnavailableError: no answer within the attempts, or the client was closed
        while the call waited.
      RuntimeError: the client is not started, or already closed.
    """
    if self._closed:
      raise RuntimeError("the sandbox client is closed")
    if self._dispatcher is None:
      raise RuntimeError("the sandbox client is not started: use `async with "
                         "SandboxClient(url) as client` or `await client.start()`")
    async with self._pending:
      if self._closed:  # closed while this call waited for room (backpressure)
        raise SandboxUnavailableError(_CLOSED)
      call = _Call(source, stdin, asyncio.get_running_loop().create_future())
      self._queue.append(call)
      self.counters["calls"] += 1
      self._wakeup.set()
      return await call.future

  async def _dispatch(self) -> None:
    while True:
      await self._wakeup.wait()
      self._wakeup.clear()
      while self._queue:
        if len(self._queue) < self._batch_size and self._batch_wait_s > 0:
          await asyncio.sleep(self._batch_wait_s)
        await self._in_flight.acquire()
        batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
        task = asyncio.create_task(self._send(batch))
        self._batches.add(task)
        task.add_done_callback(functools.partial(self._batch_done, batch))

  def _batch_done(self, calls: list[_Call], task: asyncio.Task) -> None:
    """Resolves every call of a finished batch task still unanswered, however it ended.

    A callback rather than a `finally` in `_send`: a task cancelled before its first step
    never runs its coroutine's `finally`.
    """
    self._batches.discard(task)
    self._in_flight.release()
    if task.cancelled():
      reason = _CLOSED
    elif task.exception() is not None:
      error = task.exception()
      logging.error("sandbox client batch failed unexpectedly", exc_info=error)
      reason = f"the batch failed: {type(error).__name__}: {error}"
    else:
      reason = task.result()
    for call in calls:
      _fail(call, reason)

  async def _send(self, calls: list[_Call]) -> str:
    """Sends the calls until each is answered or the attempts run out; returns why not."""
    last_error = ""
    for attempt in range(self._max_attempts):
      calls = [c for c in calls if not c.future.done()]
      if not calls:
        return ""
      if attempt:
        self.counters["retries"] += 1
        await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
      body = {"type": "batch", "submissions": [
          {"type": "python", "solution": c.source, "input": c.stdin} for c in calls]}
      self.counters["requests"] += 1
      try:
        async with self._session.post(self.url, json=body) as response:
          if response.status in (401, 403):  # no retry: the key will not change
            self.counters["failed_requests"] += 1
            return (f"the sandbox service refused the request ({response.status}): "
                    f"{'no' if not self._headers else 'a wrong'} API key")
          response.raise_for_status()
          items = (await response.json())["results"]
        if len(items) != len(calls):
          raise ValueError(f"{len(items)} results for {len(calls)} submissions")
        # None: answered queue_timeout, to be sent again.
        results = [None if item.get("reason") == "queue_timeout"
                   else codejudge.result_from_json(item) for item in items]
      except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, TypeError,
              AttributeError) as e:
        self.counters["failed_requests"] += 1
        last_error = f"{type(e).__name__}: {e}"
        continue
      for call, result in zip(calls, results):
        if result is None:
          last_error = "queue_timeout"
        elif not call.future.done():
          call.future.set_result(result)
    return f"no answer after {self._max_attempts} attempts ({last_error})"


def _fail(call: _Call, reason: str) -> None:
  if not call.future.done():
    call.future.set_exception(SandboxUnavailableError(reason))
