"""Multi-host mode: a reliable redis queue between the HTTP front end and executor hosts.

Keys under a prefix P (one redis server, not a cluster; Lua scripts touch keys they compute):
  P:queue              list of job payloads {id, source, stdin, reply}; LPUSH in, pop right
  P:processing:{wid}   jobs worker `wid` has taken (BLMOVE queue -> here, atomically)
  P:lease:{wid}        exists while worker `wid` is alive (PX lease_s, renewed every lease_s/4)
  P:workers            hash wid -> capacity: the workers that may hold jobs
  P:attempts           hash job id -> times the job's worker died under it
  P:result:{id}        the job's ExecutionResult as JSON, written once (SET NX); deleted when
                       its front end has read it, else expires after an hour
  P:reply:{front}      list of job ids whose result is ready, one per front end (BLPOP)

Guarantees:
* No queue deadline: a job waits in P:queue as long as it must and is never dropped for it.
* A worker that dies (its lease expires) has its P:processing list moved back to the head of
  P:queue by whichever process next runs the requeue script (every worker and front end do,
  every lease_s/2); the script is atomic, so a job is requeued once. After `max_attempts`
  deaths under it, a job is answered sandbox_error instead.
* A finished job is recorded by one atomic script: SET NX of its result, its id pushed to its
  front end's reply list, its payload removed from P:processing. When a presumed-dead worker
  finishes a job that was also re-run, the second result is not written (SET NX), so the
  caller gets exactly one result; a front end also resolves each call at most once.
* A front end that misses a reply (it is re-sent by a late duplicate, or lost) finds the
  result anyway: every few seconds it reads P:result of the calls it still waits for.
* A redis restart that loses the data (a server without persistence) loses no call: each front
  end keeps the payload of every job it waits for and a marker key P:front:{front} (EX, renewed
  every sweep); a sweep that finds the marker gone queues every job it still waits for again.
  A job that had already run (or runs twice) answers once: results are written with SET NX and a
  call resolves once. Workers re-register with their next heartbeat.
"""
import asyncio
import json
import logging
import os
import socket
import uuid

import redis.asyncio as aioredis

from rstar_jax.sandbox import config as config_lib
from rstar_jax.sandbox import pool as pool_lib
from rstar_jax.sandbox import result as result_lib

DEFAULT_PREFIX = "rstar-sandbox"
DEFAULT_LEASE_S = 10.0
_RESULT_TTL_S = 3600
_SWEEP_INTERVAL_S = 5.0
_BATCH = 256
_RETRY_S = 0.5

# KEYS: workers hash, queue, attempts hash. ARGV: prefix, max_attempts, result ttl.
REQUEUE_SCRIPT = """
local moved = 0
for _, wid in ipairs(redis.call('HKEYS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. ':lease:' .. wid) == 0 then
    local taken = ARGV[1] .. ':processing:' .. wid
    local payload = redis.call('LPOP', taken)
    while payload do
      local job = cjson.decode(payload)
      if redis.call('HINCRBY', KEYS[3], job.id, 1) >= tonumber(ARGV[2]) then
        local body = '{"status": "sandbox_error", "stdout": "", "stderr": ' ..
          '"the sandbox worker died under this job too many times", ' ..
          '"exit_code": null, "wall_time_s": 0.0}'
        redis.call('SET', ARGV[1] .. ':result:' .. job.id, body, 'NX', 'EX', ARGV[3])
        redis.call('HDEL', KEYS[3], job.id)
        redis.call('LPUSH', job.reply, job.id)
      else
        redis.call('RPUSH', KEYS[2], payload)
        moved = moved + 1
      end
      payload = redis.call('LPOP', taken)
    end
    redis.call('HDEL', KEYS[1], wid)
  end
end
return moved
"""
# KEYS: result, reply list, processing list, attempts hash. ARGV: body, ttl, id, payload.
COMPLETE_SCRIPT = """
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
redis.call('LPUSH', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('LREM', KEYS[3], 1, ARGV[4])
redis.call('HDEL', KEYS[4], ARGV[3])
return 1
"""


