"""Real (tiny, random) models served over HTTP: a classifier answers what
:func:`kubetune.predict.engine.predict` answers on the same texts, concurrent requests
included; a tagger answers entity spans with character offsets; an encoder answers
:func:`kubetune.predict.encode.load`'s vectors; an index answers its searches."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from serve.running import HANG, running, wait_ready

from conftest import ML_GROUP

pytestmark = pytest.mark.xdist_group(ML_GROUP)

LABELS = ["money", "sport", "tech"]
TAGS = ["O", "B-person", "I-person", "B-loc"]
TEXTS = ["goal match team " * 9, "bank price", "computer phone software chip", "the a of"]


@pytest.fixture(scope="module")
def classifier(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("cls")
    model = BertForSequenceClassification.from_pretrained(
        tiny["model"], num_labels=3, id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
    )  # fmt: skip
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny["model"]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tagger(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tagger that tags every word B-loc (its head's bias says so), so each word is a span
    of its own whatever the random weights."""
    import torch
    from transformers import AutoTokenizer, BertForTokenClassification

    folder = tmp_path_factory.mktemp("ner")
    model = BertForTokenClassification.from_pretrained(
        tiny["model"], num_labels=4, id2label=dict(enumerate(TAGS)),
        label2id={n: i for i, n in enumerate(TAGS)},
    )  # fmt: skip
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 50.0]))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny["model"]).save_pretrained(folder)
    return folder


def test_a_classifier_answers_what_the_engine_answers(classifier: Path) -> None:
    from kubetune.predict import engine
    from kubetune.serve import create_app

    expected = engine.predict(engine.load(str(classifier)), TEXTS)
    app = create_app(model=classifier, model_sha256="ab" * 32, source="file:///runs/x")
    with running(app) as client:
        ready = wait_ready(client)
        assert ready == {"ready": True, "task": "classification", "labels": LABELS,
                         "max_length": 64, "model_sha256": "ab" * 32,
                         "source": "file:///runs/x"}  # fmt: skip
        answer = client.post("/v1/predict", json={"texts": TEXTS})
        assert answer.status_code == 200
        assert answer.json() == {"predictions": expected}

        # Concurrent requests, one text each, batched together: each gets its own text's
        # prediction (padding to a batch's longest text changes no label).
        async def each() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=str(client.base_url), timeout=HANG) as c:
                return await asyncio.gather(*(c.post("/v1/predict", json={"text": t})
                                              for t in TEXTS))  # fmt: skip

        for response, want in zip(asyncio.run(each()), expected, strict=True):
            (got,) = response.json()["predictions"]
            assert got["label"] == want["label"]
            assert got["scores"] == pytest.approx(want["scores"], abs=1e-4)
        assert client.post("/v1/embed", json={"text": "x"}).status_code == 404


def test_a_tagger_answers_entity_spans_with_character_offsets(tagger: Path) -> None:
    from kubetune.serve import create_app

    with running(create_app(model=tagger)) as client:
        assert wait_ready(client)["task"] == "ner"
        answer = client.post("/v1/predict", json={"texts": ["John visited Paris", "a"]})
    (first, second) = answer.json()["predictions"]
    spans = [(e["type"], e["start"], e["end"], e["text"]) for e in first["entities"]]
    assert spans == [("loc", 0, 4, "John"), ("loc", 5, 12, "visited"), ("loc", 13, 18, "Paris")]
    assert all(e["score"] > 0.99 for e in first["entities"])
    assert [e["text"] for e in second["entities"]] == ["a"]


@pytest.fixture(scope="module")
def reader(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A question-answering model with its run's settings: 24-token windows sharing 8."""
    from transformers import AutoTokenizer, BertForQuestionAnswering

    from kubetune import inference

    folder = tmp_path_factory.mktemp("qa")
    BertForQuestionAnswering.from_pretrained(tiny["model"]).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny["model"]).save_pretrained(folder)
    inference.write(folder, inference.Inference(task="question-answering", max_length=24,
                                                doc_stride=8, max_answer_length=4,
                                                allow_null=False))  # fmt: skip
    return folder


def test_a_reader_answers_with_a_span_of_the_context(reader: Path) -> None:
    from kubetune.predict import engine
    from kubetune.serve import create_app

    context = "The match was won by the home team after a late goal in the rain " * 3
    question = "who won the match?"
    with running(create_app(model=reader)) as client:
        ready = wait_ready(client)
        assert (ready["task"], ready["max_length"]) == ("question-answering", 24)
        found = client.post("/v1/answer", json={"question": question, "context": context})
        missing = client.post("/v1/answer", json={"question": question})
        elsewhere = client.post("/v1/predict", json={"texts": ["x"]})
        # A question that fills the window: the caller's to shorten, and the server goes on.
        crowded = client.post("/v1/answer", json={"question": "who " * 30, "context": context})
        after = client.post("/v1/answer", json={"question": question, "context": context})
    answer = found.json()
    # Read whole in 24-token windows: the span is the context's own characters.
    assert answer["answer"] and context[answer["start"] : answer["end"]] == answer["answer"]
    assert len(answer["answer"].split()) <= 4
    [alone] = engine.answer(engine.load(str(reader)), [question], [context], bf16=False)
    assert answer == alone
    assert missing.status_code == 422 and missing.json()["detail"].startswith("context:")
    assert elsewhere.status_code == 404
    assert crowded.status_code == 422
    assert crowded.json()["detail"].startswith("question: leaves ")
    assert crowded.json()["detail"].endswith("; shorten the question")
    assert after.json() == answer


