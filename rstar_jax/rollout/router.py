"""Rollouts across several inference servers, placed by the KV cache each reports free (PAPER.md §5.2's scheduler).

  router = Router.from_urls(["http://127.0.0.1:30000", "http://127.0.0.1:30001"])
  async with router:
    batch = await rollout_problems(router, tools, tokenizer, problems, n, config, seed)

A rollout is the span of one `caller()` context (`rollout_problems` opens one per rollout; a
`generate` outside any is a rollout of one turn). Placement (`choose_server`, a pure function the
simulation `benchmarks/router_sim.py` shares):
  - a new rollout goes to the healthy server with the most free KV tokens, free = capacity - the
    tokens the server last reported in use - the footprints of the rollouts placed there since,
    among the servers where its footprint (prompt + the response `ResponseEstimate` expects:
    default "mean", the mean response of the rollouts finished so far, the turn's max_new_tokens
    until one has) fits, that run fewer than max_running of our requests, and whose queue is
    short: fewer than `max_waiting_per_server` requests waiting (`queued`: the last report,
    updated by the requests sent and answered since);
    if none qualifies, it waits until a turn returns, a rollout ends or the next poll
    (`poll_interval_s`);
  - all later turns go to the same server, whose prefix cache holds the rollout so far, and are
    never held back;
  - a server that stops answering (the client's retries spent) is marked down and probed every
    `health_interval_s`; its rollouts move to another server, resubmitting the turn that failed
    (its ids are the rollout up to its last turn boundary), so none is lost; they are placed
    before any new rollout (none is placed while a moved one waits).
Why no reservations: SGLang's admission already guards its cache (it sets output room aside for
every request it admits and retracts on overflow). What a router adds is to keep the server's
first-come-first-served queue short, so that a rollout's next turn is not queued behind new
rollouts while its cached prefix is evicted. Reserving each rollout's expected footprint on top
held back rollouts the servers would have run: smaller decode batches, lower throughput at 256, 512
and 1024 rollouts per server in `benchmarks/router_sim.py`.
"""
import asyncio
import contextlib
import contextvars
import dataclasses
import time
from typing import Sequence

from rstar_jax.rollout import jax_engine
from rstar_jax.rollout import sglang_client


# New rollouts go to a server while fewer requests than this wait in its queue (module docstring).
MAX_WAITING = 8
# Seconds between load polls while rollouts wait to be placed (the paper's prototype polled every 0.1 s).
POLL_INTERVAL_S = 0.1


@dataclasses.dataclass(frozen=True)
class ServerView:
  """What placement sees of one server: free KV tokens, our requests in flight there and their cap,
  requests waiting in its queue."""
  free_tokens: int
  in_flight: int
  max_in_flight: int
  waiting: int = 0
  healthy: bool = True


def queued(reported: int, sent: int, ended: int, in_flight: int, max_running: int) -> int:
  """Requests waiting in a server's queue, estimated between polls: the `reported` count, plus the
  requests `sent` since, less one for each of ours that `ended` since (its slot went to the next in
  line); at least those of ours beyond the server's max_running."""
  return max(reported + sent - ended, in_flight - max_running, 0)


def choose_server(servers: Sequence[ServerView], footprint: int, max_waiting: int = MAX_WAITING) -> int | None:
  """The healthy server below its in-flight cap, with fewer than `max_waiting` requests queued and
  the most free tokens, if `footprint` fits there (ties: the fewest in flight, then the lowest
  index); None: no server can take it now."""
  candidates = [(s.free_tokens, -s.in_flight, -i) for i, s in enumerate(servers)
                if s.healthy and s.in_flight < s.max_in_flight and s.waiting < max_waiting
                and s.free_tokens >= footprint]
  return -max(candidates)[2] if candidates else None


