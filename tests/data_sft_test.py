"""SFT traces of the synthetic task: exact format, truthful tool texts, imperfect mix.

  python -m pytest -q tests/data_sft_test.py
"""
import json

import numpy as np
import pytest

from rstar_jax import chat
from rstar_jax import data
from rstar_jax import rewards
from rstar_jax import sandbox
from rstar_jax.data import sft_traces
from rstar_jax.data import synthetic_task

TOKENIZER = chat.CharTokenizer()
MIX = sft_traces.TraceMix(clean=0.5, fix=0.25, guess=0.125, wrong=0.125, guess_accuracy=0.0)


@pytest.fixture(scope="module")
def traces():
  return sft_traces.make_sft_traces(data.synthetic_problems(0, "sft", 16), seed=0, mix=MIX)


def test_kinds_follow_the_mix_exactly():
  assert sft_traces.TraceMix().counts(7) == {"clean": 4, "fix": 1, "guess": 1, "wrong": 1}
  assert MIX.counts(16) == {"clean": 8, "fix": 4, "guess": 2, "wrong": 2}
  with pytest.raises(ValueError, match="sum to 1"):
    sft_traces.TraceMix(clean=0.5)


def test_traces_have_the_rollout_format(traces):
  items = data.synthetic_problems(0, "sft", 16)
  for trace, item in zip(traces, items):
    texts = [text for text, _ in trace.segments]
    assert trace.segments[0] == (chat.prompt_text(item.problem.problem), False)
    assert [model for _, model in trace.segments[1:]] == [i % 2 == 0 for i in range(len(texts) - 1)]
    for text, model in trace.segments[1:]:
      if model:  # every model turn ends with EOS right after a call or an answer
        assert text.endswith("</tool_call><|im_end|>") or text.endswith("</answer><|im_end|>")
      else:
        assert text.startswith("<|im_start|>user\n<tool_response>\n")
        assert text.endswith("</tool_response><|im_end|>\n<|im_start|>assistant\n<reason>")
    calls = [chat.parse_tool_calls(text) for text in texts[1::2][:-1]]
    assert len(calls) == trace.num_tool_calls
    assert texts[-1].endswith(f"<answer>\\boxed{{{trace.final_answer}}}</answer><|im_end|>")


def test_tool_texts_are_what_the_snippets_really_print(traces):
  items = {item.problem.id: item for item in data.synthetic_problems(0, "sft", 16)}
  for trace in traces:
    item, envs = items[trace.problem_id], [t for t, model in trace.segments[1:] if not model]
    if trace.kind == "clean":
      assert envs == [chat.tool_response_text(
          [f"Tool call success\nstdout: {trace.answer}\n\nexecution time: 0.01s"])]
    if trace.kind == "fix":
      error = envs[0].split("<tool_response>\n")[1]
      assert error.startswith("Tool call failure\nreason: \nstderr: ")
      assert "Error at line 1: " in error
      assert error.endswith("\nexecution time: 0.01s\n</tool_response><|im_end|>\n"
                            "<|im_start|>assistant\n<reason>")
      assert item.broken_code.splitlines()[0] in error  # the offending line is quoted
      assert f"stdout: {trace.answer}\n" in envs[1]
    if trace.kind == "wrong":
      assert envs[0].startswith("<|im_start|>user\n<tool_response>\nTool call success\nstdout: ")
      assert f"stdout: {trace.final_answer}\n" in envs[0]
    if trace.kind == "guess":
      assert envs == [] and trace.num_tool_calls == 0


def test_traces_read_as_the_rollouts_environment_writes():
  """With the paper's environment (rollout.ToolEnvironment, which the RL job passes), the fix
  traces show Python's own error report in the paper's text, and clean ones stdout alone."""
  from rstar_jax import rollout  # the trainer's layer, which joins the two
  paper = rollout.ToolEnvironment(output_format="paper", traceback="full")
  traces = sft_traces.make_sft_traces(data.synthetic_problems(0, "sft", 16), seed=0, mix=MIX,
                                      tool_text=paper.tool_text, traceback=paper.traceback)
  kinds = {trace.kind: [t for t, model in trace.segments[1:] if not model] for trace in traces}
  fix_error = kinds["fix"][0].split("<tool_response>\n")[1]
  assert fix_error.startswith("tool call failed\nreason: error message: ")
  assert "Error: " in fix_error and "Error at line 1: " not in fix_error  # Python's report, not the short one
  clean = [trace for trace in traces if trace.kind == "clean"][0]
  assert [t for t, model in clean.segments[1:] if not model] == [chat.tool_response_text([f"{clean.answer}\n"])]


