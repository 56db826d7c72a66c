"""Rollout placement over N inference servers with a KV-cache capacity: our KV-budget router
(`rollout.choose_server`, the function `rollout.Router` places with) against round-robin and
least-in-flight dispatch, in a seeded discrete-event simulation of one RL step's rollouts.

  python benchmarks/router_sim.py                       # the paper's scale per server (seconds)
  python benchmarks/router_sim.py --servers 4 --rollouts 512 --budget 12288
  python benchmarks/router_sim.py --kv_tokens 400000              # KV the binding limit

Workload (PAPER.md §5, §7): R rollouts of a `--prompt`-token prompt; each has a response budget
(`--budget`) and turns whose generated lengths are long-tailed (a rollout's total drawn
log-normal with median `--median_response`, sigma `--sigma`, capped at the budget, split over
1-`--max_turns` turns) with a tool call after every turn but the last (latency log-normal, median
`--tool_median_s`, sigma 1: most calls take a fraction of a second, a few take seconds).
Server: SGLang 0.5.4's scheduler as placement meets it (the constants below, with their sources):
  - admission (PrefillAdder, first come first served, stopping at the first request that does not
    fit): a request's input + min(its max_new_tokens - out, 4096) must fit the capacity less the
    running requests' lengths and min(max_new - out, 4096) x new_token_ratio each; its cached
    prefix is reused (only the rest prefilled); at most 16384 prefill tokens a round; a prefill
    round runs instead of that iteration's decode step and samples each admitted request's first
    token;
  - new_token_ratio starts at 0.7 and falls by (0.7 - 0.098) / 600 per decode step to 0.098; it
    returns to 0.7 when the server is idle;
  - before a decode step, if the running requests' next tokens do not fit, requests are retracted
    (the fewest output tokens first, ties the longest input) until they do: a KV overflow; the
    retracted request keeps its input cached (evictable), loses its decoded tokens' cache (they
    are prefilled again, counted as recomputed) and waits at the back of the queue; the ratio is
    then (sum out + 20 x remaining) / (sum max_new + 1);
  - a finished turn's ids stay cached (evictable, least recently used first) for the rollout's
    next turn, which asks for what is left of the budget as max_new_tokens;
  - a decode step takes `--step_s` + `--per_seq_s` x running + `--per_kv_token_s` x their KV
    tokens, a prefill round `--step_s` + `--prefill_s_per_token` x tokens prefilled (defaults:
    Qwen3-14B on one MI300X, see the flags).
Policies, each keeping a rollout on its first server (its prefix is cached there):
  static_sync      the paper's baseline (PAPER.md §9.3): rollout i on server i mod N, and each
                   server's rollouts move turn by turn together: the next turn starts when all
                   of them have ended this one and the slowest of their tool calls has returned;
  round_robin      rollout i goes to server i mod N, all at the start (SGLang router round_robin),
                   each calling its tool as soon as its turn ends, as all the policies below do;
  least_in_flight  each rollout to the server with the fewest rollouts in flight at dispatch
                   (SGLang router's load counter; all dispatch at the start);
  paper_prototype  the paper's scheduler as its deleted prototype ran (PAPER.md §9.3): a rollout
                   reserves prompt + budget on the server with the most unreserved tokens and
                   keeps it until it ends; it waits at the router while none has room;
  router           ours, `rollout.Router` with its defaults: a rollout waits at the router until
                   `choose_server` finds a server where prompt + its expected response (the
                   mean response of the rollouts finished so far, the budget until one has)
                   fits the free tokens (capacity - used as last polled - footprints placed
                   there since), with fewer than `--max_running` of its turns in flight and
                   fewer than `--max_waiting` requests queued (`rollout.router.queued`: as last
                   polled, plus its turns sent since, less those ended since); the
                   servers are polled every `--poll_s`, and placement is retried at each poll
                   and whenever a turn ends.
Printed: step time (all rollouts done), generated tokens/s, server idle fraction before the end,
KV overflows (retractions) and tokens recomputed after them, the mean decode batch and each
server's seconds of prefill rounds; the ceiling no placement can pass
(`throughput_ceiling`); then ratios of ours against each peer and the ceiling ("x" rows:
tokens/s, higher is better). Progress with an ETA goes to stderr as simulated steps finish (at most every 10 s).
"""
import argparse
import collections
import dataclasses
import heapq
import itertools

