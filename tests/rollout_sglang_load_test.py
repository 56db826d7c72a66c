"""`SGLangEngine.load()` against each SGLang version's load routes (SGLANG_API.md §2), served by a
real HTTP server on a loopback port with the answers of a two-rank (`--dp-size 2`) server: the
load is the sum over ranks, the capacity and max_running_requests of `/get_server_info` count per
rank, and `/get_server_info` is read once.
  python -m pytest -q tests/rollout_sglang_load_test.py
"""
import asyncio

import pytest
from aiohttp import web

from rstar_jax.rollout import sglang_client

SERVER_INFO = {"dp_size": 2, "max_total_num_tokens": 1000, "max_running_requests": None,
               "internal_states": [{"max_running_requests": 48}, {"max_running_requests": 48}], "status": "ready"}
V0_5_23_LOADS = {"version": "0.5.23", "loads": [
    {"dp_rank": 0, "num_running_reqs": 3, "num_waiting_reqs": 1, "num_used_tokens": 300,
     "max_total_num_tokens": 1000, "max_running_requests": 48},
    {"dp_rank": 1, "num_running_reqs": 5, "num_waiting_reqs": 0, "num_used_tokens": 450,
     "max_total_num_tokens": 1000, "max_running_requests": 48}]}
V0_5_9_LOADS = {"version": "0.5.9", "loads": [  # no max_running_requests per rank
    {k: v for k, v in rank.items() if k != "max_running_requests"} for rank in V0_5_23_LOADS["loads"]]}
V0_5_6_GET_LOAD = [{"rid": None, "dp_rank": 0, "num_reqs": 4, "num_waiting_reqs": 1, "num_tokens": 320},
                   {"rid": None, "dp_rank": 1, "num_reqs": 5, "num_waiting_reqs": 0, "num_tokens": 450}]
V0_4_9_GET_LOAD = {"load": 320}  # rank 0 only


def _load_of(routes: dict) -> tuple[sglang_client.ServerLoad, int]:
  """The client's load() of a loopback server answering `routes` (path -> JSON; others 404), and
  how many times /get_server_info was asked (load() is called twice)."""
  asked = {"/get_server_info": 0}

  def handler(path):
    async def answer(_request):
      asked[path] = asked.get(path, 0) + 1
      return web.json_response(routes[path])
    return answer

  async def main():
    app = web.Application()
    for path in routes:
      app.router.add_get(path, handler(path))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # pylint: disable=protected-access
    try:
      async with sglang_client.SGLangEngine(f"http://127.0.0.1:{port}", retries=0) as engine:
        first = await engine.load()
        assert await engine.load() == first
        return first
    finally:
      await runner.cleanup()

  load = asyncio.run(main())
  return load, asked["/get_server_info"]


@pytest.mark.parametrize("routes, expected, info_reads", [
    # running, waiting, used, capacity, max_running: each the sum of the two ranks
    ({"/v1/loads": V0_5_23_LOADS, "/get_server_info": SERVER_INFO}, (8, 1, 750, 2000, 96), 0),
    ({"/v1/loads": V0_5_9_LOADS, "/get_load": V0_5_6_GET_LOAD, "/get_server_info": SERVER_INFO},
     (8, 1, 750, 2000, 96), 1),
    # 0.5.6: num_reqs counts running + waiting; num_tokens includes the queued prompts' tokens
    ({"/get_load": V0_5_6_GET_LOAD, "/get_server_info": SERVER_INFO}, (8, 1, 770, 2000, 96), 1),
    # 0.4.9: rank 0's tokens stand for every rank's; no request counts
    ({"/get_load": V0_4_9_GET_LOAD, "/get_server_info": SERVER_INFO}, (0, 0, 640, 2000, 96), 1),
], ids=["0.5.23", "0.5.9", "0.5.6", "0.4.9"])
def test_load_sums_the_data_parallel_ranks_of_every_version(routes, expected, info_reads):
  load, asked = _load_of(routes)
  assert (load.running, load.waiting, load.used_tokens, load.capacity_tokens, load.max_running) == expected
  assert asked == info_reads


def test_a_server_without_max_running_requests_is_not_capped():
  info = {"max_total_num_tokens": 1000, "internal_states": [{}]}  # dp_size absent: one rank
  load, _ = _load_of({"/get_load": [V0_5_6_GET_LOAD[0]], "/get_server_info": info})
  assert (load.running, load.capacity_tokens, load.max_running) == (3, 1000, 1 << 30)
