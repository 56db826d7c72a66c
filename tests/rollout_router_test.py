"""The KV-budget router: placement by hand-computed cases, and live over two `rstar-serve`
processes: multi-turn rollouts stay on their server, spread over both, equal the in-process
engine, and survive a server killed mid-rollout; and a rollout moved off a failed server is
placed before the new rollouts waiting at the router (two scripted loopback servers).
  python -m pytest -q tests/rollout_router_test.py
"""
import asyncio

from aiohttp import web
import jax
import pytest

from rstar_jax import models
from rstar_jax import rollout
from rstar_jax.rollout import local_servers
from rstar_jax.rollout import weight_sync
from tests import tiny_models

View = rollout.ServerView
CFG = tiny_models.tiny_config(eos_token_id=5)
MAX_LENGTH = 96
TURN_TOKENS = 12
ENV_IDS = [7, 8, 9]  # stands for a tool response between turns


def test_choose_server_takes_the_most_free_tokens_that_fit():
  servers = [View(free_tokens=100, in_flight=1, max_in_flight=4), View(300, 3, 4), View(200, 0, 4)]
  assert rollout.choose_server(servers, 150) == 1
  assert rollout.choose_server(servers, 250) == 1
  assert rollout.choose_server(servers, 301) is None  # nothing fits: wait
  servers[1] = View(300, 4, 4)  # at its in-flight cap
  assert rollout.choose_server(servers, 150) == 2
  servers[2] = View(200, 0, 4, healthy=False)
  assert rollout.choose_server(servers, 150) is None
  assert rollout.choose_server(servers, 50) == 0
  # ties: fewer in flight, then the lower index
  assert rollout.choose_server([View(100, 2, 4), View(100, 1, 4), View(100, 1, 4)], 10) == 1


def test_choose_server_passes_over_servers_with_a_queue():
  servers = [View(free_tokens=100, in_flight=1, max_in_flight=4, waiting=0), View(300, 3, 8, waiting=2)]
  assert rollout.choose_server(servers, 50, max_waiting=3) == 1
  assert rollout.choose_server(servers, 50, max_waiting=2) == 0  # two queued: the other server
  assert rollout.choose_server(servers, 150, max_waiting=2) is None  # and it lacks the room
  assert rollout.choose_server([View(100, 0, 4, waiting=rollout.router.MAX_WAITING)], 1) is None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  return weight_sync.write_version(CFG, models.init_params(CFG, jax.random.key(0)),
                                   str(tmp_path_factory.mktemp("weights")), version=0)


def _prompts(count):
  return [tiny_models.random_ids((5 + i % 4,), seed=100 + i).tolist() for i in range(count)]


def _turn(ids, rid, turn):
  return rollout.GenerateRequest(f"{rid}/t{turn}", ids, rollout.SamplingParams(
      max_new_tokens=TURN_TOKENS, temperature=0.0, ignore_eos=True))


async def _rollout(engine, prompt, rid, turns=3):
  """Turns of greedy generation with ENV_IDS between them, as the agent loop does."""
  ids, results = list(prompt), []
  async with (engine.caller() if hasattr(engine, "caller") else _nothing()):
    for turn in range(turns):
      result = await engine.generate(_turn(ids, rid, turn))
      results.append(result)
      ids += result.output_ids.tolist() + ENV_IDS
  return ids, results


class _nothing:
  async def __aenter__(self):
    return None

  async def __aexit__(self, *exc_info):
    return None


def _in_process(checkpoint, prompts):
  cfg, params = models.load_hf(checkpoint)
  engine = rollout.AsyncJaxEngine(rollout.JaxEngine(cfg, params, num_slots=4, max_length=MAX_LENGTH,
                                                    eos_token_ids=cfg.eos_token_ids))

  async def main():
    return await asyncio.gather(*(_rollout(engine, p, f"p{i}") for i, p in enumerate(prompts)))
  return [ids for ids, _ in asyncio.run(main())]