def result_to_json(result: result_lib.ExecutionResult) -> str:
  """The stored form of a result."""
  return json.dumps({"status": result.status, "stdout": result.stdout, "stderr": result.stderr,
                     "exit_code": result.exit_code, "wall_time_s": result.wall_time_s})


def result_from_stored(text: bytes | str) -> result_lib.ExecutionResult:
  """Inverse of result_to_json."""
  return result_lib.ExecutionResult(**json.loads(text))


async def _attempt(awaitable, doing: str):
  """Awaits a redis call; on a redis error logs it and returns False (callers retry)."""
  try:
    return await awaitable
  except (aioredis.RedisError, OSError) as e:
    logging.warning("sandbox redis queue: %s failed: %s", doing, e)
    return False


class QueueKeys:
  """The key names of one queue (module docstring)."""

  def __init__(self, prefix: str):
    self.prefix = prefix
    self.queue, self.workers = f"{prefix}:queue", f"{prefix}:workers"
    self.attempts = f"{prefix}:attempts"

  def lease(self, wid: str) -> str:
    return f"{self.prefix}:lease:{wid}"

  def processing(self, wid: str) -> str:
    return f"{self.prefix}:processing:{wid}"

  def result(self, job_id: str) -> str:
    return f"{self.prefix}:result:{job_id}"

  def reply(self, front_id: str) -> str:
    return f"{self.prefix}:reply:{front_id}"


def connect(url: str, max_connections: int) -> aioredis.Redis:
  """An asyncio redis client whose commands wait for one of `max_connections` connections."""
  connections = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections,
                                                          timeout=None)
  return aioredis.Redis(connection_pool=connections)


async def requeue_dead_workers(client: aioredis.Redis, keys: QueueKeys,
                               max_attempts: int) -> int:
  """Runs REQUEUE_SCRIPT once; returns the number of jobs put back in the queue."""
  return await client.eval(REQUEUE_SCRIPT, 3, keys.workers, keys.queue, keys.attempts,
                           keys.prefix, max_attempts, _RESULT_TTL_S)


