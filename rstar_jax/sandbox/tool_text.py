"""The tool-output text the model reads (PAPER.md §3.3), byte for byte as rStar2 builds it.

rStar@ecbfb94 `code_judge_utils.run_tool_calls_on_server_async` formats each Code Judge result
as lines joined with "\\n", where the stdout / stderr lines appear only when non-empty:
  success (run_success and success):  Tool call success / stdout: {stdout} / stderr: {stderr} /
                                      execution time: {cost:.2f}s
  failure (anything else):            Tool call failure / reason: {reason} / stdout: ... /
                                      stderr: ... / execution time: {cost:.2f}s
with each stream cut to its first 1000 characters by the sandbox (§3.4 layer 1). A timeout has
one form whatever killed it: `reason: worker_timeout`, the stdout printed before the kill, no
marker line. The rollout's whole-text cut (§3.4 layer 2, 256 characters) is
`chat.truncate_tool_response`.
"""
from typing import Any, Mapping

from rstar_jax.sandbox import codejudge
from rstar_jax.sandbox import result as result_lib


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


def tool_output_text(result: result_lib.ExecutionResult,
                     max_stream_chars: int = codejudge.MAX_STREAM_CHARS) -> str:
  """The §3.3 text for one run: `format_code_judge_result` of its Code Judge body.

  Args:
    result: the run's structured result.
    max_stream_chars: the per-stream cut (§3.4 layer 1; config `env.max_stream_chars`).
  """
  if max_stream_chars < 1:
    raise ValueError(f"max_stream_chars must be >= 1, got {max_stream_chars}")
  return format_code_judge_result(
      codejudge.result_json(result, sub_id="", max_stream_chars=max_stream_chars))
