"""The engine protocol over SGLang's HTTP API: the agent loop drives a real SGLang server or
`rstar-serve` exactly as it drives the in-process engine.

  async with SGLangEngine("http://127.0.0.1:30000") as engine:
    rollout = await run_agent(engine, tools, tokenizer, prompt_ids, config, rid)
    await engine.update_weights_from_disk("runs/x/sync/step_00003", "3")

A request goes out as SGLang's portable form (SGLANG_API.md §7): `input_ids`, `n` 1, the rid,
`return_logprob`, `stop_token_ids`, `sampling_seed` (SGLang >= 0.5 only uses it with
`--enable-deterministic-inference`; 0.4.x refuses it: `send_seed=False`), a `max_new_tokens` already clamped by the
caller; ids are read from `output_ids`, else from `output_token_logprobs[*][1]` (SGLang 0.4.9).
Connection failures, 502/504 and timeouts are retried `retries` times with doubling backoff,
then raise `ServerUnavailable`; a 503 (the server's queue is full) is waited out (backoff up to
2 s) without using up the retries; a resent request gets a fresh rid ("{rid}#aN"); any other non-200 answer raises `ServerError` with the server's
message (not retried: the request itself is wrong). A turn that comes back `abort` (the server
paused or updated its weights) is resubmitted with its tokens so far and the remaining budget, so
it continues rather than starts over; the result joins the parts (ids, log-probs, the weight
versions of each part). A turn SGLang ends "length" on a stop token at its last allowed position
is reported "stop", as the in-process engine reports it (`stop_on_last_token`; the server's EOS
ids are `eos_token_ids`).
"""
import asyncio
import dataclasses
from typing import Any, Sequence

import aiohttp
import numpy as np

from rstar_jax.rollout import jax_engine
from rstar_jax.rollout import sampling as sampling_lib

_RETRIED_STATUS = (502, 504)
_MAX_BUSY_WAIT_S = 2.0


class ServerError(RuntimeError):
  """The server refused a request (HTTP status and its message)."""

  def __init__(self, url: str, status: int, message: str):
    super().__init__(f"{url}: HTTP {status}: {message}")
    self.status = status


class ServerUnavailable(ConnectionError):
  """The server did not answer after every retry."""


@dataclasses.dataclass(frozen=True)
class ServerLoad:
  """A server's load: running and waiting requests, KV tokens in use of `capacity_tokens`, and how
  many requests it runs at once."""
  running: int
  waiting: int
  used_tokens: int
  capacity_tokens: int
  max_running: int


def _error_message(body: Any, text: str) -> str:
  """SGLang's `error` is an object with `message`, or a string (0.5.23), or `message` at the top."""
  if isinstance(body, dict):
    error = body.get("error", body.get("message"))
    if isinstance(error, dict):
      return str(error.get("message", error))
    if error is not None:
      return str(error)
  return text.strip()[:500]


def request_body(request: jax_engine.GenerateRequest, send_seed: bool = True) -> dict:
  """The `/generate` body of one request (portable across SGLang versions; SGLang 0.4.x answers
  500 to `sampling_seed`, so `send_seed=False` leaves it out)."""
  s = request.sampling
  params = {"max_new_tokens": s.max_new_tokens, "temperature": s.temperature, "top_p": s.top_p,
            "top_k": s.top_k, "min_p": s.min_p, "ignore_eos": s.ignore_eos}
  if s.stop_token_ids:
    params["stop_token_ids"] = list(s.stop_token_ids)
  if s.sampling_seed is not None and send_seed:
    params["sampling_seed"] = s.sampling_seed
  return {"input_ids": [int(t) for t in request.input_ids], "sampling_params": params, "rid": request.rid,
          "return_logprob": True}


def parse_answer(answer: dict, prompt_tokens: int) -> jax_engine.GenerateResult:
  """A GenerateResult from SGLang's answer to one request."""
  meta = answer.get("meta_info") or {}
  logprobs = meta.get("output_token_logprobs") or []
  ids = answer.get("output_ids")
  if ids is None:  # SGLang 0.4.9 with a tokenizer answers no output_ids
    ids = [entry[1] for entry in logprobs]
  if len(logprobs) != len(ids):
    raise ValueError(f"request {meta.get('id')!r}: {len(ids)} output ids but {len(logprobs)} log-probs")
  version = meta.get("weight_version")
  return jax_engine.GenerateResult(
      rid=str(meta.get("id", "")), output_ids=np.asarray(ids, np.int32),
      output_logprobs=np.asarray([entry[0] for entry in logprobs], np.float32),
      finish_reason=meta.get("finish_reason") or {"type": "abort", "message": "no finish_reason"},
      prompt_tokens=int(meta.get("prompt_tokens", prompt_tokens)), cached_tokens=int(meta.get("cached_tokens") or 0),
      weight_versions=tuple(str(version).split(",")) if version is not None else ())


