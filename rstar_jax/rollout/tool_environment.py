"""How the environment reads a turn's tool calls and writes their results back (PAPER.md §3.1-3.4,
§11 rows 14-16; config `env.*`), one setting for SFT traces, RL rollouts and evaluation.

  env = ToolEnvironment(output_format="paper", traceback="full")   # the paper's tool texts
  source = sandbox.wrap_code(code, env.traceback); text = env.tool_text(result)

Defaults are the released code's: the Code Judge text ("code"), the short error report, 1,000
characters per stream, then the whole text cut to 256 characters in the middle, and only the first
call block of a turn handled.
"""
import dataclasses
import json
import os

from rstar_jax import chat
from rstar_jax import sandbox

FILE = "rstar_environment.json"  # beside a saved policy: the environment it was trained in


@dataclasses.dataclass(frozen=True)
class ToolEnvironment:
  """Attributes:
    output_format: tool text format, "code" (released) or "paper" (`sandbox.OUTPUT_FORMATS`).
    traceback: `sandbox.wrap_code`'s error report, "short" (released) or "full" (pairs with "paper").
    max_stream_chars: the sandbox's per-stream cut (§3.4 layer 1; released 1000).
    max_tool_response_chars: the cut of one whole tool text (§3.4 layer 2; released 256); None: none.
    tool_response_truncate_side: "middle", "left" or "right".
    max_parallel_calls: call blocks of a turn that are handled (released 1).
  """
  output_format: str = "code"
  traceback: str = "short"
  max_stream_chars: int = sandbox.codejudge.MAX_STREAM_CHARS
  max_tool_response_chars: int | None = chat.DEFAULT_MAX_TOOL_RESPONSE_CHARS
  tool_response_truncate_side: str = "middle"
  max_parallel_calls: int = chat.DEFAULT_MAX_PARALLEL_CALLS

  def __post_init__(self):
    if self.output_format not in sandbox.OUTPUT_FORMATS:
      raise ValueError(f"output_format must be one of {sandbox.OUTPUT_FORMATS}, got {self.output_format!r}")
    if self.traceback not in sandbox.TRACEBACKS:
      raise ValueError(f"traceback must be one of {sandbox.TRACEBACKS}, got {self.traceback!r}")
    for name in ("max_stream_chars", "max_parallel_calls"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    chat.truncate_tool_response("", self.max_tool_response_chars, self.tool_response_truncate_side)

  @classmethod
  def from_dict(cls, fields) -> "ToolEnvironment":
    """From a mapping of the attributes (config `env`, a saved FILE); ValueError naming unknown keys."""
    fields = dict(fields)
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"unknown tool environment keys {unknown}")
    return cls(**fields)

  def tool_text(self, result: sandbox.ExecutionResult) -> str:
    """The text the model reads for one run: `sandbox.tool_output_text`, then the whole-text cut."""
    text = sandbox.tool_output_text(result, self.max_stream_chars, self.output_format)
    return chat.truncate_tool_response(text, self.max_tool_response_chars, self.tool_response_truncate_side)

  def save(self, directory: str) -> None:
    """Writes directory/FILE (atomically)."""
    path = os.path.join(directory, FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      json.dump(dataclasses.asdict(self), f)
    os.replace(path + ".tmp", path)

  @classmethod
  def load(cls, directory: str) -> "ToolEnvironment":
    """directory/FILE, or the released defaults when it has none (a policy trained elsewhere)."""
    path = os.path.join(directory, FILE)
    if not os.path.exists(path):
      return cls()
    with open(path, encoding="utf-8") as f:
      try:
        return cls.from_dict(json.load(f))
      except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
