"""Entity spans from BIO tags, with character offsets (hand-checked)."""

from __future__ import annotations

from kubetune.train import bio


def test_spans_follow_the_words_offsets_into_the_text() -> None:
    text = "Ledgerly  v5.3.0 on Android"
    offsets = [(0, 8), (10, 16), (17, 19), (20, 27)]
    tags = ["B-PRODUCT", "B-VERSION", "O", "B-PLATFORM"]
    assert bio.spans_of(text, offsets, tags) == [
        {"type": "PRODUCT", "start": 0, "end": 8, "text": "Ledgerly"},
        {"type": "VERSION", "start": 10, "end": 16, "text": "v5.3.0"},
        {"type": "PLATFORM", "start": 20, "end": 27, "text": "Android"},
    ]


def test_an_entity_of_several_words_keeps_the_text_between_them() -> None:
    text = "on Windows  11 now"
    spans = bio.spans_of(text, [(0, 2), (3, 10), (12, 14), (15, 18)],
                         ["O", "B-PLATFORM", "I-PLATFORM", "O"])  # fmt: skip
    assert spans == [{"type": "PLATFORM", "start": 3, "end": 14, "text": "Windows  11"}]


def test_a_stray_or_mismatched_i_tag_begins_an_entity_as_seqeval_reads_it() -> None:
    spans = bio.entity_spans(["a", "b", "c", "d"], ["I-loc", "I-loc", "I-org", "O"])
    assert [(s["type"], s["text"]) for s in spans] == [("loc", "a b"), ("org", "c")]


def test_entity_spans_have_character_offsets() -> None:
    tokens = ["John", "Smith", "visited", "New", "York", "today"]
    tags = ["B-person", "I-person", "O", "B-loc", "I-loc", "O"]
    spans = bio.entity_spans(tokens, tags)
    text = " ".join(tokens)
    assert spans == [
        {"type": "person", "start": 0, "end": 10, "text": "John Smith"},
        {"type": "loc", "start": 19, "end": 27, "text": "New York"},
    ]
    assert all(text[s["start"] : s["end"]] == s["text"] for s in spans)


def test_entity_spans_split_on_type_change_and_stray_i() -> None:
    spans = bio.entity_spans(["a", "b", "c"], ["B-loc", "I-person", "I-person"])
    assert [(s["type"], s["text"]) for s in spans] == [("loc", "a"), ("person", "b c")]
