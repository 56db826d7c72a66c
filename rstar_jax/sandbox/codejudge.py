"""Code Judge's wire format (0xWJ/code-judge@f809f35 `app/model.py`): submissions in, results out.

Request bodies, validated the way its FastAPI/pydantic models do (unknown keys ignored):
  Submission       {sub_id?: str|null, type: "python"|"cpp"|"math", options?: {str: str}|null,
                    solution: str, input?: str|null, expected_output?: str|null}
  BatchSubmission  {sub_id?: str|null, type?: "batch", submissions: [Submission, ...] (>= 1)}
A body that fails validation is answered 422 with FastAPI's error shape,
`{"detail": [{"type", "loc", "msg", "input"}, ...]}`.

Result bodies (`/run`, one item of `/run/batch` `results`), keys in Code Judge's order:
  {sub_id, success, run_success, cost, stdout, stderr, reason, status, exit_code}
  run_success: the program exited 0 (status "ok"); success: that, and the stripped stdout
  equals the stripped expected_output when one was given; cost: seconds (PAPER.md §3.3);
  stdout/stderr: cut to the first 1000 characters each (MAX_STDOUT_ERROR_LENGTH);
  reason: "" | "worker_timeout" (status timeout) | "internal_error" (status sandbox_error).
  `status` and `exit_code` extend Code Judge's schema with the structured outcome
  (`ExecutionResult`); clients that read only the original keys are unaffected.
`/judge` results drop stdout and stderr. This service never answers `queue_timeout` (a job
waits in the queue as long as it must); `result_from_json` still reads it from Code Judge.
"""
import dataclasses
import uuid
from typing import Any, Mapping

from rstar_jax.sandbox import result as result_lib

MAX_STREAM_CHARS = 1000
SUBMISSION_TYPES = ("python", "cpp", "math")
_REASONS = {"timeout": "worker_timeout", "sandbox_error": "internal_error"}
_FAILED_REASONS = ("internal_error", "queue_timeout", "invalid_input")
_OPTIONAL_STR = ("sub_id", "input", "expected_output")


class RequestError(ValueError):
  """A request body that fails validation; `detail` is FastAPI's list of errors."""

  def __init__(self, detail: list[dict[str, Any]]):
    super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in detail))
    self.detail = detail


@dataclasses.dataclass(frozen=True)
class Submission:
  """One validated submission (see the module docstring for the fields)."""
  sub_id: str
  type: str
  solution: str
  input: str | None = None
  expected_output: str | None = None
  options: dict[str, str] | None = None


def _error(kind: str, loc: tuple, msg: str, value: Any) -> dict[str, Any]:
  return {"type": kind, "loc": list(loc), "msg": msg, "input": value}


def _check_fields(body: Any, loc: tuple, errors: list) -> bool:
  if not isinstance(body, dict):
    errors.append(_error("model_attributes_type", loc,
                         "Input should be a valid dictionary or object to extract fields from",
                         body))
    return False
  return True


def _check_submission(body: Any, loc: tuple, errors: list) -> Submission | None:
  if not _check_fields(body, loc, errors):
    return None
  count = len(errors)
  if "type" not in body:
    errors.append(_error("missing", loc + ("type",), "Field required", body))
  elif body["type"] not in SUBMISSION_TYPES:
    errors.append(_error("literal_error", loc + ("type",),
                         "Input should be 'python', 'cpp' or 'math'", body["type"]))
  if "solution" not in body:
    errors.append(_error("missing", loc + ("solution",), "Field required", body))
  elif not isinstance(body["solution"], str):
    errors.append(_error("string_type", loc + ("solution",), "Input should be a valid string",
                         body["solution"]))
  for key in _OPTIONAL_STR:
    if body.get(key) is not None and not isinstance(body[key], str):
      errors.append(_error("string_type", loc + (key,), "Input should be a valid string",
                           body[key]))
  options = body.get("options")
  if options is not None:
    if not isinstance(options, dict):
      errors.append(_error("dict_type", loc + ("options",), "Input should be a valid dictionary",
                           options))
    else:
      for name, value in options.items():
        if not isinstance(value, str):
          errors.append(_error("string_type", loc + ("options", name),
                               "Input should be a valid string", value))
  if len(errors) > count:
    return None
  return Submission(sub_id=body.get("sub_id") or str(uuid.uuid4()), type=body["type"],
                    solution=body["solution"], input=body.get("input"),
                    expected_output=body.get("expected_output"), options=options)


