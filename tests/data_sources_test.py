"""Loaders over tiny files in the Hugging Face export layouts; bad rows; filters.

  python -m pytest -q tests/data_sources_test.py
"""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rstar_jax import data


def _parquet(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(pa.Table.from_pylist(rows), path)
  return path


def _jsonl(path, lines):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
  return path


def _dapo_row(index, prompt, solution):
  # open-r1/DAPO-Math-17k-Processed (en): prompt/solution strings plus the verl columns.
  return {"prompt": prompt, "solution": solution, "data_source": "math_dapo",
          "source_prompt": [{"content": "Solve ... " + prompt, "role": "user"}],
          "ability": "MATH", "reward_model": {"ground_truth": solution, "style": "rule-lighteval/MATH_v2"},
          "extra_info": {"index": index}}


def test_dapo_parquet_rows_become_problems_with_ids_from_extra_info(tmp_path):
  path = _parquet(tmp_path / "dapo/en/train-00000-of-00001.parquet", [
      _dapo_row("a1", "Find the sum 1+2+3.", "6"),
      _dapo_row("b2", "What is $2^{10}$?", "1,024"),
  ])
  problems, stats = data.read_source(f"dapo_math:{path}", "config.data.train_files[0]")
  assert [(p.id, p.problem, p.answer, p.source) for p in problems] == [
      ("dapo_math/a1", "Find the sum 1+2+3.", "6", "dapo_math"),
      ("dapo_math/b2", "What is $2^{10}$?", "1024", "dapo_math"),
  ]
  assert stats.to_dict() == {"rows_read": 2, "kept": 2, "skipped": {}}


def test_openmathreasoning_keeps_extracted_answers_and_dedups_solution_rows(tmp_path):
  # One row per generated solution: the same problem repeats with the same answer.
  rows = [
      {"expected_answer": "12", "problem_type": "has_answer_extracted", "problem_source": "aops_c4",
       "generation_model": "DeepSeek-R1", "problem": "How many divisors does 60 have?",
       "generated_solution": f"solution {k}", "inference_mode": "cot"} for k in range(3)]
  rows.append({"expected_answer": "\\frac{1}{2}", "problem_type": "has_answer_extracted",
               "problem": "Find p.", "generated_solution": "...", "inference_mode": "cot"})
  rows.append({"expected_answer": "n/a", "problem_type": "converted_proof",
               "problem": "Prove that p is prime.", "generated_solution": "...", "inference_mode": "cot"})
  path = _parquet(tmp_path / "omr/data/cot-00000-of-00001.parquet", rows)
  problems, stats = data.load_problems([f"openmathreasoning:{tmp_path / 'omr'}"], "config.data.train_files")
  assert [(p.problem, p.answer) for p in problems] == [("How many divisors does 60 have?", "12")]
  assert problems[0].id.startswith("openmathreasoning/")
  assert stats.to_dict() == {"rows_read": 5, "kept": 1, "skipped": {
      "excluded_by_schema": 1, "non_integer_answer": 1, "duplicate": 2}}
  assert path.exists()


def test_eval_layouts_load_with_their_field_names(tmp_path):
  aime24 = _parquet(tmp_path / "aime24/train.parquet", [
      {"id": 60, "problem": "Every morning Aya walks 9 km.", "solution": "...", "answer": "204",
       "url": "https://...", "year": "2024"}])
  aime25 = _jsonl(tmp_path / "aime25/aime2025-I.jsonl", [
      json.dumps({"question": "Find the sum of all integer bases b>9.", "answer": "70"})])
  math500 = _jsonl(tmp_path / "math500/test.jsonl", [
      json.dumps({"problem": "Convert (0,3) to polar coordinates.", "solution": "...",
                  "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus",
                  "level": 2, "unique_id": "test/precalculus/807.json"})])
  hmmt = _parquet(tmp_path / "hmmt/data/train-00000-of-00001.parquet", [
      {"problem_idx": 1, "problem": "Compute the sum of the positive divisors of 9!.",
       "answer": "103", "problem_type": ["Number Theory"]}])
  euler = _parquet(tmp_path / "euler/train.parquet", [
      {"id": 1, "title": "Multiples of 3 or 5", "problem": "Find the sum of all the multiples of 3 or 5 below 1000.",
       "numerical_answer": "233168", "diff_rate": 5.0}])
  specs = [f"aime_2024:{aime24}", f"aime_2025:{aime25}", f"math_500:{math500}",
           f"hmmt_feb_2025:{hmmt}", f"project_euler:{euler}"]
  problems, stats = data.load_problems(specs, "config.data.decontam_files", integer_answers=False)
  assert [(p.id.split("/")[0], p.answer) for p in problems] == [
      ("aime_2024", "204"), ("aime_2025", "70"),
      ("math_500", "\\left( 3, \\frac{\\pi}{2} \\right)"), ("hmmt_feb_2025", "103"),
      ("project_euler", "233168")]
  assert problems[2].id == "math_500/test/precalculus/807.json"
  assert stats.kept == 5


def test_ids_shared_across_files_are_qualified_with_their_file(tmp_path):
  # DAPO-Math-17k-Processed's en and cn exports both number extra_info.index from 0.
  for config, prompts in (("en", ("Find 1+1.", "Find 2+2.")), ("cn", ("求 1+1。", "求 3+3。"))):
    _parquet(tmp_path / f"dapo/{config}/train-00000-of-00001.parquet",
             [_dapo_row(i, prompt, str(2 + 2 * i)) for i, prompt in enumerate(prompts)])
  aime = _parquet(tmp_path / "aime24/train.parquet",
                  [{"id": 0, "problem": "Aya walks.", "answer": "204"}])
  specs = [f"dapo_math:{tmp_path / 'dapo/en'}", f"dapo_math:{tmp_path / 'dapo/cn'}",
           f"aime_2024:{aime}"]
  problems, _ = data.load_problems(specs, "config.data.train_files")
  assert [p.id for p in problems] == [
      "dapo_math/0@en/train-00000-of-00001.parquet", "dapo_math/1@en/train-00000-of-00001.parquet",
      "dapo_math/0@cn/train-00000-of-00001.parquet", "dapo_math/1@cn/train-00000-of-00001.parquet",
      "aime_2024/0"]  # a file whose ids collide with no other keeps its plain ids
  # One spec over both files (sorted: cn first): the same ids.
  both, _ = data.read_source(f"dapo_math:{tmp_path / 'dapo'}/*/train-*.parquet", "f")
  assert [p.id for p in both] == [p.id for p in problems[2:4] + problems[:2]]
  # A file alone keeps its plain ids.
  alone, _ = data.read_source(f"dapo_math:{tmp_path / 'dapo/cn'}", "f")
  assert [p.id for p in alone] == ["dapo_math/0", "dapo_math/1"]


def test_repeats_of_a_problem_in_a_file_are_numbered_when_kept(tmp_path):
  rows = [{"expected_answer": "12", "problem_type": "has_answer_extracted",
           "problem": "How many divisors does 60 have?", "generated_solution": f"solution {k}"}
          for k in range(3)]
  path = _parquet(tmp_path / "omr/cot.parquet", rows)
  kept, _ = data.load_problems([f"openmathreasoning:{path}"], "f", deduplicate=False)
  base = kept[0].id
  assert [p.id for p in kept] == [base, base + "#2", base + "#3"]
  deduplicated, _ = data.load_problems([f"openmathreasoning:{path}"], "f")
  assert [p.id for p in deduplicated] == [base]


def test_one_id_on_two_problems_of_a_file_is_an_error_naming_both_rows(tmp_path):
  path = _jsonl(tmp_path / "rows.jsonl", [json.dumps({"id": "a", "problem": "P?", "answer": "1"}),
                                         json.dumps({"id": "b", "problem": "Q?", "answer": "2"}),
                                         json.dumps({"id": "a", "problem": "R?", "answer": "3"})])
  with pytest.raises(ValueError, match=r"config\.data\.train_files\[0\]: rows .*rows\.jsonl:1 and "
                                       r".*rows\.jsonl:3 have the same id 'a' but different problems"):
    data.load_problems([f"problems:{path}"], "config.data.train_files")


def test_a_file_listed_twice_keeps_unique_ids_or_is_an_error(tmp_path):
  path = _jsonl(tmp_path / "rows.jsonl", [json.dumps({"id": "a", "problem": "P?", "answer": "1"})])
  specs = [f"problems:{path}", f"problems:{tmp_path}/./rows.jsonl"]
  problems, stats = data.load_problems(specs, "config.data.train_files")
  assert [p.id for p in problems] == ["a"] and stats.skipped == {"duplicate": 1}
  with pytest.raises(ValueError, match=r"problem id 'a' is used by config\.data\.train_files\[0\] "
                                       r"\(.*rows\.jsonl:1\) and config\.data\.train_files\[1\]"):
    data.load_problems(specs, "config.data.train_files", deduplicate=False)


def test_bad_rows_are_skipped_and_counted_by_reason(tmp_path):
  path = _jsonl(tmp_path / "rows.jsonl", [
      json.dumps({"problem": "What is 6*7?", "answer": "42"}),
      '{"problem": "broken", "answer": ',                        # broken JSON
      "[1, 2, 3]",                                               # JSON, not an object
      json.dumps({"problem": "No answer here."}),                # missing answer
      json.dumps({"problem": "Null answer.", "answer": None}),   # missing answer
      json.dumps({"problem": "", "answer": "1"}),                # missing problem
      json.dumps({"problem": 7, "answer": "1"}),                 # problem not a string
      json.dumps({"problem": "Half?", "answer": "1/2"}),         # non-integer
      json.dumps({"problem": "Huge?", "answer": "9" * 41}),      # answer too long
      "",                                                        # blank lines are not rows
      json.dumps({"problem": "What is 2^5?", "answer": 32}),
  ])
  problems, stats = data.read_source(f"problems:{path}", "config.data.train_files[0]")
  assert [(p.problem, p.answer) for p in problems] == [("What is 6*7?", "42"), ("What is 2^5?", "32")]
  assert stats.to_dict() == {"rows_read": 10, "kept": 2, "skipped": {
      "broken_json": 2, "missing_problem": 2, "missing_answer": 2, "non_integer_answer": 1,
      "answer_too_long": 1}}


def test_missing_file_is_one_error_naming_field_and_path(tmp_path):
  missing = tmp_path / "nowhere" / "train-*.parquet"
  with pytest.raises(ValueError, match=r"config\.data\.train_files\[1\]: .*nowhere/train-\*\.parquet"):
    data.load_problems([f"problems:{_jsonl(tmp_path / 'ok.jsonl', [])}", f"dapo_math:{missing}"],
                       "config.data.train_files")
  with pytest.raises(ValueError, match=r"config\.data\.stages\[2\]\.train_files\[0\]: .*empty"):
    (tmp_path / "empty").mkdir()
    data.read_source(f"problems:{tmp_path / 'empty'}", "config.data.stages[2].train_files[0]")


def test_bad_spec_and_missing_column_name_the_field(tmp_path):
  with pytest.raises(ValueError, match=r"config\.data\.train_files\[0\]='dapo:x'.*SCHEMA one of"):
    data.read_source("dapo:x", "config.data.train_files[0]")
  path = _parquet(tmp_path / "wrong.parquet", [{"question": "q", "answer": "1"}])
  with pytest.raises(ValueError, match=r"config\.data\.train_files\[0\]: .*wrong\.parquet.*'prompt'"):
    data.read_source(f"dapo_math:{path}", "config.data.train_files[0]")
  with pytest.raises(ValueError, match="non-empty list"):
    data.load_problems("problems:x.jsonl", "config.data.train_files")


def test_glob_directory_and_json_array_files_are_read_in_sorted_order_without_metadata(tmp_path):
  _jsonl(tmp_path / "d/b.jsonl", [json.dumps({"problem": "B", "answer": "2"})])
  _jsonl(tmp_path / "d/a.jsonl", [json.dumps({"problem": "A", "answer": "1"})])
  (tmp_path / "d/c.json").write_text(json.dumps([{"problem": "C", "answer": "3"}, "junk"]))
  (tmp_path / "d/README.md").write_text("not data")
  (tmp_path / "d/dataset_info.json").write_text('{"features": {}}')
  _jsonl(tmp_path / "d/.cache/huggingface/x.jsonl", [json.dumps({"problem": "D", "answer": "4"})])
  problems, stats = data.read_source(f"problems:{tmp_path / 'd'}", "f")
  assert [p.problem for p in problems] == ["A", "B", "C"]
  assert stats.to_dict() == {"rows_read": 4, "kept": 3, "skipped": {"broken_json": 1}}
  problems, _ = data.read_source(f"problems:{tmp_path / 'd'}/*.jsonl", "f")
  assert [p.problem for p in problems] == ["A", "B"]


@pytest.mark.parametrize("value, expected", [
    (32, "32"), (32.0, "32"), (2.5, "2.5"), (" 7 ", "7"), ("", None), (None, None),
    (True, None), ([1], None), (float("nan"), None),
])
def test_field_text_normalizes_row_values(value, expected):
  assert data.field_text(value) == expected


def test_dedup_counts_conflicting_answers_separately():
  problems = [data.Problem("a", "What is  2+2?", "4", "s"),
              data.Problem("b", "what is 2+2?", "4", "s"),
              data.Problem("c", "WHAT IS 2+2?", "5", "s"),
              data.Problem("d", "What is 3+3?", "6", "s")]
  stats = data.DataStats(rows_read=4, kept=4)
  kept = data.dedup(problems, stats)
  assert [p.id for p in kept] == ["a", "d"]
  assert stats.to_dict() == {"rows_read": 4, "kept": 2,
                             "skipped": {"duplicate": 1, "duplicate_answer_conflict": 1}}


def test_written_problems_read_back_verbatim(tmp_path):
  problems = [data.Problem("synthetic/train/000000", "What is 6*7?", "42", "synthetic",
                           {"family": "product", "level": 1}),
              data.Problem("dapo_math/x", "Ünïcode problem?", "-3", "dapo_math")]
  path = tmp_path / "out" / "kept.jsonl"
  data.write_problems(path, problems, extra=[{"num_correct": 1}, {"num_correct": 0}])
  back, stats = data.read_source(f"problems:{path}", "f")
  assert back == problems
  assert json.loads(path.read_text(encoding="utf-8").splitlines()[1])["num_correct"] == 0
  assert stats.kept == 2