class RedisFront:
  """A server backend that queues jobs in redis for `RedisWorker`s (module docstring)."""

  def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, lease_s: float = DEFAULT_LEASE_S,
               max_attempts: int = config_lib.PoolConfig.max_attempts):
    self._url, self._keys = url, QueueKeys(prefix)
    self._lease_s, self._max_attempts = lease_s, max_attempts
    self._front_id = uuid.uuid4().hex
    self._reply_key = self._keys.reply(self._front_id)
    self._pending: dict[str, asyncio.Future] = {}
    self._payloads: dict[str, str] = {}  # job id -> payload, while its call waits (requeue)
    self._marker = f"{prefix}:front:{self._front_id}"
    self._outgoing: asyncio.Queue = asyncio.Queue()
    self._tasks: list[asyncio.Task] = []
    self._client = self._listener = None

  async def start(self) -> None:
    """Connects (raises if redis is unreachable) and starts the background tasks."""
    self._client = connect(self._url, 16)
    self._listener = connect(self._url, 2)
    await self._client.ping()
    await self._client.set(self._marker, 1, ex=self._marker_ttl_s)
    self._tasks = [asyncio.create_task(coro) for coro in
                   (self._submit_loop(), self._reply_loop(), self._sweep_loop())]

  async def close(self) -> None:
    """Stops the background tasks; calls still waiting get sandbox_error."""
    for task in self._tasks:
      task.cancel()
    await asyncio.gather(*self._tasks, return_exceptions=True)
    for future in self._pending.values():
      if not future.done():
        future.set_result(pool_lib.lost_result("the sandbox front end was closed"))
    for client in (self._client, self._listener):
      if client is not None:
        await client.aclose()

  async def run(self, source: str, stdin: str | None) -> result_lib.ExecutionResult:
    """Queues one job and waits, without deadline, for its one result."""
    job_id = uuid.uuid4().hex
    future = asyncio.get_running_loop().create_future()
    self._pending[job_id] = future
    payload = json.dumps({"id": job_id, "source": source, "stdin": stdin or "",
                          "reply": self._reply_key})
    self._payloads[job_id] = payload
    self._outgoing.put_nowait(payload)
    try:
      return await future
    finally:
      del self._pending[job_id], self._payloads[job_id]

  async def stats(self) -> dict[str, int]:
    """Queue length, workers alive (lease held), their capacity, jobs taken."""
    wids = [w.decode() for w in await self._client.hkeys(self._keys.workers)]
    pipe = self._client.pipeline(transaction=False)
    pipe.llen(self._keys.queue)
    for wid in wids:
      pipe.exists(self._keys.lease(wid))
      pipe.hget(self._keys.workers, wid)
      pipe.llen(self._keys.processing(wid))
    values = await pipe.execute()
    alive = [i for i in range(len(wids)) if values[1 + 3 * i]]
    return {"queued": values[0], "waiting_calls": len(self._pending),
            "workers_alive": len(alive),
            "capacity": sum(int(values[2 + 3 * i] or 0) for i in alive),
            "running": sum(values[3 + 3 * i] for i in range(len(wids)))}

  async def _submit_loop(self) -> None:
    while True:
      batch = [await self._outgoing.get()]
      while not self._outgoing.empty() and len(batch) < _BATCH:
        batch.append(self._outgoing.get_nowait())
      while not await _attempt(self._client.lpush(self._keys.queue, *batch), "queueing jobs"):
        await asyncio.sleep(_RETRY_S)

  async def _reply_loop(self) -> None:
    while True:
      popped = await _attempt(self._listener.blpop([self._reply_key], timeout=1),
                              "reading replies")
      if popped is False:
        await asyncio.sleep(_RETRY_S)
      if not popped:
        continue
      ids = [popped[1].decode()]
      rest = await _attempt(self._listener.lpop(self._reply_key, _BATCH), "reading replies")
      ids += [i.decode() for i in rest or ()]
      await _attempt(self._resolve(ids), "reading results")

  async def _resolve(self, ids: list[str]) -> None:
    ids = [i for i in ids if i in self._pending and not self._pending[i].done()]
    if not ids:
      return
    keys = [self._keys.result(i) for i in ids]
    bodies = await self._listener.mget(keys)
    done = []
    for job_id, key, body in zip(ids, keys, bodies):
      future = self._pending.get(job_id)
      if body is None or future is None or future.done():
        continue
      try:
        future.set_result(result_from_stored(body))
      except (ValueError, TypeError) as e:
        future.set_result(pool_lib.lost_result(f"unreadable result in redis: {e}"))
      done.append(key)
    if done:  # read once: a late duplicate run may write it again, to no one (it expires)
      await self._listener.delete(*done)

  @property
  def _marker_ttl_s(self) -> int:
    return max(60, int(20 * min(_SWEEP_INTERVAL_S, self._lease_s / 2)))

  async def _requeue_if_redis_lost_data(self) -> None:
    """Queues every waiting job again when the marker key is gone (module docstring)."""
    if await self._client.set(self._marker, 1, ex=self._marker_ttl_s, xx=True):
      return  # renewed: redis kept its data
    payloads = list(self._payloads.values())
    if payloads:
      logging.warning("sandbox front end: redis lost its data (restarted?); queueing the %d jobs "
                      "still waited for again", len(payloads))
    for i in range(0, len(payloads), _BATCH):
      await self._client.lpush(self._keys.queue, *payloads[i:i + _BATCH])
    await self._client.set(self._marker, 1, ex=self._marker_ttl_s)

  async def _sweep_loop(self) -> None:
    while True:
      await asyncio.sleep(min(_SWEEP_INTERVAL_S, self._lease_s / 2))
      await _attempt(self._requeue_if_redis_lost_data(), "checking that redis kept the queue")
      await _attempt(requeue_dead_workers(self._client, self._keys, self._max_attempts),
                     "requeueing the jobs of dead workers")
      waiting = list(self._pending)
      for i in range(0, len(waiting), _BATCH):
        await _attempt(self._resolve(waiting[i:i + _BATCH]), "reading results")


