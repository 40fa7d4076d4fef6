"""Build the customer-feedback example sets from the hand-written messages.

    python examples/feedback/make_data.py            # rewrite the sets beside this file
    python examples/feedback/make_data.py --check    # exit 1 if a committed file differs

``messages.jsonl`` holds every message once, written by hand: its text with the entities
marked inline (``[Beacon X2](P)``, ``[v2.3.1](V)``, ``[iOS 17](OS)``), its labels and a
one-sentence summary. This script only does the mechanical part, deterministically: it
strips the markup, tokenises, turns the marks into BIO tags, checks that every mention of a
product or platform is marked, splits the messages (seeded, stratified by label set) into
train/validation/test, and writes the same messages as three task sets:

    triage/<split>.jsonl     {id, text, labels}          multi-label: bug feature praise urgent
    entities/<split>.jsonl   {id, tokens, ner_tags}      BIO over PRODUCT VERSION PLATFORM
    reply/<split>.jsonl      {id, document, summary}     seq2seq: message → one sentence

Standard library only, so the tests (and anyone) can rerun it without the ML stack.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "messages.jsonl"
SEED = 16
SPLITS = ("train", "validation", "test")
#: Share of each label set's messages that goes to each split (the rest go to train).
SHARES = {"validation": 0.2, "test": 0.2}
LABELS = ("bug", "feature", "praise", "urgent")
TASKS = ("triage", "entities", "reply")
ENTITY_TYPES = {"P": "PRODUCT", "V": "VERSION", "OS": "PLATFORM"}
MARK = re.compile(r"\[([^\[\]]+)\]\((P|V|OS)\)")
#: Words (with inner dots, hyphens and apostrophes: v2.3.1, wi-fi, don't), a possessive 's
#: on its own (Pinecone 's, so the product's span ends at a token edge), or one symbol.
TOKEN = re.compile(r"\w+(?:[.\-]\w+)*(?=['’]s\b)|['’]s\b|\w+(?:['’.\-]\w+)*|[^\w\s]")
#: Words that always name one of the fictional products or a platform: each occurrence must
#: begin an entity of that type. ("web" is not here: "web clipper" is a feature, not where
#: the product runs; the sets mark "web" only where it names the web app.)
ALWAYS = {
    "PRODUCT": {"tidewater", "beacon", "ledgerly", "kestrel", "kestral", "pinecone", "orbit"},
    "PLATFORM": {
        "ios", "ipados", "android", "windows", "macos", "mac", "linux", "ubuntu", "fedora",
        "chromeos", "chrome", "firefox", "safari",
    },
}  # fmt: skip
#: Tokens that are versions whatever their context: v-numbers and three-part numbers.
VERSION_LIKE = re.compile(r"v\d+(?:\.\d+)*|\d+\.\d+\.\d+")
#: Words after which a number is a version (build 4511 is one VERSION span).
VERSION_WORDS = {"build", "firmware", "fw", "version"}
#: Spellings of those words that mean something else ("MAC addresses").
NOT_MENTIONS = {"MAC"}


@dataclass(frozen=True)
class Message:
    """One hand-written message, with its markup resolved."""

    id: str
    text: str
    tokens: list[str]
    tags: list[str]
    labels: list[str]
    summary: str


def parse_marks(marked: str) -> tuple[str, list[tuple[int, int, str]]]:
    """The plain text of a marked-up message and its entity spans (start, end, type)."""
    plain: list[str] = []
    spans: list[tuple[int, int, str]] = []
    length, last = 0, 0
    for match in MARK.finditer(marked):
        before = marked[last : match.start()]
        plain.append(before)
        length += len(before)
        surface = match.group(1)
        spans.append((length, length + len(surface), ENTITY_TYPES[match.group(2)]))
        plain.append(surface)
        length += len(surface)
        last = match.end()
    plain.append(marked[last:])
    return "".join(plain), spans


def tokenize(text: str) -> list[tuple[str, int, int]]:
    """Tokens with their character offsets."""
    return [(m.group(0), m.start(), m.end()) for m in TOKEN.finditer(text)]


def bio_tags(
    tokens: Sequence[tuple[str, int, int]], spans: Iterable[tuple[int, int, str]], where: str
) -> list[str]:
    """BIO tags of ``tokens``; an entity must begin and end on token edges."""
    tags = ["O"] * len(tokens)
    starts = {start: i for i, (_, start, _) in enumerate(tokens)}
    ends = {end: i for i, (_, _, end) in enumerate(tokens)}
    for start, end, kind in spans:
        if start not in starts or end not in ends:
            raise ValueError(f"{where}: entity at {start}:{end} does not fall on token edges")
        first, last = starts[start], ends[end]
        tags[first] = f"B-{kind}"
        for i in range(first + 1, last + 1):
            tags[i] = f"I-{kind}"
    return tags


def unmarked_mentions(tokens: Sequence[str], tags: Sequence[str]) -> list[str]:
    """Mentions that should begin an entity but do not (a missing mark in the source)."""
    problems = []
    for i, (token, tag) in enumerate(zip(tokens, tags, strict=True)):
        word = token.lower()
        for kind, words in ALWAYS.items():
            if word in words and token not in NOT_MENTIONS and not tag.endswith(kind):
                problems.append(f"{token!r} is not marked as {kind}")
        after_word = i > 0 and tokens[i - 1].lower() in VERSION_WORDS and token[0].isdigit()
        if (VERSION_LIKE.fullmatch(token) or after_word) and not tag.endswith(
            ("VERSION", "PLATFORM")
        ):
            problems.append(f"{token!r} looks like a version but is not marked")
    return problems


def load(source: Path = SOURCE) -> list[Message]:
    """Every message of the source, checked: labels, urgent only with bug, marks, mentions."""
    messages: list[Message] = []
    seen: dict[str, str] = {}
    with source.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            where = f"{source.name}:{number}"
            row = json.loads(line)
            labels = row["labels"]
            unknown = sorted(set(labels) - set(LABELS))
            if unknown or len(set(labels)) != len(labels):
                raise ValueError(f"{where}: labels {labels}: use each of {LABELS} at most once")
            if "urgent" in labels and "bug" not in labels:
                raise ValueError(f"{where}: urgent marks a bug that cannot wait; add bug")
            text, spans = parse_marks(row["text"])
            if "](" in text:
                raise ValueError(f"{where}: a mark that is not [text](P|V|OS)")
            tokens = tokenize(text)
            tags = bio_tags(tokens, spans, where)
            words = [token for token, _, _ in tokens]
            problems = unmarked_mentions(words, tags)
            if problems:
                raise ValueError(f"{where}: {problems[0]}")
            key = " ".join(text.lower().split())
            if key in seen:
                raise ValueError(f"{where}: the same text as {seen[key]}")
            seen[key] = where
            ordered = [label for label in LABELS if label in labels]
            summary = row["summary"].strip()
            messages.append(Message(f"fb-{number:03d}", text, words, tags, ordered, summary))
    return messages


def split(messages: Sequence[Message], seed: int = SEED) -> dict[str, list[Message]]:
    """Train/validation/test, stratified by label set so each split sees every combination
    that has enough messages; the order within a split is the source's."""
    groups: dict[tuple[str, ...], list[Message]] = {}
    for message in messages:
        groups.setdefault(tuple(message.labels), []).append(message)
    rng = random.Random(seed)
    chosen: dict[str, str] = {}
    for key in sorted(groups):
        members = list(groups[key])
        rng.shuffle(members)
        count = {name: round(len(members) * share) for name, share in SHARES.items()}
        cursor = 0
        for name in ("validation", "test"):
            for message in members[cursor : cursor + count[name]]:
                chosen[message.id] = name
            cursor += count[name]
        for message in members[cursor:]:
            chosen[message.id] = "train"
    return {name: [m for m in messages if chosen[m.id] == name] for name in SPLITS}


