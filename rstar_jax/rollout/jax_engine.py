"""An in-process JAX generation engine over the slot KV cache, with continuous batching.

  engine = JaxEngine(cfg, params, num_slots=8, max_length=4096, eos_token_ids=(im_end_id,))
  results = engine.generate([GenerateRequest("r0", prompt_ids, SamplingParams(temperature=1.0)), ...])
  result = await AsyncJaxEngine(engine).generate(request)   # concurrent callers share the batch

Token ids go in and come out exactly (no text, no re-tokenization); `vocab_limit` (the tokenizer's
size) keeps the ids a checkpoint pads its vocabulary with from being sampled. Each iteration is one
`models.extend` call over all slots:
  - requests wait in submission order; a free slot takes the next one (the slot is emptied first);
  - every busy slot writes up to `prefill_chunk` pending tokens: a new request its prompt (over
    several iterations when longer: chunked prefill), a decoding one its last sampled token; idle
    slots write nothing (num_new = 0);
  - the chunk is right-padded to a power of two (1 for pure decode steps, at most
    `prefill_chunk`), so a run compiles at most log2(prefill_chunk) + 2 shapes;
  - a slot whose pending tokens are all written samples its next token (`sampling.sample_tokens`);
    a stop id or the length budget finishes the request and frees the slot for the next one.
Prefill and decode share iterations, so a long prompt stalls the decoding slots by at most one chunk.
`AsyncJaxEngine` runs the iterations in a worker thread for the callers of one asyncio loop: a
request submitted while a step runs joins at the next step (continuous batching), and the loop
keeps serving other work (tool calls, HTTP) meanwhile.

Lengths: a request needs 1 <= len(input_ids) < max_length; its max_new_tokens (None: no limit) is
clamped to max_length - len(input_ids), since the last sampled token is never written to the cache.
Finish reasons have SGLang's shape (SGLANG_API.md §1.3): {"type": "stop", "matched": token_id}
or {"type": "length", "length": max_new_tokens}; a matched stop id is the last of output_ids.
Sampling seeds: a request's `sampling_seed`, or else the engine's running request number, so
repeated calls draw fresh samples and a run with the same seed and requests repeats exactly.
"""
import asyncio
import collections
import dataclasses
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from rstar_jax import models
from rstar_jax.models import MeshRules
from rstar_jax.rollout import sampling as sampling_lib


@dataclasses.dataclass(frozen=True)
class GenerateRequest:
  """rid: the caller's id (unique within one `generate` call); input_ids: the prompt's token ids."""
  rid: str
  input_ids: Sequence[int]
  sampling: sampling_lib.SamplingParams = sampling_lib.SamplingParams()


@dataclasses.dataclass
class GenerateResult:
  """output_ids: int32 [N] sampled ids (a matched stop id last); output_logprobs: fp32 [N],
  log softmax(z / temperature) of each (SGLang's convention); finish_reason: SGLang-shaped dict."""
  rid: str
  output_ids: np.ndarray
  output_logprobs: np.ndarray
  finish_reason: dict
  prompt_tokens: int

  @property
  def completion_tokens(self) -> int:
    return int(self.output_ids.shape[0])


@dataclasses.dataclass
class _Running:
  """A submitted request: `pending` ids still to write; outputs so far."""
  request: GenerateRequest
  max_new: int
  stop_ids: frozenset
  sample_seed: int
  pending: np.ndarray
  output_ids: list = dataclasses.field(default_factory=list)
  output_logprobs: list = dataclasses.field(default_factory=list)


def _bucket(n: int, limit: int) -> int:
  """The padded chunk length: the next power of two >= n, at most `limit`."""
  return min(1 << max(n - 1, 0).bit_length(), limit)


