"""Load tests: none lost, none wrong, against a real `rstar-sandbox serve` (default limits).

Half trivial prints, half the mixed set of `workloads` (sympy, numpy, loops, errors, stdin,
timeouts, a memory hog). By default 2,000 calls submitted at once through the client; marked
slow, 20,000 `/run` requests with 512 open at a time (about 2 minutes on 2 cores). The burst of
45,000 calls and the comparison with Code Judge are in benchmarks/sandbox_bench.py.
  python -m pytest -q tests/sandbox_load_test.py
  python -m pytest -q -m slow tests/sandbox_load_test.py
"""
import asyncio

import pytest

from rstar_jax.sandbox import client as client_lib
from rstar_jax.sandbox import processes
from rstar_jax.sandbox import workloads


@pytest.fixture(scope="module")
def url():
  process, url = processes.start_service(["--workers", "2"], min_workers=2)
  yield url
  process.stop()


def test_two_thousand_calls_none_lost_none_wrong(url):
  cases = [workloads.case(w, i) for i in range(1000) for w in workloads.WORKLOADS]

  async def go():
    async with client_lib.SandboxClient(url) as client:
      return await asyncio.gather(*(client.run(c.solution, c.stdin) for c in cases),
                                  return_exceptions=True)

  results = asyncio.run(go())
  lost = [r for r in results if isinstance(r, BaseException)]
  assert not lost, lost[:3]
  wrong = [(c.solution[-80:], r) for c, r in zip(cases, results) if not c.is_right(r)]
  assert not wrong, wrong[:3]
  assert {r.status for r in results} == {"ok", "runtime_error", "timeout", "memory_limit"}



@pytest.mark.slow
def test_twenty_thousand_requests_at_512_in_flight_none_lost_none_wrong(url):
  cases = workloads.cases("alternating", 20_000)
  tally = workloads.Tally()
  asyncio.run(workloads.send_requests(url, cases, 512, tally))
  assert (tally.sent, tally.lost, tally.wrong) == (20_000, 0, 0), tally.wrong_examples
  assert tally.right == 20_000