def rows(task: str, message: Message) -> dict[str, object]:
    """One message as a row of a task's set."""
    if task == "triage":
        return {"id": message.id, "text": message.text, "labels": message.labels}
    if task == "entities":
        return {"id": message.id, "tokens": message.tokens, "ner_tags": message.tags}
    return {"id": message.id, "document": message.text, "summary": message.summary}


def render(splits: dict[str, list[Message]]) -> dict[str, str]:
    """Every output file's relative path → its text."""
    files: dict[str, str] = {}
    for task in TASKS:
        for name, members in splits.items():
            lines = [json.dumps(rows(task, m), ensure_ascii=False) + "\n" for m in members]
            files[f"{task}/{name}.jsonl"] = "".join(lines)
    return files


def counts_table(splits: dict[str, list[Message]]) -> str:
    """The README's table: messages, labels and entity mentions per split."""
    kinds = list(ENTITY_TYPES.values())
    header = ["split", "messages", *LABELS, "no label", *kinds]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    totals: Counter[str] = Counter()
    for name in SPLITS:
        members = splits[name]
        counts = Counter(label for m in members for label in m.labels)
        counts.update(tag[2:] for m in members for tag in m.tags if tag.startswith("B-"))
        counts["messages"] = len(members)
        counts["no label"] = sum(not m.labels for m in members)
        totals.update(counts)
        lines.append("| " + " | ".join([name, *(str(counts[c]) for c in header[1:])]) + " |")
    lines.append("| total | " + " | ".join(str(totals[c]) for c in header[1:]) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write the sets in")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--table", action="store_true", help="print the README's counts table")
    args = parser.parse_args(argv)
    splits = split(load())
    files = render(splits)
    if args.table:
        print(counts_table(splits))
        return 0
    if args.check:
        stale = [p for p, text in files.items() if _read(args.out / p) != text]
        for path in stale:
            print(f"{args.out / path} differs from what {Path(__file__).name} writes")
        return 1 if stale else 0
    for path, text in files.items():
        target = args.out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return 0


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.exists() else None


if __name__ == "__main__":
    sys.exit(main())