@dataclasses.dataclass
class ResponseEstimate:
  """The response tokens a new rollout is expected to generate: with its prompt, the free KV a
  server needs to take it.

  mode "mean": the mean response of the rollouts finished so far (`add`), the budget until one
  has; "budget": the budget (the turn's max_new_tokens; None: no limit, 1); an int: that number,
  at most the budget.
  """
  mode: str | int = "mean"
  finished: int = 0
  finished_tokens: int = 0

  def __post_init__(self):
    if self.mode not in ("mean", "budget") and not (
        isinstance(self.mode, int) and not isinstance(self.mode, bool) and self.mode >= 1):
      raise ValueError(f"expected_response_tokens must be 'mean', 'budget' or a positive int, got {self.mode!r}")

  def add(self, response_tokens: int) -> None:
    """A rollout ended having generated `response_tokens` (tool outputs included)."""
    self.finished += 1
    self.finished_tokens += response_tokens

  def expected(self, budget: int | None) -> int:
    if self.mode == "budget" or (self.mode == "mean" and not self.finished):
      guess = budget
    else:
      guess = round(self.finished_tokens / self.finished) if self.mode == "mean" else self.mode
    if budget is not None:
      guess = min(guess, budget)
    return max(guess if guess is not None else 1, 1)

  def footprint(self, length: int, budget: int | None, largest: int) -> int:
    """The KV tokens a new rollout of `length` ids needs free: length + the expected response, at
    most `largest` (the biggest server's whole cache: such a rollout waits for an empty one)."""
    return min(length + self.expected(budget), largest)


@dataclasses.dataclass
class _Server:
  """One server as the router knows it: its last load report, and what was sent since."""
  engine: sglang_client.SGLangEngine
  capacity: int = 0
  max_running: int = 0
  reported_used: int = 0
  reported_waiting: int = 0
  placed_tokens: int = 0     # footprints of the rollouts placed here since the report
  sent: int = 0              # our requests sent here since the report
  ended: int = 0             # our requests answered here since the report
  in_flight: int = 0
  healthy: bool = True
  down_since: float = 0.0
  rollouts: int = 0

  def view(self, max_in_flight: int | None) -> ServerView:
    """max_in_flight: None = the server's max_running."""
    return ServerView(self.capacity - self.reported_used - self.placed_tokens, self.in_flight,
                      max_in_flight or self.max_running,
                      queued(self.reported_waiting, self.sent, self.ended, self.in_flight, self.max_running),
                      self.healthy)


@dataclasses.dataclass
class _Rollout:
  server: int | None = None
  prompt: int = 0            # ids of its first turn
  length: int = 0            # ids after its last answered turn


