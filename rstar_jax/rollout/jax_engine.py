"""An in-process JAX generation engine over the slot KV cache, with continuous batching.

  engine = JaxEngine(cfg, params, num_slots=8, max_length=4096, eos_token_ids=(im_end_id,))
  results = engine.generate([GenerateRequest("r0", prompt_ids, SamplingParams(temperature=1.0)), ...])
  result = await AsyncJaxEngine(engine).generate(request)   # concurrent callers share the batch

Token ids go in and come out exactly (no text, no re-tokenization); `vocab_limit` (the tokenizer's
size) keeps the ids a checkpoint pads its vocabulary with from being sampled. The engine holds
its weights split by layer (`models.split_layers`, a copy of the caller's): its passes then
multiply by each layer's arrays in place instead of copying them out of the stacked ones. Each
iteration:
  - requests wait in submission order; free slots take the next ones as `admission.plan` says:
    a freed slot keeps the keys/values of its last sequence, and a request whose ids start with
    them takes that slot and writes only the rest (prefix reuse: the next turn of a multi-turn
    rollout prefills only the tool output); with `share_prefixes`, a request that shares at least
    MIN_SHARED_PREFIX more leading ids with a running request waits until that one has written
    them, then copies them into its slot (`models.copy_prefixes`) and writes only the rest, so the
    n samples of a prompt prefill it once and prompts sharing a system prompt compute it once
    while any of them runs; `cached_tokens` counts the reused and copied ids;
  - slots with several pending tokens (a prompt, over several iterations when longer than
    `prefill_chunk`: chunked prefill) write up to `prefill_chunk` of them in one `models.extend`
    over just those slots (rows and length padded to powers of two; on one device the real tokens
    are packed into one row of a `length_bucket`, so a long prompt beside short tool outputs
    costs their sum, not rows x the longest); then every decoding slot
    writes its last sampled token in one `models.extend` over all slots (T = 1);
  - a slot whose pending tokens are all written samples its next token (`sampling.sample_tokens`;
    in a step with no prefill, the decode call and the sampling run as one program);
    a stop id or the length budget finishes the request and frees the slot for the next one.
Prefill and decode share iterations, so a long prompt stalls the decoding slots by at most one
chunk, and a prefill costs only its own rows. Each call attends over a bucket of the longest live
length, or over the whole cache when that is cheaper (`WHOLE_CACHE_FRACTION`).
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
import contextlib
import contextvars
import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rstar_jax import models
from rstar_jax.models import MeshRules
from rstar_jax.rollout import admission as admission_lib
from rstar_jax.rollout import sampling as sampling_lib


@dataclasses.dataclass(frozen=True)
class GenerateRequest:
  """rid: the caller's id (unique within one `generate` call); input_ids: the prompt's token ids.

  stop_check: None, or `stop_check(output_ids) -> matched or None`, asked after each sampled token
  that is not a stop id: a match (e.g. a stop string seen in the decoded text) finishes the
  request with {"type": "stop", "matched": match}, the token that completed it last; an exception
  in it ends only this request, {"type": "abort", "message": ...}."""
  rid: str
  input_ids: Sequence[int]
  sampling: sampling_lib.SamplingParams = sampling_lib.SamplingParams()
  stop_check: Callable[[list[int]], str | None] | None = None


@dataclasses.dataclass
class GenerateResult:
  """output_ids: int32 [N] sampled ids (a matched stop id last); output_logprobs: fp32 [N],
  log softmax(z / temperature) of each (SGLang's convention); finish_reason: SGLang-shaped dict
  (None in a snapshot of a running request, `JaxEngine.progress`);
  cached_tokens: prompt ids whose keys/values were reused, not recomputed; weight_versions: the
  versions of the weights that produced the tokens, in order (a server's; empty in process)."""
  rid: str
  output_ids: np.ndarray
  output_logprobs: np.ndarray
  finish_reason: dict | None
  prompt_tokens: int
  cached_tokens: int = 0
  weight_versions: tuple[str, ...] = ()

  @property
  def completion_tokens(self) -> int:
    return int(self.output_ids.shape[0])


@dataclasses.dataclass(frozen=True)
class EngineLoad:
  """running: requests in slots; waiting: queued ones; used_tokens: cache positions the running
  requests have written; waiting_tokens: prompt ids of the queued ones."""
  running: int = 0
  waiting: int = 0
  used_tokens: int = 0
  waiting_tokens: int = 0


@dataclasses.dataclass
class _Running:
  """A submitted request: its prompt `input_ids`, the `pending` ids still to write; outputs so far."""
  request: GenerateRequest
  max_new: int
  stop_ids: frozenset
  sample_seed: int
  input_ids: np.ndarray
  pending: np.ndarray
  cached_tokens: int = 0
  wait_for: tuple[int, int] | None = None  # (source slot, n): copy n positions once it has written them
  output_ids: list = dataclasses.field(default_factory=list)
  output_logprobs: list = dataclasses.field(default_factory=list)

  def ids(self) -> np.ndarray:
    """Its ids so far: the prompt, then the outputs."""
    return np.concatenate([self.input_ids, np.asarray(self.output_ids, np.int32)])


@dataclasses.dataclass
class _Slot:
  """One slot of the cache: the request running in it (None: free), the ids its rows hold while
  free (reusable in place), when it was last freed, and its cache length (host copy)."""
  running: _Running | None = None
  held: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))
  freed_at: int = 0
  length: int = 0

  def state(self) -> admission_lib.SlotState:
    """What admission planning sees of it."""
    if self.running is None:
      return admission_lib.SlotState(held_ids=self.held, freed_at=self.freed_at)
    return admission_lib.SlotState(running_ids=self.running.ids(), freed_at=self.freed_at,
                                   waiting=self.running.wait_for is not None)


