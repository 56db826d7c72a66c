"""`rstar-sandbox`: run the sandbox service, or a worker of a multi-host sandbox.

  rstar-sandbox serve --host 127.0.0.1 --port 8080 --workers 2     # one host, local pool
  rstar-sandbox serve --port 8080 --redis redis://HOST:6379/0      # front end of a cluster
  rstar-sandbox worker --redis redis://HOST:6379/0 --workers 16    # on each CPU host

Must run as root (each snippet gets its own uid and namespaces). Limits default to the rStar2
launch values (4 s, 384 MiB); see `rstar-sandbox serve --help`. SIGINT/SIGTERM stop it
cleanly. Code Judge clients (rStar2's included) point their URL at the service unchanged.
"""
import argparse
import asyncio
import logging
import signal
import sys

from rstar_jax.sandbox import config as config_lib
from rstar_jax.sandbox import pool
from rstar_jax.sandbox import redis_queue
from rstar_jax.sandbox import server


def _pool_config(args: argparse.Namespace) -> config_lib.PoolConfig:
  limits = config_lib.Limits(timeout_s=args.timeout_s,
                             memory_bytes=args.memory_mib * config_lib.MIB,
                             output_bytes=args.output_kib * 1024)
  preload = tuple(name for name in args.preload.split(",") if name)
  return config_lib.PoolConfig(workers=args.workers, jobs_per_worker=args.jobs_per_worker,
                               runnable_per_worker=args.runnable_per_worker, preload=preload,
                               warmup=not args.no_warmup, limits=limits, uid_base=args.uid_base)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="rstar-sandbox", description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  serve = commands.add_parser("serve", help="the HTTP service (Code Judge routes)")
  serve.add_argument("--host", default="127.0.0.1")
  serve.add_argument("--port", type=int, default=8080)
  serve.add_argument("--max-body-mib", type=int, default=64, help="largest request body")
  worker = commands.add_parser("worker", help="run jobs from a redis queue (multi-host mode)")
  for sub in (serve, worker):
    sub.add_argument("--redis", default=None, required=sub is worker,
                     help="redis URL; serve: queue jobs there for workers instead of running "
                          "them here (the pool options then belong to the workers)")
    sub.add_argument("--queue", default="rstar-sandbox", help="redis key prefix of the queue")
    sub.add_argument("--workers", type=int, default=None,
                     help="zygote processes (default: one per CPU core)")
    sub.add_argument("--jobs-per-worker", type=int, default=16,
                     help="snippets each zygote runs at once")
    sub.add_argument("--runnable-per-worker", type=int, default=None,
                     help="start no snippet while this many of a zygote's are using a CPU "
                          "(default: 2 x cores / workers)")
    sub.add_argument("--timeout-s", type=float, default=4.0, help="wall-clock limit per run")
    sub.add_argument("--memory-mib", type=int, default=384, help="address-space limit per run")
    sub.add_argument("--output-kib", type=int, default=1024, help="bytes kept per output stream")
    sub.add_argument("--preload", default="numpy,sympy",
                     help="comma-separated modules imported once by each zygote")
    sub.add_argument("--no-warmup", action="store_true",
                     help="do not make typical sympy/numpy calls in the zygotes at start")
    sub.add_argument("--uid-base", type=int, default=config_lib.UID_BASE,
                     help="first uid handed to snippets (blocks of 65536 per pool)")
  worker.add_argument("--lease-s", type=float, default=10.0,
                      help="a worker silent this long is presumed dead; its jobs run again")
  return parser


async def _serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
  if args.redis:
    backend = redis_queue.RedisFront(args.redis, prefix=args.queue)
  else:
    backend = pool.Pool(_pool_config(args))
  await backend.start()
  try:
    runner = await server.start_site(server.Service(backend, args.max_body_mib << 20),
                                     args.host, args.port)
    logging.info("serving on http://%s:%d", args.host, args.port)
    await stop.wait()
    await runner.cleanup()
  finally:
    await backend.close()


async def _work(args: argparse.Namespace, stop: asyncio.Event) -> None:
  worker = redis_queue.RedisWorker(args.redis, _pool_config(args), prefix=args.queue,
                                   lease_s=args.lease_s)
  await worker.run(stop)


def main(argv: list[str] | None = None) -> int:
  """Entry point of the `rstar-sandbox` console script."""
  parser = _parser()
  args = parser.parse_args(argv)
  try:
    _pool_config(args)
  except ValueError as e:
    parser.error(str(e))
  if args.command == "serve" and args.redis and args.workers is not None:
    parser.error("with --redis the front end runs no snippets: give --workers and the limits "
                 "to `rstar-sandbox worker`")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                      stream=sys.stderr)

  async def run() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
      loop.add_signal_handler(sig, stop.set)
    await (_serve if args.command == "serve" else _work)(args, stop)

  asyncio.run(run())
  return 0


if __name__ == "__main__":
  sys.exit(main())
