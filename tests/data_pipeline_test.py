"""The Grain prompt stream: determinism, exact resume, sharding over processes.

  python -m pytest -q tests/data_pipeline_test.py
"""
import collections
import json

import numpy as np
import pytest

from rstar_jax import chat
from rstar_jax import data

TOKENIZER = chat.CharTokenizer()


def _problems(n):
  return [data.Problem(f"p/{i:03d}", f"What is {i} + {i}?", str(2 * i), "p") for i in range(n)]


def _prompts(n):
  return data.encode_prompts(_problems(n), TOKENIZER, 2048, data.DataStats(rows_read=n, kept=n))


def _ids(iterator, steps):
  return [next(iterator).ids for _ in range(steps)]


def test_batches_hold_prompt_token_ids_of_the_chat_template():
  iterator = data.PromptIterator(_prompts(5), 4, seed=0, process_index=0, process_count=1)
  batch = next(iterator)
  assert len(batch) == 4 and batch.prompt_lens.dtype == np.int32
  for pid, text, answer, ids, length in zip(batch.ids, batch.problems, batch.answers,
                                            batch.prompt_ids, batch.prompt_lens):
    i = int(pid.split("/")[1])
    assert (text, answer) == (f"What is {i} + {i}?", str(2 * i))
    assert ids.dtype == np.int32 and ids.shape == (length,)
    assert ids.tolist() == TOKENIZER.encode(chat.prompt_text(text))
    assert TOKENIZER.decode(ids).endswith(text + "<|im_end|>\n<|im_start|>assistant\n<reason>")


def test_same_seed_gives_same_stream_and_each_epoch_is_a_permutation():
  first = _ids(data.PromptIterator(_prompts(12), 4, seed=7, process_index=0, process_count=1), 9)
  again = _ids(data.PromptIterator(_prompts(12), 4, seed=7, process_index=0, process_count=1), 9)
  other = _ids(data.PromptIterator(_prompts(12), 4, seed=8, process_index=0, process_count=1), 9)
  assert first == again
  assert first != other
  rows = [pid for batch in first for pid in batch]
  epochs = [rows[0:12], rows[12:24], rows[24:36]]
  for epoch in epochs:
    assert sorted(epoch) == [p.id for p in _problems(12)]
  assert epochs[0] != epochs[1]  # reshuffled every epoch
  assert rows[:12] != [p.id for p in _problems(12)]  # shuffled at all


def test_restored_state_gives_the_same_following_batches():
  prompts = _prompts(10)
  iterator = data.PromptIterator(prompts, 4, seed=3, process_index=0, process_count=1)
  _ids(iterator, 3)  # 12 rows: the stream is already in its second epoch
  state = json.loads(json.dumps(iterator.get_state()))  # as saved in a checkpoint
  state_np = dict(state, step=np.int64(state["step"]), version=np.int64(1))
  expected = _ids(iterator, 5)
  assert state["step"] == 3 and iterator.step == 8
  resumed = data.PromptIterator(prompts, 4, seed=3, process_index=0, process_count=1)
  resumed.set_state(state)
  assert _ids(resumed, 5) == expected
  resumed.set_state(state_np)  # numbers restored as numpy scalars
  assert _ids(resumed, 5) == expected
  assert resumed.epoch == pytest.approx(8 * 4 / 10)


