"""Sandbox throughput: this service against Code Judge on the same workloads (SANDBOX.md).

  python benchmarks/sandbox_bench.py --code-judge ../code-judge            # the full run
  python benchmarks/sandbox_bench.py --code-judge ../code-judge --requests 500 --skip-big

Starts on loopback ports `rstar-sandbox serve --workers N`, then Code Judge from the checkout
you give (redis-server, 2 API processes, 8 workers, 4 s limit, a raised redis connection pool,
the interpreter called directly; its virtual environment comes from
benchmarks/code_judge_setup.sh under --runs-dir). Both get the same requests: `/run`, one
submission per request, at 64 and 512 requests in flight, for the trivial and the mixed
workloads of `rstar_jax.sandbox.workloads`. On ours it then runs 20,000 requests (trivial and
mixed alternating, 512 in flight) and a burst of 45,000 calls submitted at once through
`SandboxClient` (long-batch). It prints one table (throughput = right answers per second,
p50/p99 latency, lost = no usable answer, wrong = an answer that is not the expected one,
our/their ratio), checks the targets, writes RUNS_DIR/sandbox_bench/summary.json, and stops
every process it started. Other work on the machine skews the figures: compare ratios.

The adversarial table (`--adversarial`, on by default) sends each attack of
`rstar_jax.sandbox.attacks` alone to each service and reports the status it answered, how long
the answer took and the most host memory the attack held meanwhile (the drop of MemAvailable,
sampled every 10 ms from before the call until 1 s after the answer).
"""
import argparse
import asyncio
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time
import threading
import urllib.request

from rstar_jax.sandbox import attacks
from rstar_jax.sandbox import client as client_lib
from rstar_jax.sandbox import codejudge
from rstar_jax.sandbox import memory
from rstar_jax.sandbox import processes
from rstar_jax.sandbox import workloads

REPO = pathlib.Path(__file__).resolve().parents[1]
# Code Judge as SANDBOX.md configured it (its defaults are 2-5x slower and fail at 512).
CODE_JUDGE_API_PROCESSES = 2
CODE_JUDGE_WORKERS = 8


@dataclasses.dataclass
class Run:
  """The figures of one load run."""
  service: str
  workload: str
  in_flight: int
  requests: int
  elapsed_s: float = 0.0
  right: int = 0
  wrong: int = 0
  lost: int = 0
  p50_s: float = 0.0
  p99_s: float = 0.0
  wrong_by_kind: dict = dataclasses.field(default_factory=dict)

  @property
  def ok_per_s(self) -> float:
    return self.right / self.elapsed_s if self.elapsed_s else 0.0


def _percentile(values: list[float], q: float) -> float:
  values = sorted(values)
  return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


async def _progress(run: Run, tally: workloads.Tally, start: float) -> None:
  while True:
    await asyncio.sleep(10)
    rate = tally.sent / (time.monotonic() - start)
    eta = (run.requests - tally.sent) / rate if rate else float("inf")
    print(f"  {run.service} {run.workload} @{run.in_flight}: {tally.sent}/{run.requests} "
          f"({rate:.0f}/s, ETA {eta:.0f} s)", flush=True)


async def load(url: str, service: str, workload: str, in_flight: int, n: int) -> Run:
  """Sends n `/run` requests with `in_flight` of them open at any time."""
  run, tally = Run(service, workload, in_flight, n), workloads.Tally()
  start = time.monotonic()
  reporter = asyncio.create_task(_progress(run, tally, start))
  await workloads.send_requests(url, workloads.cases(workload, n), in_flight, tally)
  run.elapsed_s = time.monotonic() - start
  reporter.cancel()
  run.right, run.wrong, run.lost = tally.right, tally.wrong, tally.lost
  run.wrong_by_kind = dict(tally.wrong_by_kind)
  run.p50_s, run.p99_s = _percentile(tally.latencies_s, 0.5), _percentile(tally.latencies_s, 0.99)
  return run


async def burst(url: str, n: int) -> Run:
  """n calls submitted at once through SandboxClient (batches of 32 to /run/long-batch)."""
  run, cases, latencies = Run("ours", "burst (client)", n, n), workloads.cases("alternating", n), []
  async with client_lib.SandboxClient(url) as client:

    async def call(case: workloads.Case) -> None:
      sent = time.monotonic()
      try:
        result = await client.run(case.solution, case.stdin)
      except client_lib.SandboxUnavailableError:
        run.lost += 1
        return
      latencies.append(time.monotonic() - sent)
      if case.is_right(result):
        run.right += 1
      else:
        run.wrong += 1
        run.wrong_by_kind[case.kind] = run.wrong_by_kind.get(case.kind, 0) + 1

    start = time.monotonic()
    await asyncio.gather(*(call(case) for case in cases))
    run.elapsed_s = time.monotonic() - start
  run.p50_s, run.p99_s = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
  return run


