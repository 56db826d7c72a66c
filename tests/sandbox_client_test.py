"""The async client against a real service, through a real HTTP proxy that misbehaves on purpose.

The proxy (an aiohttp app on a loopback port) forwards `/run/long-batch` to a real
`rstar-sandbox serve`, and can lose answers after the service ran the batch, answer
`queue_timeout` as Code Judge does, answer JSON nested too deeply to decode, and count
submissions in flight. Calls that must be resolved are awaited with a generous limit, so a
call left unresolved fails the test instead of hanging it.
  python -m pytest -q tests/sandbox_client_test.py
"""
import asyncio

import aiohttp
import pytest
from aiohttp import web

from rstar_jax import sandbox
from rstar_jax.sandbox import client as client_lib
from rstar_jax.sandbox import processes


@pytest.fixture(scope="module")
def service_url():
  process, url = processes.start_service(["--workers", "1", "--timeout-s", "2"])
  yield url
  process.stop()


# Seconds to wait for calls that must be resolved by then (they take well under a second).
_RESOLVED_WITHIN_S = 60


class _Proxy:
  """Forwards batches to the service; `lose_first` / `queue_timeout_first` misbehave once,
  `too_deep` answers every batch with JSON nested deeper than a decoder recurses."""

  def __init__(self, target: str, lose_first: bool = False, queue_timeout_first: bool = False,
               too_deep: bool = False):
    self.target, self.lose_first, self.queue_timeout_first = target, lose_first, queue_timeout_first
    self.too_deep = too_deep
    self.forwarded = self.in_flight = self.max_in_flight = 0
    self.seen: set[str] = set()
    self.app = web.Application(client_max_size=1 << 26)
    self.app.router.add_post("/run/long-batch", self._handle)

  async def _handle(self, request: web.Request) -> web.Response:
    body = await request.json()
    solutions = [s["solution"] for s in body["submissions"]]
    first = not any(s in self.seen for s in solutions)
    self.seen.update(solutions)
    if self.too_deep:
      depth = 100_000
      return web.Response(body=b'{"results": ' + b"[" * depth + b"]" * depth + b"}",
                          content_type="application/json")
    if first and self.queue_timeout_first:
      return web.json_response({"sub_id": "x", "results": [
          {"sub_id": "x", "success": False, "run_success": False, "cost": 0.0, "stdout": None,
           "stderr": None, "reason": "queue_timeout"} for _ in solutions]})
    self.in_flight += len(solutions)
    self.max_in_flight = max(self.max_in_flight, self.in_flight)
    try:
      async with self.session.post(self.target + "/run/long-batch", json=body) as response:
        answer = await response.read()
    finally:
      self.in_flight -= len(solutions)
    self.forwarded += len(solutions)
    if first and self.lose_first:
      return web.json_response({"detail": "answer lost"}, status=503)
    return web.Response(body=answer, content_type="application/json")

  async def __aenter__(self) -> str:
    self.session = aiohttp.ClientSession()
    self.runner = web.AppRunner(self.app)
    await self.runner.setup()
    self.port = processes.free_port()
    await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
    return f"http://127.0.0.1:{self.port}"

  async def __aexit__(self, *exc) -> None:
    await self.runner.cleanup()
    await self.session.close()


def _codes(n: int) -> list[str]:
  return [f"import time\ntime.sleep(0.01)\nprint({i})" for i in range(n)]


async def _run_all(client, codes):
  return await asyncio.gather(*(client.run(c) for c in codes))


def test_calls_are_batched(service_url):
  async def go():
    async with client_lib.SandboxClient(service_url, batch_size=32) as client:
      results = await _run_all(client, _codes(100))
      return results, client.counters
  results, counters = asyncio.run(go())
  assert [r.stdout for r in results] == [f"{i}\n" for i in range(100)]
  assert 4 <= counters["requests"] <= 20  # batches of up to 32, not 100 requests


def test_backpressure_bounds_calls_in_flight(service_url):
  async def go():
    proxy = _Proxy(service_url)
    async with proxy as url, client_lib.SandboxClient(url, batch_size=4,
                                                     max_pending=8) as client:
      results = await _run_all(client, _codes(60))
    return results, proxy.max_in_flight
  results, max_in_flight = asyncio.run(go())
  assert [r.stdout for r in results] == [f"{i}\n" for i in range(60)]
  assert 1 <= max_in_flight <= 8


