"""Multi-host mode on a real redis-server: no queue deadline, failover of a killed worker.

Starts `redis-server` on a loopback port, `rstar-sandbox serve --redis` in front and
`rstar-sandbox worker --redis` processes, and kills a worker with SIGKILL mid-job.
  python -m pytest -q tests/sandbox_redis_test.py
"""
import asyncio
import json
import time

import pytest
import redis

from rstar_jax.sandbox import client as client_lib
from rstar_jax.sandbox import processes
from rstar_jax.sandbox import redis_queue

LEASE_S = "1"


@pytest.fixture(scope="module")
def redis_url():
  process, url = processes.start_redis()
  yield url
  process.stop()


@pytest.fixture(scope="module")
def front(redis_url):
  process, url = processes.start_service(["--redis", redis_url, "--lease-s", LEASE_S],
                                         min_workers=0)
  yield url
  process.stop()


@pytest.fixture
def workers(redis_url):
  started = []

  def start(count: int = 1) -> list[processes.Process]:
    new = [processes.start_worker(["--redis", redis_url, "--workers", "1", "--jobs-per-worker",
                                   "4", "--lease-s", LEASE_S, "--timeout-s", "3"])
           for _ in range(count)]
    started.extend(new)
    return new

  yield start
  for process in started:
    process.stop()


def _status(url: str) -> dict:
  return processes.health(url)


async def _gather(url: str, codes: list[str], during=None):
  async with client_lib.SandboxClient(url, batch_size=4) as client:
    calls = asyncio.gather(*(client.run(code) for code in codes))
    if during is not None:
      await during()
    return await calls


def test_jobs_wait_in_the_queue_without_deadline(front, workers):
  async def go():
    async def wait_then_start_a_worker():
      await asyncio.sleep(6.0)  # Code Judge drops /run jobs after 4 s in its queue
      assert _status(front)["queued"] == 12 and _status(front)["workers_alive"] == 0
      workers(1)
    return await _gather(front, [f"print({i})" for i in range(12)], wait_then_start_a_worker)
  results = asyncio.run(go())
  assert [(r.status, r.stdout) for r in results] == [("ok", f"{i}\n") for i in range(12)]


def test_killed_worker_jobs_run_elsewhere_and_answer_once(front, workers):
  victim, survivor = workers(2)
  processes.wait_for_workers(front, 2, victim)
  codes = [f"import time\ntime.sleep(1.0)\nprint({i})" for i in range(16)]

  async def kill_mid_job():
    deadline = time.monotonic() + 30
    while _status(front)["running"] < 8 and time.monotonic() < deadline:
      await asyncio.sleep(0.05)
    assert _status(front)["running"] >= 8  # both workers hold jobs
    victim.popen.kill()

  results = asyncio.run(_gather(front, codes, kill_mid_job))
  assert [(r.status, r.stdout) for r in results] == [("ok", f"{i}\n") for i in range(16)]
  assert survivor.alive() and not victim.alive()
  deadline = time.monotonic() + 10
  while _status(front)["workers_alive"] != 1 and time.monotonic() < deadline:
    time.sleep(0.1)
  assert _status(front)["workers_alive"] == 1 and _status(front)["running"] == 0


def test_stopped_worker_finishes_its_jobs_first(front, workers):
  (worker,) = workers(1)
  processes.wait_for_workers(front, 1, worker)

  async def stop_mid_job():
    while _status(front)["running"] < 4:
      await asyncio.sleep(0.05)
    worker.popen.terminate()

  results = asyncio.run(_gather(front, [f"import time\ntime.sleep(0.5)\nprint({i})"
                                        for i in range(4)], stop_mid_job))
  assert [r.stdout for r in results] == [f"{i}\n" for i in range(4)]
  assert worker.popen.wait(30) == 0


def _client(url: str, prefix: str) -> tuple[redis.Redis, redis_queue.QueueKeys]:
  return redis.Redis.from_url(url), redis_queue.QueueKeys(prefix)


