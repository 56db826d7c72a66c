"""Resample-on-Correct: down-sample one prompt's N rollouts to `keep` (PAPER.md §5.2-§5.4).

RoC runs on the host with numpy over rewards and the penalties of `rl.penalties`. A rollout
is positive when its reward is > 0 and negative otherwise (rStar@ecbfb94). Four pieces,
each a field of `RoCConfig` (the config keys of PAPER.md §11 rows 6-10):

* `count_rule`, how many of each class to keep (n = N rollouts, N > keep):
  - "code" (default): k_neg = round(|neg|·keep/n), k_pos = round(|pos|·keep/n) with Python's
    round-half-even; then, if k_neg <= min(min_neg, |neg|): k_neg = min(min_neg, |neg|),
    k_pos = keep - k_neg; then, symmetrically, if k_pos <= min(min_pos, |pos|):
    k_pos = min(min_pos, |pos|), k_neg = keep - k_pos (rStar@ecbfb94 `resample_of_correct`).
    The release's guard "both rounded counts below their minimums: keep the whole group"
    cannot fire: the rounded counts sum to at least keep - 1 >= min_neg + min_pos - 1.
  - "paper": k_neg = floor(|neg|·keep/n) (= floor(|neg|/2) for n = 2·keep), k_pos = keep - k_neg.
* `pos_select`, which positives: "sort" (default, released) is a stable ascending sort of
  p_total (ties go to the lower rollout index), then the first k_pos; "inverse_weight"
  (paper) draws k_pos without replacement, each draw with probability proportional to
  w_i = 1 / (p_total_i + eps) among those not yet drawn.
* `neg_select`, which negatives: "uniform" (default, paper) draws k_neg uniformly without
  replacement; "first" (released) takes the first k_neg in rollout order.
* p_total = [use_error_penalty]·p_err + [use_format_penalty]·p_format, with `err_detect`,
  `format_turns` and `format_tags` choosing how those are measured (`rl.penalties`).

Before any rule: a group with n < keep is dropped (nothing kept) and one with n = keep is
kept whole, in every mode (released behaviour).

Randomness: `numpy.random.Generator` (PCG64) seeded with `numpy.random.default_rng(seed)`,
where seed is an int or a sequence of ints; `rl.groups` passes (seed..., group index). Draws
use Gumbel top-k: with g_i ~ Gumbel(0, 1) drawn once for all n rollouts, the k largest
log w_i + g_i of a class are a sample of k without replacement with successive draws
proportional to w (Kool et al., 2019, "Stochastic Beams and Where to Find Them"); w = 1 gives
a uniform draw. The result is a deterministic function of (inputs, seed).
"""
import dataclasses
import math
from typing import Sequence

import numpy as np

from rstar_jax.rl import penalties

COUNT_RULES = ("code", "paper")
POS_SELECTS = ("sort", "inverse_weight")
NEG_SELECTS = ("uniform", "first")
MODES = (None, "paper", "code")


