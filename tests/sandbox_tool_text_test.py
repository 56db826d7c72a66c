"""The tool-output text from structured results, byte for byte (PAPER.md §3.3, §3.4 layer 1).

The expected strings of the code format are PAPER.md §3.3's table, which was produced by the
released stack; those of the paper format follow §3.3's "Paper-internal format" (and the
choices `tool_text` documents where the paper is silent).
  python -m pytest -q tests/sandbox_tool_text_test.py
"""
import pytest

from rstar_jax import sandbox


def _result(status, stdout="", stderr="", exit_code=None, wall_time_s=0.0):
  return sandbox.ExecutionResult(status=status, stdout=stdout, stderr=stderr,
                                 exit_code=exit_code, wall_time_s=wall_time_s)


@pytest.mark.parametrize("result, text", [
    (_result("ok", "42\n", exit_code=0, wall_time_s=0.001),
     "Tool call success\nstdout: 42\n\nexecution time: 0.00s"),
    (_result("ok", exit_code=0, wall_time_s=0.004),
     "Tool call success\nexecution time: 0.00s"),
    (_result("runtime_error", "hi\n", "ZeroDivisionError: division by zero\n", 1, 0.03),
     "Tool call failure\nreason: \nstdout: hi\n\nstderr: ZeroDivisionError: division by zero\n"
     "\nexecution time: 0.03s"),
    (_result("runtime_error", "", "SyntaxError at line 1: invalid syntax (<unknown>, line 1)\n"
             "  def f(:\n", 1, 0.03),
     "Tool call failure\nreason: \nstderr: SyntaxError at line 1: invalid syntax (<unknown>, "
     "line 1)\n  def f(:\n\nexecution time: 0.03s"),
    (_result("timeout", "start\n", wall_time_s=4.0061),
     "Tool call failure\nreason: worker_timeout\nstdout: start\n\nexecution time: 4.01s"),
    (_result("memory_limit", "", "MemoryError: Unable to allocate 7.45 GiB\n", 1, 0.17),
     "Tool call failure\nreason: \nstderr: MemoryError: Unable to allocate 7.45 GiB\n\n"
     "execution time: 0.17s"),
], ids=["print", "no_output", "exception_after_print", "syntax_error", "timeout", "memory"])
def test_paper_table_texts_from_structured_results(result, text):
  assert sandbox.tool_output_text(result) == text


def test_each_stream_is_cut_to_1000_characters_without_marker():
  result = _result("runtime_error", "a" * 999 + "bc", "é" * 1500, 1, 0.5)
  text = sandbox.tool_output_text(result)
  assert text == ("Tool call failure\nreason: \nstdout: " + "a" * 999 + "b\nstderr: "
                  + "é" * 1000 + "\nexecution time: 0.50s")


def test_stream_cut_is_configurable():
  text = sandbox.tool_output_text(_result("ok", "abcdef", exit_code=0), max_stream_chars=3)
  assert text == "Tool call success\nstdout: abc\nexecution time: 0.00s"
  with pytest.raises(ValueError, match="max_stream_chars"):
    sandbox.tool_output_text(_result("ok", exit_code=0), max_stream_chars=0)


def test_timeout_has_one_form_whatever_killed_it():
  # A CPU-limit kill and a wall-clock kill are both status timeout: same text, no marker line.
  text = sandbox.tool_output_text(_result("timeout", "", "", None, 4.0))
  assert text == "Tool call failure\nreason: worker_timeout\nexecution time: 4.00s"


def test_output_limit_is_an_ordinary_failure():
  text = sandbox.tool_output_text(_result("output_limit", "x" * 5000, "", None, 0.2))
  assert text == "Tool call failure\nreason: \nstdout: " + "x" * 1000 + "\nexecution time: 0.20s"


def test_sandbox_error_reads_internal_error():
  text = sandbox.tool_output_text(_result("sandbox_error", "", "worker lost", None, 0.0))
  assert text == ("Tool call failure\nreason: internal_error\nstderr: worker lost\n"
                  "execution time: 0.00s")


def test_code_judge_body_with_wrong_expected_output_is_a_failure():
  body = {"success": False, "run_success": True, "cost": 0.0123, "stdout": "41\n", "stderr": "",
          "reason": ""}
  assert sandbox.format_code_judge_result(body) == ("Tool call failure\nreason: \nstdout: 41\n\n"
                                                    "execution time: 0.01s")


def test_code_judge_null_streams_are_omitted():
  body = {"success": False, "run_success": False, "cost": 0, "stdout": None, "stderr": None,
          "reason": "queue_timeout"}
  assert sandbox.format_code_judge_result(body) == ("Tool call failure\nreason: queue_timeout\n"
                                                    "execution time: 0.00s")


_TRACEBACK = ('Traceback (most recent call last):\n  File "/tmp/source.py", line 69, in <module>\n'
              '    print(1/0)\n          ~^~\nZeroDivisionError: division by zero\n')


@pytest.mark.parametrize("result, text", [
    (_result("ok", "Total valid colorings: 24\n", exit_code=0, wall_time_s=0.2),
     "Total valid colorings: 24\n"),
    (_result("ok", "", "a warning\n", exit_code=0), ""),
    (_result("runtime_error", "printed first\n", _TRACEBACK, 1, 0.03),
     "tool call failed\nreason: error message: " + _TRACEBACK),
    (_result("memory_limit", "", "MemoryError\n", 1, 0.1),
     "tool call failed\nreason: error message: MemoryError\n"),
    (_result("runtime_error", "", "", 3, 0.0),
     "tool call failed\nreason: error message: exit status 3"),
    (_result("timeout", "start\n", "", None, 4.0), "tool call failed\nreason: timeout"),
    (_result("output_limit", "x" * 5000, "", None, 0.2),
     "tool call failed\nreason: output limit exceeded"),
    (_result("sandbox_error", "", "worker lost", None, 0.0),
     "tool call failed\nreason: internal error"),
], ids=["bare_output", "empty_output", "traceback", "memory", "silent_exit", "timeout",
        "output_limit", "sandbox_error"])
def test_paper_format_texts(result, text):
  assert sandbox.tool_output_text(result, output_format="paper") == text


def test_paper_format_cuts_each_stream():
  ok = _result("ok", "abcdef", exit_code=0)
  failed = _result("runtime_error", "", "Traceback (most recent call last):\n", 1)
  assert sandbox.tool_output_text(ok, max_stream_chars=3, output_format="paper") == "abc"
  assert sandbox.tool_output_text(failed, max_stream_chars=9, output_format="paper") == (
      "tool call failed\nreason: error message: Traceback")


def test_unknown_output_format_raises():
  with pytest.raises(ValueError, match="output_format must be one of"):
    sandbox.tool_output_text(_result("ok", exit_code=0), output_format="Paper")
