"""Admission planning for a slot engine: which free slot each queued prompt takes and which cached
ids it reuses, as a pure function of the slots' state (no model, no device), so an in-process
engine, a server and a router plan alike.

A slot is free (its cache rows still hold the ids of its last sequence) or busy (running a request
whose ids, its prompt, written or still to be written, then its outputs, another prompt may
share). For each prompt in order, while a slot is free:
  - it takes the free slot whose held ids share the most leading ids with the prompt but its last
    id (the last is always written, for its logits), ties to the least recently freed, and keeps
    those ids in place (`reused`);
  - with sharing, the busy slot whose ids share the most leading ids with it (slots admitted
    earlier in the same round count, so the n samples of one prompt find the first) is its
    `source` if that beats the in-place reuse by `min_shared` ids: the new request then waits until
    the source has written those ids and copies them (`shared`). Among equal sources, one that does
    not wait for a copy itself, then the lowest slot.
"""
import dataclasses
from typing import Sequence

import numpy as np

_EMPTY = np.zeros(0, np.int32)


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
  """The number of leading ids `a` and `b` share."""
  n = min(a.size, b.size)
  mismatch = np.flatnonzero(a[:n] != b[:n])
  return int(mismatch[0]) if mismatch.size else n


@dataclasses.dataclass(frozen=True)
class SlotState:
  """What planning needs of one slot.

  Attributes:
    running_ids: busy: the ids of the request running there (prompt, then outputs); None: free.
    held_ids: free: the ids its cache rows hold, reusable in place.
    freed_at: when it was last freed (a step count); the least recent is taken first.
    waiting: busy, and its request still waits to copy a shared prefix.
  """
  running_ids: np.ndarray | None = None
  held_ids: np.ndarray = dataclasses.field(default_factory=lambda: _EMPTY)
  freed_at: int = 0
  waiting: bool = False


@dataclasses.dataclass(frozen=True)
class Admission:
  """Where one prompt goes: `slot`; `reused` leading ids kept in the slot's own rows, or `shared`
  leading ids copied from busy slot `source` once it has written them (module docstring)."""
  slot: int
  reused: int = 0
  source: int | None = None
  shared: int = 0

  @property
  def cached_tokens(self) -> int:
    """The prompt ids not computed again."""
    return self.shared if self.source is not None else self.reused


def plan(slots: Sequence[SlotState], prompts: Sequence[np.ndarray], share_prefixes: bool,
         min_shared: int) -> list[Admission]:
  """Admissions for the leading `prompts` (int32 ids, in queue order) while free slots last."""
  slots = list(slots)
  admissions = []
  for prompt in prompts:
    free = [b for b, s in enumerate(slots) if s.running_ids is None]
    if not free:
      break
    head = prompt[:-1]
    reuse = {b: common_prefix(slots[b].held_ids, head) for b in free}
    slot = max(free, key=lambda b: (reuse[b], -slots[b].freed_at))
    source, shared = _best_source(slots, head) if share_prefixes else (None, 0)
    if source is not None and shared >= reuse[slot] + min_shared:
      admission = Admission(slot, source=source, shared=shared)
    else:
      admission = Admission(slot, reused=reuse[slot])
    slots[slot] = SlotState(running_ids=prompt, freed_at=slots[slot].freed_at,
                            waiting=admission.source is not None)
    admissions.append(admission)
  return admissions


def _best_source(slots: list[SlotState], head: np.ndarray) -> tuple[int | None, int]:
  candidates = [(common_prefix(s.running_ids, head), not s.waiting, -b)
                for b, s in enumerate(slots) if s.running_ids is not None]
  if not candidates:
    return None, 0
  shared, _, slot = max(candidates)
  return -slot, shared