from absl import logging
import numpy as np

from rstar_jax import rollout
from rstar_jax.train import progress

# SGLang 0.5.4's scheduler (srt/managers/schedule_policy.py, schedule_batch.py, scheduler.py; srt/environ.py)
CLIP_MAX_NEW_TOKENS = 4096          # SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION
INIT_NEW_TOKEN_RATIO = 0.7          # SGLANG_INIT_NEW_TOKEN_RATIO x schedule_conservativeness 1.0
MIN_NEW_TOKEN_RATIO = 0.7 * 0.14    # x SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR
NEW_TOKEN_RATIO_DECAY = (INIT_NEW_TOKEN_RATIO - MIN_NEW_TOKEN_RATIO) / 600  # SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS
RETRACT_DECODE_STEPS = 20           # SGLANG_RETRACT_DECODE_STEPS
MAX_PREFILL_TOKENS = 16384          # --max-prefill-tokens
POLICIES = ("static_sync", "round_robin", "least_in_flight", "paper_prototype", "router")


@dataclasses.dataclass
class Rollout:
  index: int
  prompt: int
  turns: list[int]         # generated tokens per turn
  tools_s: list[float]     # tool latency after each turn but the last
  length: int = 0          # tokens so far (prompt, generated, tool output folded into turns)
  turn: int = 0
  server: int | None = None
  done_at: float = 0.0


@dataclasses.dataclass
class Request:
  """One turn of a rollout at its server (SGLang's Req)."""
  rollout: Rollout
  left: int                # tokens still to generate in this turn
  max_new: int             # the turn's max_new_tokens: what is left of the rollout's budget
  start: int               # the rollout's length when the turn began (its input ids)
  out: int = 0             # tokens generated so far in this turn (kept through a retraction)

  def reserve(self) -> int:
    """Output tokens admission sets aside for it: min(max_new - out, CLIP_MAX_NEW_TOKENS)."""
    return min(max(self.max_new - self.out, 0), CLIP_MAX_NEW_TOKENS)


@dataclasses.dataclass
class Server:
  """SGLang 0.5's scheduler, as far as placement sees it (module docstring)."""
  kv_tokens: int
  max_running: int
  running: list = dataclasses.field(default_factory=list)
  waiting: collections.deque = dataclasses.field(default_factory=collections.deque)
  cached: collections.OrderedDict = dataclasses.field(default_factory=collections.OrderedDict)  # radix, LRU
  new_token_ratio: float = INIT_NEW_TOKEN_RATIO
  batch_is_full: bool = False
  busy: bool = False
  busy_s: float = 0.0
  prefill_s: float = 0.0
  decode_steps: int = 0
  decode_rows: int = 0
  overflows: int = 0
  recomputed: int = 0

  def used(self) -> int:
    return sum(r.rollout.length for r in self.running)

  def evict(self, need_free: int) -> None:
    """Evicts cached prefixes, least recently used first, until `need_free` tokens are free."""
    while self.cached and self.kv_tokens - self.used() - sum(self.cached.values()) < need_free:
      self.cached.popitem(last=False)

  def admit(self) -> tuple[int, list[Request]]:
    """One prefill round (PrefillAdder, FCFS): the tokens it prefills and the requests admitted."""
    admitted = []
    if self.batch_is_full or not self.waiting:
      return 0, admitted
    rem = self.kv_tokens - self.used() - sum(r.reserve() * self.new_token_ratio for r in self.running)
    prefill = 0
    while self.waiting and len(self.running) < self.max_running and prefill < MAX_PREFILL_TOKENS:
      request = self.waiting[0]
      matched = min(self.cached.get(request.rollout.index, 0), request.rollout.length - 1)
      extend = request.rollout.length - matched
      # its cached prefix is locked (no longer evictable), then extend + reserve must fit what is left
      if extend + request.reserve() >= rem - matched:
        self.batch_is_full = True
        break
      self.waiting.popleft()
      self.cached.pop(request.rollout.index, None)
      rem -= request.rollout.length + request.reserve()
      prefill += extend
      self.recomputed += min(extend, request.out)
      self.running.append(request)
      admitted.append(request)
    self.evict(0)
    return prefill, admitted

  def retract_for_decode(self) -> None:
    """check_decode_mem / retract_decode: while the next step's tokens (one per request) do not fit,
    the request with the fewest output tokens (ties: the longest input) gives back its decoded
    tokens' cache; its input stays cached (evictable) and it waits at the back of the queue. Then
    new_token_ratio = (sum out + 20 x remaining) / (sum max_new + 1)."""
    self.evict(len(self.running))
    if self.kv_tokens - self.used() >= len(self.running):
      self.new_token_ratio = max(self.new_token_ratio - NEW_TOKEN_RATIO_DECAY, MIN_NEW_TOKEN_RATIO)
      return
    if len(self.running) == 1:
      raise RuntimeError("one request outgrows the whole cache: raise --kv_tokens")
    order = sorted(self.running, key=lambda r: (r.out, -r.start), reverse=True)
    while True:
      victim = order.pop()
      self.running.remove(victim)
      self.cached[victim.rollout.index] = victim.start
      self.waiting.append(victim)
      self.overflows += 1
      self.evict(len(self.running))
      if len(order) == 1 or self.kv_tokens - self.used() >= len(self.running):
        break
    self.batch_is_full = False
    self.new_token_ratio = min(1.0, (sum(r.out for r in self.running) + RETRACT_DECODE_STEPS * len(self.running))
                               / (sum(r.max_new for r in self.running) + 1))


