"""SFT tool-use traces for the synthetic task, in the exact rollout format, deliberately imperfect.

A trace is the segment list a rollout produces (PAPER.md §2.2-§2.6): the prompt
`chat.prompt_text(problem)` (ends with `<|im_start|>assistant\\n<reason>`), then
model turns (loss mask 1) alternating with environment segments
`chat.tool_response_text([text])` (mask 0), so `chat.encode_segments(tokenizer,
trace.segments)` gives the training `Trajectory`. Model turns:

  call turn    "{plan}</reason>\\n" + chat.tool_call_text(code) + "<|im_end|>"
  answer turn  "{note}</reason>\\n<answer>\\boxed{N}</answer><|im_end|>"

Kinds (fractions set by `TraceMix`):

  clean  one call of the correct snippet, its output, the answer (correct)
  fix    a snippet that raises a real error, the error text, a second call with the
         correct snippet, its output, the answer (correct; one tool error)
  guess  no tool: an answer guessed outright (right with probability
         `guess_accuracy`, otherwise 2-20% off)
  wrong  one call of a snippet that runs but computes something else, and its
         output given as the answer (wrong unless the slip happens not to matter)

Tool texts are truthful: each snippet is run in a fresh Python process through
`sandbox.wrap_code` (the §3.1 notebook-cell wrapper, with the rollouts' error report),
and `tool_text` formats what it really printed, real error messages included, with the
execution time fixed (`exec_time_s`) so the bytes are deterministic. By default that is
the released environment's text (`sandbox.tool_output_text`, cut by
`chat.truncate_tool_response`); the RL job passes its `rollout.ToolEnvironment.tool_text`,
so traces read as its rollouts do.

Lengths with `chat.CharTokenizer` (one token per character, one per special token),
measured on 300 traces of seed 0: the prompt is 1,862 tokens plus the problem text
(1,880-1,935 in all); responses (everything after the prompt) are 85-99 tokens for
a guess, 334-409 clean, 345-405 wrong and 688-904 for a fix (`trace_stats` reports
the figures of a generated set).
"""
import concurrent.futures
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from typing import Any, Callable, Mapping, Sequence

from rstar_jax import chat
from rstar_jax import sandbox
from rstar_jax.data import records
from rstar_jax.data import synthetic

TRACE_KINDS = ("clean", "fix", "guess", "wrong")

_PLANS = {
    "product": "Multiply the numbers with Python.",
    "modular": "Use Python's three-argument pow.",
    "digit_sum": "Compute the number in Python and add its digits.",
    "counting": "Count them with a loop in Python.",
    "number_theory": "Compute it in Python.",
}
_FIX_NOTE = "The code failed. Let me fix it."
_GUESS_NOTE = "I will estimate the answer without running code."
_SNIPPET_TIMEOUT_S = 60


def _check_fractions(where: str, fractions: Mapping[str, float]) -> None:
  if set(fractions) != set(TRACE_KINDS):
    raise ValueError(f"{where} needs exactly the kinds {list(TRACE_KINDS)}, got {sorted(fractions)}")
  values = [fractions[kind] for kind in TRACE_KINDS]
  if any(not 0 <= f <= 1 for f in values) or abs(sum(values) - 1) > 1e-9:
    raise ValueError(f"{where} fractions {dict(fractions)} must lie in [0, 1] and sum to 1")


def _counts(fractions: Mapping[str, float], total: int) -> dict[str, int]:
  """Exact counts per kind for `total` traces (largest remainder, ties in TRACE_KINDS order)."""
  exact = {kind: fractions[kind] * total for kind in TRACE_KINDS}
  counts = {kind: int(value) for kind, value in exact.items()}
  by_remainder = sorted(TRACE_KINDS, key=lambda k: (-(exact[k] - counts[k]), TRACE_KINDS.index(k)))
  for kind in by_remainder[:total - sum(counts.values())]:
    counts[kind] += 1
  return counts