class JaxEngine:
  """Generates for requests on one model (module docstring). Not thread-safe: one caller at a
  time (`AsyncJaxEngine` serializes the steps for an asyncio loop)."""

  def __init__(self, cfg: models.ModelConfig, params, *, num_slots: int, max_length: int,
               eos_token_ids: Sequence[int], prefill_chunk: int = 256, seed: int = 0,
               vocab_limit: int | None = None, mesh_rules: MeshRules | None = None):
    if num_slots < 1 or max_length < 2 or prefill_chunk < 1:
      raise ValueError(f"need num_slots >= 1, max_length >= 2 and prefill_chunk >= 1, got "
                       f"{num_slots}, {max_length}, {prefill_chunk}")
    bad_eos = [t for t in eos_token_ids if not 0 <= t < cfg.vocab_size]
    if bad_eos:
      raise ValueError(f"eos_token_ids {bad_eos} are outside the vocabulary [0, {cfg.vocab_size})")
    if vocab_limit is not None and not 0 < vocab_limit <= cfg.vocab_size:
      raise ValueError(f"vocab_limit must be in [1, {cfg.vocab_size}], got {vocab_limit}")
    self.cfg, self.params, self.mesh_rules = cfg, params, mesh_rules
    self.vocab_limit = vocab_limit
    self.num_slots, self.max_length, self.prefill_chunk = num_slots, max_length, prefill_chunk
    self.eos_token_ids = frozenset(int(t) for t in eos_token_ids)
    self.seed = seed
    self.cache = models.init_cache(cfg, num_slots, max_length, mesh_rules=mesh_rules)
    self._requests_started = 0
    self._queue: collections.deque[_Running] = collections.deque()
    self._slots: list[_Running | None] = [None] * num_slots
    self._in_flight: set[str] = set()

  def set_params(self, params) -> None:
    """Swaps in new weights (same config and shardings) for the following steps."""
    self.params = params

  @property
  def has_work(self) -> bool:
    """Whether submitted requests are unfinished."""
    return bool(self._in_flight)

  def check_request(self, request: GenerateRequest) -> None:
    """Raises ValueError naming the request for empty or out-of-vocabulary input_ids, or a prompt
    of max_length tokens or more."""
    ids = np.asarray(request.input_ids)
    where = f"request {request.rid!r}"
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
      raise ValueError(f"{where}: input_ids must be a non-empty list of ints")
    if ids.min() < 0 or ids.max() >= self.cfg.vocab_size:
      raise ValueError(f"{where}: input_ids must be in [0, {self.cfg.vocab_size}), got "
                       f"min {ids.min()} max {ids.max()}")
    if ids.size >= self.max_length:
      raise ValueError(f"{where}: {ids.size} prompt tokens leave no room to generate in "
                       f"max_length={self.max_length}")

  def submit(self, request: GenerateRequest) -> None:
    """Queues a request (checked; its rid must not be in flight); `step` runs it."""
    self.check_request(request)
    if request.rid in self._in_flight:
      raise ValueError(f"request {request.rid!r}: rid already in flight")
    self._in_flight.add(request.rid)
    self._queue.append(self._start(request))

  def step(self) -> list[GenerateResult]:
    """One iteration: admit queued requests into free slots, write one chunk per busy slot,
    sample where ready; returns the requests finished by it."""
    finished = self._admit()
    if any(self._slots):
      logits, ready = self._write_pending()
      if ready:
        finished += self._sample(logits, ready)
    for result in finished:
      self._in_flight.discard(result.rid)
    return finished

  def abort_all(self) -> None:
    """Drops every submitted request (their results are never returned)."""
    self._queue.clear()
    self._slots = [None] * self.num_slots
    self._in_flight.clear()

  def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
    """Runs every request to its end on an idle engine; results in request order.

    Raises:
      ValueError: naming the request, for a rid repeated in `requests` or a bad request
        (`check_request`); nothing is run then.
      RuntimeError: the engine has other requests in flight.
    """
    if self.has_work:
      raise RuntimeError("generate needs an idle engine; it has requests in flight")
    rids = [r.rid for r in requests]
    for request in requests:
      self.check_request(request)
      if rids.count(request.rid) > 1:
        raise ValueError(f"request {request.rid!r}: rid repeated within one generate call")
    for request in requests:
      self.submit(request)
    results = {}
    try:
      while self.has_work:
        results.update((r.rid, r) for r in self.step())
    except BaseException:
      self.abort_all()
      raise
    return [results[rid] for rid in rids]

  def _admit(self) -> list[GenerateResult]:
    """Fills free slots from the queue (empty budgets finish at once) and empties their cache rows."""
    finished, reset = [], np.zeros(self.num_slots, bool)
    for b in range(self.num_slots):
      while self._slots[b] is None and self._queue:
        running = self._queue.popleft()
        if running.max_new == 0:
          finished.append(self._result(running, {"type": "length", "length": 0}))
        else:
          self._slots[b], reset[b] = running, True
    if reset.any():
      self.cache = models.reset_slots(self.cache, jnp.asarray(reset))
    return finished

  def _start(self, request: GenerateRequest) -> _Running:
    params = request.sampling
    prompt = np.asarray(request.input_ids, np.int32)
    room = self.max_length - prompt.size
    max_new = room if params.max_new_tokens is None else min(params.max_new_tokens, room)
    stop_ids = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else self.eos_token_ids)
    seed = params.sampling_seed if params.sampling_seed is not None else self._requests_started
    self._requests_started += 1
    return _Running(request, max_new, stop_ids, seed, prompt)

  def _write_pending(self):
    """One extend call writing each slot's next chunk; returns (logits [B, V], the slots whose
    pending tokens are all written, ready to sample)."""
    slots = self._slots
    take = np.array([0 if s is None else min(s.pending.size, self.prefill_chunk) for s in slots], np.int32)
    tokens = np.zeros((self.num_slots, _bucket(int(take.max()), self.prefill_chunk)), np.int32)
    for b, s in enumerate(slots):
      if s is not None:
        tokens[b, :take[b]] = s.pending[:take[b]]
        s.pending = s.pending[take[b]:]
    logits, self.cache = models.extend(self.cfg, self.params, self.cache, tokens, take,
                                       self.mesh_rules)
    return logits, [b for b, s in enumerate(slots) if s is not None and s.pending.size == 0]

  def _sample(self, logits, ready: list[int]) -> list[GenerateResult]:
    """Samples the next token of each ready slot; finishes requests at a stop id or their budget."""
    rows = [self._slots[b] if b in ready else None for b in range(self.num_slots)]
    default = sampling_lib.SamplingParams()
    params = [default if s is None else s.request.sampling for s in rows]
    tokens, logprobs = sampling_lib.sample_tokens(
        logits, self.seed,
        np.array([0 if s is None else s.sample_seed & 0xFFFFFFFF for s in rows], np.uint32),
        np.array([0 if s is None else len(s.output_ids) for s in rows], np.int32),
        np.array([p.temperature for p in params], np.float32),
        np.array([p.top_p for p in params], np.float32),
        np.array([p.top_k for p in params], np.int32),
        np.array([p.min_p for p in params], np.float32), self.vocab_limit,
        use_filters=any(p.needs_filter for p in params))
    tokens, logprobs = np.asarray(tokens), np.asarray(logprobs)
    finished = []
    for b in ready:
      s = self._slots[b]
      token = int(tokens[b])
      s.output_ids.append(token)
      s.output_logprobs.append(float(logprobs[b]))
      if token in s.stop_ids:
        finish = {"type": "stop", "matched": token}
      elif len(s.output_ids) >= s.max_new:
        finish = {"type": "length", "length": s.max_new}
      else:
        s.pending = np.array([token], np.int32)
        continue
      finished.append(self._result(s, finish))
      self._slots[b] = None
    return finished

  @staticmethod
  def _result(s: _Running, finish_reason: dict) -> GenerateResult:
    return GenerateResult(s.request.rid, np.array(s.output_ids, np.int32),
                          np.array(s.output_logprobs, np.float32), finish_reason,
                          len(s.request.input_ids))


