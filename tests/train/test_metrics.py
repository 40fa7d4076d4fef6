"""Text-generation metrics against values worked out by hand (every score on 0–100)."""

from __future__ import annotations

import math

import pytest

from kubetune.train import metrics

KEYS = {"rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf"}


def test_identical_text_scores_100_everywhere() -> None:
    text = "the model beats the baseline on every benchmark."
    out = metrics.generation_metrics([text, "a second, shorter line here"],
                                     [text, "a second, shorter line here"])  # fmt: skip
    assert set(out) == KEYS
    assert all(v == pytest.approx(100.0) for v in out.values()), out


def test_rouge_by_hand() -> None:
    # reference: the cat sat on the mat / generated: the cat lay on the mat
    # unigrams: the×2, cat, on, mat shared → 5 of 6 each side → F = 5/6
    # bigrams: "the cat", "on the", "the mat" shared of 5 → F = 3/5
    # LCS: the cat _ on the mat → 5 → F = 5/6; one sentence, so Lsum = L
    out = metrics.generation_metrics(["the cat lay on the mat"], ["the cat sat on the mat"])
    assert out["rouge1"] == pytest.approx(100 * 5 / 6)
    assert out["rouge2"] == pytest.approx(100 * 3 / 5)
    assert out["rougeL"] == pytest.approx(100 * 5 / 6)
    assert out["rougeLsum"] == pytest.approx(100 * 5 / 6)


def test_rouge_stems_and_ignores_case_and_punctuation() -> None:
    # Porter stemming: cats → cat, running and runs → run (tokens of 3 letters stay as they are).
    out = metrics.generation_metrics(["Cats, running!"], ["cat runs"])
    assert out["rouge1"] == pytest.approx(100.0)
    assert out["rouge2"] == pytest.approx(100.0)


def test_rouge_lsum_matches_sentence_by_sentence() -> None:
    # As one sequence the best common subsequence is one sentence: 3 of 6 tokens → L = 50.
    # Sentence by sentence each reference sentence is found whole → Lsum = 100.
    out = metrics.generation_metrics(["the dog ran. the cat sat."], ["the cat sat. the dog ran."])
    assert out["rougeL"] == pytest.approx(50.0)
    assert out["rougeLsum"] == pytest.approx(100.0)
    assert out["rouge1"] == pytest.approx(100.0)


def test_rouge_is_the_mean_over_examples() -> None:
    out = metrics.generation_metrics(["alpha beta", "gamma"], ["alpha beta", "delta"])
    assert out["rouge1"] == pytest.approx(50.0)
    assert out["rougeL"] == pytest.approx(50.0)


def test_bleu_by_hand() -> None:
    # generated: the cat sat on the mat / reference: the cat sat on a mat (same length: BP = 1)
    # n-gram precisions: 5/6, 3/5, 2/4, 1/3 → BLEU = (5/6 · 3/5 · 2/4 · 1/3) ** (1/4)
    out = metrics.generation_metrics(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert out["bleu"] == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-9)
    assert out["bleu"] == pytest.approx(53.7284965, abs=1e-6)


def test_bleu_brevity_penalty_by_hand() -> None:
    # Every n-gram of the 4-word output is in the 6-word reference: precisions all 1, and the
    # brevity penalty is exp(1 - 6/4).
    out = metrics.generation_metrics(["the cat sat on"], ["the cat sat on the mat"])
    assert out["bleu"] == pytest.approx(100 * math.exp(1 - 6 / 4), abs=1e-9)


def test_chrf_by_hand() -> None:
    # characters "abc" vs "abd": 1-grams 2/3 precision and recall, 2-grams 1/2, 3-grams 0;
    # longer n-grams exist on neither side. Averages: (2/3 + 1/2 + 0) / 3 = 7/18 for both,
    # so F-beta (beta 2) = 7/18.
    out = metrics.generation_metrics(["abc"], ["abd"])
    assert out["chrf"] == pytest.approx(100 * 7 / 18, abs=1e-9)


def test_bleu_and_chrf_are_corpus_level() -> None:
    # Corpus BLEU pools n-gram counts: one perfect and one empty output is not the mean of
    # 100 and 0 (the empty one adds 0 hypothesis n-grams but 4 reference words to the length).
    generated = ["the cat sat on the mat", ""]
    out = metrics.generation_metrics(generated, ["the cat sat on the mat", "dogs bark at night"])
    assert out["bleu"] == pytest.approx(100 * math.exp(1 - 10 / 6), abs=1e-9)
    assert out["rouge1"] == pytest.approx(50.0)


def test_empty_corpus_and_mismatched_lengths() -> None:
    assert metrics.generation_metrics([], []) == dict.fromkeys(KEYS, 0.0)
    with pytest.raises(ValueError, match="2 generated texts for 1 references"):
        metrics.generation_metrics(["a", "b"], ["a"])


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("First one. Second one! Third? yes", ["First one.", "Second one!", "Third?", "yes"]),
        ("lowercase output. still splits.", ["lowercase output.", "still splits."]),
        ("it scores 41. 2 bleu. then", ["it scores 41. 2 bleu.", "then"]),
        ("3.5 points better.", ["3.5 points better."]),
        ("line one\n\nline two. more", ["line one", "line two.", "more"]),
        ("  ", []),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert metrics.split_sentences(text) == sentences
