"""The reward on a table of tricky answers, for each scope and strictness (PAPER.md §4, §11).

Run: python -m pytest -q tests/rewards_table_test.py
Column `released` (scope full_response, lenient) was checked case by case against the released
grader, rStar@ecbfb94 `fused_compute_score.compute_score`, run on the same strings. The other
columns follow from the rules: `tag` takes the last `\\boxed{}` inside the last complete
`<answer>` block; `strict` compares the extracted candidate and the answer as integers
(`rewards.canonical_integer`: thousands separators only in groups of three, a `.0` tail allowed,
lists are no integers).
"""
import pytest

from rstar_jax import rewards
from rstar_jax.rewards import verifier

# id, response, answer, released, tag, strict (full_response), strict + tag
TABLE = [
    ("nested_braces", "<answer>\\boxed{\\frac{1}{\\sqrt{2}}}</answer>",
     "\\frac{\\sqrt{2}}{2}", 1, 1, 0, 0),
    # PRIME refuses (integer vs "84/2"); math-verify evaluates the fraction.
    ("nested_dfrac_integer", "<answer>\\boxed{\\dfrac{84}{2}}</answer>", "42", 1, 1, 0, 0),
    ("several_boxes_last_counts", "First guess \\boxed{41}. Actually \\boxed{42}.",
     "42", 1, 0, 1, 0),
    ("several_boxes_earlier_ignored", "First guess \\boxed{41}. Actually \\boxed{42}.",
     "41", 0, 0, 0, 0),
    ("thousands_comma", "<answer>\\boxed{1,000}</answer>", "1000", 1, 1, 1, 1),
    ("thousands_comma_not_one", "<answer>\\boxed{1,000}</answer>", "1", 0, 0, 0, 0),
    ("thousands_braced_comma", "<answer>\\boxed{1{,}000}</answer>", "1000", 1, 1, 1, 1),
    ("thousands_space", "<answer>\\boxed{1 000}</answer>", "1000", 1, 1, 1, 1),
    ("thousands_groups_of_three", "<answer>\\boxed{12,345,678}</answer>", "12345678", 1, 1, 1, 1),
    ("thousands_negative_thin_space", "<answer>\\boxed{10,\\!000}</answer>", "10000", 1, 1, 1, 1),
    # The released grader does not strip a thin space; as integers the two are equal.
    ("thousands_thin_space", "<answer>\\boxed{1\\,000}</answer>", "1000", 0, 0, 1, 1),
    # Separators outside groups of three are no thousands separators: lenient only.
    ("misgrouped_comma", "<answer>\\boxed{12,34}</answer>", "1234", 1, 1, 0, 0),
    ("digits_split_by_space", "<answer>\\boxed{1 2}</answer>", "12", 1, 1, 0, 0),
    # A list is no integer: dropping every separator would read 12 and 34.
    ("list_in_box", "<answer>\\boxed{1, 2}</answer>", "12", 0, 0, 0, 0),
    ("list_after_answer_phrase", "So the answer is 3, 4", "34", 0, 0, 0, 0),
    ("dfrac_vs_frac", "<answer>\\boxed{\\dfrac{1}{2}}</answer>", "\\frac{1}{2}", 1, 1, 0, 0),
    ("decimal_vs_frac", "<answer>\\boxed{0.5}</answer>", "\\frac{1}{2}", 1, 1, 0, 0),
    # PRIME keeps unreduced fractions apart; math-verify does not.
    ("unreduced_fraction", "<answer>\\boxed{\\frac{2}{4}}</answer>", "\\frac{1}{2}", 1, 1, 0, 0),
    ("units_text", "<answer>\\boxed{42\\text{ cm}}</answer>", "42", 1, 1, 0, 0),
    ("units_word", "<answer>\\boxed{42 meters}</answer>", "42", 1, 1, 0, 0),
    ("degrees", "<answer>\\boxed{30^\\circ}</answer>", "30", 1, 1, 0, 0),
    ("text_after_answer", "<answer>\\boxed{42}</answer>\nCheck: 6*7 = 42, so 41 is wrong.",
     "42", 1, 1, 1, 1),
    # Released leniency: PRIME takes "41." after the last "answer is", math-verify the box, so
    # the same response scores 1 against both 41 and 42.
    ("later_phrase_overrides_box", "The answer is \\boxed{42}. Wait, the answer is 41.",
     "41", 1, 0, 0, 0),
    ("later_phrase_box_still_seen", "The answer is \\boxed{42}. Wait, the answer is 41.",
     "42", 1, 0, 0, 0),
    ("missing_answer_tag", "So \\boxed{42}.", "42", 1, 0, 1, 0),
    ("duplicated_tags_last_counts",
     "<answer>\\boxed{41}</answer> no, <answer>\\boxed{42}</answer>", "42", 1, 1, 1, 1),
    ("duplicated_tags_first_ignored",
     "<answer>\\boxed{41}</answer> no, <answer>\\boxed{42}</answer>", "41", 0, 0, 0, 0),
    ("unclosed_answer_tag", "<answer>\\boxed{42}", "42", 1, 0, 1, 0),
    ("answer_tag_without_box", "<answer>42</answer>", "42", 0, 0, 0, 0),
    ("box_outside_tag_ignored", "\\boxed{42} <answer>\\boxed{41}</answer>", "42", 0, 0, 0, 0),
    ("answer_phrase_only", "After checking, the answer is 42.", "42", 1, 0, 0, 0),
    # rel_tol 1e-4 and x100 / /100 matches (PAPER.md §11 row 13).
    ("close_number_lenient", "<answer>\\boxed{123460}</answer>", "123456", 1, 1, 0, 0),
    ("percent_scaling_lenient", "<answer>\\boxed{4200}</answer>", "42", 1, 1, 0, 0),
    ("float_integer", "<answer>\\boxed{42.0}</answer>", "42", 1, 1, 1, 1),
    # Integers pass through float() in the PRIME normalisation.
    ("huge_integers_float_collision", "<answer>\\boxed{123456789012345678901}</answer>",
     "123456789012345678902", 1, 1, 0, 0),
    ("wrong", "<answer>\\boxed{41}</answer>", "42", 0, 0, 0, 0),
    ("negative", "<answer>\\boxed{-7}</answer>", "-7", 1, 1, 1, 1),
    ("empty_box", "<answer>\\boxed{}</answer>", "42", 0, 0, 0, 0),
    ("no_answer", "I could not solve it.", "42", 0, 0, 0, 0),
    ("tool_output_not_answer",
     "<tool_response>\nTool call success\nstdout: 42\n\nexecution time: 0.01s\n</tool_response>",
     "42", 0, 0, 0, 0),
    ("fbox", "<answer>\\fbox{42}</answer>", "42", 1, 1, 1, 1),
    ("dollar_wrapped", "<answer>$\\boxed{42}$</answer>", "42", 1, 1, 1, 1),
    # PRIME's extraction cuts after "=", the tag scope keeps the box's content as written.
    ("equation_in_box", "<answer>\\boxed{x = 42}</answer>", "42", 1, 1, 1, 0),
]
IDS = [row[0] for row in TABLE]


@pytest.mark.parametrize("case_id, response, answer, released, tag, strict, strict_tag", TABLE,
                         ids=IDS)
def test_table_verdicts_per_scope_and_strictness(case_id, response, answer, released, tag,
                                                 strict, strict_tag):
  del case_id
  got = [verifier.verify(response, answer, scope, strict_integer).correct
         for scope, strict_integer in (("full_response", False), ("answer_tag", False),
                                       ("full_response", True), ("answer_tag", True))]
  assert got == [bool(released), bool(tag), bool(strict), bool(strict_tag)]


def test_table_through_default_scorer_matches_released_column():
  with rewards.Scorer() as scorer:
    scores = [r.score for r in scorer.results([row[1] for row in TABLE],
                                              [row[2] for row in TABLE])]
  assert scores == [float(row[3]) for row in TABLE]


def test_table_through_paper_scorer_matches_strict_tag_column():
  integer_rows = [row for row in TABLE if rewards.canonical_integer(row[2]) is not None]
  with rewards.Scorer(scope="answer_tag", strict_integer=True) as scorer:
    scores = [r.score for r in scorer.results([row[1] for row in integer_rows],
                                              [row[2] for row in integer_rows])]
  assert scores == [float(row[6]) for row in integer_rows]
