"""Code Judge's wire format: request validation as its pydantic models do it, result bodies.

  python -m pytest -q tests/sandbox_codejudge_test.py
"""
import pytest

from rstar_jax import sandbox
from rstar_jax.sandbox import codejudge


def _errors(parse, body):
  with pytest.raises(codejudge.RequestError) as info:
    parse(body)
  return [(e["type"], tuple(e["loc"])) for e in info.value.detail]


def test_submission_defaults_and_echoed_sub_id():
  s = codejudge.parse_submission({"type": "python", "solution": "print(1)", "extra": 5})
  assert (s.type, s.solution, s.input, s.expected_output, s.options) == ("python", "print(1)",
                                                                         None, None, None)
  assert len(s.sub_id) == 36  # a uuid4, as Code Judge assigns
  assert codejudge.parse_submission({"sub_id": "a", "type": "cpp", "solution": ""}).sub_id == "a"


@pytest.mark.parametrize("body, errors", [
    ({}, [("missing", ("body", "type")), ("missing", ("body", "solution"))]),
    ({"type": "java", "solution": "x"}, [("literal_error", ("body", "type"))]),
    ({"type": "python", "solution": 3}, [("string_type", ("body", "solution"))]),
    ({"type": "python", "solution": "x", "input": 5}, [("string_type", ("body", "input"))]),
    ({"type": "python", "solution": "x", "options": {"a": 1}},
     [("string_type", ("body", "options", "a"))]),
    ({"type": "python", "solution": "x", "options": []}, [("dict_type", ("body", "options"))]),
    ([1, 2], [("model_attributes_type", ("body",))]),
])
def test_submission_errors_name_each_field(body, errors):
  assert _errors(codejudge.parse_submission, body) == errors


@pytest.mark.parametrize("body, errors", [
    ({"type": "batch"}, [("missing", ("body", "submissions"))]),
    ({"submissions": []}, [("too_short", ("body", "submissions"))]),
    ({"submissions": {}}, [("list_type", ("body", "submissions"))]),
    ({"type": "single", "submissions": [{"type": "python", "solution": "x"}]},
     [("literal_error", ("body", "type"))]),
    ({"submissions": [{"type": "python", "solution": "x"}, {"type": "python"}]},
     [("missing", ("body", "submissions", 1, "solution"))]),
])
def test_batch_errors_name_each_item(body, errors):
  assert _errors(codejudge.parse_batch, body) == errors


def test_batch_keeps_order_and_sub_id():
  sub_id, subs = codejudge.parse_batch({"sub_id": "b", "submissions": [
      {"type": "python", "solution": "1"}, {"type": "python", "solution": "2", "input": "i"}]})
  assert sub_id == "b" and [s.solution for s in subs] == ["1", "2"] and subs[1].input == "i"


def test_result_body_keys_and_values():
  result = sandbox.ExecutionResult("ok", "42\n" + "x" * 2000, "warn", 0, 0.25)
  body = codejudge.result_json(result, "id7", expected_output=" 42\n" + "x" * 2000 + " ")
  assert list(body) == ["sub_id", "success", "run_success", "cost", "stdout", "stderr", "reason",
                        "status", "exit_code"]
  assert (body["success"], body["run_success"], body["cost"], body["reason"]) == (True, True,
                                                                                  0.25, "")
  assert len(body["stdout"]) == 1000 and body["stderr"] == "warn"
  judged = codejudge.result_json(result, "id7", expected_output="43", with_output=False)
  assert "stdout" not in judged and "stderr" not in judged
  assert (judged["success"], judged["run_success"]) == (False, True)


@pytest.mark.parametrize("status, reason", [("timeout", "worker_timeout"),
                                            ("sandbox_error", "internal_error"),
                                            ("runtime_error", ""), ("memory_limit", ""),
                                            ("output_limit", "")])
def test_failure_reasons(status, reason):
  body = codejudge.result_json(sandbox.ExecutionResult(status, "", "", None, 1.0), "s")
  assert (body["run_success"], body["success"], body["reason"]) == (False, False, reason)


def test_result_round_trips_through_our_body():
  result = sandbox.ExecutionResult("output_limit", "out", "err", None, 0.5)
  assert codejudge.result_from_json(codejudge.result_json(result, "s")) == result


@pytest.mark.parametrize("body, status, exit_code", [
    ({"run_success": True, "success": True, "reason": ""}, "ok", 0),
    ({"run_success": False, "success": False, "reason": "worker_timeout"}, "timeout", None),
    ({"run_success": False, "success": False, "reason": "queue_timeout"}, "sandbox_error", None),
    ({"run_success": False, "success": False, "reason": "internal_error"}, "sandbox_error", None),
    ({"run_success": False, "success": False, "reason": "", "stderr": "MemoryError\n"},
     "memory_limit", None),
    ({"run_success": False, "success": False, "reason": "", "stderr": "KeyError: 1\n"},
     "runtime_error", None),
])
def test_statuses_derived_from_code_judge_bodies(body, status, exit_code):
  result = codejudge.result_from_json({"sub_id": "s", "cost": 0.1, "stdout": "", **body})
  assert (result.status, result.exit_code) == (status, exit_code)