def test_a_known_error_text_byte_for_byte():
  result = sft_traces.run_trusted_snippet("print(533 * 970", exec_time_s=0.01)
  assert sandbox.tool_output_text(result) == (
      "Tool call failure\nreason: \nstderr: SyntaxError at line 1: '(' was never closed "
      "(<unknown>, line 1)\n  print(533 * 970\n\nexecution time: 0.01s")


def test_correctness_agrees_with_the_reward(traces):
  for trace in traces:
    response = "".join(text for text, _ in trace.segments[1:])
    assert rewards.score(response, trace.answer) == float(trace.correct), trace.kind
  kinds = {kind: [t.correct for t in traces if t.kind == kind] for kind in sft_traces.TRACE_KINDS}
  assert all(kinds["clean"]) and all(kinds["fix"])
  assert not any(kinds["guess"]) and not any(kinds["wrong"])


def test_statistics_match_hand_counts(traces):
  stats = sft_traces.trace_stats(traces)
  # 8 clean (1 call) + 4 fix (2 calls, 1 error) + 2 wrong (1 call); guesses and wrong are wrong.
  assert stats["kinds"] == {"clean": 8, "fix": 4, "guess": 2, "wrong": 2}
  assert stats["accuracy"] == 12 / 16
  assert stats["tool_calls_per_trace"] == (8 + 8 + 2) / 16
  assert stats["tool_error_ratio"] == 4 / 18
  assert stats["correct_tool_error_ratio"] == 4 / 16
  assert stats["prompt_tokens_char"]["max"] < 2048


def test_traces_encode_with_the_loss_mask_on_model_turns(traces):
  for trace in traces[:4]:
    trajectory = chat.encode_segments(TOKENIZER, trace.segments)
    assert TOKENIZER.decode(trajectory.token_ids) == "".join(t for t, _ in trace.segments)
    model = sum(len(TOKENIZER.encode(t)) for t, m in trace.segments if m)
    assert int(trajectory.loss_mask.sum()) == model
    assert trajectory.prompt_len == len(TOKENIZER.encode(trace.segments[0][0]))
    assert trajectory.token_ids[-1] == TOKENIZER.eos_id and trajectory.loss_mask[-1] == 1
    assert not np.any(trajectory.loss_mask[:trajectory.prompt_len])


def test_written_traces_read_back_and_bad_lines_are_counted(traces, tmp_path):
  path = tmp_path / "sft.jsonl"
  sft_traces.write_sft_traces(path, traces)
  with path.open("a") as f:
    f.write("{broken\n" + json.dumps({"id": "x"}) + "\n")
  back, stats = sft_traces.read_sft_traces(path)
  assert back == traces
  assert stats.to_dict() == {"rows_read": 18, "kept": 16, "skipped": {"broken_json": 2}}


def test_task_files_are_byte_identical_for_a_seed(tmp_path):
  kwargs = dict(seed=4, num_train=30, num_eval=15, num_sft=6)
  stats = synthetic_task.write_synthetic_task(tmp_path / "a", **kwargs)
  synthetic_task.write_synthetic_task(tmp_path / "b", **kwargs)
  for name in ("train.jsonl", "eval.jsonl", "sft.jsonl", "task_stats.json"):
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
  train, _ = data.read_source(f"problems:{tmp_path / 'a/train.jsonl'}", "f")
  evaluation, _ = data.read_source(f"problems:{tmp_path / 'a/eval.jsonl'}", "f")
  sft, _ = sft_traces.read_sft_traces(tmp_path / "a/sft.jsonl")
  eval_texts = {p.problem for p in evaluation}
  assert len(train) == 30 and len(evaluation) == 15 and len(sft) == 6
  assert not eval_texts & {p.problem for p in train}
  sft_texts = {t.segments[0][0].split("This is the problem:\n")[1].removesuffix(
      chat.IM_END + "\n" + chat.GENERATION_PROMPT) for t in sft}
  assert len(sft_texts) == 6 and not eval_texts & sft_texts
  assert not {p.problem for p in train} & sft_texts
  assert stats["train"]["by_family_level"]["product/1"] == 2
  assert stats["sft"]["num_traces"] == 6
