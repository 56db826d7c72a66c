"""`rstar-sandbox`: run the sandbox service, or a worker of a multi-host sandbox.

  rstar-sandbox serve --host 127.0.0.1 --port 8080 --workers 2     # one host, local pool
  rstar-sandbox serve --port 8080 --redis redis://HOST:6379/0      # front end of a cluster
  rstar-sandbox worker --redis redis://HOST:6379/0 --workers 16    # on each CPU host

Must run as root (each snippet gets its own uid and namespaces). Limits default to the rStar2
launch values (4 s, 384 MiB); see `rstar-sandbox serve --help`. SIGINT/SIGTERM stop it
cleanly. Code Judge clients (rStar2's included) point their URL at the service unchanged.

Which command takes which flag: `serve` alone takes the HTTP flags (--host, --port,
--max-body-mib, --api-key-file, --trusted-network) and the executor-pool flags (POOL_FLAGS:
--workers, the limits, ...);
`serve --redis` takes the HTTP flags and the queue flags (QUEUE_FLAGS: --queue, --lease-s)
and rejects every pool flag, naming them, since its workers run the snippets; `worker` takes
the queue and pool flags. A flag given where it does nothing is an error, never ignored.
"""
import argparse
import asyncio
import logging
import signal
import sys

from rstar_jax.sandbox import config as config_lib
from rstar_jax.sandbox import pool
from rstar_jax.sandbox import processes
from rstar_jax.sandbox import redis_queue
from rstar_jax.sandbox import server


# Flags of the executor pool: `serve` without --redis and `worker` take them; `serve --redis`
# runs no snippets and rejects them. Defaults come from config.Limits / config.PoolConfig.
POOL_FLAGS = ("--workers", "--jobs-per-worker", "--runnable-per-worker", "--timeout-s", "--cpu-s",
              "--memory-mib", "--run-memory-mib", "--output-kib", "--preload", "--no-warmup", "--uid-base")
# Flags of the redis queue: `worker` and `serve --redis` take them.
QUEUE_FLAGS = ("--queue", "--lease-s")
_LIMITS = {"timeout_s": ("timeout_s", 1), "cpu_s": ("cpu_s", 1), "memory_mib": ("memory_bytes", config_lib.MIB),
           "run_memory_mib": ("run_memory_bytes", config_lib.MIB),
           "output_kib": ("output_bytes", 1024)}
_POOL_FIELDS = ("workers", "jobs_per_worker", "runnable_per_worker", "uid_base")


def _dest(flag: str) -> str:
  return flag[2:].replace("-", "_")


def _given(args: argparse.Namespace, flags: tuple[str, ...]) -> list[str]:
  """The flags of `flags` that were given on the command line (their defaults are None)."""
  return [flag for flag in flags if getattr(args, _dest(flag)) is not None]


def _pool_config(args: argparse.Namespace) -> config_lib.PoolConfig:
  """The PoolConfig of the given pool flags; the others keep the config defaults."""
  limits = {field: getattr(args, dest) * scale for dest, (field, scale) in _LIMITS.items()
            if getattr(args, dest) is not None}
  fields = {name: getattr(args, name) for name in _POOL_FIELDS if getattr(args, name) is not None}
  if args.preload is not None:
    fields["preload"] = tuple(name for name in args.preload.split(",") if name)
  if args.no_warmup:
    fields["warmup"] = False
  return config_lib.PoolConfig(limits=config_lib.Limits(**limits), **fields)