def test_rollouts_stay_on_their_server_spread_out_and_survive_a_killed_server(checkpoint):
  prompts = _prompts(8)
  expected = _in_process(checkpoint, prompts)
  args = ["--num-slots", "2", "--max-length", str(MAX_LENGTH), "--prefill-chunk", "16"]
  with local_servers.LocalServers(checkpoint, 2, args) as servers:
    router = rollout.Router.from_urls(servers.urls, retries=1, poll_interval_s=0.05, health_interval_s=0.5)
    served = []  # (server URL, rid) of every turn, observed around each server's client
    for engine in router.engines:
      def observed(request, engine=engine, generate=engine.generate):
        served.append((engine.url, request.rid))
        return generate(request)
      engine.generate = observed

    async def calm():
      async with router:
        return await asyncio.gather(*(_rollout(router, p, f"p{i}") for i, p in enumerate(prompts)))

    outcomes = asyncio.run(calm())
    assert [ids for ids, _ in outcomes] == expected
    assert all(n > 0 for n in router.rollouts_per_server) and sum(router.rollouts_per_server) == 8
    # every turn of a rollout went to its first server (where its prefix is cached)
    servers_of = {}
    for url, rid in served:
      servers_of.setdefault(rid.split("/")[0], set()).add(url)
    assert len(servers_of) == 8 and all(len(urls) == 1 for urls in servers_of.values())
    assert router.moved_turns == 0

    router = rollout.Router.from_urls(servers.urls, retries=1, poll_interval_s=0.05, health_interval_s=0.5)

    async def with_a_crash():
      async with router:
        work = asyncio.gather(*(_rollout(router, p, f"p{i}") for i, p in enumerate(prompts)))
        while not work.done() and (await router.engines[0].load()).running == 0:
          await asyncio.sleep(0.005)
        assert not work.done(), "the rollouts ended before the first server ran one"
        servers.processes[0].popen.kill()  # the first server dies mid-rollout
        return await work

    outcomes = asyncio.run(with_a_crash())
    assert [ids for ids, _ in outcomes] == expected  # none lost, each one whole
    assert router.moved_turns >= 1


def test_response_estimate_modes():
  mean = rollout.ResponseEstimate()  # the Router's default
  assert mean.expected(8192) == 8192 and mean.expected(None) == 1  # nothing finished yet: the budget
  mean.add(1000)
  mean.add(2001)
  assert mean.expected(8192) == 1500 and mean.expected(1200) == 1200  # round(3001 / 2), capped by the budget
  assert mean.footprint(600, 8192, 10_000) == 2100 and mean.footprint(600, 8192, 2000) == 2000  # capped by the cache
  budget = rollout.ResponseEstimate("budget")
  budget.add(10)
  assert budget.expected(4096) == 4096
  assert rollout.ResponseEstimate(300).expected(8192) == 300 and rollout.ResponseEstimate(300).expected(100) == 100
  with pytest.raises(ValueError, match="expected_response_tokens must be 'mean', 'budget' or a positive int, got 0"):
    rollout.ResponseEstimate(0)
  with pytest.raises(ValueError, match="got True"):
    rollout.ResponseEstimate(True)


def test_new_rollouts_wait_at_the_router_while_the_server_queue_is_full(checkpoint):
  """One server, paused: the first rollout's turn waits in its queue, so the router holds the
  others back (max_waiting_per_server=1) until generation continues; then every rollout ends."""
  prompts = _prompts(3)
  args = ["--num-slots", "2", "--max-length", str(MAX_LENGTH), "--prefill-chunk", "16"]
  with local_servers.LocalServers(checkpoint, 1, args) as servers:
    router = rollout.Router.from_urls(servers.urls, retries=1, poll_interval_s=0.05, max_waiting_per_server=1)
    engine = router.engines[0]

    async def main():
      async with router:
        await engine.call("POST", "/pause_generation", {"mode": "in_place"})
        work = asyncio.gather(*(_rollout(router, p, f"p{i}", turns=1) for i, p in enumerate(prompts)))
        await asyncio.sleep(0.5)  # ten polls: the server reports the first turn waiting
        load = await engine.load()
        assert (load.running, load.waiting) == (0, 1) and router.rollouts_per_server == [1]
        await engine.call("POST", "/continue_generation", {})
        return await work

    outcomes = asyncio.run(main())
    assert [len(ids) for ids, _ in outcomes] == [len(p) + TURN_TOKENS + len(ENV_IDS) for p in prompts]
    assert router.rollouts_per_server == [3]