@dataclasses.dataclass(frozen=True)
class TraceMix:
  """Fractions of each trace kind (summing to 1), the accuracy of guesses, and optional
  per-family fractions that replace the default ones for that family's problems (e.g. traces
  that mostly guess on one family: a prior that RL has to overcome)."""
  clean: float = 0.55
  fix: float = 0.2
  guess: float = 0.15
  wrong: float = 0.1
  guess_accuracy: float = 0.25
  by_family: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    _check_fractions("TraceMix", {kind: getattr(self, kind) for kind in TRACE_KINDS})
    if not 0 <= self.guess_accuracy <= 1:
      raise ValueError(f"guess_accuracy must be in [0, 1], got {self.guess_accuracy!r}")
    for family, fractions in self.by_family.items():
      if family not in synthetic.FAMILIES:
        raise ValueError(f"TraceMix.by_family: unknown family {family!r}; known: {list(synthetic.FAMILIES)}")
      _check_fractions(f"TraceMix.by_family[{family!r}]", fractions)
    object.__setattr__(self, "by_family", {f: dict(v) for f, v in self.by_family.items()})

  def fractions(self, family: str | None = None) -> dict[str, float]:
    """The kind fractions of a family's problems (the default ones without an override)."""
    if family in self.by_family:
      return dict(self.by_family[family])
    return {kind: getattr(self, kind) for kind in TRACE_KINDS}

  def counts(self, total: int, family: str | None = None) -> dict[str, int]:
    """Exact counts per kind for `total` traces of a family (largest remainder, ties in
    TRACE_KINDS order)."""
    return _counts(self.fractions(family), total)


@dataclasses.dataclass(frozen=True)
class SftTrace:
  """One trace: its segments and what it did.

  Attributes:
    segments: `(text, written_by_model)` pairs, the prompt first.
    final_answer: the integer written in `\\boxed{}`.
    correct: final_answer equals the problem's answer.
    num_tool_calls / num_tool_errors: calls made and calls that failed.
  """
  id: str
  problem_id: str
  kind: str
  answer: str
  final_answer: str
  correct: bool
  num_tool_calls: int
  num_tool_errors: int
  segments: tuple[tuple[str, bool], ...]

  def to_json(self) -> dict[str, Any]:
    row = dataclasses.asdict(self)
    row["segments"] = [{"text": text, "model": model} for text, model in self.segments]
    return row

  @classmethod
  def from_json(cls, row: dict[str, Any]) -> "SftTrace":
    fields = {f.name for f in dataclasses.fields(cls)}
    if set(row) != fields or row["kind"] not in TRACE_KINDS:
      raise ValueError(f"not an SFT trace row: keys {sorted(row)}")
    segments = tuple((s["text"], s["model"]) for s in row["segments"])
    if not all(isinstance(t, str) and isinstance(m, bool) for t, m in segments):
      raise ValueError("segments must be {text: str, model: bool} objects")
    return cls(**(row | {"segments": segments}))


def released_tool_text(result: sandbox.ExecutionResult) -> str:
  """The released environment's tool text: the Code Judge text cut to 256 characters in the middle."""
  return chat.truncate_tool_response(sandbox.tool_output_text(result), chat.DEFAULT_MAX_TOOL_RESPONSE_CHARS)


def run_trusted_snippet(code: str, exec_time_s: float, traceback: str = "short") -> sandbox.ExecutionResult:
  """Runs `sandbox.wrap_code(code, traceback)` in a fresh Python process with empty stdin, unprotected.

  Returns the result with `wall_time_s=exec_time_s` (fixed, for deterministic text).
  NOT A SANDBOX: no memory, file-system or network limits, only a wall-clock timeout. Only for
  the trace generator's own snippets (`synthetic`); model-written code goes to `sandbox.Pool`.
  """
  with tempfile.TemporaryDirectory() as workdir:
    try:
      # -I -S: isolated, no site packages (3x faster start-up); -u: unbuffered streams.
      proc = subprocess.run([sys.executable, "-I", "-S", "-u", "-c", sandbox.wrap_code(code, traceback)],
                            input="", capture_output=True, text=True, cwd=workdir,
                            timeout=_SNIPPET_TIMEOUT_S, env={"PATH": os.environ.get("PATH", "")})
    except subprocess.TimeoutExpired as e:
      raise ValueError(f"snippet ran past {_SNIPPET_TIMEOUT_S}s: {code!r}") from e
  status = "ok" if proc.returncode == 0 else "runtime_error"
  return sandbox.ExecutionResult(status=status, stdout=proc.stdout, stderr=proc.stderr,
                                 exit_code=proc.returncode, wall_time_s=exec_time_s)