@dataclasses.dataclass(frozen=True)
class RoCConfig:
  """The RoC pieces; the field defaults are PAPER.md §11's defaults.

  Attributes:
    count_rule: "code" or "paper", see the module docstring (§11 row 6).
    pos_select: "sort" or "inverse_weight" (§11 row 7).
    neg_select: "uniform" or "first" (§11 row 8).
    err_detect: "structured" or "substring", see `penalties.tool_error_counts` (§11 row 9).
    format_turns: "all" or "response", see `penalties.format_penalty` (§11 row 10).
    format_tags: "balanced" or "open", see `penalties.answer_count`.
    use_error_penalty: add p_err to p_total (released `roc_error_ratio`).
    use_format_penalty: add p_format to p_total (released `roc_answer_format`).
    min_neg: minimum negatives kept by the "code" count rule; a negative value disables the
      rule, as the released default -1 does.
    min_pos: minimum positives kept by the "code" count rule; likewise.
    eps: epsilon of the inverse weights 1 / (p_total + eps), > 0 (PAPER.md §5.2 [R]).
  """
  count_rule: str = "code"
  pos_select: str = "sort"
  neg_select: str = "uniform"
  err_detect: str = "structured"
  format_turns: str = "all"
  format_tags: str = "balanced"
  use_error_penalty: bool = True
  use_format_penalty: bool = True
  min_neg: int = 2
  min_pos: int = 2
  eps: float = 0.01

  def __post_init__(self):
    for name, choices in (("count_rule", COUNT_RULES), ("pos_select", POS_SELECTS),
                          ("neg_select", NEG_SELECTS), ("err_detect", penalties.ERR_DETECTS),
                          ("format_turns", penalties.FORMAT_TURNS),
                          ("format_tags", penalties.FORMAT_TAGS)):
      if getattr(self, name) not in choices:
        raise ValueError(f"RoCConfig.{name} must be one of {choices}, "
                         f"got {getattr(self, name)!r}")
    for name in ("use_error_penalty", "use_format_penalty"):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f"RoCConfig.{name} must be a bool, got {getattr(self, name)!r}")
    for name in ("min_neg", "min_pos"):
      if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int):
        raise ValueError(f"RoCConfig.{name} must be an int, got {getattr(self, name)!r}")
    if not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps > 0):
      raise ValueError(f"RoCConfig.eps must be a finite number > 0, got {self.eps!r}")

  @classmethod
  def preset(cls, mode: "str | RoCConfig | None" = None, **overrides) -> "RoCConfig":
    """A preset (or a given config) with some fields overridden.

    Args:
      mode: None (PAPER.md §11 defaults), "paper" (§5.2: floor count, inverse-weight
        positives, uniform negatives, structured errors, all turns, open tags), "code"
        (§5.3, rStar@ecbfb94 exactly: rounded counts with minimums, sorted positives, first
        negatives, substring errors, response turns, balanced tags), or a RoCConfig.
      **overrides: field values replacing the preset's, e.g. `neg_select="first"`; a
        config's keys such as `**config.rl.roc`.

    Returns:
      A validated RoCConfig.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
      raise ValueError(f"unknown RoCConfig field(s) {unknown}; known: {sorted(fields)}")
    if isinstance(mode, RoCConfig):
      return dataclasses.replace(mode, **overrides)
    if mode not in MODES:
      raise ValueError(f"`mode` must be one of {MODES} or a RoCConfig, got {mode!r}")
    return cls(**{**_PRESETS[mode], **overrides})


_PRESETS = {
    None: {},
    "paper": dict(count_rule="paper", pos_select="inverse_weight", neg_select="uniform",
                  err_detect="structured", format_turns="all", format_tags="open"),
    "code": dict(count_rule="code", pos_select="sort", neg_select="first",
                 err_detect="substring", format_turns="response", format_tags="balanced"),
}


def class_counts(num_neg: int, num_pos: int, keep: int,
                 config: "str | RoCConfig | None" = None) -> tuple[int, int]:
  """(k_neg, k_pos): how many negatives and positives a group of n = num_neg + num_pos keeps.

  The formulas are in the module docstring. For n < keep the result is (0, 0), for n = keep
  (num_neg, num_pos).

  Args:
    num_neg: |neg| >= 0.
    num_pos: |pos| >= 0.
    keep: the kept group size, >= 1.
    config: a RoCConfig or a preset name (None, "paper", "code").

  Returns:
    Two ints with k_neg <= num_neg and k_pos <= num_pos.

  Raises:
    ValueError: on a bad argument; for the "code" rule when min_neg + min_pos > keep (the
      release asserts it) or either exceeds keep, and when its counts do not add up to keep
      (the release's assertion; possible for odd keep, never for n = 2·keep, keep even).
  """
  config = RoCConfig.preset(config)
  for name, value, low in (("num_neg", num_neg, 0), ("num_pos", num_pos, 0), ("keep", keep, 1)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
      raise ValueError(f"`{name}` must be an int >= {low}, got {value!r}")
  n = num_neg + num_pos
  if n < keep:
    return 0, 0
  if n == keep:
    return num_neg, num_pos
  if config.count_rule == "paper":
    k_neg = num_neg * keep // n
    return k_neg, keep - k_neg
  min_neg, min_pos = config.min_neg, config.min_pos
  if min_neg + min_pos > keep or max(min_neg, min_pos) > keep:
    raise ValueError(f"RoCConfig.min_neg ({min_neg}), RoCConfig.min_pos ({min_pos}) and their "
                     f"sum must not exceed keep ({keep})")
  k_neg = round(num_neg * keep / n)  # Python round: half to even, as released.
  k_pos = round(num_pos * keep / n)
  if k_neg <= min(min_neg, num_neg):
    k_neg = min(min_neg, num_neg)
    k_pos = keep - k_neg
  if k_pos <= min(min_pos, num_pos):
    k_pos = min(min_pos, num_pos)
    k_neg = keep - k_pos
  # The release slices sorted lists, so a count beyond the class keeps only the class.
  k_neg, k_pos = min(k_neg, num_neg), min(k_pos, num_pos)
  if k_neg + k_pos != keep:
    raise ValueError(
        f"the released count rule keeps {k_neg} negatives + {k_pos} positives != keep ({keep}) "
        f"for {num_neg} negatives and {num_pos} positives (min_neg={min_neg}, "
        f"min_pos={min_pos}); use an even keep with n = 2*keep, or count_rule='paper'")
  return k_neg, k_pos


def _check_vector(name: str, value, like: tuple[str, int] | None = None) -> np.ndarray:
  array = np.asarray(value)
  if array.ndim != 1 or not (np.issubdtype(array.dtype, np.floating) or
                             np.issubdtype(array.dtype, np.integer)):
    raise ValueError(f"`{name}` must be a 1-D float array, got dtype {array.dtype} "
                     f"shape {array.shape}")
  if like is not None and array.shape[0] != like[1]:
    raise ValueError(f"`{name}` must have shape ({like[1]},) like `{like[0]}`, "
                     f"got {array.shape}")
  if not np.all(np.isfinite(array)):
    raise ValueError(f"`{name}` must be finite, got {array.tolist()}")
  return array.astype(np.float64)


def _seed_entropy(seed, name: str = "seed") -> list[int]:
  """The seed as a list of ints; `default_rng(s)` and `default_rng([s])` draw the same."""
  try:
    parts = [seed] if isinstance(seed, (int, np.integer)) else list(seed)
  except TypeError:
    parts = [seed]
  for part in parts:
    if isinstance(part, bool) or not isinstance(part, (int, np.integer)) or part < 0:
      raise ValueError(f"`{name}` must be an int >= 0 or a sequence of them, got {seed!r}")
  return [int(p) for p in parts]


def group_seed(seed: int | Sequence[int], group_index: int) -> list[int]:
  """The seed entropy of group `group_index` in a batch: [*seed, group_index].

  Args:
    seed: int >= 0 or a sequence of them, e.g. (config seed, step).
    group_index: the group's position in the batch, >= 0.

  Returns:
    A list of ints for `numpy.random.default_rng` (and `resample_on_correct`'s seed).
  """
  return _seed_entropy(seed) + _seed_entropy(group_index, "group_index")


def total_penalty(p_err, p_format, config: "str | RoCConfig | None" = None) -> np.ndarray:
  """p_total = [use_error_penalty]·p_err + [use_format_penalty]·p_format, float64 [N].

  Args:
    p_err: [N] float >= 0.
    p_format: [N] float >= 0.
    config: a RoCConfig or a preset name (None, "paper", "code").

  Returns:
    [N] float64 p_total.
  """
  config = RoCConfig.preset(config)
  p_err = _check_vector("p_err", p_err)
  p_format = _check_vector("p_format", p_format, ("p_err", p_err.shape[0]))
  for name, array in (("p_err", p_err), ("p_format", p_format)):
    if np.any(array < 0):
      raise ValueError(f"`{name}` must be >= 0, got {array.tolist()}")
  return config.use_error_penalty * p_err + config.use_format_penalty * p_format


def resample_on_correct(rewards, p_err, p_format, keep: int,
                        seed: int | Sequence[int],
                        mode: "str | RoCConfig | None" = None) -> np.ndarray:
  """The rollouts RoC keeps from one group of N rollouts of one prompt (PAPER.md §5).

  Counts come from `class_counts`; positives are chosen by `pos_select` on p_total,
  negatives by `neg_select` (formulas in the module docstring).

  Args:
    rewards: [N] float; > 0 marks a positive (correct) rollout.
    p_err: [N] float >= 0, e.g. `penalties.error_penalty` per rollout.
    p_format: [N] float >= 0, e.g. `penalties.format_penalty` per rollout.
    keep: the kept group size G, >= 1 (e.g. 16 of N = 32).
    seed: int >= 0 or a sequence of them, for `numpy.random.default_rng`.
    mode: None (PAPER.md §11 defaults), "paper", "code", or a RoCConfig.

  Returns:
    The kept indices, a sorted int64 array: empty when N < keep, all N when N = keep, else
    `keep` of them.
  """
  config = RoCConfig.preset(mode)
  rewards = _check_vector("rewards", rewards)
  _check_vector("p_err", p_err, ("rewards", rewards.shape[0]))
  p_total = total_penalty(p_err, p_format, config)
  entropy = _seed_entropy(seed)
  is_pos = rewards > 0
  pos_idx, neg_idx = np.flatnonzero(is_pos), np.flatnonzero(~is_pos)
  k_neg, k_pos = class_counts(len(neg_idx), len(pos_idx), keep, config)
  if k_neg == len(neg_idx) and k_pos == len(pos_idx):  # the whole group
    return np.arange(rewards.shape[0], dtype=np.int64)
  gumbel = np.random.default_rng(entropy).gumbel(size=rewards.shape[0])
  if config.pos_select == "sort":
    pos_kept = pos_idx[np.argsort(p_total[pos_idx], kind="stable")[:k_pos]]
  else:
    pos_keys = gumbel[pos_idx] - np.log(p_total[pos_idx] + config.eps)
    pos_kept = pos_idx[np.argsort(-pos_keys, kind="stable")[:k_pos]]
  if config.neg_select == "first":
    neg_kept = neg_idx[:k_neg]
  else:
    neg_kept = neg_idx[np.argsort(-gumbel[neg_idx], kind="stable")[:k_neg]]
  return np.sort(np.concatenate([pos_kept, neg_kept])).astype(np.int64)