# Shorter shared prefixes are not worth a copy and the wait for their source.
MIN_SHARED_PREFIX = 32
# Attention over a bucket shorter than the cache first copies each layer's bucket of keys and values
# (XLA:CPU slices are copies), then reads it; over the whole cache it reads the arrays in place.
# So a call attends the whole cache once its bucket is at least 1/WHOLE_CACHE_FRACTION of it.
WHOLE_CACHE_FRACTION = 3


@functools.partial(jax.jit, static_argnames=("cfg", "mesh_rules", "attend_length", "use_filters", "all_greedy"),
                   donate_argnames=("cache",))
def _decode_and_sample(cfg, params, cache, tokens, num_new, attend_length, sampling_args, mesh_rules,
                       use_filters: bool, all_greedy: bool):
  """A decode call and the sampling of its rows as one program: ((tokens, logprobs) [B], cache)
  of `models.extend` then `sampling.sample_tokens(logits, *sampling_args)`. One dispatch and a
  [B] transfer instead of two dispatches and the [B, V] logits between them (~10% of a small
  model's decode step on CPU)."""
  logits, cache = models.extend(cfg, params, cache, tokens, num_new, mesh_rules, attend_length=attend_length)
  return sampling_lib.sample_tokens(logits, *sampling_args, use_filters=use_filters, all_greedy=all_greedy), cache


def kv_bytes_per_slot(cfg: models.ModelConfig, max_length: int) -> int:
  """Bytes of keys and values one slot of `max_length` positions holds: 2 x L x K x S x D x itemsize."""
  return 2 * cfg.num_layers * cfg.num_kv_heads * max_length * cfg.head_dim * jnp.dtype(cfg.dtype).itemsize


def _bucket(n: int, limit: int) -> int:
  """The padded size: the next power of two >= n, at most `limit`."""
  return min(1 << max(n - 1, 0).bit_length(), limit)


