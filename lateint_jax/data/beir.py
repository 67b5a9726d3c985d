"""Read BEIR-style data: a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), a
corpus.jsonl alone, or a plain text file with one passage per line.

Passage text is `title + " " + text` when the title is non-empty (as BEIR's dense retrievers
do), else `text`. For a text file the id of a passage is its 0-based line number as a string
(colbert-ai's pid convention); blank lines are kept as empty passages so ids stay line numbers.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from lateint_jax.errors import InputError


@dataclass
class Corpus:
    """Documents in file order: ids [N] (strings) and passage texts [N]."""

    ids: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class BeirDataset:
    corpus: Corpus
    queries: dict[str, str]  # only the queries judged in the split
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance}


def passage_text(title: str | None, text: str | None) -> str:
    title, text = (title or "").strip(), text or ""
    return f"{title} {text}" if title else text


def _read_jsonl(path: Path):
    """Yield (line number, parsed object) for every non-blank line of a JSON-lines file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {path} as UTF-8 JSON lines: {err}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{number}: invalid JSON ({err.msg})") from None
        if not isinstance(record, dict) or "_id" not in record:
            raise InputError(f'{path}:{number}: expected an object with an "_id" field')
        yield number, record


def _unique(ids: list[str], path: Path) -> None:
    seen: set[str] = set()
    for doc_id in ids:
        if doc_id in seen:
            raise InputError(f"{path}: duplicate id {doc_id!r}")
        seen.add(doc_id)


def read_corpus_jsonl(path) -> Corpus:
    path = Path(path)
    ids, texts = [], []
    for number, record in _read_jsonl(path):
        doc_id = str(record["_id"])
        if not doc_id:
            raise InputError(f'{path}:{number}: empty "_id"')
        ids.append(doc_id)
        texts.append(passage_text(record.get("title"), record.get("text")))
    _unique(ids, path)
    return Corpus(ids, texts)


def read_text_lines(path) -> Corpus:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {path} as UTF-8 text: {err}") from None
    return Corpus([str(i) for i in range(len(lines))], lines)


def load_corpus(path) -> Corpus:
    """A BEIR folder, a corpus .jsonl, or a text file (one passage per line) -> Corpus.
    Raises InputError when the path is missing or the corpus is empty."""
    path = Path(path)
    if path.is_dir():
        if not (path / "corpus.jsonl").is_file():
            raise InputError(f"{path} is a folder without corpus.jsonl (not a BEIR dataset)")
        corpus = read_corpus_jsonl(path / "corpus.jsonl")
    elif path.is_file():
        corpus = read_corpus_jsonl(path) if path.suffix == ".jsonl" else read_text_lines(path)
    else:
        raise InputError(f"corpus {path} does not exist")
    if len(corpus) == 0:
        raise InputError(f"corpus {path} is empty")
    return corpus


def load_queries(path) -> dict[str, str]:
    """queries.jsonl (a file or the BEIR folder holding it) -> {query id: text}."""
    path = Path(path)
    path = path / "queries.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise InputError(f"queries file {path} does not exist")
    queries = {str(r["_id"]): str(r.get("text") or "") for _, r in _read_jsonl(path)}
    return queries


def load_qrels(folder, split: str = "test") -> dict[str, dict[str, int]]:
    """qrels/<split>.tsv (header `query-id corpus-id score`) -> {query id: {doc id: score}}."""
    path = Path(folder) / "qrels" / f"{split}.tsv"
    if not path.is_file():
        available = sorted(p.stem for p in (Path(folder) / "qrels").glob("*.tsv"))
        raise InputError(f"qrels file {path} does not exist (splits here: {available or 'none'})")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        for number, row in enumerate(rows, 1):
            if not row or (number == 1 and row[0] == "query-id"):
                continue
            try:
                query_id, doc_id, score = row[0], row[1], int(float(row[2]))
            except (IndexError, ValueError):
                raise InputError(
                    f"{path}:{number}: expected `query-id<TAB>corpus-id<TAB>score`"
                ) from None
            qrels.setdefault(query_id, {})[doc_id] = score
    if not qrels:
        raise InputError(f"{path} has no judgements")
    return qrels


def load_beir(folder, split: str = "test", with_corpus: bool = True) -> BeirDataset:
    """A BEIR folder -> corpus, the queries judged in `split`, and their qrels."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"BEIR folder {folder} does not exist")
    qrels = load_qrels(folder, split)
    all_queries = load_queries(folder)
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        raise InputError(
            f"{len(missing)} judged query ids are not in queries.jsonl, e.g. {missing[0]!r}"
        )
    queries = {q: all_queries[q] for q in qrels}
    corpus = load_corpus(folder) if with_corpus else Corpus([], [])
    return BeirDataset(corpus, queries, qrels)
