"""SQuAD's exact match and F1 against values worked out by hand."""

from __future__ import annotations

import pytest

from kubetune.train import squad


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("The  Denver Broncos!", "denver broncos"),
        ("an apple, a day", "apple day"),
        ("Theatre of the Absurd", "theatre of absurd"),  # "the" inside a word stays
        ("U.S. $1,000", "us 1000"),
        ("  A\ttab\nand newline ", "tab and newline"),
        ("", ""),
    ],
)
def test_normalisation_is_the_official_scripts(text: str, normalised: str) -> None:
    assert squad.normalize_answer(text) == normalised


def test_exact_match_and_f1_of_one_answer() -> None:
    # "the Broncos" → [broncos]; gold [denver, broncos]: precision 1, recall 1/2, F1 2/3.
    assert squad.exact("Denver Broncos", "the Broncos") == 0
    assert squad.f1("Denver Broncos", "the Broncos") == pytest.approx(2 / 3)
    assert squad.exact("Denver Broncos", "denver broncos.") == 1
    # Counts, not sets: gold [a1, a1, b], predicted [a1, b, b, c]: 2 shared tokens,
    # precision 2/4, recall 2/3, F1 = 2 * (1/2) * (2/3) / (1/2 + 2/3) = 4/7.
    assert squad.f1("a1 a1 b", "a1 b b c") == pytest.approx(4 / 7)
    assert squad.f1("Denver", "Carolina") == 0.0
    # Both empty agree; one empty scores nothing.
    assert squad.f1("", "") == 1.0
    assert squad.f1("", "Denver") == 0.0
    assert squad.f1("the", "") == 1.0, "an answer of only articles normalises to empty"


def test_an_example_scores_its_best_gold_answer() -> None:
    golds = ["Denver Broncos", "the Broncos", "Broncos of Denver"]
    assert squad.example_scores(golds, "Broncos") == (1, 1.0)
    em, f1 = squad.example_scores(golds, "Denver")
    # Against "Denver Broncos": precision 1, recall 1/2 → 2/3; "Broncos of Denver" has three
    # tokens → 1/2; the best is 2/3.
    assert em == 0 and f1 == pytest.approx(2 / 3)


def test_an_unanswerable_question_has_the_empty_gold_answer() -> None:
    assert squad.gold_texts([]) == [""]
    assert squad.gold_texts(["the", "Paris"]) == ["Paris"], "gold normalising to empty is dropped"
    assert squad.example_scores([], "") == (1, 1.0)
    assert squad.example_scores([], "Paris") == (0, 0.0)


def test_scores_are_percentages_with_answerable_and_unanswerable_splits() -> None:
    golds = [["Denver Broncos"], ["Paris"], [], []]
    predicted = ["the Broncos", "Paris", "", "London"]
    # Per example (EM, F1): (0, 2/3), (1, 1), (1, 1), (0, 0).
    out = squad.scores(golds, predicted)
    assert out == {
        "exact_match": pytest.approx(100 * 2 / 4),
        "f1": pytest.approx(100 * (2 / 3 + 1 + 1 + 0) / 4),
        "total": 4,
        "has_ans_exact": pytest.approx(100 * 1 / 2),
        "has_ans_f1": pytest.approx(100 * (2 / 3 + 1) / 2),
        "has_ans_total": 2,
        "no_ans_exact": pytest.approx(100 * 1 / 2),
        "no_ans_f1": pytest.approx(100 * 1 / 2),
        "no_ans_total": 2,
    }


def test_only_answerable_questions_have_no_splits() -> None:
    out = squad.scores([["Paris"], ["Denver Broncos"]], ["paris", "Broncos"])
    # (1, 1) and (0, 2/3)
    assert out == {
        "exact_match": pytest.approx(50.0),
        "f1": pytest.approx(100 * (1 + 2 / 3) / 2),
        "total": 2,
    }
    with pytest.raises(ValueError, match="2 gold answer lists for 1 predictions"):
        squad.scores([["a"], ["b"]], ["a"])
