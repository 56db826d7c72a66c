"""The HTTP service: Code Judge's routes and JSON (see `codejudge`), plus health and metrics.

Routes (0xWJ/code-judge@f809f35 `app/main.py`):
  POST /run, /judge                      one Submission -> one result
  POST /run/batch, /run/long-batch,      BatchSubmission -> {sub_id, results: [...]} in order
       /judge/batch, /judge/long-batch   (/judge* drop stdout and stderr)
  GET  /ping -> "pong";  GET /status -> {queue, num_workers}
  GET  /health -> 200 {status: "ok", ...} while a worker is alive, else 503
  GET  /metrics -> Prometheus text (requests, submissions by status, latency, queue, workers)
The four batch routes behave alike here: nothing waits for a queue deadline, so no item is
ever answered `queue_timeout`. A malformed body is answered 422 (FastAPI's error shape), a
submission type other than "python" 400, an unknown route 404 and a body over the size limit
413, all as JSON `{"detail": ...}`; the service keeps serving.

With an API key (`Service(..., api_key=KEY)`, `rstar-sandbox serve --api-key-file PATH`), every
route but /ping and /health needs `Authorization: Bearer KEY` (SGLang's convention) and answers
401 JSON otherwise; the key is compared in constant time. The service runs anyone's code, so the
CLI refuses to listen beyond loopback without a key unless `--trusted-network` says so.

The backend is anything with `async run(source, stdin) -> ExecutionResult` and
`async stats() -> dict` holding at least `queued` and `workers_alive`: a local `pool.Pool`, or
`redis_queue.RedisFront` in front of workers on other hosts.
"""
import asyncio
import hmac
import json
import time
from typing import Any, Protocol

from aiohttp import web

from rstar_jax.sandbox import codejudge
from rstar_jax.sandbox import metrics as metrics_lib
from rstar_jax.sandbox import result as result_lib

DEFAULT_MAX_BODY_BYTES = 64 << 20
_BATCH_ROUTES = ("/run/batch", "/run/long-batch", "/judge/batch", "/judge/long-batch")
_OPEN_ROUTES = ("/ping", "/health")  # answered without the API key (load-balancer probes)


class Backend(Protocol):
  """What the service runs submissions on."""

  async def run(self, source: str, stdin: str | None) -> result_lib.ExecutionResult:
    ...

  async def stats(self) -> dict[str, int]:
    ...


def _json(body: Any, status: int = 200) -> web.Response:
  return web.Response(body=json.dumps(body, ensure_ascii=False, separators=(",", ":"))
                      .encode("utf-8"), status=status, content_type="application/json")


class _BadType(Exception):
  pass


class _Unavailable(Exception):
  pass


