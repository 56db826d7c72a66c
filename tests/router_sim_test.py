"""benchmarks/router_sim.py's server model against hand-worked SGLang 0.5.4 scheduler decisions."""
import argparse
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import router_sim  # pylint: disable=wrong-import-position


def _request(index: int, length: int, max_new: int, out: int = 0, left: int = 10) -> router_sim.Request:
  r = router_sim.Rollout(index, prompt=length - out, turns=[left], tools_s=[], length=length)
  return router_sim.Request(r, left=left, max_new=max_new, start=length - out, out=out)


def test_admission_reserves_ratio_for_running_and_the_clip_for_new_requests():
  server = router_sim.Server(kv_tokens=10_000, max_running=8)
  server.running.append(_request(0, 1000, max_new=5000))
  first, second = _request(1, 600, max_new=8192), _request(2, 600, max_new=8192)
  server.waiting.extend([first, second])
  # rem = 10000 - 1000 - 4096 x 0.7 = 6132.8; the first needs 600 + 4096 = 4696 and fits, leaving 1436.8
  assert server.admit() == (600, [first])
  assert list(server.waiting) == [second] and server.batch_is_full
  assert server.admit() == (0, [])  # full until a request leaves the batch


def test_admission_prefills_only_what_is_not_cached():
  server = router_sim.Server(kv_tokens=10_000, max_running=8)
  request = _request(3, 600, max_new=2000)
  server.cached[3] = 500
  assert server.admit() == (0, []) and not server.batch_is_full  # nothing waiting
  server.waiting.append(request)
  assert server.admit() == (100, [request])
  assert 3 not in server.cached  # locked by the running request


def test_retraction_takes_the_fewest_outputs_and_keeps_its_input_cached():
  server = router_sim.Server(kv_tokens=2000, max_running=8)
  young, old = _request(0, 999, max_new=1000, out=99), _request(1, 1000, max_new=600, out=500)
  server.running.extend([young, old])
  server.retract_for_decode()  # 1999 used: no room for the 2 tokens of the next step
  assert server.running == [old] and list(server.waiting) == [young] and server.overflows == 1
  assert server.cached[0] == 900  # its input ids; the 99 decoded ones are dropped
  assert server.new_token_ratio == pytest.approx((500 + 20) / (600 + 1))
  server.running.clear()
  assert server.admit() == (99, [young]) and server.recomputed == 99


def test_a_decode_step_that_fits_decays_the_ratio():
  server = router_sim.Server(kv_tokens=2000, max_running=8)
  server.running.append(_request(0, 100, max_new=1000))
  server.retract_for_decode()
  assert server.new_token_ratio == pytest.approx(0.7 - (0.7 - 0.098) / 600)
  assert server.overflows == 0


@pytest.mark.parametrize("policy, step_s", [("round_robin", 12.0), ("static_sync", 14.0)])
def test_static_sync_waits_for_the_whole_batch_and_its_slowest_tool_call(policy, step_s):
  """One server, 1 s per forward: A generates 1 token, calls a 10 s tool, then 1 more; B 3 tokens,
  a 0 s tool, 1 more. Async: B ends at 4 s, A at 1 + 10 + 1 = 12 s. Static and synchronous: the
  round ends at 3 s (B's turn), the slowest call returns at 13 s, both last turns end at 14 s."""
  args = argparse.Namespace(servers=1, kv_tokens=100_000, max_running=8, budget=100, step_s=1.0, per_seq_s=0.0,
                            per_kv_token_s=0.0, prefill_s_per_token=0.0)
  workload = [router_sim.Rollout(0, 10, [1, 1], [10.0], length=10), router_sim.Rollout(1, 10, [3, 1], [0.0], length=10)]
  result = router_sim.Simulation(args, policy, workload).run()
  assert result["step_s"] == step_s and result["overflows"] == 0


def _args(**overrides) -> argparse.Namespace:
  values = dict(servers=1, kv_tokens=100_000, max_running=8, budget=100, step_s=1.0, per_seq_s=0.0,
                per_kv_token_s=0.0, prefill_s_per_token=0.0, poll_s=0.1, max_waiting=8)
  return argparse.Namespace(**{**values, **overrides})


def _a_tool_call_and_a_short_rollout():
  """A: a 1-token turn (its prefill round ends at 1 s), a 10 s tool call, 1 more token (11-12 s);
  B: one token. Footprints 10 + budget 100: the 150-token server has room for one."""
  return [router_sim.Rollout(0, 10, [1, 1], [10.0], length=10), router_sim.Rollout(1, 10, [1], [], length=10)]


def test_the_paper_prototype_holds_a_reservation_until_its_rollout_ends():
  simulation = router_sim.Simulation(_args(kv_tokens=150), "paper_prototype", _a_tool_call_and_a_short_rollout())
  assert simulation.run()["step_s"] == 13.0  # B goes when A ends at 12 s
  assert [r.done_at for r in simulation.rollouts] == [12.0, 13.0]
  assert simulation.reserved == [0]