def parse_submission(body: Any) -> Submission:
  """Validates a `/run` or `/judge` body; raises RequestError (HTTP 422) naming each field."""
  errors: list = []
  submission = _check_submission(body, ("body",), errors)
  if errors:
    raise RequestError(errors)
  return submission


def parse_batch(body: Any) -> tuple[str, list[Submission]]:
  """Validates a batch body; returns (batch sub_id, submissions) or raises RequestError."""
  errors: list = []
  loc = ("body",)
  submissions: list[Submission] = []
  if _check_fields(body, loc, errors):
    if body.get("sub_id") is not None and not isinstance(body["sub_id"], str):
      errors.append(_error("string_type", loc + ("sub_id",), "Input should be a valid string",
                           body["sub_id"]))
    if "type" in body and body["type"] != "batch":
      errors.append(_error("literal_error", loc + ("type",), "Input should be 'batch'",
                           body["type"]))
    items = body.get("submissions")
    if "submissions" not in body:
      errors.append(_error("missing", loc + ("submissions",), "Field required", body))
    elif not isinstance(items, list):
      errors.append(_error("list_type", loc + ("submissions",), "Input should be a valid list",
                           items))
    elif not items:
      errors.append(_error("too_short", loc + ("submissions",),
                           "List should have at least 1 item after validation, not 0", items))
    else:
      for i, item in enumerate(items):
        submission = _check_submission(item, loc + ("submissions", i), errors)
        if submission is not None:
          submissions.append(submission)
  if errors:
    raise RequestError(errors)
  return body.get("sub_id") or str(uuid.uuid4()), submissions


def result_json(result: result_lib.ExecutionResult, sub_id: str,
                expected_output: str | None = None, *, with_output: bool = True,
                max_stream_chars: int = MAX_STREAM_CHARS) -> dict[str, Any]:
  """The Code Judge result body for `result` (module docstring); `with_output=False` is /judge."""
  run_success = result.status == "ok"
  success = run_success and (expected_output is None
                             or result.stdout.strip() == expected_output.strip())
  body: dict[str, Any] = {"sub_id": sub_id, "success": success, "run_success": run_success,
                          "cost": result.wall_time_s}
  if with_output:
    body["stdout"] = result.stdout[:max_stream_chars]
    body["stderr"] = result.stderr[:max_stream_chars]
  body["reason"] = _REASONS.get(result.status, "")
  body["status"] = result.status
  body["exit_code"] = result.exit_code
  return body


def result_from_json(body: Mapping[str, Any]) -> result_lib.ExecutionResult:
  """An ExecutionResult from a `/run` result body, ours or Code Judge's own.

  Code Judge's bodies have no `status`: it is derived as ok (run_success), timeout
  (worker_timeout), sandbox_error (internal_error, queue_timeout, invalid_input), memory_limit
  (a MemoryError on stderr) or runtime_error; exit_code is then 0 for ok and None otherwise.
  """
  stdout, stderr = body.get("stdout") or "", body.get("stderr") or ""
  status = body.get("status")
  if status not in result_lib.STATUSES:
    reason = body.get("reason", "")
    if reason in _FAILED_REASONS:
      status = "sandbox_error"
    elif reason == "worker_timeout":
      status = "timeout"
    elif body.get("run_success"):
      status = "ok"
    else:
      status = result_lib.classify(1, stderr, timed_out=False, output_capped=False,
                                   cpu_limited=False)
  exit_code = body.get("exit_code", 0 if status == "ok" else None)
  return result_lib.ExecutionResult(status=status, stdout=stdout, stderr=stderr,
                                    exit_code=exit_code, wall_time_s=float(body.get("cost", 0.0)))
