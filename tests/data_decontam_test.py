"""8-gram decontamination against evaluation sets (PAPER.md §8).

  python -m pytest -q tests/data_decontam_test.py
"""
import json

import pytest

from rstar_jax import data

AIME = ("Let $ABCD$ be a tetrahedron such that $AB=CD=\\sqrt{41}$, $AC=BD=\\sqrt{80}$, and "
        "$BC=AD=\\sqrt{89}$. There exists a point $I$ inside the tetrahedron such that the "
        "distances from $I$ to each of the faces of the tetrahedron are all equal.")


def _index(n=8):
  return data.NgramIndex([data.Problem("aime_2024/1", AIME, "104", "aime_2024"),
                          data.Problem("math_500/1", "What is 1+1?", "2", "math_500")], n)


def test_words_ignore_latex_punctuation_and_case():
  assert data.words("Find $x^2+Y^{2}$, then STOP.") == ["find", "x", "2", "y", "2", "then", "stop"]


def test_planted_eight_gram_overlap_is_caught_despite_formatting():
  # 8 consecutive words of AIME ("there exists a point i inside the tetrahedron")
  # planted in another problem, with different spacing, case and punctuation.
  planted = "A new question.  THERE exists a point, I, inside the tetrahedron; find its volume."
  assert _index().match(planted) == "aime_2024"


def test_seven_shared_words_are_not_an_overlap():
  near = "there exists a point i inside the cube with integer coordinates"
  assert data.words(near)[:7] == data.words(AIME)[20:27]  # the same 7 words, then a difference
  assert _index().match(near) is None
  assert _index(n=7).match(near) == "aime_2024"


def test_short_problems_match_only_when_equal():
  index = _index()
  assert index.match("What is 1 + 1 ?") == "math_500"
  assert index.match("What is 1+1? Explain.") is None


def test_decontaminate_drops_and_counts_planted_rows():
  train = [data.Problem("t/0", "Compute 2+3.", "5", "t"),
           data.Problem("t/1", "Suppose " + AIME[:200] + " Find the volume.", "7", "t"),
           data.Problem("t/2", "what is 1+1?", "2", "t")]
  stats = data.DataStats(rows_read=3, kept=3)
  kept = data.decontaminate(train, _index(), stats)
  assert [p.id for p in kept] == ["t/0"]
  assert stats.to_dict() == {"rows_read": 3, "kept": 1, "skipped": {"contaminated": 2}}


def test_train_problems_decontaminate_against_config_eval_files(tmp_path):
  eval_path = tmp_path / "aime24.jsonl"
  eval_path.write_text(json.dumps({"id": 1, "problem": AIME, "answer": "104"}) + "\n")
  train_path = tmp_path / "train.jsonl"
  train_path.write_text("".join(json.dumps(row) + "\n" for row in [
      {"problem": "Clean problem about primes below 100.", "answer": "25"},
      {"problem": "Copied: " + AIME, "answer": "104"}]))
  config = {"train_files": [f"problems:{train_path}"],
            "decontam_files": [f"aime_2024:{eval_path}"], "decontam_ngram": 8}
  problems, stats = data.train_problems(config)
  assert [p.answer for p in problems] == ["25"]
  assert stats.skipped["contaminated"] == 1


def test_bad_n_is_rejected():
  with pytest.raises(ValueError, match="n must be a positive integer, got 0"):
    data.NgramIndex([], 0)