def make_rollouts(args, seed: int) -> list[Rollout]:
  rng = np.random.default_rng(seed)
  rollouts = []
  for i in range(args.rollouts):
    total = int(min(args.budget, max(16, rng.lognormal(np.log(args.median_response), args.sigma))))
    turns = int(rng.integers(1, args.max_turns + 1))
    cuts = np.sort(rng.choice(np.arange(1, total), size=min(turns - 1, total - 1), replace=False)) if turns > 1 else []
    lengths = np.diff(np.concatenate([[0], cuts, [total]])).astype(int).tolist()
    tools = rng.lognormal(np.log(args.tool_median_s), 1.0, size=len(lengths) - 1).tolist()
    rollouts.append(Rollout(i, args.prompt, lengths, tools, length=args.prompt))
  return rollouts


def throughput_ceiling(args, rollouts: list[Rollout]) -> dict:
  """Tokens/s no schedule of this workload on these servers can exceed: generated tokens / the
  larger of two lower bounds on the step time.
    work:  every server-second spent, over N servers: the fixed `step_s` of each decode step and
           prefill round, of which there are at least generated tokens / `max_running` (the most
           one runs) and at least the decoded tokens' contexts summed / `kv_tokens` (a decode
           step's sequences hold at most the cache); plus, for tokens after a turn's first,
           per_seq_s + per_kv_token_s x its context; each prompt prefilled once and each later
           turn's one uncached token;
    chain: the slowest rollout alone on a server: its turns' prefill rounds, decode steps at
           batch 1 and tool calls, one after another.
  A turn of L tokens starting at length s decodes L - 1 of them at contexts s + 1 .. s + L - 1
  (its first comes from the prefill round), summing to (L - 1) s + L (L - 1) / 2."""
  work = chain = contexts = 0.0
  generated = 0
  for r in rollouts:
    lengths = np.asarray(r.turns, dtype=np.float64)
    starts = r.prompt + np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
    decoded = lengths - 1
    context = float(np.sum(decoded * starts + lengths * decoded / 2))
    prefilled = r.prompt + len(r.turns) - 1
    kv_and_seq = args.per_seq_s * decoded.sum() + args.per_kv_token_s * context
    work += args.prefill_s_per_token * prefilled + kv_and_seq
    chain = max(chain, len(r.turns) * args.step_s + args.prefill_s_per_token * prefilled + args.step_s * decoded.sum()
                + kv_and_seq + sum(r.tools_s))
    generated += int(lengths.sum())
    contexts += context
  work += args.step_s * max(generated / args.max_running, contexts / args.kv_tokens)
  step_s = max(work / args.servers, chain)
  return {"step_s": step_s, "tokens_per_s": generated / step_s, "work_bound_s": work / args.servers,
          "chain_bound_s": chain}