@pytest.mark.parametrize("poll_s, b_done", [(0.1, 2.0), (5.0, 6.0)])
def test_the_router_counts_placed_footprints_until_the_next_poll_reports_real_use(poll_s, b_done):
  """At 0 s A is placed: 150 - 110 = 40 tokens are left for B until a poll reports A's real use
  (its 10 prompt tokens, or none during its tool call): B goes at the next poll, 0.1 s (its
  prefill round waits for the one running until 1 s) or 5 s."""
  simulation = router_sim.Simulation(_args(kv_tokens=150, poll_s=poll_s), "router", _a_tool_call_and_a_short_rollout())
  assert simulation.run()["step_s"] == 12.0
  assert [r.done_at for r in simulation.rollouts] == [12.0, b_done]


@pytest.mark.parametrize("max_waiting, b_done", [(1, 2.0), (2, 1.0)])
def test_the_router_holds_new_rollouts_while_the_server_queue_is_full(max_waiting, b_done):
  """max_waiting 1: B waits while A's turn is queued (sent since the poll at 0 s); the poll at
  0.1 s finds A admitted and B goes, to be prefilled after A's round (1-2 s). With 2, B joins A's
  queue at 0 s and both are prefilled in the first round."""
  simulation = router_sim.Simulation(_args(max_waiting=max_waiting), "router", _a_tool_call_and_a_short_rollout())
  simulation.run()
  assert [r.done_at for r in simulation.rollouts] == [12.0, b_done]


def test_the_ceiling_is_the_slowest_rollouts_chain_when_it_dominates():
  """The two rollouts above: A's chain is 1 + 10 + 1 = 12 s (two prefill rounds, its tool call),
  B's 1 + 2 + 1 = 4 s; the work is 6 tokens x 1/8 s. Asynchronous round-robin reaches it."""
  args = _args()
  workload = [router_sim.Rollout(0, 10, [1, 1], [10.0], length=10), router_sim.Rollout(1, 10, [3, 1], [0.0], length=10)]
  ceiling = router_sim.throughput_ceiling(args, workload)
  assert ceiling["chain_bound_s"] == 12.0 and ceiling["work_bound_s"] == 0.75
  assert ceiling["tokens_per_s"] == 6 / 12.0
  assert router_sim.Simulation(args, "round_robin", workload).run()["tokens_per_s"] == ceiling["tokens_per_s"]


def test_the_ceiling_counts_shared_steps_context_and_prefills():
  """Work: 4 rollouts of 3 tokens, at most 2 per step: 12 x 1/2 s = 6 s of step time; a decode
  token at context c adds 0.01 c and 0.1 (per sequence), a prefilled token 0.001. Each rollout
  decodes its 2nd and 3rd tokens at contexts 11 and 12: 2 x 0.1 + 0.23 = 0.43 s, plus 0.01 s of
  prefill: work 6 + 4 x 0.44 = 7.76 s; alone one takes 3 + 0.44 = 3.44 s. Round-robin runs two
  full waves of a prefill round (1.02 s) and 2 decode steps (1.42, 1.44 s): 7.76 s, the bound."""
  args = _args(max_running=2, per_seq_s=0.1, per_kv_token_s=0.01, prefill_s_per_token=0.001)
  workload = [router_sim.Rollout(i, 10, [3], [], length=10) for i in range(4)]
  ceiling = router_sim.throughput_ceiling(args, workload)
  assert ceiling["work_bound_s"] == pytest.approx(7.76) and ceiling["chain_bound_s"] == pytest.approx(3.44)
  simulated = router_sim.Simulation(args, "round_robin", workload).run()
  assert simulated["step_s"] == pytest.approx(ceiling["step_s"])


def test_the_ceiling_bounds_the_decode_steps_by_the_cache():
  """4 rollouts of 3 tokens after a 10-token prompt decode their 2nd and 3rd tokens at contexts 11
  and 12: 4 x 23 = 92 context tokens, and a step holds at most 23: at least 4 steps of 1 s (not
  12 tokens / 8 per step = 1.5). The simulation, whose admission (10 + a budget of 3 each) runs
  one at a time here, is slower."""
  args = _args(kv_tokens=23, budget=3)
  workload = [router_sim.Rollout(i, 10, [3], [], length=10) for i in range(4)]
  ceiling = router_sim.throughput_ceiling(args, workload)
  assert ceiling["work_bound_s"] == pytest.approx(4.0) and ceiling["chain_bound_s"] == 3.0
  assert router_sim.Simulation(args, "round_robin", workload).run()["step_s"] >= ceiling["step_s"]