def _add_pool_flags(sub: argparse.ArgumentParser, title: str) -> None:
  limits, pool_defaults = config_lib.Limits(), config_lib.PoolConfig()
  group = sub.add_argument_group(title)
  group.add_argument("--workers", type=int, help="zygote processes (default: one per CPU core)")
  group.add_argument("--jobs-per-worker", type=int,
                     help="snippets each zygote runs at once "
                          f"(default: {pool_defaults.jobs_per_worker})")
  group.add_argument("--runnable-per-worker", type=int,
                     help="start no snippet while this many of a zygote's are using a CPU "
                          "(default: 2 x cores / workers)")
  group.add_argument("--timeout-s", type=float,
                     help=f"wall-clock seconds per run (default: {limits.timeout_s:g})")
  group.add_argument("--cpu-s", type=int,
                     help="CPU seconds per process of a run (default: --timeout-s rounded up); with "
                          "--timeout-s well above it, a CPU-bound run ends the same however busy the host is")
  group.add_argument("--memory-mib", type=int,
                     help=f"address-space limit per process, MiB (default: "
                          f"{limits.memory_bytes // config_lib.MIB})")
  group.add_argument("--run-memory-mib", type=int,
                     help="memory all processes of one run may hold together, MiB; runs are "
                          "admitted so that these budgets fit 3/4 of the host's available memory "
                          f"(default: {limits.run_memory_bytes // config_lib.MIB})")
  group.add_argument("--output-kib", type=int,
                     help=f"KiB kept per output stream (default: {limits.output_bytes // 1024})")
  group.add_argument("--preload", help="comma-separated modules imported once by each zygote "
                                       f"(default: {','.join(pool_defaults.preload)})")
  group.add_argument("--no-warmup", action="store_true", default=None,
                     help="do not make typical sympy/numpy calls in the zygotes at start")
  group.add_argument("--uid-base", type=int,
                     help=f"first uid handed to snippets, blocks of {config_lib.UID_BLOCK} "
                          f"per pool (default: {pool_defaults.uid_base})")


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="rstar-sandbox", description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  serve = commands.add_parser("serve", help="the HTTP service (Code Judge routes)")
  serve.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default: %(default)s)")
  serve.add_argument("--port", type=int, default=8080, help="HTTP port (default: %(default)s)")
  serve.add_argument("--max-body-mib", type=int, default=64,
                     help="largest request body, MiB (default: %(default)s)")
  serve.add_argument("--api-key-file", default=None,
                     help="file holding the API key every request must send as 'Authorization: Bearer "
                     "KEY' (/ping and /health excepted); needed to listen beyond loopback")
  serve.add_argument("--trusted-network", action="store_true",
                     help="listen beyond loopback without an API key (anyone who reaches the port can "
                     "run code)")
  worker = commands.add_parser("worker", help="run jobs from a redis queue (multi-host mode)")
  for sub in (serve, worker):
    sub.add_argument("--redis", default=None, required=sub is worker,
                     help="redis URL; serve: queue jobs there for workers instead of running "
                          "them here (the pool flags then belong to the workers)")
    group = sub.add_argument_group("redis queue" + (" (serve: only with --redis)"
                                                    if sub is serve else ""))
    group.add_argument("--queue", help=f"redis key prefix (default: {redis_queue.DEFAULT_PREFIX})")
    group.add_argument("--lease-s", type=float,
                       help="a worker silent this long is presumed dead and its jobs run again; "
                            "the front end checks every lease-s/2 "
                            f"(default: {redis_queue.DEFAULT_LEASE_S:g})")
    _add_pool_flags(sub, "executor pool" + (" (not with --redis)" if sub is serve else ""))
  return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  """Rejects flags the command does not use and bad values, with one message each."""
  if args.command == "serve" and args.redis:
    given = _given(args, POOL_FLAGS)
    if given:
      parser.error(f"with --redis the front end runs no snippets: {', '.join(given)} "
                   f"belong{'s' if len(given) == 1 else ''} to `rstar-sandbox worker`")
  elif args.command == "serve":
    given = _given(args, QUEUE_FLAGS)
    if given:
      parser.error(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} only with "
                   "--redis")
  if args.lease_s is not None and not args.lease_s > 0:
    parser.error(f"--lease-s must be > 0, got {args.lease_s}")
  try:
    _pool_config(args)
  except ValueError as e:
    parser.error(str(e))


def _api_key(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
  """The key of --api-key-file; refuses a non-loopback --host without one (unless trusted)."""
  try:
    key = processes.read_api_key(args.api_key_file)
  except OSError as e:
    parser.error(f"--api-key-file {args.api_key_file}: {e.strerror}")
  except ValueError:
    parser.error(f"--api-key-file {args.api_key_file} is empty")
  if key is None and not processes.is_loopback(args.host) and not args.trusted_network:
    parser.error(f"--host {args.host} listens beyond loopback and the service runs anyone's code: give "
                 "--api-key-file, or --trusted-network if every host that can reach the port is trusted")
  return key


def _queue_options(args: argparse.Namespace) -> dict:
  """RedisFront / RedisWorker keyword arguments of the given queue flags."""
  return {name: value for name, value in (("prefix", args.queue), ("lease_s", args.lease_s))
          if value is not None}


async def _serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
  if args.redis:
    backend = redis_queue.RedisFront(args.redis, **_queue_options(args))
  else:
    backend = pool.Pool(_pool_config(args))
  await backend.start()
  try:
    runner = await server.start_site(server.Service(backend, args.max_body_mib << 20, args.api_key),
                                     args.host, args.port)
    logging.info("serving on http://%s:%d", args.host, args.port)
    await stop.wait()
    await runner.cleanup()
  finally:
    await backend.close()


async def _work(args: argparse.Namespace, stop: asyncio.Event) -> None:
  worker = redis_queue.RedisWorker(args.redis, _pool_config(args), **_queue_options(args))
  await worker.run(stop)


def main(argv: list[str] | None = None) -> int:
  """Entry point of the `rstar-sandbox` console script."""
  parser = _parser()
  args = parser.parse_args(argv)
  _check(parser, args)
  if args.command == "serve":
    args.api_key = _api_key(parser, args)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                      stream=sys.stderr)

  async def run() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
      loop.add_signal_handler(sig, stop.set)
    await (_serve if args.command == "serve" else _work)(args, stop)

  try:
    asyncio.run(run())
  except (PermissionError, RuntimeError, ValueError) as e:  # what a pool refusing to start raises
    print(f"rstar-sandbox: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
