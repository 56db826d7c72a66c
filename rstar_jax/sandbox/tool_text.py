"""The tool-output text the model reads (PAPER.md §3.3), in the released or the paper's format.

`output_format="code"` (the default; PAPER.md §11 row 14, config `env.output_format`) is byte
for byte what rStar@ecbfb94 `code_judge_utils.run_tool_calls_on_server_async` builds from a
Code Judge result: lines joined with "\\n", the stdout / stderr lines only when non-empty:
  success (run_success and success):  Tool call success / stdout: {stdout} / stderr: {stderr} /
                                      execution time: {cost:.2f}s
  failure (anything else):            Tool call failure / reason: {reason} / stdout: ... /
                                      stderr: ... / execution time: {cost:.2f}s
with each stream cut to its first 1000 characters by the sandbox (§3.4 layer 1). A timeout has
one form whatever killed it: `reason: worker_timeout`, the stdout printed before the kill, no
marker line.

`output_format="paper"` is the paper's own format (PAPER.md §3.3 "Paper-internal format",
[P Fig. 10, 11]); pair it with `wrap_code(code, traceback="full")`, whose errors print the raw
traceback. Exact where the paper shows it, our choice (marked *) where the paper is silent:
  ok:                          the bare program output: stdout verbatim, final newline
                               included (* an empty stdout gives an empty text; stderr is
                               not shown)
  runtime_error, memory_limit: tool call failed\\nreason: error message: {stderr}, the full
                               traceback with its own newlines (the paper's figure shows it
                               flattened by typesetting); nothing printed before the error is
                               shown, as the paper's tool schema says the error message is
                               returned "instead" (* an empty stderr gives `exit status N`)
  timeout:                     * tool call failed\\nreason: timeout
  output_limit:                * tool call failed\\nreason: output limit exceeded
  sandbox_error:               * tool call failed\\nreason: internal error
Each stream is cut to `max_stream_chars` in both formats. The rollout's whole-text cut
(§3.4 layer 2, 256 characters) is `chat.truncate_tool_response`.
"""
from typing import Any, Mapping

from rstar_jax.sandbox import codejudge
from rstar_jax.sandbox import result as result_lib

OUTPUT_FORMATS = ("code", "paper")
# The paper format's reason line for the failures that have no error message of their own.
_PAPER_REASONS = {"timeout": "timeout", "output_limit": "output limit exceeded",
                  "sandbox_error": "internal error"}


def format_code_judge_result(body: Mapping[str, Any]) -> str:
  """rStar2's text for one Code Judge `/run` result body (keys as in `codejudge`)."""
  ok = body["run_success"] and body["success"]
  lines = ["Tool call success" if ok else "Tool call failure"]
  if not ok:
    lines.append(f"reason: {body['reason']}")
  if body["stdout"]:
    lines.append(f"stdout: {body['stdout']}")
  if body["stderr"]:
    lines.append(f"stderr: {body['stderr']}")
  lines.append(f"execution time: {body['cost']:.2f}s")
  return "\n".join(lines)


def _paper_text(result: result_lib.ExecutionResult, max_stream_chars: int) -> str:
  if result.status == "ok":
    return result.stdout[:max_stream_chars]
  if result.status in ("runtime_error", "memory_limit"):
    message = result.stderr[:max_stream_chars]
    if not message and result.exit_code is not None:
      message = f"exit status {result.exit_code}"
    reason = f"error message: {message}"
  else:
    reason = _PAPER_REASONS[result.status]
  return f"tool call failed\nreason: {reason}"


def tool_output_text(result: result_lib.ExecutionResult,
                     max_stream_chars: int = codejudge.MAX_STREAM_CHARS,
                     output_format: str = "code") -> str:
  """The §3.3 text for one run, in `output_format` (module docstring).

  Args:
    result: the run's structured result.
    max_stream_chars: the per-stream cut (§3.4 layer 1; config `env.max_stream_chars`).
    output_format: "code" (released: `format_code_judge_result` of the run's Code Judge
      body) or "paper" (PAPER.md §3.3 paper-internal format); one of OUTPUT_FORMATS.
  """
  if max_stream_chars < 1:
    raise ValueError(f"max_stream_chars must be >= 1, got {max_stream_chars}")
  if output_format not in OUTPUT_FORMATS:
    raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
  if output_format == "paper":
    return _paper_text(result, max_stream_chars)
  return format_code_judge_result(
      codejudge.result_json(result, sub_id="", max_stream_chars=max_stream_chars))
