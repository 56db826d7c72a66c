"""Curriculum stages from config: typed stage records and the stage of a global step.

PAPER.md §7 trains in three stages (8K -> 12K -> 12K max response tokens, turn
limits 10/10/15, 300 + ~85 + 125 steps); stage 3 runs on the problems the step-385
policy does not always solve (an offline 8-rollout filter, `hard_filter`), with the
optimizer state reset (PAPER.md §11 row 22). The optimizer owns the learning-rate
schedule: one linear warm-up of `optim.warmup_steps`, restarted at every reset (§7 [R],
`train/optim.py`); `Curriculum.reset_steps()` gives the steps to pass as
`optim.reset_at_steps`.

Config: a list of stages, each a dict (or ConfigDict) with the keys

  name                 str, unique
  train_files          list of "SCHEMA:PATH" (see `sources`); for a stage with
                       hard_filter_samples > 0, the problems the filter starts from
  max_response_tokens  int > 0, response budget incl. environment tokens (§2.5)
  max_turns            int > 0, assistant-turn limit T (§2.5, §11 row 4)
  steps                int > 0, RL steps in this stage
  reset_optimizer      bool (default False), re-initialize the optimizer state (moments
                       and warm-up) before the stage's first step; ignored for a first
                       stage, which starts from a fresh optimizer anyway
  hard_filter_samples  int >= 0 (default 0 = off), n of the stage-start filter: roll
                       the current policy n times per problem of train_files and train
                       on the problems it does not solve n/n (§7: 8)

e.g. `dict(name="stage3", train_files=["problems:data/rl42k.jsonl"], max_response_tokens=12288,
max_turns=15, steps=125, reset_optimizer=True, hard_filter_samples=8)`.
"""
import dataclasses
from typing import Any, Sequence

_REQUIRED = ("name", "train_files", "max_response_tokens", "max_turns", "steps")
_DEFAULTS = {"reset_optimizer": False, "hard_filter_samples": 0}
# Keys a stage no longer takes, with where the setting lives now.
_MOVED = {"warmup_steps": "the optimizer owns warm-up: set optim.warmup_steps (it restarts at "
                          "every reset_optimizer stage)"}


@dataclasses.dataclass(frozen=True)
class Stage:
  """One validated curriculum stage (keys as in the module docstring).

  Attributes:
    index: position in the curriculum, from 0.
    first_step: the global step (from 0) at which the stage starts.
    field: the config path of this stage, e.g. "config.data.stages[2]", for messages
      about its files.
  """
  index: int
  name: str
  train_files: tuple[str, ...]
  max_response_tokens: int
  max_turns: int
  steps: int
  reset_optimizer: bool
  hard_filter_samples: int
  first_step: int
  field: str

  @property
  def end_step(self) -> int:
    """The first global step after this stage."""
    return self.first_step + self.steps


@dataclasses.dataclass(frozen=True)
class Curriculum:
  """The stages in order; global steps run from 0 to `total_steps - 1`."""
  stages: tuple[Stage, ...]

  @property
  def total_steps(self) -> int:
    return self.stages[-1].end_step

  def reset_steps(self) -> tuple[int, ...]:
    """The global steps before which the optimizer is re-initialized: `optim.reset_at_steps`.

    The first step of every stage with reset_optimizer=True, in order, step 0 excluded (the
    optimizer starts fresh there). Steps count RL steps from 0; with one optimizer update per
    RL step (PAPER.md §6) they are also the update indices `train.optim` counts.
    """
    return tuple(stage.first_step for stage in self.stages
                 if stage.reset_optimizer and stage.first_step > 0)

  def stage_at(self, step: int) -> Stage:
    """The stage that global step `step` (from 0) belongs to."""
    if not isinstance(step, int) or not 0 <= step < self.total_steps:
      raise ValueError(f"step must be an integer in [0, {self.total_steps}), got {step!r}")
    return next(stage for stage in self.stages if step < stage.end_step)


def _as_dict(entry: Any, where: str) -> dict[str, Any]:
  if isinstance(entry, dict):
    return dict(entry)
  if hasattr(entry, "keys") and hasattr(entry, "__getitem__"):  # ConfigDict
    return {key: entry[key] for key in entry.keys()}
  raise ValueError(f"{where}={entry!r}: expected a dict of stage settings")


def _int(value: Any, where: str, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    kind = "positive" if minimum == 1 else "non-negative"
    raise ValueError(f"{where}={value!r}: must be a {kind} integer")
  return value


def _stage(entry: Any, index: int, first_step: int, where: str) -> Stage:
  settings = _as_dict(entry, where)
  allowed = _REQUIRED + tuple(_DEFAULTS)
  for key in settings:
    if key in _MOVED:
      raise ValueError(f"{where}.{key}: not a stage setting; {_MOVED[key]}")
    if key not in allowed:
      raise ValueError(f"{where}.{key}: unknown key; expected one of {list(allowed)}")
  for key in _REQUIRED:
    if key not in settings:
      raise ValueError(f"{where}.{key}: missing (required)")
  settings = _DEFAULTS | settings
  name = settings["name"]
  if not isinstance(name, str) or not name:
    raise ValueError(f"{where}.name={name!r}: must be a non-empty string")
  files = settings["train_files"]
  if (isinstance(files, str) or not isinstance(files, Sequence) or not files
      or not all(isinstance(f, str) and f for f in files)):
    raise ValueError(f"{where}.train_files={files!r}: must be a non-empty list of "
                     "'SCHEMA:PATH' strings")
  if not isinstance(settings["reset_optimizer"], bool):
    raise ValueError(f"{where}.reset_optimizer={settings['reset_optimizer']!r}: must be a bool")
  steps = _int(settings["steps"], f"{where}.steps", 1)
  return Stage(
      index=index, name=name, train_files=tuple(files),
      max_response_tokens=_int(settings["max_response_tokens"], f"{where}.max_response_tokens", 1),
      max_turns=_int(settings["max_turns"], f"{where}.max_turns", 1),
      steps=steps, reset_optimizer=settings["reset_optimizer"],
      hard_filter_samples=_int(settings["hard_filter_samples"],
                               f"{where}.hard_filter_samples", 0),
      first_step=first_step, field=where)


def curriculum_from_config(stages: Any, field: str = "config.data.stages") -> Curriculum:
  """Validates a list of stage settings into a `Curriculum`.

  Args:
    stages: the config value (a list or tuple of dicts / ConfigDicts).
    field: its config path, named in every error, e.g.
      "config.data.stages[1].max_turns=0: must be a positive integer".

  Raises:
    ValueError: naming the key path and value of the first problem found.
  """
  if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence) or not stages:
    raise ValueError(f"{field}={stages!r}: must be a non-empty list of stages")
  built, first_step, names = [], 0, {}
  for i, entry in enumerate(stages):
    stage = _stage(entry, i, first_step, f"{field}[{i}]")
    if stage.name in names:
      raise ValueError(f"{field}[{i}].name={stage.name!r}: already used by {field}"
                       f"[{names[stage.name]}]")
    names[stage.name] = i
    built.append(stage)
    first_step = stage.end_step
  return Curriculum(tuple(built))