class Router:
  """`await generate(request)` over several servers (module docstring)."""

  def __init__(self, engines: Sequence[sglang_client.SGLangEngine], *, expected_response_tokens: int | str = "mean",
               max_in_flight_per_server: int | None = None, max_waiting_per_server: int = MAX_WAITING,
               poll_interval_s: float = POLL_INTERVAL_S, health_interval_s: float = 2.0, give_up_s: float = 600.0):
    """max_in_flight_per_server: None = each server's max_running_requests."""
    if not engines:
      raise ValueError("Router needs at least one server")
    self._servers = [_Server(engine) for engine in engines]
    self._estimate = ResponseEstimate(expected_response_tokens)
    self._max_in_flight, self._max_waiting = max_in_flight_per_server, max_waiting_per_server
    self._poll_interval_s, self._health_interval_s, self._give_up_s = poll_interval_s, health_interval_s, give_up_s
    self._last_poll = -float("inf")
    self._changed = asyncio.Condition()
    self._placing = asyncio.Lock()  # one placement at a time, oldest first (asyncio.Lock is FIFO)
    self._moved_waiting = 0  # rollouts moved off a failed server, waiting to be placed again
    self._rollout = contextvars.ContextVar(f"rollout_{id(self)}", default=None)
    self.moved_turns = 0

  @classmethod
  def from_urls(cls, urls: Sequence[str], api_key: str | None = None, retries: int = 2,
                eos_token_ids: Sequence[int] = (), **kwargs) -> "Router":
    """eos_token_ids: the servers' model's EOS ids (`SGLangEngine`'s)."""
    return cls([sglang_client.SGLangEngine(url, api_key=api_key, retries=retries, eos_token_ids=eos_token_ids)
                for url in urls], **kwargs)

  @property
  def engines(self) -> list[sglang_client.SGLangEngine]:
    return [s.engine for s in self._servers]

  @property
  def rollouts_per_server(self) -> list[int]:
    return [s.rollouts for s in self._servers]

  async def __aenter__(self) -> "Router":
    await self.refresh(force=True)
    if not any(s.healthy for s in self._servers):
      await self.close()
      raise sglang_client.ServerUnavailable(f"no server answers: {[s.engine.url for s in self._servers]}")
    return self

  async def __aexit__(self, *exc_info) -> None:
    await self.close()

  async def close(self) -> None:
    """Closes the HTTP sessions (the servers keep running)."""
    for server in self._servers:
      await server.engine.close()

  async def refresh(self, force: bool = False) -> None:
    """Reads every server's load (at most every poll_interval_s unless forced); probes down servers."""
    now = time.monotonic()
    if not force and now - self._last_poll < self._poll_interval_s:
      return
    self._last_poll = now

    async def poll(server: _Server) -> None:
      if not server.healthy and now - server.down_since < self._health_interval_s:
        return
      placed, sent, ended = server.placed_tokens, server.sent, server.ended
      try:
        load = await server.engine.load()
      except Exception:  # pylint: disable=broad-except  # no usable answer: probed again later
        self._mark_down(server)
        return
      server.capacity, server.reported_used, server.healthy = load.capacity_tokens, load.used_tokens, True
      server.reported_waiting = load.waiting
      server.placed_tokens -= placed  # the report holds them; what changed during the poll still counts
      server.sent -= sent
      server.ended -= ended
      server.max_running = load.max_running

    await asyncio.gather(*(poll(s) for s in self._servers))
    async with self._changed:
      self._changed.notify_all()

  def _mark_down(self, server: _Server) -> None:
    server.healthy, server.down_since = False, time.monotonic()

  @contextlib.asynccontextmanager
  async def caller(self):
    """One rollout: its turns share a server."""
    rollout = _Rollout()
    token = self._rollout.set(rollout)
    try:
      yield self
      if rollout.length:  # ended normally: its response counts toward the estimate
        self._estimate.add(rollout.length - rollout.prompt)
    finally:
      self._rollout.reset(token)

  async def _place(self, rollout: _Rollout, length: int, budget: int | None, moved: bool) -> None:
    """Binds the rollout to a server with room for its footprint, `length` + the expected response
    (re-estimated on every try: rollouts ending meanwhile change the mean) and a short queue,
    waiting for one. New rollouts are placed one at a time in the order they asked, so a change
    wakes one placement, not every waiting rollout; a rollout moved off a failed server (`moved`)
    goes before all of them: no new rollout is placed while one waits."""
    if not moved:
      async with self._placing:
        return await self._place_now(rollout, length, budget, moved)
    self._moved_waiting += 1
    try:
      await self._place_now(rollout, length, budget, moved)
    finally:  # no await from here to the caller counting the turn in flight: the slot stays ours
      self._moved_waiting -= 1

  async def _place_now(self, rollout: _Rollout, length: int, budget: int | None, moved: bool) -> None:
    waited_since = time.monotonic()
    while True:
      await self.refresh()
      largest = max([s.capacity for s in self._servers if s.healthy], default=0)
      footprint = self._estimate.footprint(length, budget, largest)
      choice = (None if self._moved_waiting and not moved else
                choose_server([s.view(self._max_in_flight) for s in self._servers], footprint, self._max_waiting))
      if choice is not None:
        rollout.server = choice
        self._servers[choice].placed_tokens += footprint
        self._servers[choice].rollouts += 1
        return
      if not any(s.healthy for s in self._servers) and time.monotonic() - waited_since > self._give_up_s:
        raise sglang_client.ServerUnavailable(f"no server answered for {self._give_up_s:.0f} s")
      async with self._changed:
        try:
          await asyncio.wait_for(self._changed.wait(), self._poll_interval_s)
        except asyncio.TimeoutError:
          pass

  async def generate(self, request: jax_engine.GenerateRequest) -> jax_engine.GenerateResult:
    """The request's result from its rollout's server (module docstring)."""
    rollout = self._rollout.get()
    if rollout is None:  # a rollout of one turn
      async with self.caller():
        return await self.generate(request)
    length = len(request.input_ids)
    rollout.prompt = rollout.prompt or length
    moved = False
    while True:
      if rollout.server is None:
        await self._place(rollout, length, request.sampling.max_new_tokens, moved)
      server = self._servers[rollout.server]
      server.in_flight += 1
      server.sent += 1
      try:
        result = await server.engine.generate(request)
        rollout.length = length + len(result.output_ids)
        return result
      except sglang_client.ServerUnavailable:
        self._mark_down(server)
        self.moved_turns += 1
        rollout.server, moved = None, True  # placed again, elsewhere
      finally:
        server.in_flight -= 1
        server.ended += 1
        async with self._changed:  # a placement waiting for the in-flight cap may go now
          self._changed.notify_all()
