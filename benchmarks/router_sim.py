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
Server (SGLang's scheduler, simplified): up to `--max_running` requests decode together; a step
takes `--step_s` + `--per_seq_s` x running + `--per_kv_token_s` x their KV tokens +
`--prefill_s_per_token` x tokens prefilled (defaults: Qwen3-14B on one MI300X, see the flags); a
request is admitted from the server's queue (first come, first served) when its length fits the
free KV tokens; a finished turn's prefix stays cached (evictable, LRU) for the rollout's next
turn; when the running requests grow past `--kv_tokens`, the newest is retracted (a KV overflow:
its cache is dropped and it is prefilled again later).
Policies, each keeping a rollout on its first server (its prefix is cached there):
  round_robin      rollout i goes to server i mod N, all at the start (SGLang router round_robin);
  least_in_flight  each rollout to the server with the fewest rollouts in flight at dispatch
                   (SGLang router's load counter; all dispatch at the start);
  kv_budget        ours: a rollout waits at the router until `choose_server` finds a server whose
                   free tokens (capacity - reservations) fit prompt + its expected response (the
                   budget: it cannot overflow), below `--max_running` rollouts in flight there;
                   reservations grow with the rollout (`rollout.Router`'s default);
  kv_mean          the same, expecting the mean response of the rollouts finished so far (the
                   budget until one has): more rollouts run at once, overflow becomes possible.
Printed: step time (all rollouts done), generated tokens/s, server idle fraction before the end,
KV overflows; then ratios of ours against each peer ("x" rows: tokens/s, higher is better).
"""
import argparse
import collections
import dataclasses
import heapq
import itertools

import numpy as np

from rstar_jax import rollout


@dataclasses.dataclass
class Rollout:
  index: int
  prompt: int
  turns: list[int]         # generated tokens per turn
  tools_s: list[float]     # tool latency after each turn but the last
  length: int = 0          # tokens so far (prompt, generated, tool output folded into turns)
  turn: int = 0
  server: int | None = None
  reservation: int = 0
  done_at: float = 0.0


@dataclasses.dataclass
class Request:
  rollout: Rollout
  left: int                # tokens still to generate in this turn
  prefill: int             # tokens to prefill at admission
  admitted: int = 0        # admission order (the newest is retracted first)


@dataclasses.dataclass
class Server:
  kv_tokens: int
  max_running: int
  running: list = dataclasses.field(default_factory=list)
  waiting: collections.deque = dataclasses.field(default_factory=collections.deque)
  cached: collections.OrderedDict = dataclasses.field(default_factory=collections.OrderedDict)
  busy: bool = False
  busy_s: float = 0.0
  overflows: int = 0

  def used(self) -> int:
    return sum(r.rollout.length for r in self.running)


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


class Simulation:
  """One policy over one workload (module docstring)."""

  def __init__(self, args, policy: str, rollouts: list[Rollout]):
    self.args, self.policy = args, policy
    self.rollouts = [dataclasses.replace(r, turns=list(r.turns), tools_s=list(r.tools_s)) for r in rollouts]
    self.servers = [Server(args.kv_tokens, args.max_running) for _ in range(args.servers)]
    self.events: list = []
    self.counter = itertools.count()
    self.now = 0.0
    self.held = collections.deque()      # rollouts waiting at the router (kv_budget)
    self.bound = [0] * args.servers      # rollouts in flight per server
    self.reserved = [0] * args.servers
    self.finished_responses: list[int] = []

  def push(self, at: float, kind: str, payload) -> None:
    heapq.heappush(self.events, (at, next(self.counter), kind, payload))

  def run(self) -> dict:
    for r in self.rollouts:
      if self.policy.startswith("kv_"):
        self.held.append(r)
      else:
        self.bind(r, r.index % len(self.servers) if self.policy == "round_robin" else
                  min(range(len(self.servers)), key=lambda s: (self.bound[s], s)))
    self.dispatch_held()
    while self.events:
      self.now, _, kind, payload = heapq.heappop(self.events)
      if kind == "step":
        self.step(payload)
      else:  # a tool call returned: the next turn goes to the rollout's server
        self.submit(payload)
    end = max(r.done_at for r in self.rollouts)
    generated = sum(sum(r.turns) for r in self.rollouts)
    idle = 1 - sum(s.busy_s for s in self.servers) / (end * len(self.servers))
    return {"step_s": end, "tokens_per_s": generated / end, "idle": idle,
            "overflows": sum(s.overflows for s in self.servers)}

  def bind(self, r: Rollout, server: int) -> None:
    r.server = server
    self.bound[server] += 1
    self.submit(r)

  def footprint(self, r: Rollout) -> int:
    """prompt + the budget (kv_budget), or (kv_mean) the mean response of the rollouts done so far."""
    if self.policy == "kv_budget" or not self.finished_responses:
      return r.prompt + self.args.budget
    return r.prompt + int(np.mean(self.finished_responses))

  def dispatch_held(self) -> None:
    while self.held:
      r = self.held[0]
      views = [rollout.ServerView(s.kv_tokens - self.reserved[i], self.bound[i], s.max_running)
               for i, s in enumerate(self.servers)]
      choice = rollout.choose_server(views, self.footprint(r))
      if choice is None:
        return
      self.held.popleft()
      r.reservation = self.footprint(r)
      self.reserved[choice] += r.reservation
      self.bind(r, choice)

  def submit(self, r: Rollout) -> None:
    server = self.servers[r.server]
    cached = server.cached.pop(r.index, 0)
    server.waiting.append(Request(r, r.turns[r.turn], r.length - cached))
    if not server.busy:
      server.busy = True
      self.push(self.now, "step", r.server)

  def step(self, index: int) -> None:
    server = self.servers[index]
    prefill = 0
    while server.waiting and len(server.running) < server.max_running:
      request = server.waiting[0]
      free = server.kv_tokens - server.used() - sum(server.cached.values())
      while free < request.rollout.length + 1 and server.cached:  # evict cached prefixes, LRU
        free += server.cached.popitem(last=False)[1]
      if free < request.rollout.length + 1:
        break
      server.waiting.popleft()
      request.admitted = next(self.counter)
      prefill += request.prefill
      server.running.append(request)
    if not server.running:
      server.busy = False
      return
    dt = (self.args.step_s + self.args.per_seq_s * len(server.running) + self.args.per_kv_token_s * server.used()
          + self.args.prefill_s_per_token * prefill)
    server.busy_s += dt
    finished = []
    for request in server.running:
      request.rollout.length += 1
      request.left -= 1
      if request.left == 0:
        finished.append(request)
    server.running = [r for r in server.running if r.left > 0]
    while server.used() > server.kv_tokens:  # KV overflow: retract the newest request
      victim = max(server.running, key=lambda r: r.admitted)
      server.running.remove(victim)
      victim.prefill = victim.rollout.length
      server.waiting.appendleft(victim)
      server.overflows += 1
    for request in finished:
      self.turn_done(request.rollout, index, self.now + dt)
    self.push(self.now + dt, "step", index)

  def grow(self, r: Rollout, index: int) -> None:
    """A rollout's reservation covers at least its length so far."""
    if self.policy.startswith("kv_") and r.length > r.reservation:
      self.reserved[index] += r.length - r.reservation
      r.reservation = r.length

  def turn_done(self, r: Rollout, index: int, at: float) -> None:
    r.turn += 1
    self.grow(r, index)
    if r.turn == len(r.turns):
      r.done_at = at
      self.finished_responses.append(sum(r.turns))
      self.bound[index] -= 1
      self.reserved[index] -= r.reservation
      self.dispatch_held()
      return
    self.servers[index].cached[r.index] = r.length
    self.push(at + r.tools_s[r.turn - 1], "tool", r)


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
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--quick", action="store_true", help="2 servers, 64 rollouts, 1 seed (a smoke run)")
  args = parser.parse_args()
  if args.quick:
    args.servers, args.rollouts, args.seeds, args.kv_tokens = 2, 64, 1, 200_000
  policies = ("round_robin", "least_in_flight", "kv_budget", "kv_mean")
  results = {p: [] for p in policies}
  for seed in range(args.seeds):
    workload = make_rollouts(args, seed)
    for policy in policies:
      results[policy].append(Simulation(args, policy, workload).run())
  print(f"{args.servers} servers x {args.kv_tokens} KV tokens, {args.rollouts} rollouts, budget {args.budget}, "
        f"median response {args.median_response:.0f}, {args.seeds} seeds (means)")
  print(f"{'policy':<18}{'step s':>10}{'tokens/s':>12}{'idle':>8}{'KV overflows':>14}")
  mean = {p: {k: float(np.mean([r[k] for r in results[p]])) for k in results[p][0]} for p in policies}
  for p in policies:
    m = mean[p]
    print(f"{p:<18}{m['step_s']:>10.1f}{m['tokens_per_s']:>12.0f}{m['idle']:>8.3f}{m['overflows']:>14.1f}")
  print()
  for policy, peer in itertools.product(policies[2:], policies[:2]):
    ours, theirs = mean[policy]["tokens_per_s"], mean[peer]["tokens_per_s"]
    print(f"tokens/s {policy} vs {peer}   {ours:.1f}   {theirs:.1f}   {ours / theirs:.2f}x")


if __name__ == "__main__":
  main()