def stop_on_last_token(result: jax_engine.GenerateResult, sampling: sampling_lib.SamplingParams,
                       eos_token_ids: Sequence[int]) -> jax_engine.GenerateResult:
  """`result`, with a "length" finish whose last token is a stop id (the request's stop_token_ids
  or the server's `eos_token_ids`) reported as {"type": "stop", "matched": id}. SGLang checks
  max_new_tokens before the stop ids, so a turn that ends on its last allowed token with EOS comes
  back "length"; the in-process engine reports "stop", and so does PAPER.md §4's truncation rule
  (the turn did end with EOS). With ignore_eos SGLang stops at no id at all: nothing to relabel."""
  if result.finish_reason.get("type") != "length" or not result.output_ids.size or sampling.ignore_eos:
    return result
  last = int(result.output_ids[-1])
  if last not in set(sampling.stop_token_ids) | set(eos_token_ids):
    return result
  return dataclasses.replace(result, finish_reason={"type": "stop", "matched": last})


def join_parts(parts: list[jax_engine.GenerateResult], rid: str, prompt_tokens: int) -> jax_engine.GenerateResult:
  """One result from the parts of a turn resubmitted after aborts (the last part's finish); the
  versions of the parts that produced tokens (an abort before any token produced nothing)."""
  versions = dict.fromkeys(v for part in parts if part.completion_tokens or part is parts[-1]
                           for v in part.weight_versions)
  return jax_engine.GenerateResult(
      rid, np.concatenate([p.output_ids for p in parts]), np.concatenate([p.output_logprobs for p in parts]),
      parts[-1].finish_reason, prompt_tokens, parts[0].cached_tokens, tuple(versions))


async def _stream(parts: Sequence[bytes | memoryview]):
  for part in parts:
    yield part


