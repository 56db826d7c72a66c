"""`SGLangEngine` against SGLang's answers as each version gives them (SGLANG_API.md), served by a
real HTTP server on a loopback port:
  - `load()` of a two-rank (`--dp-size 2`) server: the sum over ranks, the capacity and
    max_running_requests of `/get_server_info` counted per rank, `/get_server_info` read once;
  - a turn SGLang ends "length" on a stop id (it checks the length first) comes back "stop", as
    the in-process engine reports it;
  - weights pushed to a server without rstar-serve's upload route: an error saying to sync from disk.
  python -m pytest -q tests/rollout_sglang_client_test.py
"""
import asyncio

import jax
import pytest
from aiohttp import web

from rstar_jax import models
from rstar_jax import rollout
from rstar_jax.rollout import sglang_client
from rstar_jax.rollout import weight_sync
from tests import tiny_models

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


def _serve(routes: dict, use, **engine_kwargs):
  """`await use(engine)` with an SGLangEngine on a loopback server answering `routes` (path -> JSON,
  or an aiohttp handler; to GET and POST; others 404); returns (its result, how many times each
  route was asked)."""
  asked = {path: 0 for path in routes}

  def handler(path):
    async def answer(request):
      asked[path] += 1
      return await routes[path](request) if callable(routes[path]) else web.json_response(routes[path])
    return answer

  async def main():
    app = web.Application()
    for path in routes:
      app.router.add_route("*", path, handler(path))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # pylint: disable=protected-access
    try:
      async with sglang_client.SGLangEngine(f"http://127.0.0.1:{port}", **{"retries": 0, **engine_kwargs}) as engine:
        return await use(engine)
    finally:
      await runner.cleanup()

  return asyncio.run(main()), asked


def _load_of(routes: dict) -> tuple[sglang_client.ServerLoad, int]:
  """The client's load() (asked twice: the same both times), and the /get_server_info reads."""
  async def twice(engine):
    first = await engine.load()
    assert await engine.load() == first
    return first
  load, asked = _serve(routes, twice)
  return load, asked.get("/get_server_info", 0)


@pytest.mark.parametrize("routes, expected, info_reads", [
    # running, waiting, used, capacity, max_running: each the sum of the two ranks
    ({"/v1/loads": V0_5_23_LOADS, "/get_server_info": SERVER_INFO}, (8, 1, 750, 2000, 96), 0),
    ({"/v1/loads": V0_5_9_LOADS, "/get_load": V0_5_6_GET_LOAD, "/get_server_info": SERVER_INFO},
     (8, 1, 750, 2000, 96), 1),
    # 0.5.6: num_reqs counts running + waiting; num_tokens includes the queued prompts' tokens
    ({"/get_load": V0_5_6_GET_LOAD, "/get_server_info": SERVER_INFO}, (8, 1, 770, 2000, 96), 1),
    # 0.4.9: rank 0's tokens stand for every rank's; no request counts
    ({"/get_load": V0_4_9_GET_LOAD, "/get_server_info": SERVER_INFO}, (0, 0, 640, 2000, 96), 1),
    # no rank in /v1/loads: /get_load answers instead
    ({"/v1/loads": {"loads": []}, "/get_load": V0_5_6_GET_LOAD, "/get_server_info": SERVER_INFO},
     (8, 1, 770, 2000, 96), 1),
], ids=["0.5.23", "0.5.9", "0.5.6", "0.4.9", "no-rank"])
def test_load_sums_the_data_parallel_ranks_of_every_version(routes, expected, info_reads):
  load, asked = _load_of(routes)
  assert (load.running, load.waiting, load.used_tokens, load.capacity_tokens, load.max_running) == expected
  assert asked == info_reads


def test_a_server_without_max_running_requests_is_not_capped():
  info = {"max_total_num_tokens": 1000, "internal_states": [{}]}  # dp_size absent: one rank
  load, _ = _load_of({"/get_load": [V0_5_6_GET_LOAD[0]], "/get_server_info": info})
  assert (load.running, load.capacity_tokens, load.max_running) == (3, 1000, 1 << 30)


def _answer(output_ids: list[int], finish: dict) -> dict:
  return {"output_ids": output_ids, "meta_info": {
      "id": "q", "finish_reason": finish, "prompt_tokens": 3, "completion_tokens": len(output_ids),
      "cached_tokens": 0, "output_token_logprobs": [[-0.5, t, None] for t in output_ids]}}


EOS, STOP = 5, 9


@pytest.mark.parametrize("output_ids, finish, ignore_eos, expected", [
    ([3, EOS], {"type": "length", "length": 2}, False, {"type": "stop", "matched": EOS}),
    ([3, STOP], {"type": "length", "length": 2}, False, {"type": "stop", "matched": STOP}),
    ([3, STOP], {"type": "length", "length": 2}, True, {"type": "length", "length": 2}),  # SGLang stops at no id
    ([3, 4], {"type": "length", "length": 2}, False, {"type": "length", "length": 2}),
    ([EOS], {"type": "stop", "matched": EOS}, False, {"type": "stop", "matched": EOS}),
    # aborted (weights updated) after its last allowed token: nothing left to continue
    ([3, EOS], {"type": "abort", "message": "paused"}, False, {"type": "stop", "matched": EOS}),
], ids=["eos-last", "stop-id-last", "ignore-eos", "ordinary-last", "stop-as-is", "aborted-at-the-budget"])
def test_a_length_finish_on_a_stop_token_is_a_stop(output_ids, finish, ignore_eos, expected):
  request = rollout.GenerateRequest("q", [1, 2, 3], rollout.SamplingParams(
      max_new_tokens=2, stop_token_ids=(STOP,), ignore_eos=ignore_eos))
  result, _ = _serve({"/generate": _answer(output_ids, finish)}, lambda engine: engine.generate(request),
                     eos_token_ids=(EOS,))
  assert result.finish_reason == expected and result.output_ids.tolist() == output_ids


def test_pushing_weights_to_a_server_without_the_upload_route_says_to_sync_from_disk():
  """SGLang answers 404 to /upload_weights: the error names the server and the way that works."""
  cfg = tiny_models.tiny_config()
  params = models.init_params(cfg, jax.random.key(0))
  with pytest.raises(sglang_client.ServerError, match=r"HTTP 404: no /upload_weights route.*weight_sync='disk'"):
    _serve({"/health": {}}, lambda engine: weight_sync.push_version(cfg, params, [engine], "1"))


def test_a_server_answering_502_is_unavailable_once_the_retries_are_spent():
  """502/504 are a gateway's "the server is gone": retried, then ServerUnavailable (the router moves
  the rollout), not ServerError (a request the server refused)."""
  rids = []

  async def gateway(request):
    rids.append((await request.json())["rid"])
    return web.json_response({"message": "bad gateway"}, status=502)

  def generate(engine):
    return engine.generate(rollout.GenerateRequest("r", [1, 2], rollout.SamplingParams(max_new_tokens=2)))

  with pytest.raises(sglang_client.ServerUnavailable, match="no answer after 3 tries"):
    _serve({"/generate": gateway}, generate, retries=2, backoff_s=0.01)
  assert rids == ["r", "r#a1", "r#a2"]  # each resend under a fresh rid