def length_bucket(n: int) -> int:
  """n rounded up to a quarter-octave bucket: 128 at least, then multiples of 2^(k-2) in
  (2^(k-1), 2^k] (130 -> 160, 300 -> 320, 5000 -> 5120). Four compiled variants per doubling of
  the context, at most 25% attended in vain."""
  if n <= 128:
    return 128
  step = 1 << max((n - 1).bit_length() - 3, 0)
  return -(-n // step) * step


class JaxEngine:
  """Generates for requests on one model (module docstring). Not thread-safe: one caller at a
  time (`AsyncJaxEngine` serializes the steps for an asyncio loop)."""

  def __init__(self, cfg: models.ModelConfig, params, *, num_slots: int, max_length: int,
               eos_token_ids: Sequence[int], prefill_chunk: int = 256, seed: int = 0,
               vocab_limit: int | None = None, mesh_rules: MeshRules | None = None,
               share_prefixes: bool = True, kv_budget_bytes: int | None = None):
    if num_slots < 1 or max_length < 2 or prefill_chunk < 1:
      raise ValueError(f"need num_slots >= 1, max_length >= 2 and prefill_chunk >= 1, got "
                       f"{num_slots}, {max_length}, {prefill_chunk}")
    bad_eos = [t for t in eos_token_ids if not 0 <= t < cfg.vocab_size]
    if bad_eos:
      raise ValueError(f"eos_token_ids {bad_eos} are outside the vocabulary [0, {cfg.vocab_size})")
    if vocab_limit is not None and not 0 < vocab_limit <= cfg.vocab_size:
      raise ValueError(f"vocab_limit must be in [1, {cfg.vocab_size}], got {vocab_limit}")
    self.kv_bytes_per_slot = kv_bytes_per_slot(cfg, max_length)
    if kv_budget_bytes is not None and num_slots * self.kv_bytes_per_slot > kv_budget_bytes:
      raise ValueError(
          f"the KV cache does not fit its budget: {num_slots} slots x {self.kv_bytes_per_slot / 2**20:.1f} MiB "
          f"({max_length} positions x {cfg.num_layers} layers x {cfg.num_kv_heads} kv heads x {cfg.head_dim} x 2 "
          f"(keys, values) x {jnp.dtype(cfg.dtype).itemsize} bytes) = {num_slots * self.kv_bytes_per_slot / 2**20:.1f} "
          f"MiB > kv_budget_bytes {kv_budget_bytes / 2**20:.1f} MiB: fewer slots or a shorter max_length")
    self.cfg, self.params, self.mesh_rules = cfg, models.split_layers(params), mesh_rules
    self.vocab_limit = vocab_limit
    self.num_slots, self.max_length, self.prefill_chunk = num_slots, max_length, prefill_chunk
    self.eos_token_ids = frozenset(int(t) for t in eos_token_ids)
    self.seed = seed
    self.share_prefixes = share_prefixes
    self.cache = models.init_cache(cfg, num_slots, max_length, mesh_rules=mesh_rules)
    self._requests_started = 0
    self._queue: collections.deque[_Running] = collections.deque()
    self._slots = [_Slot() for _ in range(num_slots)]
    self._in_flight: set[str] = set()
    self._iterations = 0

  def set_params(self, params) -> None:
    """Swaps in new weights (same config and shardings) for the following steps; cached prefixes
    of the old weights are no longer reused."""
    self.params = models.split_layers(params)
    self.flush_cache()

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
    self._iterations += 1
    self._copy_shared_prefixes()  # before admission may hand a finished source's slot to another
    finished = self._admit()
    if any(slot.running for slot in self._slots):
      finished += self._write_and_sample()
    for result in finished:
      self._in_flight.discard(result.rid)
    return finished

  def abort(self, rid_prefix: str = "", exact: bool = False) -> list[GenerateResult]:
    """Ends the submitted requests whose rid starts with `rid_prefix` (SGLang's match; "": all)
    or, `exact`, equals it, and returns their results so far, finish_reason
    {"type": "abort", "message": "Aborted"}.

    A request waiting to copy a shared prefix from an aborted one computes its prompt itself."""
    def matches(running: _Running) -> bool:
      rid = running.request.rid
      return rid == rid_prefix if exact else rid.startswith(rid_prefix)

    aborted = [r for r in self._queue if matches(r)]
    self._queue = collections.deque(r for r in self._queue if not matches(r))
    gone = set()
    for b, slot in enumerate(self._slots):
      if slot.running is not None and matches(slot.running):
        aborted.append(slot.running)
        slot.running, slot.held, slot.freed_at = None, np.zeros(0, np.int32), self._iterations
        gone.add(b)
    for slot in self._slots:
      waiting = slot.running
      if waiting is not None and waiting.wait_for is not None and waiting.wait_for[0] in gone:
        waiting.wait_for, waiting.cached_tokens, waiting.pending = None, 0, waiting.input_ids
    results = [self._result(r, {"type": "abort", "message": "Aborted"}) for r in aborted]
    for result in results:
      self._in_flight.discard(result.rid)
    return results

  def abort_all(self) -> None:
    """Drops every submitted request (their results are never returned) and the cached prefixes."""
    self.abort()
    self.flush_cache()

  def flush_cache(self) -> None:
    """Forgets the ids free slots hold, so no later request reuses their keys and values."""
    for slot in self._slots:
      slot.held = np.zeros(0, np.int32)

  def load(self) -> "EngineLoad":
    """How busy the engine is now (call between steps)."""
    busy = [slot for slot in self._slots if slot.running is not None]
    return EngineLoad(running=len(busy), waiting=len(self._queue),
                      used_tokens=sum(slot.length for slot in busy),
                      waiting_tokens=sum(int(r.input_ids.size) for r in self._queue))

  def progress(self, rids: set[str]) -> dict[str, GenerateResult]:
    """The running requests among `rids` that have sampled tokens: their results so far
    (finish_reason None). Call between steps."""
    return {slot.running.request.rid: self._result(slot.running, None) for slot in self._slots
            if slot.running is not None and slot.running.output_ids and slot.running.request.rid in rids}

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
    counts = collections.Counter(rids)
    for request in requests:
      self.check_request(request)
      if counts[request.rid] > 1:
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
    """Fills free slots from the queue as `admission.plan` says (empty budgets finish at once)."""
    finished, batch = [], []
    free = sum(slot.running is None for slot in self._slots)
    while self._queue and len(batch) < free:
      running = self._queue.popleft()
      if running.max_new == 0:
        finished.append(self._result(running, {"type": "length", "length": 0}))
      else:
        batch.append(running)
    if not batch:  # most steps: nothing to plan (the slot states copy every running sequence's ids)
      return finished
    plans = admission_lib.plan([slot.state() for slot in self._slots], [r.input_ids for r in batch],
                               self.share_prefixes, MIN_SHARED_PREFIX)
    for running, plan in zip(batch, plans):
      slot = self._slots[plan.slot]
      running.cached_tokens = plan.cached_tokens
      running.pending = running.input_ids[plan.cached_tokens:]
      if plan.source is not None:
        running.wait_for = (plan.source, plan.shared)
      slot.running, slot.held, slot.length = running, np.zeros(0, np.int32), plan.reused
    self.cache = self.cache.replace(lengths=self.cache.lengths.at[jnp.asarray([p.slot for p in plans])].set(
        jnp.asarray([p.reused for p in plans], jnp.int32)))
    return finished

  def _copy_shared_prefixes(self) -> None:
    """Copies the shared prefixes whose sources have written them into the waiting slots."""
    due = [b for b, slot in enumerate(self._slots) if slot.running is not None and slot.running.wait_for
           is not None and self._slots[slot.running.wait_for[0]].length >= slot.running.wait_for[1]]
    if not due:
      return
    sources, lengths = zip(*(self._slots[b].running.wait_for for b in due))
    self.cache = models.copy_prefixes(self.cache, sources, due, lengths)
    for b, length in zip(due, lengths):
      self._slots[b].length, self._slots[b].running.wait_for = length, None

  def _start(self, request: GenerateRequest) -> _Running:
    params = request.sampling
    prompt = np.asarray(request.input_ids, np.int32)
    room = self.max_length - prompt.size
    max_new = room if params.max_new_tokens is None else min(params.max_new_tokens, room)
    stop_ids = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else self.eos_token_ids)
    seed = params.sampling_seed if params.sampling_seed is not None else self._requests_started
    self._requests_started += 1
    return _Running(request, max_new, stop_ids, seed, prompt, prompt)

  def _take(self, rows: list[int], active: list[int], width: int):
    """(tokens [len(rows), width] right-padded, num_new): the next pending chunk of each row's
    slot if it is in `active`, else nothing (num_new 0)."""
    tokens = np.zeros((len(rows), width), np.int32)
    num_new = np.zeros(len(rows), np.int32)
    for i, b in enumerate(rows):
      if b in active:
        s = self._slots[b].running
        num_new[i] = min(s.pending.size, width)
        tokens[i, :num_new[i]] = s.pending[:num_new[i]]
        s.pending = s.pending[num_new[i]:]
    return tokens, num_new

  def _write_and_sample(self) -> list[GenerateResult]:
    """Writes every busy slot's next chunk and samples the slots whose pending ids are all
    written; returns the requests that finished. A step that only decodes (most steps) runs
    as one program (`_decode_and_sample`)."""
    pending = [0 if slot.running is None or slot.running.wait_for is not None else slot.running.pending.size
               for slot in self._slots]
    prefill = [b for b, n in enumerate(pending) if n > 1]
    decode = [b for b, n in enumerate(pending) if n == 1]
    if decode and not prefill:
      args, flags = self._sampling_args(decode)
      (sampled, logprobs), self.cache = _decode_and_sample(self.cfg, self.params, self.cache,
                                                           *self._decode_inputs(decode), args, self.mesh_rules,
                                                           **flags)
      return self._record(sampled, logprobs, decode)
    if not (prefill or decode):
      return []
    logits, ready = self._write_pending(pending, prefill, decode)
    if not ready:
      return []
    args, flags = self._sampling_args(ready)
    sampled, logprobs = sampling_lib.sample_tokens(logits, *args, **flags)
    return self._record(sampled, logprobs, ready)

  def _write_pending(self, pending: list[int], prefill: list[int], decode: list[int]):
    """The decode call (the `decode` slots, one pending id each) then the prefill call (the
    `prefill` slots, several); returns (logits [B, V], the slots whose pending ids are all
    written, ready to sample)."""
    logits = None
    if decode:
      tokens, num_new, attend_length = self._decode_inputs(decode)
      logits, self.cache = models.extend(self.cfg, self.params, self.cache, tokens, num_new, self.mesh_rules,
                                         attend_length=attend_length)
    if prefill:
      # pad the rows with other slots (num_new 0: they are read and written back unchanged)
      others = [b for b in range(self.num_slots) if b not in prefill]
      rows = prefill + others[:_bucket(len(prefill), self.num_slots) - len(prefill)]
      width = _bucket(max(min(pending[b], self.prefill_chunk) for b in prefill), self.prefill_chunk)
      tokens, num_new = self._take(rows, prefill, width)
      prefill_logits, self.cache = models.extend(self.cfg, self.params, self.cache, tokens, num_new,
                                                 self.mesh_rules, slots=np.array(rows, np.int32),
                                                 attend_length=self._attend_length(rows, num_new),
                                                 packed_length=self._packed_length(tokens.size, num_new))
      if logits is None:
        logits = jnp.zeros((self.num_slots, prefill_logits.shape[-1]), prefill_logits.dtype)
      logits = logits.at[jnp.asarray(prefill)].set(prefill_logits[:len(prefill)])
    ready = [b for b in prefill + decode if self._slots[b].running.pending.size == 0]
    return logits, ready

  def _decode_inputs(self, decode: list[int]):
    """(tokens [B, 1], num_new [B], attend_length) of a decode call over all slots: the one
    pending id of each `decode` slot; the other rows write nothing."""
    rows = list(range(self.num_slots))
    tokens, num_new = self._take(rows, decode, 1)
    return tokens, num_new, self._attend_length(rows, num_new)

  def _packed_length(self, padded: int, num_new: np.ndarray) -> int | None:
    """The row a prefill's tokens are packed into (`models.extend`'s packed_length): their count
    rounded up to a `length_bucket`, when that is shorter than the padded rows x width; None
    (padded) otherwise and on a mesh."""
    packed = length_bucket(int(num_new.sum()))
    return packed if self.mesh_rules is None and packed < padded else None

  def _attend_length(self, rows: list[int], num_new: np.ndarray) -> int:
    """The attended positions of an extend call: the longest length after it among the rows that
    write (idle rows' outputs are not used) rounded up to a bucket (`length_bucket`), or all of
    max_length once the bucket is 1/WHOLE_CACHE_FRACTION of it; updates the host copy of the lengths."""
    for b, n in zip(rows, num_new):
      self._slots[b].length += int(n)
    longest = max(self._slots[b].length for b, n in zip(rows, num_new) if n > 0)
    bucket = length_bucket(longest)
    return self.max_length if bucket * WHOLE_CACHE_FRACTION >= self.max_length else bucket

  def _sampling_args(self, ready: list[int]) -> tuple[tuple, dict]:
    """`sampling.sample_tokens`' arguments after the logits, and its static flags, for sampling
    the `ready` slots (the other rows sample greedily, the cheapest, and are not read)."""
    rows = [self._slots[b].running if b in ready else None for b in range(self.num_slots)]
    default = sampling_lib.SamplingParams(temperature=0.0)
    params = [default if s is None else s.request.sampling for s in rows]
    args = (self.seed,
            np.array([0 if s is None else s.sample_seed & 0xFFFFFFFF for s in rows], np.uint32),
            np.array([0 if s is None else len(s.output_ids) for s in rows], np.int32),
            np.array([p.temperature for p in params], np.float32),
            np.array([p.top_p for p in params], np.float32),
            np.array([p.top_k for p in params], np.int32),
            np.array([p.min_p for p in params], np.float32), self.vocab_limit)
    flags = dict(use_filters=any(p.needs_filter for p in params), all_greedy=all(p.is_greedy for p in params))
    return args, flags

  def _record(self, tokens, logprobs, ready: list[int]) -> list[GenerateResult]:
    """Appends each ready slot's sampled token (tokens, logprobs: [B]); finishes requests at a
    stop id, a stop_check match or their budget, freeing their slots."""
    tokens, logprobs = np.asarray(tokens), np.asarray(logprobs)
    finished = []
    for b in ready:
      s = self._slots[b].running
      token = int(tokens[b])
      s.output_ids.append(token)
      s.output_logprobs.append(float(logprobs[b]))
      matched, failure = None, None
      if token not in s.stop_ids and s.request.stop_check is not None:
        try:
          matched = s.request.stop_check(s.output_ids)
        except Exception as e:  # pylint: disable=broad-except  # ends this request only
          failure = f"stop_check failed: {type(e).__name__}: {e}"
      if failure is not None:
        finish = {"type": "abort", "message": failure}
      elif token in s.stop_ids:
        finish = {"type": "stop", "matched": token}
      elif matched is not None:
        finish = {"type": "stop", "matched": matched}
      elif len(s.output_ids) >= s.max_new:
        finish = {"type": "length", "length": s.max_new}
      else:
        s.pending = np.array([token], np.int32)
        continue
      finished.append(self._result(s, finish))
      slot = self._slots[b]
      slot.running, slot.held, slot.freed_at = None, s.ids()[:-1], self._iterations
    return finished

  @staticmethod
  def _result(s: _Running, finish_reason: dict | None) -> GenerateResult:
    return GenerateResult(s.request.rid, np.array(s.output_ids, np.int32),
                          np.array(s.output_logprobs, np.float32), finish_reason,
                          int(s.input_ids.size), s.cached_tokens)


