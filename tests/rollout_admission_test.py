"""Admission planning (`rollout.admission.plan`), a pure function: hand-worked slot states."""
import numpy as np

from rstar_jax.rollout import admission

MIN = 32


def _ids(*parts) -> np.ndarray:
  return np.concatenate([np.asarray(p, np.int32) for p in parts])


def test_free_slots_go_least_recently_freed_first():
  slots = [admission.SlotState(freed_at=5), admission.SlotState(freed_at=2), admission.SlotState(freed_at=9)]
  plans = admission.plan(slots, [_ids([1, 2, 3]), _ids([4, 5])], share_prefixes=True, min_shared=MIN)
  assert plans == [admission.Admission(1), admission.Admission(0)]


def test_a_slot_holding_the_prompts_start_is_reused_in_place_but_never_its_last_id():
  held = _ids(range(10))
  slots = [admission.SlotState(freed_at=0), admission.SlotState(held_ids=held, freed_at=7)]
  turn_two = _ids(range(10), [50, 51])  # the next turn: the old sequence, then new ids
  same = _ids(range(10))  # the same ids again: the last one is written for its logits
  assert admission.plan(slots, [turn_two], True, MIN) == [admission.Admission(1, reused=10)]
  assert admission.plan(slots, [same], True, MIN) == [admission.Admission(1, reused=9)]
  assert admission.plan(slots, [same], True, MIN)[0].cached_tokens == 9


def test_the_samples_of_a_prompt_copy_it_from_the_first_which_does_not_wait():
  prompt = _ids(range(100, 140))  # 40 ids: 39 shareable
  slots = [admission.SlotState(freed_at=k) for k in range(4)]
  plans = admission.plan(slots, [prompt] * 3, True, MIN)
  assert plans == [admission.Admission(0), admission.Admission(1, source=0, shared=39),
                   admission.Admission(2, source=0, shared=39)]
  assert [p.cached_tokens for p in plans] == [0, 39, 39]


def test_a_running_request_with_outputs_is_a_source_for_its_ids_so_far():
  running = _ids(range(200, 240), [7, 8])  # prompt and two outputs
  slots = [admission.SlotState(running_ids=running), admission.SlotState(freed_at=0)]
  plans = admission.plan(slots, [_ids(range(200, 240), [7, 9, 9])], True, MIN)
  assert plans == [admission.Admission(1, source=0, shared=41)]


def test_short_shares_and_sharing_off_use_no_source():
  running = _ids(range(300, 340))
  slots = [admission.SlotState(running_ids=running), admission.SlotState()]
  short = _ids(range(300, 320), [1, 2, 3])  # 20 shared ids < 32
  assert admission.plan(slots, [short], True, MIN) == [admission.Admission(1)]
  assert admission.plan(slots, [_ids(running, [5])], False, MIN) == [admission.Admission(1)]


def test_in_place_reuse_wins_unless_a_source_gives_min_shared_more():
  base = _ids(range(400, 480))
  slots = [admission.SlotState(running_ids=base), admission.SlotState(held_ids=base[:40])]
  assert admission.plan(slots, [_ids(base, [1])], True, MIN) == [admission.Admission(1, source=0, shared=80)]
  slots = [admission.SlotState(running_ids=base), admission.SlotState(held_ids=base[:60])]
  assert admission.plan(slots, [_ids(base, [1])], True, MIN) == [admission.Admission(1, reused=60)]


def test_only_as_many_admissions_as_free_slots():
  slots = [admission.SlotState(running_ids=_ids([1])), admission.SlotState()]
  assert len(admission.plan(slots, [_ids([1, 2])] * 3, True, MIN)) == 1