def test_lost_answers_are_retried_and_each_call_gets_one_result(service_url):
  async def go():
    proxy = _Proxy(service_url, lose_first=True)
    async with proxy as url, client_lib.SandboxClient(url, batch_size=8,
                                                     backoff_s=0.01) as client:
      results = await _run_all(client, _codes(40))
      return results, proxy.forwarded, client.counters
  results, forwarded, counters = asyncio.run(go())
  assert [r.stdout for r in results] == [f"{i}\n" for i in range(40)]
  assert forwarded == 80  # every batch ran twice on the service ...
  assert counters["retries"] >= 5 and counters["calls"] == 40  # ... each call answered once


def test_queue_timeout_items_are_sent_again(service_url):
  async def go():
    proxy = _Proxy(service_url, queue_timeout_first=True)
    async with proxy as url, client_lib.SandboxClient(url, backoff_s=0.01) as client:
      return await _run_all(client, _codes(10)), proxy.forwarded
  results, forwarded = asyncio.run(go())
  assert [r.stdout for r in results] == [f"{i}\n" for i in range(10)] and forwarded == 10


def test_unreachable_service_raises_after_the_attempts():
  async def go():
    url = f"http://127.0.0.1:{processes.free_port()}"
    async with client_lib.SandboxClient(url, max_attempts=2, backoff_s=0.01) as client:
      return await asyncio.gather(client.run("print(1)"), return_exceptions=True)
  (error,) = asyncio.run(go())
  assert isinstance(error, client_lib.SandboxUnavailableError)
  assert "after 2 attempts" in str(error)


def test_results_are_structured(service_url):
  async def go():
    async with client_lib.SandboxClient(service_url) as client:
      return await asyncio.gather(client.run(sandbox.wrap_code("print(input())"), "abc"),
                                  client.run("import time\ntime.sleep(10)"),
                                  client.run("x = bytearray(1 << 30)"))
  ok, slow, hog = asyncio.run(go())
  assert (ok.status, ok.stdout, ok.exit_code) == ("ok", "abc\n", 0)
  assert (slow.status, slow.exit_code) == ("timeout", None)
  assert hog.status == "memory_limit"


@pytest.mark.parametrize("kwargs, message", [({"batch_size": 0}, "batch_size"),
                                             ({"max_pending": -1}, "max_pending"),
                                             ({"backoff_s": -1.0}, "backoff_s")])
def test_bad_client_arguments_raise(kwargs, message):
  with pytest.raises(ValueError, match=message):
    client_lib.SandboxClient("http://127.0.0.1:1", **kwargs)


def _sleepers(n: int) -> list[str]:
  return [f"import time\ntime.sleep(1.0)\nprint({i})" for i in range(n)]


async def _outcomes(calls) -> list:
  return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True),
                                _RESOLVED_WITHIN_S)


def test_close_resolves_calls_in_flight(service_url):
  async def go():
    proxy = _Proxy(service_url)
    async with proxy as url:
      client = client_lib.SandboxClient(url, batch_size=4)
      await client.start()
      calls = [asyncio.ensure_future(client.run(code)) for code in _sleepers(8)]
      while proxy.in_flight < 8:  # both batches reached the service
        await asyncio.sleep(0.01)
      await client.close()
      return await _outcomes(calls)
  errors = asyncio.run(go())
  assert all(isinstance(e, client_lib.SandboxUnavailableError) for e in errors), errors
  assert {str(e) for e in errors} == {"the sandbox client was closed"}


def test_close_resolves_calls_waiting_for_room(service_url):
  async def go():
    async with _Proxy(service_url) as url:
      client = client_lib.SandboxClient(url, max_pending=1)
      await client.start()
      calls = [asyncio.ensure_future(client.run(code)) for code in _sleepers(3)]
      await asyncio.sleep(0.1)  # one call accepted, two waiting for room
      await client.close()
      return await _outcomes(calls)
  errors = asyncio.run(go())
  assert all(isinstance(e, client_lib.SandboxUnavailableError) for e in errors), errors


def test_unexpected_error_in_a_batch_resolves_its_calls(service_url):
  async def go():
    async with _Proxy(service_url, too_deep=True) as url:
      async with client_lib.SandboxClient(url, batch_size=2) as client:
        return await _outcomes([client.run(code) for code in _codes(3)])
  errors = asyncio.run(go())
  assert all(isinstance(e, client_lib.SandboxUnavailableError) for e in errors), errors
  assert all("RecursionError" in str(e) for e in errors), errors


def test_run_before_start_or_after_close_raises(service_url):
  async def go():
    client = client_lib.SandboxClient(service_url)
    with pytest.raises(RuntimeError, match="not started"):
      await client.run("print(1)")
    async with client:
      assert (await client.run("print(1)")).stdout == "1\n"
    with pytest.raises(RuntimeError, match="closed"):
      await client.run("print(2)")
    with pytest.raises(RuntimeError, match="already closed"):
      await client.start()
    await client.close()  # a second close does nothing
  asyncio.run(go())