def test_result_is_written_once(redis_url):
  r, keys = _client(redis_url, "once")
  payload = json.dumps({"id": "j1", "source": "", "stdin": "", "reply": keys.reply("f")})
  r.lpush(keys.processing("w"), payload)
  for body in ('{"first": 1}', '{"second": 2}'):
    r.eval(redis_queue.COMPLETE_SCRIPT, 4, keys.result("j1"), keys.reply("f"),
           keys.processing("w"), keys.attempts, body, 60, "j1", payload)
  assert r.get(keys.result("j1")) == b'{"first": 1}'
  assert r.llen(keys.processing("w")) == 0 and r.lrange(keys.reply("f"), 0, -1) == [b"j1", b"j1"]


def test_dead_worker_jobs_are_requeued_then_given_up(redis_url):
  r, keys = _client(redis_url, "requeue")
  payload = json.dumps({"id": "j2", "source": "", "stdin": "", "reply": keys.reply("f")})

  def die_holding_the_job():
    r.hset(keys.workers, "dead", 4)
    r.lpush(keys.processing("dead"), payload)
    return asyncio.run(_requeue(redis_url, keys))

  assert die_holding_the_job() == 1
  assert r.lrange(keys.queue, 0, -1) == [payload.encode()] and r.hget(keys.attempts, "j2") == b"1"
  r.delete(keys.queue)
  assert die_holding_the_job() == 0  # second death: max_attempts (2) reached
  stored = redis_queue.result_from_stored(r.get(keys.result("j2")))
  assert stored.status == "sandbox_error" and r.lrange(keys.reply("f"), 0, -1) == [b"j2"]
  assert not r.hexists(keys.workers, "dead") and r.llen(keys.queue) == 0


async def _requeue(url: str, keys) -> int:
  client = redis_queue.connect(url, 2)
  try:
    return await redis_queue.requeue_dead_workers(client, keys, 2)
  finally:
    await client.aclose()


def test_health_says_unavailable_while_redis_is_down():
  redis_process, url = processes.start_redis()
  front_process, front_url = processes.start_service(["--redis", url], min_workers=0)
  try:
    assert _status(front_url)["status"] == "unavailable"  # up, but no worker yet
    redis_process.stop()
    body = _status(front_url)
    assert body["status"] == "unavailable" and body["detail"]  # the redis error
    assert front_process.alive()
  finally:
    front_process.stop()
    redis_process.stop()


def test_a_redis_restart_mid_load_loses_no_call():
  """redis (no persistence) killed mid-load and restarted empty 2 s later: the front end queues the
  jobs it still waits for again, and every call is answered once, with the right output."""
  port = processes.free_port()
  redis_process, url = processes.start_redis(port)
  front_process, front_url = processes.start_service(["--redis", url, "--lease-s", LEASE_S], min_workers=0)
  worker = processes.start_worker(["--redis", url, "--workers", "1", "--jobs-per-worker", "4",
                                   "--lease-s", LEASE_S, "--timeout-s", "3"])
  restarted = []
  try:
    processes.wait_for_workers(front_url, 1, worker)
    codes = [f"import time\ntime.sleep(0.02)\nprint({i})" for i in range(240)]

    async def restart_redis_mid_load():
      deadline = time.monotonic() + 60
      while _status(front_url)["queued"] == 0:  # kill it only while jobs wait in redis
        assert time.monotonic() < deadline, "no job was ever queued in redis"
        await asyncio.sleep(0.05)
      redis_process.stop()
      await asyncio.sleep(2.0)
      restarted.append(processes.start_redis(port)[0])

    results = asyncio.run(_gather(front_url, codes, restart_redis_mid_load))
    assert [(r.status, r.stdout) for r in results] == [("ok", f"{i}\n") for i in range(240)]
    assert front_process.alive() and worker.alive() and restarted
  finally:
    for process in [worker, front_process, redis_process, *restarted]:
      process.stop()