class SGLangEngine:
  """`await generate(request)` against one SGLang-compatible server (module docstring)."""

  def __init__(self, url: str, *, api_key: str | None = None, timeout_s: float = 3600.0, retries: int = 5,
               backoff_s: float = 0.5, max_resubmits: int = 100, send_seed: bool = True,
               eos_token_ids: Sequence[int] = ()):
    """eos_token_ids: the ids the server's model ends at (besides each request's stop_token_ids), so
    that a turn ending on one at its last allowed token is reported "stop" (`stop_on_last_token`)."""
    self.url = url.rstrip("/")
    self._eos_token_ids = tuple(eos_token_ids)
    self._send_seed = send_seed
    self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    self._timeout = aiohttp.ClientTimeout(total=timeout_s)
    self._retries, self._backoff_s, self._max_resubmits = retries, backoff_s, max_resubmits
    self._session: aiohttp.ClientSession | None = None
    self._limits: tuple[int, int, int] | None = None
    self.resubmitted_turns = 0

  async def __aenter__(self) -> "SGLangEngine":
    return self

  async def __aexit__(self, *exc_info) -> None:
    await self.close()

  async def close(self) -> None:
    if self._session is not None:
      await self._session.close()
      self._session = None

  def _client(self) -> aiohttp.ClientSession:
    if self._session is None or self._session.closed:
      self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
    return self._session

  async def call(self, method: str, path: str, body: dict | None = None, retries: int | None = None, *,
                 parts: Sequence[bytes | memoryview] | None = None, query: dict | None = None) -> Any:
    """The JSON (or text) answer of one route, with retries (module docstring); the request
    carries `body` as JSON, or the bytes of `parts` one after another (streamed, not joined), and
    `query` in the URL."""
    retries = self._retries if retries is None else retries
    attempt, busy = 0, 0
    while True:
      if attempt + busy and body is not None and "rid" in body:  # a resend must not clash with the first
        body = {**body, "rid": f"{body['rid'].split('#a')[0]}#a{attempt + busy}"}
      try:
        raw = {} if parts is None else {"data": _stream(parts), "headers": {
            "Content-Type": "application/octet-stream", "Content-Length": str(sum(len(p) for p in parts))}}
        async with self._client().request(method, self.url + path, json=body, params=query, **raw) as response:
          text = await response.text()
          if response.status == 503:  # full for now: wait, without using up the retries
            busy += 1
            await asyncio.sleep(min(self._backoff_s * 2 ** min(busy, 8), _MAX_BUSY_WAIT_S))
            continue
          if response.status in _RETRIED_STATUS:  # once the retries are spent: ServerUnavailable
            raise aiohttp.ClientResponseError(response.request_info, (), status=response.status)
          try:
            data = await response.json(content_type=None) if text.strip() else None
          except ValueError:
            data = text
          if response.status != 200:
            raise ServerError(self.url, response.status, _error_message(data, text))
          return data
      except (aiohttp.ClientConnectionError, aiohttp.ClientResponseError, asyncio.TimeoutError) as e:
        if attempt == retries:
          self._limits = None  # it may come back restarted, with other limits
          raise ServerUnavailable(f"{self.url}{path}: no answer after {retries + 1} tries ({e!r})") from e
        await asyncio.sleep(self._backoff_s * 2 ** attempt)
        attempt += 1

  async def generate(self, request: jax_engine.GenerateRequest) -> jax_engine.GenerateResult:
    """The request's result; an aborted turn is continued (module docstring)."""
    prompt = np.asarray(request.input_ids, np.int32)
    parts: list[jax_engine.GenerateResult] = []
    budget = request.sampling.max_new_tokens
    done = 0  # tokens of the parts so far
    for resubmit in range(self._max_resubmits + 1):
      ids = np.concatenate([prompt] + [p.output_ids for p in parts])
      sampling = dataclasses.replace(request.sampling, max_new_tokens=None if budget is None else budget - done)
      part_rid = request.rid if resubmit == 0 else f"{request.rid}#r{resubmit}"
      answer = await self.call("POST", "/generate", request_body(
          jax_engine.GenerateRequest(part_rid, ids, sampling), self._send_seed))
      parts.append(parse_answer(answer, ids.size))
      done += parts[-1].completion_tokens
      aborted = parts[-1].finish_reason.get("type") == "abort"
      if aborted and budget is not None and done >= budget:  # after its last token: nothing left to generate
        parts[-1] = dataclasses.replace(parts[-1], finish_reason={"type": "length", "length": budget})
        aborted = False
      if not aborted:
        return stop_on_last_token(join_parts(parts, request.rid, prompt.size), request.sampling, self._eos_token_ids)
      self.resubmitted_turns += 1
      await asyncio.sleep(self._backoff_s)
    raise ServerError(self.url, 200, f"request {request.rid!r} aborted {self._max_resubmits + 1} times")

  async def load(self) -> ServerLoad:
    """The server's load summed over its data-parallel ranks (SGLANG_API.md §2): from `/v1/loads`
    (SGLang >= 0.5.9, one entry per rank), else from `/get_load` with the per-rank capacity and
    max_running_requests of `/get_server_info`: a list with one entry per rank (0.5.6-0.5.8, its
    tokens include the queued prompts'), or `{"load": tokens}` of rank 0 alone (0.4.9: taken as
    every rank's, with no request counts)."""
    try:
      entries = (await self.call("GET", "/v1/loads", retries=0))["loads"]
      if not entries:
        raise IndexError("/v1/loads lists no rank")
      per_rank = None if all(e.get("max_running_requests") for e in entries) else await self._per_rank_limits()
      return ServerLoad(sum(e["num_running_reqs"] for e in entries), sum(e["num_waiting_reqs"] for e in entries),
                        sum(e["num_used_tokens"] for e in entries), sum(e["max_total_num_tokens"] for e in entries),
                        sum(e.get("max_running_requests") or per_rank[1] for e in entries))
    except (ServerError, KeyError, IndexError, TypeError):
      pass
    capacity, max_running, ranks = await self._per_rank_limits()
    answer = await self.call("GET", "/get_load")
    if isinstance(answer, dict) and "load" in answer:
      return ServerLoad(0, 0, answer["load"] * ranks, capacity * ranks, max_running * ranks)
    return ServerLoad(sum(e["num_reqs"] - e["num_waiting_reqs"] for e in answer),
                      sum(e["num_waiting_reqs"] for e in answer), sum(e["num_tokens"] for e in answer),
                      capacity * len(answer), max_running * len(answer))

  async def _per_rank_limits(self) -> tuple[int, int, int]:
    """(KV tokens, max running requests, ranks) of one data-parallel rank, from `/get_server_info`
    (read once, again after the server stopped answering); max_running_requests: rank 0's scheduler
    state, else the server argument; neither: unlimited."""
    if self._limits is None:
      info = await self.server_info()
      max_running = next(
          (s["max_running_requests"] for s in info.get("internal_states") or [] if s.get("max_running_requests")),
          info.get("max_running_requests") or 1 << 30)
      self._limits = (info["max_total_num_tokens"], max_running, info.get("dp_size") or 1)
    return self._limits

  async def server_info(self) -> dict:
    return await self.call("GET", "/get_server_info")

  async def healthy(self) -> bool:
    """Whether /health answers 200 now (one try)."""
    try:
      await self.call("GET", "/health", retries=0)
      return True
    except (ServerError, ServerUnavailable):
      return False

  async def update_weights_from_disk(self, model_path: str, weight_version: str | None = None,
                                     abort_all_requests: bool = False) -> dict:
    """Loads the Hugging Face directory `model_path` on the server (which drops its prefix cache)."""
    body = {"model_path": model_path, "abort_all_requests": abort_all_requests}
    if weight_version is not None:
      body["weight_version"] = weight_version
    return await self.call("POST", "/update_weights_from_disk", body)

  async def upload_weights(self, parts: Sequence[bytes | memoryview], weight_version: str) -> dict:
    """Stages a safetensors blob of HF-named tensors (`models.safetensors_parts`) for
    `weight_version` (rstar-serve's /upload_weights; SGLang has no such route)."""
    return await self.call("POST", "/upload_weights", parts=parts, query={"weight_version": weight_version})

  async def update_weights_from_upload(self, weight_version: str, abort_all_requests: bool = False) -> dict:
    """Swaps in the tensors staged for `weight_version` (rstar-serve's /update_weights_from_upload)."""
    return await self.call("POST", "/update_weights_from_upload",
                           {"weight_version": weight_version, "abort_all_requests": abort_all_requests})

  async def weight_version(self) -> str:
    return (await self.call("GET", "/weight_version"))["weight_version"]