def _call_turn(plan: str, code: str, prompt_format: chat.ChatFormat) -> str:
  return f"{plan}</reason>\n{chat.tool_call_text(code, fmt=prompt_format)}{chat.IM_END}"


def _answer_turn(note: str, value: str) -> str:
  return f"{note}</reason>\n<answer>\\boxed{{{value}}}</answer>{chat.IM_END}"


def _printed(result: sandbox.ExecutionResult) -> str:
  lines = result.stdout.strip().splitlines()
  return lines[-1].strip() if lines else ""


def _guess(item: synthetic.SyntheticItem, draw: synthetic.Draw, accuracy: float) -> str:
  """The answer with probability `accuracy`, else one 2-20% (at least 1) away from it.

  The relative miss keeps a wrong guess wrong under the released grader's leniency
  (numbers within rel_tol 1e-4 count as equal, PAPER.md §4).
  """
  answer = int(item.problem.answer)
  if draw.uniform() < accuracy:
    return str(answer)
  miss = max(1, answer * draw.integer(2, 20) // 100)
  return str(answer + miss if draw.uniform() < 0.5 or answer - miss < 0 else answer - miss)


def _trace(index: int, item: synthetic.SyntheticItem, kind: str, results: dict[str, Any],
           seed: int, mix: TraceMix, prompt_format: chat.ChatFormat,
           tool_text: Callable[[sandbox.ExecutionResult], str]) -> SftTrace:
  problem = item.problem
  plan = _PLANS[problem.meta["family"]]
  segments: list[tuple[str, bool]] = [(chat.prompt_text(problem.problem, prompt_format), False)]
  calls = errors = 0
  codes = {"clean": [item.code], "fix": [item.broken_code, item.code], "wrong": [item.buggy_code],
           "guess": []}[kind]
  for code in codes:
    result = results[code]
    text = tool_text(result)
    segments.append((_call_turn(plan if calls == 0 else _FIX_NOTE, code, prompt_format), True))
    segments.append((chat.tool_response_text([text]), False))
    calls += 1
    errors += result.status != "ok"
  if kind == "guess":
    value = _guess(item, synthetic.Draw(seed, "guess", index), mix.guess_accuracy)
    segments.append((_answer_turn(_GUESS_NOTE, value), True))
  else:
    value = _printed(results[codes[-1]])
    segments.append((_answer_turn(f"The code printed {value}.", value), True))
  return SftTrace(id=f"sft/{index:06d}", problem_id=problem.id, kind=kind, answer=problem.answer,
                  final_answer=value, correct=value == problem.answer, num_tool_calls=calls,
                  num_tool_errors=errors, segments=tuple(segments))


def make_sft_traces(items: Sequence[synthetic.SyntheticItem], seed: int,
                    mix: TraceMix = TraceMix(), *, exec_time_s: float = 0.01,
                    prompt_format: chat.ChatFormat = chat.DEFAULT_FORMAT,
                    tool_text: Callable[[sandbox.ExecutionResult], str] = released_tool_text,
                    traceback: str = "short",
                    max_workers: int | None = None) -> list[SftTrace]:
  """One trace per item, kinds in the exact proportions of `mix` (per family where it says so),
  deterministically.

  Args:
    items: synthetic problems (e.g. `synthetic_problems(seed, "sft", n)`).
    seed: decides which item gets which kind, and the guesses.
    mix: kind fractions and guess accuracy.
    exec_time_s: the execution time written in every tool text.
    prompt_format: the chat format of the prompt and of the tool calls.
    tool_text: the text the model reads for a run (the rollouts' `ToolEnvironment.tool_text`,
      so traces read as rollouts do).
    traceback: the error report of `sandbox.wrap_code`, as the rollouts' environment has it.
    max_workers: parallel snippet runs (default: the CPU count).

  Returns:
    Traces in item order; the same arguments give the same traces byte for byte.
  """
  kinds = [""] * len(items)
  groups = {None: list(range(len(items)))}  # the items each mix applies to
  if mix.by_family:
    groups = {family: [i for i, item in enumerate(items) if item.problem.meta["family"] == family]
              for family in mix.by_family}
    covered = {i for members in groups.values() for i in members}
    groups[None] = [i for i in range(len(items)) if i not in covered]
  for family, members in groups.items():
    counts = mix.counts(len(members), family)
    ranked = sorted(members, key=lambda i: synthetic.Draw(seed, "kind", i).uniform())
    position = 0
    for kind in TRACE_KINDS:
      for i in ranked[position:position + counts[kind]]:
        kinds[i] = kind
      position += counts[kind]
  needed = {"clean": ("code",), "fix": ("broken_code", "code"), "wrong": ("buggy_code",),
            "guess": ()}
  snippets = sorted({getattr(item, name) for item, kind in zip(items, kinds)
                     for name in needed[kind]})
  with concurrent.futures.ThreadPoolExecutor(max_workers or os.cpu_count() or 1) as pool:
    outputs = pool.map(lambda code: run_trusted_snippet(code, exec_time_s, traceback), snippets)
    results = dict(zip(snippets, outputs))
  return [_trace(i, item, kind, results, seed, mix, prompt_format, tool_text)
          for i, (item, kind) in enumerate(zip(items, kinds))]


def write_sft_traces(path: str | os.PathLike, traces: Sequence[SftTrace]) -> None:
  """Writes traces as JSONL (one `SftTrace.to_json()` object per line), atomically."""
  records.write_jsonl_atomic(path, [trace.to_json() for trace in traces])


def read_sft_traces(path: str | os.PathLike) -> tuple[list[SftTrace], records.DataStats]:
  """Reads a traces file; lines that are not valid traces are skipped as "broken_json"."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise ValueError(f"no SFT traces file at '{path}'")
  stats, traces = records.DataStats(), []
  for line in path.read_text(encoding="utf-8").splitlines():
    if not line.strip():
      continue
    stats.rows_read += 1
    try:
      traces.append(SftTrace.from_json(json.loads(line)))
    except (ValueError, KeyError, TypeError):
      stats.skip("broken_json")
  stats.kept = len(traces)
  stats.log(f"SFT traces {path}")
  return traces, stats


def trace_stats(traces: Sequence[SftTrace]) -> dict[str, Any]:
  """Counts, accuracy, tool-error ratios and lengths (CharTokenizer tokens) of a trace set.

  `tool_error_ratio` is failed calls / calls over all traces; `correct_tool_error_ratio`
  the same over correct traces only (the quantity RoC drives down, PAPER.md §10 Fig. 4).
  """
  if not traces:
    return {"num_traces": 0}
  tokenizer = chat.CharTokenizer()

  def ratio(subset):
    calls = sum(t.num_tool_calls for t in subset)
    return sum(t.num_tool_errors for t in subset) / calls if calls else 0.0

  prompt = [len(tokenizer.encode(t.segments[0][0])) for t in traces]
  response = [sum(len(tokenizer.encode(text)) for text, _ in t.segments[1:]) for t in traces]
  return {
      "num_traces": len(traces),
      "kinds": {kind: sum(t.kind == kind for t in traces) for kind in TRACE_KINDS},
      "accuracy": sum(t.correct for t in traces) / len(traces),
      "tool_calls_per_trace": sum(t.num_tool_calls for t in traces) / len(traces),
      "tool_error_ratio": ratio(traces),
      "correct_tool_error_ratio": ratio([t for t in traces if t.correct]),
      "prompt_tokens_char": {"mean": sum(prompt) / len(prompt), "max": max(prompt)},
      "response_tokens_char": {"mean": sum(response) / len(response), "max": max(response),
                               "min": min(response)},
  }