class RedisWorker:
  """Runs jobs from the redis queue on a local `pool.Pool` (module docstring)."""

  def __init__(self, url: str, config: config_lib.PoolConfig, prefix: str = DEFAULT_PREFIX,
               lease_s: float = DEFAULT_LEASE_S):
    if not lease_s > 0:
      raise ValueError(f"lease_s must be > 0, got {lease_s}")
    self._url, self._keys, self._lease_s = url, QueueKeys(prefix), lease_s
    self._config = config
    self._capacity = 0  # the pool's, once it has started
    self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

  async def run(self, stop: asyncio.Event) -> None:
    """Takes and runs jobs until `stop` is set; then finishes the jobs it holds and leaves."""
    async with pool_lib.Pool(self._config) as pool:
      self._capacity = pool.capacity
      client = connect(self._url, self._capacity + 4)
      blocking = connect(self._url, 1)
      await self._beat(client)
      heart = asyncio.create_task(self._heartbeat(client, stop))
      slots = asyncio.Semaphore(self._capacity)
      jobs: set[asyncio.Task] = set()
      taken = self._keys.processing(self.worker_id)
      logging.info("sandbox worker %s: taking jobs from %s (%d slots)", self.worker_id,
                   self._keys.queue, self._capacity)
      while not stop.is_set():
        await slots.acquire()
        payload = await _attempt(blocking.blmove(self._keys.queue, taken, 1, "RIGHT", "LEFT"),
                                 "taking a job")
        if not payload:
          slots.release()
          if payload is False:
            await asyncio.sleep(_RETRY_S)
          continue
        task = asyncio.create_task(self._run_job(client, pool, payload, taken))
        jobs.add(task)
        task.add_done_callback(lambda t: (jobs.discard(t), slots.release()))
      await asyncio.gather(*jobs)
      heart.cancel()
      await asyncio.gather(heart, return_exceptions=True)
      await client.hdel(self._keys.workers, self.worker_id)
      await client.delete(self._keys.lease(self.worker_id), taken)
    for c in (client, blocking):
      await c.aclose()

  async def _beat(self, client: aioredis.Redis) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.set(self._keys.lease(self.worker_id), 1, px=int(self._lease_s * 1000))
    pipe.hset(self._keys.workers, self.worker_id, self._capacity)
    await pipe.execute()

  async def _heartbeat(self, client: aioredis.Redis, stop: asyncio.Event) -> None:
    beats = 0
    while not stop.is_set():
      await asyncio.sleep(self._lease_s / 4)
      await _attempt(self._beat(client), "renewing the lease")
      beats += 1
      if beats % 2 == 0:
        await _attempt(requeue_dead_workers(client, self._keys, self._config.max_attempts),
                       "requeueing the jobs of dead workers")

  async def _run_job(self, client: aioredis.Redis, pool: pool_lib.Pool, payload: bytes,
                     taken: str) -> None:
    try:
      job = json.loads(payload)
      job_id, source, stdin, reply = job["id"], job["source"], job["stdin"], job["reply"]
    except (ValueError, KeyError, TypeError) as e:
      logging.error("sandbox worker %s: dropping a malformed job (%s): %.200r", self.worker_id,
                    e, payload)
      await client.lrem(taken, 1, payload)
      return
    result = await pool.run(source, stdin)
    body = result_to_json(result)
    # Until redis takes it: if this worker is presumed dead meanwhile, the job runs again.
    while await _attempt(client.eval(COMPLETE_SCRIPT, 4, self._keys.result(job_id), reply, taken,
                                     self._keys.attempts, body, _RESULT_TTL_S, job_id, payload),
                         "recording a result") is False:
      await asyncio.sleep(_RETRY_S)