class Simulation:
  """One policy over one workload (module docstring)."""

  def __init__(self, args, policy: str, rollouts: list[Rollout]):
    self.args, self.policy = args, policy
    self.rollouts = [dataclasses.replace(r, turns=list(r.turns), tools_s=list(r.tools_s)) for r in rollouts]
    self.servers = [Server(args.kv_tokens, args.max_running) for _ in range(args.servers)]
    self.events: list = []
    self.counter = itertools.count()
    self.now = 0.0
    self.held = collections.deque()      # rollouts waiting at the router (paper_prototype, router)
    self.assigned = [0] * args.servers   # rollouts placed on each server (not yet ended)
    self.in_flight = [0] * args.servers  # turns sent to each server and not yet ended (the Router's count)
    self.reserved = [0] * args.servers   # paper_prototype: prompt + budget of each placed rollout
    self.estimate = rollout.ResponseEstimate("mean")
    self.polled = [(0, 0)] * args.servers  # router: (used tokens, waiting requests) at the last poll
    self.placed_since = [0] * args.servers  # router: footprints placed on each server since the poll
    self.sent_since = [0] * args.servers    # router: turns sent to each server since the poll
    self.ended_since = [0] * args.servers   # router: turns ended on each server since the poll
    self.round_pending = [0] * args.servers  # static_sync: rollouts still in this round's turn
    self.round_next = [[] for _ in range(args.servers)]  # static_sync: (rollout, tool seconds) for the next

  def push(self, at: float, kind: str, payload) -> None:
    heapq.heappush(self.events, (at, next(self.counter), kind, payload))

  def run(self) -> dict:
    for r in self.rollouts:
      if self.policy in ("paper_prototype", "router"):
        self.held.append(r)
      else:
        self.bind(r, min(range(len(self.servers)), key=lambda s: (self.assigned[s], s))
                  if self.policy == "least_in_flight" else r.index % len(self.servers), 0.0)
    self.round_pending = list(self.assigned)
    if self.policy == "router":
      self.push(0.0, "poll", None)
    else:
      self.dispatch_held(0.0)
    while self.events:
      self.now, _, kind, payload = heapq.heappop(self.events)
      if kind == "step":
        self.step(payload)
      elif kind == "poll":
        self.poll()
      else:  # a tool call returned: the next turn goes to the rollout's server
        self.submit(payload, self.now)
    if self.held:
      raise RuntimeError(f"{len(self.held)} rollouts were never placed")
    end = max(r.done_at for r in self.rollouts)
    generated = sum(sum(r.turns) for r in self.rollouts)
    idle = 1 - sum(s.busy_s for s in self.servers) / (end * len(self.servers))
    return {"step_s": end, "tokens_per_s": generated / end, "idle": idle,
            "overflows": sum(s.overflows for s in self.servers),
            "recomputed": sum(s.recomputed for s in self.servers),
            "decode_batch": sum(s.decode_rows for s in self.servers) / max(sum(s.decode_steps for s in self.servers), 1),
            "prefill_s": sum(s.prefill_s for s in self.servers) / len(self.servers)}

  def bind(self, r: Rollout, server: int, at: float) -> None:
    r.server = server
    self.assigned[server] += 1
    self.submit(r, at)

  def poll(self) -> None:
    """router: every server's load as `/get_load` reports it, then placement; again in `--poll_s`
    while rollouts wait."""
    self.polled = [(s.used(), len(s.waiting)) for s in self.servers]
    self.placed_since = [0] * len(self.servers)
    self.sent_since = [0] * len(self.servers)
    self.ended_since = [0] * len(self.servers)
    self.dispatch_held(self.now)
    if self.held:
      self.push(self.now + self.args.poll_s, "poll", None)

  def dispatch_held(self, at: float) -> None:
    """Places held rollouts, oldest first, while the policy finds room (they start at `at`)."""
    while self.held:
      r = self.held[0]
      if self.policy == "paper_prototype":
        footprint = r.prompt + self.args.budget
        free = [s.kv_tokens - self.reserved[i] for i, s in enumerate(self.servers)]
        choice = max(range(len(free)), key=lambda i: (free[i], -i))
        if free[choice] < footprint:
          return
        self.reserved[choice] += footprint
      else:
        footprint = self.estimate.footprint(r.prompt, self.args.budget, self.args.kv_tokens)
        views = [rollout.ServerView(s.kv_tokens - used - self.placed_since[i], self.in_flight[i], s.max_running,
                                    rollout.router.queued(waiting, self.sent_since[i], self.ended_since[i],
                                                          self.in_flight[i], s.max_running))
                 for i, (s, (used, waiting)) in enumerate(zip(self.servers, self.polled))]
        choice = rollout.choose_server(views, footprint, self.args.max_waiting)
        if choice is None:
          return
        self.placed_since[choice] += footprint
      self.held.popleft()
      self.bind(r, choice, at)

  def submit(self, r: Rollout, at: float) -> None:
    """The rollout's next turn joins its server's queue at time `at`."""
    self.in_flight[r.server] += 1
    self.sent_since[r.server] += 1
    server = self.servers[r.server]
    generated = r.length - r.prompt
    server.waiting.append(Request(r, left=r.turns[r.turn], max_new=self.args.budget - generated, start=r.length))
    if not server.busy:
      server.busy = True
      self.push(at, "step", r.server)

  def step(self, index: int) -> None:
    """One scheduler iteration: a prefill batch if one can be admitted (it samples each admitted
    request's first token), else a decode step of every running request."""
    server, args = self.servers[index], self.args
    prefill, admitted = server.admit()
    if admitted:
      dt = args.step_s + args.prefill_s_per_token * prefill
      server.prefill_s += dt
      self.advance(index, admitted, dt)
      return
    if not server.running:
      if server.waiting:
        raise RuntimeError("a request does not fit an empty server: raise --kv_tokens")
      server.busy = False
      server.new_token_ratio = INIT_NEW_TOKEN_RATIO
      return
    server.retract_for_decode()
    dt = (args.step_s + args.per_seq_s * len(server.running) + args.per_kv_token_s * server.used())
    server.decode_steps += 1
    server.decode_rows += len(server.running)
    self.advance(index, server.running, dt)

  def advance(self, index: int, requests: list[Request], dt: float) -> None:
    """`requests` each sample a token in a forward of `dt` seconds; finished turns leave the batch."""
    server = self.servers[index]
    server.busy_s += dt
    finished = []
    for request in requests:
      request.rollout.length += 1
      request.out += 1
      request.left -= 1
      if request.left == 0:
        finished.append(request)
    if finished:
      server.running = [r for r in server.running if r.left > 0]
      server.batch_is_full = False
    for request in finished:
      self.turn_done(request.rollout, index, self.now + dt)
    self.push(self.now + dt, "step", index)

  def turn_done(self, r: Rollout, index: int, at: float) -> None:
    """The turn's ids stay cached at its server (evictable); then the rollout ends or calls its tool."""
    server = self.servers[index]
    server.cached[r.index] = r.length
    server.evict(0)
    self.in_flight[index] -= 1
    self.ended_since[index] += 1
    r.turn += 1
    if r.turn == len(r.turns):
      r.done_at = at
      self.estimate.add(sum(r.turns))
      self.assigned[index] -= 1
      if self.policy == "paper_prototype":
        self.reserved[index] -= r.prompt + self.args.budget
    elif self.policy != "static_sync":
      self.push(at + r.tools_s[r.turn - 1], "tool", r)
    else:
      self.round_next[index].append((r, r.tools_s[r.turn - 1]))
    if self.held:
      self.dispatch_held(at)
    if self.policy == "static_sync":
      self.end_of_round(index, at)

  def end_of_round(self, index: int, at: float) -> None:
    """static_sync: once every rollout of the server's batch has ended this turn, their tool calls
    run together and the next turn starts for all when the slowest call returns."""
    self.round_pending[index] -= 1
    if self.round_pending[index] or not self.round_next[index]:
      return
    calls, self.round_next[index] = self.round_next[index], []
    self.round_pending[index] = len(calls)
    slowest = max(seconds for _, seconds in calls)
    for r, _ in calls:
      self.push(at + slowest, "tool", r)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--servers", type=int, default=8)
  parser.add_argument("--rollouts", type=int, default=2048, help="256 per server: 512 prompts x 32 on 64 GPUs")
  parser.add_argument("--prompt", type=int, default=600)
  parser.add_argument("--budget", type=int, default=8192)
  parser.add_argument("--median_response", type=float, default=3000.0)
  parser.add_argument("--sigma", type=float, default=0.6)
  parser.add_argument("--max_turns", type=int, default=6)
  parser.add_argument("--tool_median_s", type=float, default=0.3)
  # Costs of Qwen3-14B (bf16) on one MI300X, at ~60% of its 5.3 TB/s and ~50% of its 1307 dense
  # bf16 TFLOP/s: a decode step reads the weights (29.5 GB: 9 ms) and every running sequence's
  # keys and values (160 KiB per token: 5.1e-8 s); each sequence costs 2 x 14e9 FLOPs (4.3e-5 s),
  # and so does each prefilled token.
  parser.add_argument("--kv_tokens", type=int, default=810_000,
                      help="KV tokens of one server: (0.85 x 192 GB - 29.5 GB of weights) / 160 KiB")
  parser.add_argument("--max_running", type=int, default=256)
  parser.add_argument("--step_s", type=float, default=0.009)
  parser.add_argument("--per_seq_s", type=float, default=4.3e-5)
  parser.add_argument("--per_kv_token_s", type=float, default=5.1e-8)
  parser.add_argument("--prefill_s_per_token", type=float, default=4.3e-5)
  parser.add_argument("--poll_s", type=float, default=rollout.router.POLL_INTERVAL_S,
                      help="router: seconds between load polls (rollout.Router's default)")
  parser.add_argument("--max_waiting", type=int, default=rollout.router.MAX_WAITING,
                      help="router: queued requests at which a server takes no new rollout (rollout.Router's default)")
  parser.add_argument("--policies", default=",".join(POLICIES))
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--quick", action="store_true", help="2 servers, 64 rollouts, 1 seed (a smoke run)")
  args = parser.parse_args()
  if args.quick:
    args.servers, args.rollouts, args.seeds, args.kv_tokens = 2, 64, 1, 200_000
  policies = args.policies.split(",")
  unknown = sorted(set(policies) - set(POLICIES))
  if unknown:
    parser.error(f"--policies: unknown {unknown}; choose from {','.join(POLICIES)}")
  results = {p: [] for p in policies}
  ceilings = []
  logging.set_verbosity(logging.INFO)
  runs = progress.Progress("router_sim: simulated steps (policy x seed)", args.seeds * len(policies))
  for seed in range(args.seeds):
    workload = make_rollouts(args, seed)
    ceilings.append(throughput_ceiling(args, workload))
    for policy in policies:
      results[policy].append(Simulation(args, policy, workload).run())
      runs.update(sum(map(len, results.values())))
  print(f"{args.servers} servers x {args.kv_tokens} KV tokens, {args.rollouts} rollouts, budget {args.budget}, "
        f"median response {args.median_response:.0f}, {args.seeds} seeds (means)")
  print(f"{'policy':<18}{'step s':>10}{'tokens/s':>12}{'idle':>8}{'KV overflows':>14}{'recomputed':>12}"
        f"{'decode batch':>14}{'prefill s':>11}")
  mean = {p: {k: float(np.mean([r[k] for r in results[p]])) for k in results[p][0]} for p in policies}
  for p in policies:
    m = mean[p]
    print(f"{p:<18}{m['step_s']:>10.1f}{m['tokens_per_s']:>12.0f}{m['idle']:>8.3f}{m['overflows']:>14.1f}"
          f"{m['recomputed']:>12.0f}{m['decode_batch']:>14.1f}{m['prefill_s']:>11.1f}")
  ceiling = {k: float(np.mean([c[k] for c in ceilings])) for k in ceilings[0]}
  print(f"{'ceiling':<18}{ceiling['step_s']:>10.1f}{ceiling['tokens_per_s']:>12.0f}   (step-time bounds: work "
        f"{ceiling['work_bound_s']:.1f} s, slowest rollout alone {ceiling['chain_bound_s']:.1f} s)")
  print()
  peers = [p for p in policies if p != "router"]
  for policy, peer in itertools.product([p for p in policies if p == "router"], peers):
    ours, theirs = mean[policy]["tokens_per_s"], mean[peer]["tokens_per_s"]
    print(f"tokens/s {policy} vs {peer}   {ours:.1f}   {theirs:.1f}   {ours / theirs:.2f}x")
  for policy in policies:
    ours = mean[policy]["tokens_per_s"]
    print(f"tokens/s {policy} vs ceiling   {ours:.1f}   {ceiling['tokens_per_s']:.1f}   "
          f"{ours / ceiling['tokens_per_s']:.2f}x")


if __name__ == "__main__":
  main()