class AsyncJaxEngine:
  """`await generate(request)` for many concurrent callers of one asyncio loop over a `JaxEngine`.

  Steps run one at a time in a worker thread while requests are in flight; requests submitted
  meanwhile join at the next step. An error inside a step fails every waiting call with it and
  drops the engine's requests, so no caller waits forever. Between steps (never during one):
  `abort(rid_prefix)` ends matching requests, whose callers get their tokens so far with an
  "abort" finish reason; `pause()` stops stepping until `resume()` (requests keep their slots);
  `set_params` swaps the weights. A caller cancelled while waiting has its request aborted.
  `generate(request, on_progress)` also hands the caller each step's snapshot of its request
  (tokens so far, finish_reason None), for streaming.

  Lockstep (`lockstep=True`): a step starts only when every caller that entered `caller()` is
  waiting on the engine or has left, and the requests of a step are submitted in rid order. The
  schedule (which request runs in which slot at which step) then depends only on the requests,
  not on how long tool calls take, so a run repeats bitwise on the same machine; the price is
  that decoding pauses while any tracked caller is busy elsewhere (its tool call). Callers that
  never enter `caller()` are not waited for.
  """

  def __init__(self, engine: JaxEngine, lockstep: bool = False):
    self.engine = engine
    self.lockstep = lockstep
    self._new: list[GenerateRequest] = []
    self._waiting: dict[str, tuple[asyncio.Future, bool]] = {}
    self._watchers: dict[str, Callable[[GenerateResult], None]] = {}
    self._driver: asyncio.Task | None = None
    self._busy_callers = 0  # tracked callers neither waiting on the engine nor gone
    self._settled = asyncio.Event()
    self._tracked = contextvars.ContextVar(f"tracked_{id(self)}", default=False)
    self._between_steps = asyncio.Lock()  # held while a step runs in the worker thread
    self._unpaused = asyncio.Event()
    self._unpaused.set()
    self._idle = asyncio.Event()
    self._idle.set()
    self._cancelled: set[str] = set()
    self._stepped = asyncio.Condition()  # notified after every step
    self.last_load = EngineLoad()

  @contextlib.asynccontextmanager
  async def caller(self):
    """Marks the current task as one rollout's caller, waited for in lockstep mode."""
    token = self._tracked.set(True)
    self._busy_callers += 1
    try:
      yield self
    finally:
      self._tracked.reset(token)
      self._change_busy(-1)

  def _change_busy(self, delta: int) -> None:
    self._busy_callers += delta
    if self._busy_callers == 0:
      self._settled.set()

  @property
  def in_flight(self) -> int:
    """Requests submitted by callers and not yet answered."""
    return len(self._waiting)

  @property
  def paused(self) -> bool:
    return not self._unpaused.is_set()

  async def generate(self, request: GenerateRequest,
                     on_progress: Callable[[GenerateResult], None] | None = None) -> GenerateResult:
    """The request's result. `on_progress`, if given, is called on the event loop after each
    step that sampled tokens for it, with its result so far (finish_reason None), never after
    this returns. Raises ValueError for a bad request or a rid already in flight."""
    self.engine.check_request(request)
    if request.rid in self._cancelled:  # its cancelled namesake leaves the engine at the next step
      async with self._stepped:
        await self._stepped.wait_for(lambda: request.rid not in self._cancelled)
    if request.rid in self._waiting:
      raise ValueError(f"request {request.rid!r}: rid already in flight")
    future = asyncio.get_running_loop().create_future()
    tracked = self._tracked.get()
    self._waiting[request.rid] = (future, tracked)
    if on_progress is not None:
      self._watchers[request.rid] = on_progress
    self._idle.clear()
    self._new.append(request)
    if tracked:
      self._change_busy(-1)
    self._ensure_driver()
    try:
      return await future
    except asyncio.CancelledError:
      if self._waiting.get(request.rid, (None,))[0] is future:  # not handed back by the driver
        self._forget(request.rid)
        unsubmitted = [i for i, r in enumerate(self._new) if r is request]
        if unsubmitted:
          del self._new[unsubmitted[0]]
        else:  # in the engine (or being submitted): aborted before the next step
          self._cancelled.add(request.rid)
          self._ensure_driver()
        if tracked:
          self._change_busy(+1)
      raise

  async def abort(self, rid_prefix: str = "") -> int:
    """Ends the requests whose rid starts with `rid_prefix` ("": all), queued or running, after
    the current step; returns how many were ended."""
    async with self._between_steps:
      unsubmitted = [r for r in self._new if r.rid.startswith(rid_prefix)]
      self._new = [r for r in self._new if not r.rid.startswith(rid_prefix)]
      results = [GenerateResult(r.rid, np.zeros(0, np.int32), np.zeros(0, np.float32),
                                {"type": "abort", "message": "Abort in waiting queue"}, len(r.input_ids))
                 for r in unsubmitted] + self.engine.abort(rid_prefix)
      self.last_load = self.engine.load()
    for result in results:
      self._deliver(result.rid, result, None)
    return len(results)

  def pause(self) -> None:
    """Stops stepping after the current step; requests keep their slots and new ones queue."""
    self._unpaused.clear()

  def resume(self) -> None:
    self._unpaused.set()

  async def set_params(self, params) -> None:
    """Swaps the engine's weights between steps (cached prefixes dropped)."""
    async with self._between_steps:
      self.engine.set_params(params)

  async def flush_cache(self) -> None:
    async with self._between_steps:
      self.engine.flush_cache()

  async def wait_idle(self) -> None:
    """Returns once no request is in flight."""
    await self._idle.wait()

  def _ensure_driver(self) -> None:
    if self._driver is None or self._driver.done():
      self._driver = asyncio.create_task(self._drive())

  def _forget(self, rid: str) -> None:
    del self._waiting[rid]
    self._watchers.pop(rid, None)
    if not self._waiting:
      self._idle.set()

  def _step(self, new: list[GenerateRequest], cancelled: set[str],
            watched: set[str]) -> tuple[list[GenerateResult], dict[str, GenerateResult]]:
    """(requests finished by one step, snapshots of the running `watched` ones)."""
    for rid in cancelled:  # submitted before its caller was cancelled: nobody waits for it
      self.engine.abort(rid, exact=True)
    for request in new:
      self.engine.submit(request)
    finished = self.engine.step()
    self.last_load = self.engine.load()
    return finished, self.engine.progress(watched) if watched else {}

  async def _wait_for_callers(self) -> None:
    while self._busy_callers > 0:
      self._settled.clear()
      await self._settled.wait()

  def _deliver(self, rid: str, result: GenerateResult | None, error: BaseException | None) -> None:
    if rid not in self._waiting:  # its cancelled caller took it back
      return
    future, tracked = self._waiting[rid]
    self._forget(rid)
    if tracked:  # the caller is busy again from now on (not from when its task resumes)
      self._change_busy(+1)
    if future.done():  # cancelled
      return
    if error is None:
      future.set_result(result)
    else:
      future.set_exception(error)

  async def _drive(self) -> None:
    try:
      while self._new or self._cancelled or self.engine.has_work:
        await self._unpaused.wait()
        if self.lockstep:
          await self._wait_for_callers()
          self._new.sort(key=lambda request: request.rid)
        async with self._between_steps:
          new, self._new = self._new, []
          cancelled, self._cancelled = self._cancelled, set()
          finished, snapshots = await asyncio.to_thread(self._step, new, cancelled, set(self._watchers))
        for rid, snapshot in snapshots.items():
          if rid in self._watchers:
            self._watchers[rid](snapshot)
        for result in finished:
          self._deliver(result.rid, result, None)
        async with self._stepped:
          self._stepped.notify_all()
    except Exception as error:  # fail every caller rather than leave one waiting
      self.engine.abort_all()
      self._new.clear()
      self._cancelled.clear()
      for rid in list(self._waiting):
        self._deliver(rid, None, error)
      async with self._stepped:
        self._stepped.notify_all()