class AsyncJaxEngine:
  """`await generate(request)` for many concurrent callers of one asyncio loop over a `JaxEngine`.

  Steps run one at a time in a worker thread while requests are in flight; requests submitted
  meanwhile join at the next step. An error inside a step fails every waiting call with it and
  drops the engine's requests, so no caller waits forever.
  """

  def __init__(self, engine: JaxEngine):
    self.engine = engine
    self._new: list[GenerateRequest] = []
    self._waiting: dict[str, asyncio.Future] = {}
    self._driver: asyncio.Task | None = None

  async def generate(self, request: GenerateRequest) -> GenerateResult:
    """The request's result. Raises ValueError for a bad request or a rid already in flight."""
    self.engine.check_request(request)
    if request.rid in self._waiting:
      raise ValueError(f"request {request.rid!r}: rid already in flight")
    future = asyncio.get_running_loop().create_future()
    self._waiting[request.rid] = future
    self._new.append(request)
    if self._driver is None or self._driver.done():
      self._driver = asyncio.create_task(self._drive())
    return await future

  def _step(self, new: list[GenerateRequest]) -> list[GenerateResult]:
    for request in new:
      self.engine.submit(request)
    return self.engine.step()

  async def _drive(self) -> None:
    try:
      while self._new or self.engine.has_work:
        new, self._new = self._new, []
        for result in await asyncio.to_thread(self._step, new):
          future = self._waiting.pop(result.rid)
          if not future.done():  # its caller may have been cancelled
            future.set_result(result)
    except Exception as error:  # fail every caller rather than leave one waiting
      self.engine.abort_all()
      self._new.clear()
      waiting, self._waiting = self._waiting, {}
      for future in waiting.values():
        if not future.done():
          future.set_exception(error)