class _ScriptedServer:
  """A loopback server in SGLang 0.5.23's shapes that answers each /generate when the test says:
  `release(rid)` answers it, `fail(rid)` answers 502. `arrivals` lists the rids in order."""

  def __init__(self, capacity: int):
    self.capacity, self.arrivals, self.running = capacity, [], 0
    self._answers: dict[str, asyncio.Future] = {}

  async def start(self) -> str:
    app = web.Application()
    app.router.add_get("/v1/loads", self._loads)
    app.router.add_post("/generate", self._generate)
    self._runner = web.AppRunner(app)
    await self._runner.setup()
    site = web.TCPSite(self._runner, "127.0.0.1", 0)
    await site.start()
    return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # pylint: disable=protected-access

  async def stop(self) -> None:
    await self._runner.cleanup()

  async def _loads(self, _request):
    return web.json_response({"version": "0.5.23", "loads": [
        {"dp_rank": 0, "num_running_reqs": self.running, "num_waiting_reqs": 0, "num_used_tokens": 0,
         "max_total_num_tokens": self.capacity, "max_running_requests": 1}]})

  async def _generate(self, request):
    body = await request.json()
    rid = body["rid"].split("#")[0]
    self.arrivals.append(rid)
    self.running += 1
    try:
      status = await self._future(rid)
    finally:
      self.running -= 1
    if status != 200:
      return web.json_response({"error": {"message": "down"}}, status=status)
    return web.json_response({"output_ids": [11], "meta_info": {
        "id": rid, "finish_reason": {"type": "length", "length": 1}, "prompt_tokens": len(body["input_ids"]),
        "completion_tokens": 1, "cached_tokens": 0, "output_token_logprobs": [[-0.5, 11, None]]}})

  def _future(self, rid: str) -> asyncio.Future:
    return self._answers.setdefault(rid, asyncio.get_running_loop().create_future())

  def release(self, rid: str, status: int = 200) -> None:
    self._future(rid).set_result(status)


def test_a_rollout_moved_off_a_failed_server_goes_before_the_new_rollouts_waiting():
  """Server a fails rollout x's turn while new rollouts y1..y3 wait at the router for server b's one
  slot: x is placed before all of them."""
  async def scenario():
    a, b = _ScriptedServer(capacity=2000), _ScriptedServer(capacity=1000)
    urls = [await a.start(), await b.start()]
    router = rollout.Router.from_urls(urls, retries=0, poll_interval_s=0.02, health_interval_s=60.0)
    request = lambda rid: rollout.GenerateRequest(rid, [1, 2, 3], rollout.SamplingParams(max_new_tokens=4))  # noqa: E731
    async def arrived(server, count):
      while len(server.arrivals) < count:
        await asyncio.sleep(0.01)
    try:
      async with router:
        x = asyncio.ensure_future(router.generate(request("x")))      # the most free tokens: a
        await arrived(a, 1)
        hold = asyncio.ensure_future(router.generate(request("hold")))  # a is at its cap: b
        await arrived(b, 1)
        new = []
        for rid in ("y1", "y2", "y3"):  # both at their cap: they wait at the router, in order
          new.append(asyncio.ensure_future(router.generate(request(rid))))
          await asyncio.sleep(0.05)
        a.release("x", status=502)  # x's turn fails: a is down, x is placed again
        while router.moved_turns == 0:
          await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        for done in range(4):  # b's slot frees, one rollout at a time
          b.release(b.arrivals[done])
          await arrived(b, done + 2)
        b.release(b.arrivals[4])
        results = await asyncio.gather(x, hold, *new)
    finally:
      await a.stop()
      await b.stop()
    return a.arrivals, b.arrivals, results, router.moved_turns

  a_arrivals, b_arrivals, results, moved = asyncio.run(asyncio.wait_for(scenario(), 60))  # fails, not hangs
  assert a_arrivals == ["x"] and moved == 1
  assert b_arrivals == ["hold", "x", "y1", "y2", "y3"]
  assert [r.output_ids.tolist() for r in results] == [[11]] * 5