@dataclasses.dataclass
class AttackRun:
  """What one service did with one attack."""
  service: str
  attack: str
  status: str
  contained: bool
  answer_s: float
  peak_held_mib: float


def _post_run(url: str, code: str) -> dict:
  request = urllib.request.Request(url + "/run", data=json.dumps(
      {"type": "python", "solution": code}).encode(), headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(request, timeout=120) as response:
    return json.loads(response.read())


def adversarial(url: str, service: str) -> list[AttackRun]:
  """Each attack alone: status, answer time, and peak host memory held (module docstring)."""
  rows = []
  for attack in attacks.ATTACKS:
    baseline = memory.available_bytes()
    lowest, done = [baseline], threading.Event()

    def sample():
      while not done.wait(0.01):
        lowest[0] = min(lowest[0], memory.available_bytes())

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.monotonic()
    status = codejudge.result_from_json(_post_run(url, attack.code)).status
    answer_s = time.monotonic() - start
    time.sleep(1.0)  # what the attack left running still counts
    done.set()
    sampler.join()
    rows.append(AttackRun(service, attack.name, status, status == attack.contained_status, answer_s,
                          (baseline - lowest[0]) / (1 << 20)))
    print(f"  {service} {attack.name}: {status} after {answer_s:.2f} s, "
          f"{rows[-1].peak_held_mib:.0f} MiB held", flush=True)
  return rows


def _attack_table(rows: list[AttackRun]) -> str:
  lines = [f"{'service':<11}{'attack':<20}{'status':<15}{'answer s':>9}{'peak MiB held':>15}"]
  lines += [f"{r.service:<11}{r.attack:<20}{r.status:<15}{r.answer_s:>9.2f}{r.peak_held_mib:>15.0f}"
            for r in rows]
  return "\n".join(lines)


def start_code_judge(checkout: str, runs_dir: pathlib.Path) -> tuple[list, str]:
  """Starts redis, Code Judge's API and workers; returns (processes, URL)."""
  setup = subprocess.run([str(REPO / "benchmarks" / "code_judge_setup.sh"), checkout,
                          str(runs_dir)], check=True, capture_output=True, text=True)
  venv = pathlib.Path(setup.stdout.strip().splitlines()[-1])
  redis_process, redis_url = processes.start_redis()
  env = {**os.environ, "REDIS_URI": redis_url + "?max_connections=10000",
         "MAX_EXECUTION_TIME": "4", "MAX_WORKERS": str(CODE_JUDGE_WORKERS),
         "PYTHON_EXECUTOR_PATH": sys.executable}
  port = processes.free_port()
  logs = runs_dir / "sandbox_bench"
  api = processes.Process([str(venv / "bin" / "uvicorn"), "app.main:app", "--host", "127.0.0.1",
                           "--port", str(port), "--workers", str(CODE_JUDGE_API_PROCESSES)],
                          "code-judge api", str(logs / "code_judge_api.log"), checkout, env,
                          own_group=True)
  workers = processes.Process([str(venv / "bin" / "python"), "run_workers.py"],
                              "code-judge workers", str(logs / "code_judge_workers.log"),
                              checkout, env, own_group=True)
  url = f"http://127.0.0.1:{port}"

  def ready() -> bool:
    try:
      with urllib.request.urlopen(url + "/status", timeout=5) as status:
        return json.loads(status.read())["num_workers"] >= CODE_JUDGE_WORKERS
    except OSError:
      return False

  processes.wait_until(ready, api, 120)
  return [workers, api, redis_process], url


def _table(runs: list[Run]) -> str:
  theirs = {(r.workload, r.in_flight): r for r in runs if r.service == "code-judge"}
  lines = [f"{'service':<11}{'workload':<16}{'in flight':>10}{'requests':>9}{'ok/s':>8}"
           f"{'p50 s':>8}{'p99 s':>8}{'lost':>7}{'wrong':>7}{'ours/theirs':>12}"]
  for r in runs:
    peer = theirs.get((r.workload, r.in_flight))
    ratio = f"{r.ok_per_s / peer.ok_per_s:.1f}x" if r.service == "ours" and peer and \
        peer.ok_per_s else ""
    lines.append(f"{r.service:<11}{r.workload:<16}{r.in_flight:>10}{r.requests:>9}"
                 f"{r.ok_per_s:>8.0f}{r.p50_s:>8.2f}{r.p99_s:>8.2f}{r.lost:>7}{r.wrong:>7}"
                 f"{ratio:>12}")
  wrong = [r for r in runs if r.wrong_by_kind]
  if wrong:
    lines.append("wrong answers by kind:")
    lines += [f"  {r.service} {r.workload} @{r.in_flight}: " +
              ", ".join(f"{kind} {count}" for kind, count in sorted(r.wrong_by_kind.items())) for r in wrong]
  return "\n".join(lines)


def _targets(runs: list[Run]) -> list[tuple[str, bool]]:
  get = {(r.service, r.workload, r.in_flight): r for r in runs}
  checks = []

  def ratio(workload, in_flight):
    ours, theirs = get.get(("ours", workload, in_flight)), get.get(("code-judge", workload,
                                                                     in_flight))
    return ours.ok_per_s / theirs.ok_per_s if ours and theirs and theirs.ok_per_s else None

  trivial = get.get(("ours", "trivial", 64))
  if trivial:
    checks.append((f"trivial >= 250 ok/s at 64 in flight ({trivial.ok_per_s:.0f})",
                   trivial.ok_per_s >= 250))
  for workload, in_flight, target in (("trivial", 64, 2.5), ("mixed", 64, 3.0),
                                      ("mixed", 512, 3.0)):
    value = ratio(workload, in_flight)
    if value is not None:
      checks.append((f"{workload} >= {target}x Code Judge at {in_flight} ({value:.1f}x)",
                     value >= target))
  trivial_512 = get.get(("ours", "trivial", 512))
  if trivial_512:
    checks.append((f"trivial p99 < 3 s at 512 in flight ({trivial_512.p99_s:.2f} s)",
                   trivial_512.p99_s < 3.0))
  for r in runs:
    if r.service == "ours" and r.requests >= 20_000:
      checks.append((f"{r.workload}: 0 lost, 0 wrong of {r.requests} ({r.lost} lost, "
                     f"{r.wrong} wrong)", r.lost == 0 and r.wrong == 0))
  return checks


async def _measure(url: str, service: str, args: argparse.Namespace) -> list[Run]:
  runs = []
  for workload in workloads.WORKLOADS:
    for in_flight in args.in_flight:
      print(f"{service}: {workload} x {args.requests} at {in_flight} in flight", flush=True)
      runs.append(await load(url, service, workload, in_flight, args.requests))
  return runs


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--code-judge", help="path of a Code Judge checkout (0xWJ/code-judge)")
  parser.add_argument("--ours-only", action="store_true", help="skip Code Judge")
  parser.add_argument("--runs-dir", default=str(REPO / "runs"),
                      help="Code Judge's virtual environment and the outputs go here")
  parser.add_argument("--workers", type=int, default=os.cpu_count(), help="our zygotes")
  parser.add_argument("--requests", type=int, default=2000, help="requests per comparison run")
  parser.add_argument("--in-flight", type=int, nargs="+", default=[64, 512])
  parser.add_argument("--big-requests", type=int, default=20_000)
  parser.add_argument("--burst", type=int, default=45_000)
  parser.add_argument("--skip-big", action="store_true", help="skip the 20,000 and burst runs")
  parser.add_argument("--adversarial", action=argparse.BooleanOptionalAction, default=True,
                      help="send each attack of rstar_jax.sandbox.attacks alone (default: on)")
  args = parser.parse_args()
  if not args.ours_only and not args.code_judge:
    parser.error("--code-judge PATH is required (or --ours-only)")
  runs_dir = pathlib.Path(args.runs_dir).resolve()
  out = runs_dir / "sandbox_bench"
  out.mkdir(parents=True, exist_ok=True)
  runs: list[Run] = []
  attack_rows: list[AttackRun] = []
  ours, url = processes.start_service(["--workers", str(args.workers)],
                                      log_path=str(out / "ours.log"), min_workers=args.workers)
  try:
    runs += asyncio.run(_measure(url, "ours", args))
    if not args.skip_big:
      print(f"ours: {args.big_requests} alternating at 512 in flight", flush=True)
      runs.append(asyncio.run(load(url, "ours", "alternating", 512, args.big_requests)))
      print(f"ours: burst of {args.burst} calls", flush=True)
      runs.append(asyncio.run(burst(url, args.burst)))
    if args.adversarial:
      attack_rows += adversarial(url, "ours")
  finally:
    ours.stop()
  if not args.ours_only:
    started, cj_url = start_code_judge(os.path.abspath(args.code_judge), runs_dir)
    try:
      runs += asyncio.run(_measure(cj_url, "code-judge", args))
      if args.adversarial:
        attack_rows += adversarial(cj_url, "code-judge")
    finally:
      for process in started:
        process.stop()
  print(_table(runs))
  if attack_rows:
    print(_attack_table(attack_rows))
  checks = _targets(runs)
  checks += [(f"ours contains {r.attack} ({r.status})", r.contained) for r in attack_rows
             if r.service == "ours"]
  for text, passed in checks:
    print(f"{'PASS' if passed else 'FAIL'}  {text}")
  summary = {"runs": [dataclasses.asdict(r) | {"ok_per_s": r.ok_per_s} for r in runs],
             "attacks": [dataclasses.asdict(r) for r in attack_rows],
             "targets": [{"target": t, "passed": p} for t, p in checks],
             "cpu_count": os.cpu_count(), "load_average_after": os.getloadavg()}
  (out / "summary.json").write_text(json.dumps(summary, indent=1))
  print(f"wrote {out / 'summary.json'}")
  return 0 if all(p for _, p in checks) else 1


if __name__ == "__main__":
  sys.exit(main())