class Service:
  """The aiohttp application around one backend."""

  def __init__(self, backend: Backend, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               api_key: str | None = None):
    if api_key is not None and not api_key.strip():
      raise ValueError("api_key must be a non-empty string (or None for no key)")
    self.backend = backend
    self._authorization = None if api_key is None else f"Bearer {api_key.strip()}".encode()
    self.metrics = metrics_lib.Metrics()
    self.app = web.Application(client_max_size=max_body_bytes, middlewares=[self._middleware])
    self.app.router.add_post("/run", self._single)
    self.app.router.add_post("/judge", self._single)
    for route in _BATCH_ROUTES:
      self.app.router.add_post(route, self._batch)
    self.app.router.add_get("/ping", self._ping)
    self.app.router.add_get("/status", self._status)
    self.app.router.add_get("/health", self._health)
    self.app.router.add_get("/metrics", self._metrics)

  @web.middleware
  async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
    start = time.monotonic()
    route = request.match_info.route.resource
    route = route.canonical if route is not None else "unmatched"
    try:
      if self._authorization is not None and request.path not in _OPEN_ROUTES and not hmac.compare_digest(
          request.headers.get("Authorization", "").encode(), self._authorization):
        response = _json({"detail": "missing or invalid API key (send Authorization: Bearer KEY)"}, 401)
      else:
        response = await handler(request)
    except web.HTTPException as e:  # 404, 405, 413 from aiohttp: answer JSON as FastAPI does
      response = _json({"detail": e.reason}, e.status)
    except codejudge.RequestError as e:
      response = _json({"detail": e.detail}, 422)
    except _BadType as e:
      response = _json({"detail": str(e)}, 400)
    except _Unavailable as e:
      response = _json({"status": "unavailable", "detail": str(e)}, 503)
    self.metrics.count("sandbox_requests_total", "HTTP requests by route and status code.",
                       route=route, code=response.status)
    self.metrics.observe_latency(route, time.monotonic() - start)
    return response

  async def _body(self, request: web.Request) -> Any:
    raw = await request.read()
    try:
      return json.loads(raw)
    except json.JSONDecodeError as e:
      raise codejudge.RequestError([{"type": "json_invalid", "loc": ["body", e.pos],
                                     "msg": "JSON decode error", "input": {},
                                     "ctx": {"error": e.msg}}]) from e
    except UnicodeDecodeError as e:
      raise codejudge.RequestError([{"type": "json_invalid", "loc": ["body", e.start],
                                     "msg": "JSON decode error", "input": {},
                                     "ctx": {"error": e.reason}}]) from e

  async def _execute(self, submission: codejudge.Submission, with_output: bool) -> dict:
    result = await self.backend.run(submission.solution, submission.input)
    self.metrics.count("sandbox_submissions_total", "Submissions answered, by status.",
                       status=result.status)
    return codejudge.result_json(result, submission.sub_id, submission.expected_output,
                                 with_output=with_output)

  @staticmethod
  def _check_types(submissions: list[codejudge.Submission]) -> None:
    for i, submission in enumerate(submissions):
      if submission.type != "python":
        raise _BadType(f"submission {i}: type {submission.type!r} is not supported "
                       f"(this service runs python only)")

  async def _single(self, request: web.Request) -> web.Response:
    submission = codejudge.parse_submission(await self._body(request))
    self._check_types([submission])
    return _json(await self._execute(submission, request.path == "/run"))

  async def _batch(self, request: web.Request) -> web.Response:
    sub_id, submissions = codejudge.parse_batch(await self._body(request))
    self._check_types(submissions)
    with_output = request.path.startswith("/run")
    results = await asyncio.gather(*(self._execute(s, with_output) for s in submissions))
    return _json({"sub_id": sub_id, "results": list(results)})

  async def _ping(self, request: web.Request) -> web.Response:
    del request
    return _json("pong")

  async def _stats(self) -> dict[str, int]:
    try:
      return await self.backend.stats()
    except Exception as e:  # pylint: disable=broad-except
      # The backend's own store is unreachable (redis down): say so, keep serving.
      raise _Unavailable(f"{type(e).__name__}: {e}") from e

  async def _status(self, request: web.Request) -> web.Response:
    del request
    stats = await self._stats()
    return _json({"queue": stats["queued"], "num_workers": stats["workers_alive"]})

  async def _health(self, request: web.Request) -> web.Response:
    del request
    stats = await self._stats()
    alive = stats["workers_alive"] > 0
    return _json({"status": "ok" if alive else "unavailable", **stats}, 200 if alive else 503)

  async def _metrics(self, request: web.Request) -> web.Response:
    del request
    stats = await self._stats()
    text = self.metrics.render({f"sandbox_{k}": v for k, v in sorted(stats.items())})
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def start_site(service: Service, host: str, port: int) -> web.AppRunner:
  """Serves `service` on host:port; returns the runner (`await runner.cleanup()` stops it)."""
  runner = web.AppRunner(service.app, access_log=None)
  await runner.setup()
  await web.TCPSite(runner, host, port, backlog=4096).start()
  return runner