@pytest.mark.parametrize("method", ["crf", "lead"])
def test_a_classical_baseline_is_served_as_its_rows(method: str, tmp_path: Path) -> None:
    from kubetune.serve import create_app
    from kubetune.train import classical

    from tiny import classical_final

    folder = classical_final(method, tmp_path)
    texts = ["the Orbit crashed. Twice.", "the Beacon crashed"]
    with running(create_app(model=folder)) as client:
        ready = wait_ready(client)
        answer = client.post("/v1/predict", json={"texts": texts})
    assert (ready["task"], ready["method"]) == ("classical", method)
    assert ("labels" in ready) == (method == "crf")
    assert answer.json() == {"predictions": classical.load_final(folder).rows(texts)}


def test_an_encoder_answers_its_vectors(tiny: dict[str, Path]) -> None:
    import numpy as np

    from kubetune.predict import encode
    from kubetune.serve import create_app

    expected = encode.load(str(tiny["model"])).encode(TEXTS)
    with running(create_app(encoder=tiny["model"])) as client:
        ready = wait_ready(client)
        assert (ready["task"], ready["dim"]) == ("embedding", 32)
        answer = client.post("/v1/embed", json={"texts": TEXTS}).json()
        assert client.post("/v1/search", json={"query": "x"}).status_code == 404
    assert answer["dim"] == 32
    got = np.array(answer["embeddings"], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


DOCS = {
    "d1": "red wine from the south of France",
    "d2": "the bank raised its price of shares",
    "d3": "the team won the match with a late goal",
    "d4": "a new phone with a faster chip",
}


@pytest.fixture(scope="module")
def index(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index folder of four documents, embedded by the tiny encoder."""
    from kubetune.predict import encode
    from kubetune.retrieval.index import write

    folder = tmp_path_factory.mktemp("index")
    vectors = encode.load(str(tiny["model"])).encode(list(DOCS.values()))
    write(folder, vectors, list(DOCS), list(DOCS.values()), {"encoder": {"name": "tiny"}})
    return folder


def test_an_index_answers_dense_bm25_and_hybrid_searches(
    tiny: dict[str, Path], index: Path
) -> None:
    from kubetune.predict import encode
    from kubetune.retrieval.index import Index
    from kubetune.serve import create_app

    query = "red wine and a goal"
    direct = Index.load(index)
    vector = encode.load(str(tiny["model"])).encode([query])
    expected = {
        "dense": direct.search(vector, 3)[0],
        "bm25": direct.search_bm25([query], 3)[0],
        "hybrid": direct.search_hybrid(vector, [query], 3)[0],
    }
    with running(create_app(encoder=tiny["model"], index=index, source="s3://i/x")) as client:
        ready = wait_ready(client)
        assert ready["task"] == "search"
        assert ready["index"] == {"kind": "flat", "dim": 32, "count": 4, "metric": "ip",
                                  "encoder": {"name": "tiny"}}  # fmt: skip
        for mode, ranking in expected.items():
            response = client.post("/v1/search", json={"query": query, "k": 3, "mode": mode})
            hits = response.json()["hits"]
            assert [h["id"] for h in hits] == [doc for doc, _ in ranking], mode
            assert [h["score"] for h in hits] == pytest.approx([s for _, s in ranking], abs=1e-5)
            assert [h["text"] for h in hits] == [DOCS[h["id"]] for h in hits]
        bm25 = client.post("/v1/search", json={"query": "red wine", "k": 1, "mode": "bm25"})
        assert bm25.json()["hits"][0]["id"] == "d1"  # the only document with those words
        assert client.post("/v1/embed", json={"text": query}).json()["dim"] == 32
        assert client.post("/v1/predict", json={"text": query}).status_code == 404


def test_serve_stops_and_raises_when_the_index_cannot_be_loaded(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    from kubetune.errors import ConfigError
    from kubetune.serve import serve

    from conftest import free_port

    (tmp_path / "docs.jsonl").write_text("")  # a folder, but no index.json nor index.faiss
    with pytest.raises(ConfigError, match=r"index.json: missing; .*write it again"):
        serve(encoder=tiny["model"], index=tmp_path, port=free_port(), log_level="warning")