@pytest.mark.parametrize("process_count", [1, 2, 3, 4])
def test_processes_cover_every_row_exactly_once(process_count):
  # N = 24 rows, B = 12 prompts per step: two steps are exactly one epoch.
  prompts = _prompts(24)
  iterators = [data.PromptIterator(prompts, 12, seed=5, process_index=p,
                                   process_count=process_count) for p in range(process_count)]
  counts = collections.Counter()
  for step in range(2):
    batches = [next(it) for it in iterators]
    assert all(len(b) == 12 // process_count for b in batches)
    counts.update(pid for b in batches for pid in b.ids)
  assert counts == collections.Counter(p.id for p in _problems(24))


def test_global_batches_do_not_depend_on_process_count():
  prompts = _prompts(10)
  single = _ids(data.PromptIterator(prompts, 6, seed=1, process_index=0, process_count=1), 4)
  iterators = [data.PromptIterator(prompts, 6, seed=1, process_index=p, process_count=3)
               for p in range(3)]
  for step in range(4):
    shards = [next(it).ids for it in iterators]
    assert sorted(sum(shards, ())) == sorted(single[step])
    # Process p holds global rows p, p+3, ... of the step's batch.
    assert all(shards[p] == single[step][p::3] for p in range(3))


def test_state_restores_across_a_change_of_process_count():
  prompts = _prompts(10)
  two = [data.PromptIterator(prompts, 4, seed=2, process_index=p, process_count=2) for p in range(2)]
  for it in two:
    _ids(it, 2)
  state = two[0].get_state()
  assert state == two[1].get_state()
  expected = _ids(data.PromptIterator(prompts, 4, seed=2, process_index=0, process_count=1), 5)[2:]
  one = data.PromptIterator(prompts, 4, seed=2, process_index=0, process_count=1)
  one.set_state(state)
  assert _ids(one, 3) == expected


def test_process_arguments_default_to_jax():
  default = data.PromptIterator(_prompts(10), 4, seed=9)
  explicit = data.PromptIterator(_prompts(10), 4, seed=9, process_index=0, process_count=1)
  assert default.batch_size == 4  # one process in tests
  assert _ids(default, 3) == _ids(explicit, 3)


def test_state_from_another_stream_is_rejected():
  iterator = data.PromptIterator(_prompts(10), 4, seed=3, process_index=0, process_count=1)
  state = iterator.get_state()
  for other in (data.PromptIterator(_prompts(11), 4, seed=3, process_index=0, process_count=1),
                data.PromptIterator(_prompts(10), 4, seed=4, process_index=0, process_count=1),
                data.PromptIterator(_prompts(10), 2, seed=3, process_index=0, process_count=1)):
    with pytest.raises(ValueError, match="another stream"):
      other.set_state(state)
  with pytest.raises(ValueError, match="version"):
    iterator.set_state({"next_index": 3})


def test_over_long_prompts_are_counted_and_dropped():
  problems = _problems(3) + [data.Problem("long", "x" * 5000, "1", "p")]
  stats = data.DataStats(rows_read=4, kept=4)
  prompts = data.encode_prompts(problems, TOKENIZER, 2048, stats)
  assert [p.problem.id for p in prompts] == ["p/000", "p/001", "p/002"]
  assert stats.to_dict() == {"rows_read": 4, "kept": 3, "skipped": {"prompt_too_long": 1}}


@pytest.mark.parametrize("kwargs, message", [
    (dict(global_batch_size=5, process_count=2, process_index=0), "multiple of process_count=2"),
    (dict(global_batch_size=4, process_count=2, process_index=2), r"process_index must be in \[0, 2\)"),
    (dict(global_batch_size=4, process_count=1, process_index=0, seed="0"), "seed must be"),
])
def test_bad_arguments_name_themselves(kwargs, message):
  kwargs = {"seed": 0} | kwargs
  with pytest.raises(ValueError, match=message):
    data.PromptIterator(_prompts(4), **kwargs)
  with pytest.raises(ValueError, match="no problems left"):
    data.PromptIterator([], 4, 0, process_index=0, process_count=1)


def test_prompt_iterator_builds_from_config(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_text("".join(json.dumps({"problem": p.problem, "answer": p.answer}) + "\n"
                          for p in _problems(6)) + "not json\n")
  config = {"train_files": [f"problems:{path}"], "prompts_per_step": 4, "seed": 11,
            "max_prompt_tokens": 2048}
  problems, stats = data.train_problems(config)
  iterator = data.prompt_iterator(config, TOKENIZER, problems, stats, process_index=0,
                                  process_count=1)
  assert stats.to_dict() == {"rows_read": 7, "kept": 6, "skipped": {"broken_json": 1}}
  direct = data.PromptIterator(data.encode_prompts(problems, TOKENIZER, 2048, data.DataStats()),
                               4, 11, process_index=0, process_count=1)
  assert _ids(iterator, 3) == _ids(direct, 3)
  with pytest.raises(ValueError, match=r"config\.data\.prompts_per_step: missing"):
    data.prompt_iterator({"seed": 0}, TOKENIZER, problems, stats, process_index=0, process_count=1)
